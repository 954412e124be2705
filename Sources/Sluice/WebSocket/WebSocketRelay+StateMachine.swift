extension WebSocketRelay {
    /// The relay's closing logic: who has sent and received a close, when each side is done,
    /// and which frames the gateway consumes. A value type with no I/O; `WebSocketRelay` drives it.
    ///
    /// A side is *done* when its close handshake is complete (a close frame each way) or its
    /// connection is gone; a done side's channel is closed, the backend's first when both finish
    /// together. Close frames are forwarded as they come; when the gateway itself closes (idle,
    /// violation, a vanished peer, shutdown) it sends its own and consumes the answers.
    struct StateMachine {
        struct Peer {
            var closeSent = false
            var closeReceived = false
            var gone = false
            var disconnectRequested = false
            /// Payload of the gateway's ping awaiting its pong.
            var outstandingPing: [UInt8]?
            var done: Bool { gone || (closeSent && closeReceived) }
        }

        /// How the connection ended, for logs and metrics.
        struct Outcome: Equatable {
            var initiator: RelaySide?
            var byGateway: Bool
            var code: UInt16?
            var reason: String
        }

        /// One thing for the relay to do, in order.
        enum Action: Equatable {
            /// Send this control frame, exactly as received, to the side.
            case forward(RelayDirection.ControlFrame, to: RelaySide)
            /// Send a close frame of the gateway's own.
            case sendClose(code: UInt16, reason: String, to: RelaySide)
            /// Send a close frame of the gateway's own, then drop the connection (fail it).
            case sendCloseAndDisconnect(code: UInt16, reason: String, to: RelaySide)
            /// Send a ping of the gateway's own with this payload.
            case sendPing([UInt8], to: RelaySide)
            /// Close the side's channel (after pending writes).
            case disconnect(RelaySide)
            /// Arm the close timeout (once).
            case startCloseTimer
            /// Both sides are done; release the relay.
            case finished
        }

        private var downstream = Peer()
        private var upstream = Peer()
        private var closeTimerStarted = false
        private var pingCounter: UInt64 = 0
        private(set) var outcome: Outcome?
        private(set) var isFinished = false

        private subscript(side: RelaySide) -> Peer {
            get { side == .downstream ? downstream : upstream }
            set {
                if side == .downstream { downstream = newValue } else { upstream = newValue }
            }
        }

        /// No close has been sent or received either way.
        var isOpen: Bool {
            !downstream.closeSent && !downstream.closeReceived && !upstream.closeSent && !upstream.closeReceived
                && !downstream.gone && !upstream.gone
        }

        /// A complete control frame arrived from `side`.
        mutating func controlFrame(_ frame: RelayDirection.ControlFrame, from side: RelaySide) -> [Action] {
            let peer = side.peer
            switch frame.opcode {
            case FrameHeader.Opcode.close:
                self[side].closeReceived = true
                var actions: [Action] = []
                if !self[peer].closeSent && !self[peer].gone {
                    self[peer].closeSent = true
                    actions.append(.forward(frame, to: peer))
                    recordOutcome(initiator: side, byGateway: false, code: frame.closeCode, reason: Self.closeReason(frame.payload))
                } else if !self[side].closeSent {
                    // The peer is gone or already closing: answer this side ourselves.
                    self[side].closeSent = true
                    actions.append(.sendClose(code: frame.closeCode ?? CloseCode.normal, reason: "", to: side))
                }
                return actions + startCloseTimer() + settle()
            case FrameHeader.Opcode.pong:
                if let expected = self[side].outstandingPing, expected == frame.payload {
                    self[side].outstandingPing = nil
                    return []
                }
                return self[peer].closeSent || self[peer].gone ? [] : [.forward(frame, to: peer)]
            default:
                return self[peer].closeSent || self[peer].gone ? [] : [.forward(frame, to: peer)]
            }
        }

        /// `side` broke the protocol or a limit: fail it with `code`, close the peer with 1001.
        mutating func violation(code: UInt16, reason: String, from side: RelaySide) -> [Action] {
            recordOutcome(initiator: side, byGateway: true, code: code, reason: reason)
            var actions: [Action] = []
            if !self[side].closeSent && !self[side].gone {
                self[side].closeSent = true
                self[side].disconnectRequested = true
                actions.append(.sendCloseAndDisconnect(code: code, reason: reason, to: side))
            } else if !self[side].disconnectRequested && !self[side].gone {
                self[side].disconnectRequested = true
                actions.append(.disconnect(side))
            }
            if !self[side.peer].closeSent && !self[side.peer].gone {
                self[side.peer].closeSent = true
                actions.append(.sendClose(code: CloseCode.goingAway, reason: "", to: side.peer))
            }
            return actions + startCloseTimer() + settle()
        }

        /// `side`'s connection ended (or went silent): the other side hears 1014 for a lost
        /// backend, 1001 for a lost client.
        mutating func peerGone(_ side: RelaySide) -> [Action] {
            guard !self[side].gone else { return [] }
            self[side].gone = true
            self[side].disconnectRequested = true
            var actions: [Action] = []
            let peer = side.peer
            if !self[peer].closeSent && !self[peer].gone {
                self[peer].closeSent = true
                let code = side == .upstream ? CloseCode.badGateway : CloseCode.goingAway
                let reason = side == .upstream ? "backend went away" : "client went away"
                recordOutcome(initiator: side, byGateway: false, code: code, reason: reason)
                actions.append(.sendClose(code: code, reason: side == .upstream ? reason : "", to: peer))
            }
            return actions + startCloseTimer() + settle()
        }

        /// `side` stopped answering the gateway's pings: it gets a 1001 and is dropped; the other
        /// side hears it is gone (1014 for a silent backend, 1001 for a silent client).
        mutating func peerSilent(_ side: RelaySide) -> [Action] {
            guard !self[side].gone, !self[side].disconnectRequested else { return [] }
            self[side].disconnectRequested = true
            var actions: [Action] = []
            if !self[side].closeSent {
                self[side].closeSent = true
                actions.append(.sendCloseAndDisconnect(code: CloseCode.goingAway, reason: "no answer to ping", to: side))
            } else {
                actions.append(.disconnect(side))
            }
            let peer = side.peer
            let code = side == .upstream ? CloseCode.badGateway : CloseCode.goingAway
            recordOutcome(initiator: side, byGateway: true, code: code, reason: "\(side == .upstream ? "backend" : "client") stopped answering pings")
            if !self[peer].closeSent && !self[peer].gone {
                self[peer].closeSent = true
                actions.append(.sendClose(code: code, reason: side == .upstream ? "backend not responding" : "", to: peer))
            }
            return actions + startCloseTimer() + settle()
        }

        /// The gateway closes both sides itself (idle timeout, kick, lifetime, shutdown).
        mutating func closeBoth(downstreamCode: UInt16, upstreamCode: UInt16, reason: String) -> [Action] {
            recordOutcome(initiator: nil, byGateway: true, code: downstreamCode, reason: reason)
            var actions: [Action] = []
            for (side, code) in [(RelaySide.upstream, upstreamCode), (.downstream, downstreamCode)] where !self[side].closeSent && !self[side].gone {
                self[side].closeSent = true
                actions.append(.sendClose(code: code, reason: reason, to: side))
            }
            return actions + startCloseTimer() + settle()
        }

        /// The close timeout passed: drop whatever is still connected.
        mutating func closeTimedOut() -> [Action] {
            var actions: [Action] = []
            for side in [RelaySide.upstream, .downstream] where !self[side].disconnectRequested && !self[side].gone {
                self[side].disconnectRequested = true
                actions.append(.disconnect(side))
            }
            return actions
        }

        /// Time for the gateway's keepalive pings: one to each side still open.
        mutating func pingTick() -> [Action] {
            var actions: [Action] = []
            for side in [RelaySide.upstream, .downstream] where !self[side].closeSent && !self[side].gone {
                pingCounter &+= 1
                var payload = Array("sluice-ping-".utf8)
                withUnsafeBytes(of: pingCounter.bigEndian) { payload.append(contentsOf: $0) }
                self[side].outstandingPing = payload
                actions.append(.sendPing(payload, to: side))
            }
            return actions
        }

        private mutating func startCloseTimer() -> [Action] {
            guard !closeTimerStarted else { return [] }
            closeTimerStarted = true
            return [.startCloseTimer]
        }

        /// Disconnects every side that is done, the backend first; reports the end once.
        private mutating func settle() -> [Action] {
            var actions: [Action] = []
            for side in [RelaySide.upstream, .downstream] where self[side].done && !self[side].disconnectRequested {
                self[side].disconnectRequested = true
                actions.append(.disconnect(side))
            }
            if downstream.done && upstream.done && !isFinished {
                isFinished = true
                actions.append(.finished)
            }
            return actions
        }

        private mutating func recordOutcome(initiator: RelaySide?, byGateway: Bool, code: UInt16?, reason: String) {
            if outcome == nil { outcome = Outcome(initiator: initiator, byGateway: byGateway, code: code, reason: reason) }
        }

        static func closeReason(_ payload: [UInt8]) -> String {
            payload.count > 2 ? String(decoding: payload.dropFirst(2), as: UTF8.self) : ""
        }
    }
}
