import NIOCore

extension WebSocketRelay {
    /// The relay's life after the 101: the close handshake on each side, the frames the gateway
    /// sends of its own, and every timer. A value type with no I/O; `WebSocketRelay` drives it,
    /// passing the time of each event, so tests run it on a clock of their own.
    ///
    /// Every state but `open` is bounded. Once closing starts (a close either way, a violation, a
    /// vanished or silent peer, the gateway's own close), the whole connection has `closeTimeout`
    /// to finish: at that deadline whatever is still connected is closed at the TCP level, whatever
    /// it was waiting for (a peer's close, a frame boundary, a flush to a reader that stopped). A
    /// close of the gateway's own waits for the frame being forwarded to that side to end; when the
    /// side feeding that frame is gone, no boundary can come, and the destination is disconnected
    /// at once instead. `open` ends by the peers, or by the idle, lifetime, expiry and ping timers.
    struct StateMachine {
        /// The route's timers for one connection.
        struct Timing: Equatable {
            var closeTimeout: TimeAmount
            var idleTimeout: TimeAmount?
            var pingInterval: TimeAmount?
            var pongTimeout: TimeAmount
            var maxLifetime: TimeAmount?
        }

        /// Why a connection ended: the first cause, for the access log and the closes metric.
        enum Ending: String, Equatable, CaseIterable {
            /// A peer sent a close and the handshake ran.
            case closeHandshake = "close_handshake"
            /// A peer's connection ended without a close, between frames.
            case vanished
            /// A peer's connection ended inside a frame being forwarded: the other side's
            /// connection was closed at the TCP level, since no valid frame could follow.
            case vanishedMidFrame = "vanished_mid_frame"
            /// A peer broke RFC 6455 or a size limit.
            case violation
            /// A peer did not answer the gateway's ping in time.
            case pingTimeout = "ping_timeout"
            case idleTimeout = "idle_timeout"
            case maxLifetime = "max_lifetime"
            case credentialExpired = "credential_expired"
            /// An operator closed it (`DELETE /connections/{id}`).
            case kicked
            case shutdown
            /// Closing did not finish within `close_timeout`; what was left was closed at the TCP level.
            case closeTimeout = "close_timeout"
        }

        /// How the connection ended, for logs and metrics.
        struct Outcome: Equatable {
            var initiator: RelaySide?
            var byGateway: Bool
            var code: UInt16?
            var reason: String
            var ending: Ending
        }

        /// Whether the byte stream written to each side is inside a forwarded data frame. Only the
        /// relay's directions know; it passes them with each event that may send a frame.
        struct Streams: Equatable {
            var insideFrameToDownstream = false
            var insideFrameToUpstream = false
            /// A fragmented message is being forwarded to the side (between two of its frames).
            var insideMessageToDownstream = false
            var insideMessageToUpstream = false

            func insideFrame(to side: RelaySide) -> Bool {
                side == .downstream ? insideFrameToDownstream : insideFrameToUpstream
            }

            func insideMessage(to side: RelaySide) -> Bool {
                side == .downstream ? insideMessageToDownstream : insideMessageToUpstream
            }

            static let betweenFrames = Streams()
        }

        /// One thing for the relay to do, in order.
        enum Action: Equatable {
            /// Send this control frame, exactly as received, to the side.
            case forward(RelayDirection.ControlFrame, to: RelaySide)
            /// Send a close frame of the gateway's own now (the stream to the side is between
            /// frames); no data frame may follow it.
            case sendClose(code: UInt16, reason: String, to: RelaySide)
            /// Send a ping of the gateway's own with this payload.
            case sendPing([UInt8], to: RelaySide)
            /// Close the side's connection once what was written to it has gone out.
            case disconnect(RelaySide)
            /// Close the side's connection now, dropping whatever has not gone out.
            case abort(RelaySide)
            /// Both connections are closed; report the end and release the relay.
            case finished
        }

        /// Where one side is, for tests and `/connections`.
        enum Phase: Equatable, CaseIterable {
            /// Relaying; no close either way.
            case open
            /// A close of the gateway's own waits: for the forwarded frame to this side to end,
            /// or (this side broke the protocol) for the other side's close first.
            case closeQueued
            /// A close went to this side; its answer has not come.
            case awaitingClose
            /// This side's close came; the close it is owed has not gone out.
            case awaitingAnswer
            /// Its connection is being closed (after a flush) or was closed at the TCP level.
            case disconnecting
            /// Its connection has ended.
            case gone
        }

        private struct QueuedClose: Equatable {
            var code: UInt16
            var reason: String
            /// The gateway fails this side: its connection is closed right after the close.
            var disconnectAfter: Bool
            /// A drain's close: it waits until neither direction is inside a fragmented message (not
            /// only a frame), so no one loses half a message to a deploy — the backend is not
            /// closed while it is still sending one, since it would answer before finishing it.
            var waitsForMessageEnd = false
        }

        private struct Side {
            var closeSent = false
            var closeReceived = false
            var gone = false
            var queuedClose: QueuedClose?
            var disconnectRequested = false
            var aborted = false
            /// Payload of the gateway's ping awaiting its pong, and when it went out.
            var outstandingPing: [UInt8]?
            var pingSentAt: NIODeadline?
            var handshakeDone: Bool { closeSent && closeReceived }
        }

        /// After a side breaks the protocol, the other side is left alone for a moment (until
        /// `until`, or until it closes or vanishes) and what it sends still reaches the offender:
        /// an answer already on its way (the echo of the message before the bad frame) is not
        /// lost. Then both get their closes.
        private struct Violator {
            var side: RelaySide
            var until: NIODeadline
        }

        /// How long a violator's peer is given before the closes: short, and well inside the
        /// close timeout.
        static let violationLinger: TimeAmount = .milliseconds(250)

        let timing: Timing
        let startedAt: NIODeadline
        private var downstream = Side()
        private var upstream = Side()
        private var violator: Violator?
        private var closingSince: NIODeadline?
        private var nextPingAt: NIODeadline?
        private var expiresAt: NIODeadline?
        private var pingCounter: UInt64 = 0
        private(set) var outcome: Outcome?
        private(set) var isFinished = false
        /// The connection was closed because no frame passed for `idleTimeout`.
        private(set) var idleTimedOut = false

        init(timing: Timing, now: NIODeadline) {
            self.timing = timing
            startedAt = now
            nextPingAt = timing.pingInterval.map { now + $0 }
        }

        private subscript(side: RelaySide) -> Side {
            get { side == .downstream ? downstream : upstream }
            set {
                if side == .downstream { downstream = newValue } else { upstream = newValue }
            }
        }

        /// No close has begun either way.
        var isOpen: Bool { closingSince == nil }

        func phase(of side: RelaySide) -> Phase {
            let state = self[side]
            if state.gone { return .gone }
            if state.disconnectRequested { return .disconnecting }
            if state.queuedClose != nil { return .closeQueued }
            if state.closeSent { return .awaitingClose }
            if state.closeReceived { return .awaitingAnswer }
            return .open
        }

        /// The relay must stop at the next frame boundary of what it forwards to `side`: a close
        /// of the gateway's own waits there.
        func awaitsBoundary(to side: RelaySide) -> Bool {
            (self[side].queuedClose != nil && violator?.side != side) || self[side.peer].queuedClose?.waitsForMessageEnd == true
        }

        /// When the machine next needs `timerFired`, given the last frame either way; `nil` once
        /// both connections are gone, or while open with no timer configured.
        func nextDeadline(lastActivity: NIODeadline) -> NIODeadline? {
            if isFinished { return nil }
            if let since = closingSince {
                // Every side left was closed at the TCP level: only its end is still to come.
                if RelaySide.allCases.allSatisfy({ self[$0].gone || self[$0].aborted }) { return nil }
                let end = since + timing.closeTimeout
                if let violator, violator.until < end { return violator.until }
                return end
            }
            var next: NIODeadline?
            func consider(_ deadline: NIODeadline?) {
                guard let deadline else { return }
                if next.map({ deadline < $0 }) ?? true { next = deadline }
            }
            consider(timing.maxLifetime.map { startedAt + $0 })
            consider(expiresAt)
            consider(timing.idleTimeout.map { lastActivity + $0 })
            consider(nextPingAt)
            for side in RelaySide.allCases { consider(self[side].pingSentAt.map { $0 + timing.pongTimeout }) }
            return next
        }

        /// Closes the connection with 1008 to the client when the credential that admitted it
        /// expires.
        mutating func expire(at deadline: NIODeadline) {
            expiresAt = deadline
        }

        // MARK: Events

        /// A complete control frame arrived from `side`.
        mutating func controlFrame(_ frame: RelayDirection.ControlFrame, from side: RelaySide, streams: Streams, now: NIODeadline) -> [Action] {
            let peer = side.peer
            switch frame.opcode {
            case FrameHeader.Opcode.close:
                self[side].closeReceived = true
                var forward: Action?
                if violator?.side == peer {
                    // The peer broke the protocol: its close is the gateway's; this side gets the
                    // gateway's close in answer as the linger ends (now).
                } else if canForward(to: peer) {
                    self[peer].closeSent = true
                    forward = .forward(frame, to: peer)
                    recordOutcome(side, byGateway: false, code: frame.closeCode, reason: Self.closeReason(frame.payload), .closeHandshake)
                } else if !self[side].closeSent && self[side].queuedClose == nil {
                    // The peer is gone or already closing: answer this side ourselves.
                    self[side].queuedClose = QueuedClose(code: frame.closeCode ?? CloseCode.normal, reason: "", disconnectAfter: false)
                }
                return settle(streams, now, after: forward)
            case FrameHeader.Opcode.pong:
                if let expected = self[side].outstandingPing, expected == frame.payload {
                    self[side].outstandingPing = nil
                    self[side].pingSentAt = nil
                    return []
                }
                return canForward(to: peer) ? [.forward(frame, to: peer)] : []
            default:
                return canForward(to: peer) ? [.forward(frame, to: peer)] : []
            }
        }

        /// `side` broke the protocol or a limit: nothing more is read from it; for a moment what
        /// the other side sends still reaches it (`violationLinger`); then it gets `code` and is
        /// dropped, and the other side gets 1001.
        mutating func violation(code: UInt16, reason: String, from side: RelaySide, streams: Streams, now: NIODeadline) -> [Action] {
            recordOutcome(side, byGateway: true, code: code, reason: reason, .violation)
            if !self[side].gone && !self[side].closeSent {
                self[side].queuedClose = QueuedClose(code: code, reason: reason, disconnectAfter: true)
                let linger = min(Self.violationLinger.nanoseconds, timing.closeTimeout.nanoseconds / 4)
                violator = Violator(side: side, until: now + .nanoseconds(linger))
            } else if !self[side].gone {
                self[side].disconnectRequested = true
                queueClose(CloseCode.goingAway, "", to: side.peer)
                return settle(streams, now, after: .disconnect(side))
            }
            return settle(streams, now)
        }

        /// `side`'s connection ended. The other side hears 1014 for a lost backend, 1001 for a lost
        /// client; if the lost side was inside a frame, it is disconnected without a close.
        mutating func peerGone(_ side: RelaySide, streams: Streams, now: NIODeadline) -> [Action] {
            guard !self[side].gone else { return [] }
            self[side].gone = true
            self[side].queuedClose = nil
            if violator?.side == side { violator = nil }
            let peer = side.peer
            if canForward(to: peer) {
                if streams.insideFrame(to: peer) {
                    recordOutcome(side, byGateway: false, code: nil, reason: "\(side.partyName) vanished inside a frame", .vanishedMidFrame)
                    self[peer].disconnectRequested = true
                    return settle(streams, now, after: .disconnect(peer))
                }
                let code = side == .upstream ? CloseCode.badGateway : CloseCode.goingAway
                let reason = side == .upstream ? "backend went away" : "client went away"
                recordOutcome(side, byGateway: false, code: code, reason: reason, .vanished)
                queueClose(code, side == .upstream ? reason : "", to: peer)
            }
            return settle(streams, now)
        }

        /// The forwarded frame to the side the relay was stopping for has ended.
        mutating func frameBoundary(streams: Streams, now: NIODeadline) -> [Action] {
            settle(streams, now)
        }

        /// The gateway closes both sides itself (idle timeout, kick, lifetime, expiry, shutdown).
        mutating func closeBoth(downstreamCode: UInt16, upstreamCode: UInt16, reason: String, ending: Ending, streams: Streams, now: NIODeadline) -> [Action] {
            recordOutcome(nil, byGateway: true, code: downstreamCode, reason: reason, ending)
            queueClose(upstreamCode, reason, to: .upstream, atMessageEnd: ending == .shutdown)
            queueClose(downstreamCode, reason, to: .downstream, atMessageEnd: ending == .shutdown)
            return settle(streams, now)
        }

        /// A deadline passed: the close timeout, the wait on a violator's peer, or (while open)
        /// lifetime, expiry, idle, a ping due or a pong overdue.
        mutating func timerFired(now: NIODeadline, lastActivity: NIODeadline, lastHeard: (downstream: NIODeadline, upstream: NIODeadline), streams: Streams) -> [Action] {
            guard !isFinished else { return [] }
            if let since = closingSince {
                guard now >= since + timing.closeTimeout else { return settle(streams, now) }
                recordOutcome(nil, byGateway: true, code: nil, reason: "close did not finish within close_timeout", .closeTimeout)
                return abortRemaining()
            }
            if let lifetime = timing.maxLifetime, now >= startedAt + lifetime {
                return closeBoth(downstreamCode: CloseCode.goingAway, upstreamCode: CloseCode.goingAway, reason: "maximum lifetime reached", ending: .maxLifetime, streams: streams, now: now)
            }
            if let expiresAt, now >= expiresAt {
                return closeBoth(downstreamCode: CloseCode.policyViolation, upstreamCode: CloseCode.goingAway, reason: "credential expired", ending: .credentialExpired, streams: streams, now: now)
            }
            if let idle = timing.idleTimeout, now - lastActivity >= idle {
                idleTimedOut = true
                return closeBoth(downstreamCode: CloseCode.goingAway, upstreamCode: CloseCode.goingAway, reason: "idle timeout", ending: .idleTimeout, streams: streams, now: now)
            }
            for side in [RelaySide.upstream, .downstream] {
                let heard = side == .downstream ? lastHeard.downstream : lastHeard.upstream
                if let sentAt = self[side].pingSentAt, now >= sentAt + timing.pongTimeout {
                    if heard < sentAt { return silent(side, streams: streams, now: now) }
                    // Something else came after the ping: the side is alive.
                    self[side].pingSentAt = nil
                }
            }
            guard let interval = timing.pingInterval, let due = nextPingAt, now >= due else { return [] }
            nextPingAt = now + interval
            var actions: [Action] = []
            // A ping waits for no boundary: a side receiving a long frame is skipped this round.
            for side in [RelaySide.upstream, .downstream] where !streams.insideFrame(to: side) {
                pingCounter &+= 1
                var payload = Array("sluice-ping-".utf8)
                withUnsafeBytes(of: pingCounter.bigEndian) { payload.append(contentsOf: $0) }
                self[side].outstandingPing = payload
                if self[side].pingSentAt == nil { self[side].pingSentAt = now }
                actions.append(.sendPing(payload, to: side))
            }
            return actions
        }

        /// The gateway gives up on the connection at once (a drain's deadline): whatever is still
        /// connected is closed at the TCP level.
        mutating func abortAll(now: NIODeadline) -> [Action] {
            recordOutcome(nil, byGateway: true, code: nil, reason: "drain deadline reached", .shutdown)
            if closingSince == nil { closingSince = now }
            return abortRemaining()
        }

        private mutating func abortRemaining() -> [Action] {
            var actions: [Action] = []
            for side in [RelaySide.upstream, .downstream] where !self[side].gone && !self[side].aborted {
                self[side].aborted = true
                self[side].disconnectRequested = true
                self[side].queuedClose = nil
                actions.append(.abort(side))
            }
            violator = nil
            return actions
        }

        /// `side` stopped answering the gateway's pings: it gets a 1001 and is dropped; the other
        /// side hears it is gone (1014 for a silent backend, 1001 for a silent client).
        private mutating func silent(_ side: RelaySide, streams: Streams, now: NIODeadline) -> [Action] {
            let code = side == .upstream ? CloseCode.badGateway : CloseCode.goingAway
            recordOutcome(side, byGateway: true, code: code, reason: "\(side.partyName) stopped answering pings", .pingTimeout)
            self[side].queuedClose = QueuedClose(code: CloseCode.goingAway, reason: "no answer to ping", disconnectAfter: true)
            queueClose(code, side == .upstream ? "backend not responding" : "", to: side.peer)
            return settle(streams, now)
        }

        // MARK: Settling

        /// A fragmented message is being forwarded to `side` and can still end (its source is
        /// neither gone nor closed).
        private func messageOpen(to side: RelaySide, _ streams: Streams) -> Bool {
            streams.insideMessage(to: side) && !self[side.peer].gone && !self[side.peer].closeReceived
        }

        /// A control frame may still be forwarded to `side`: nothing closes it yet.
        private func canForward(to side: RelaySide) -> Bool {
            let state = self[side]
            return !state.gone && !state.closeSent && state.queuedClose == nil && !state.disconnectRequested
        }

        private mutating func queueClose(_ code: UInt16, _ reason: String, to side: RelaySide, atMessageEnd: Bool = false) {
            guard canForward(to: side) else { return }
            self[side].queuedClose = QueuedClose(code: code, reason: reason, disconnectAfter: false, waitsForMessageEnd: atMessageEnd)
        }

        /// Sends every queued close that can go, disconnects every side that is done, the backend
        /// first, and reports the end once both connections are gone; `first` (the step's own
        /// action) goes before them, in the same list.
        private mutating func settle(_ streams: Streams, _ now: NIODeadline, after first: Action? = nil) -> [Action] {
            var actions: [Action] = []
            if let first { Self.add(first, to: &actions) }
            if let violator {
                let other = self[violator.side.peer]
                if other.gone || other.closeReceived || now >= violator.until {
                    // The linger is over: the other side gets its 1001, and from here the
                    // violator's close waits only for a frame boundary.
                    self.violator = nil
                    queueClose(CloseCode.goingAway, "", to: violator.side.peer)
                }
            }
            for side in [RelaySide.upstream, .downstream] where !self[side].gone {
                if let queued = self[side].queuedClose, violator?.side != side {
                    let source = side.peer
                    let waitsForMessage = queued.waitsForMessageEnd && (messageOpen(to: side, streams) || messageOpen(to: source, streams))
                    if !streams.insideFrame(to: side) && !waitsForMessage {
                        self[side].queuedClose = nil
                        self[side].closeSent = true
                        Self.add(.sendClose(code: queued.code, reason: queued.reason, to: side), to: &actions)
                        if queued.disconnectAfter && !self[side].disconnectRequested {
                            self[side].disconnectRequested = true
                            Self.add(.disconnect(side), to: &actions)
                        }
                    } else if self[source].gone {
                        // The frame being forwarded here can never end: no close can follow it.
                        self[side].queuedClose = nil
                        if !self[side].disconnectRequested {
                            self[side].disconnectRequested = true
                            Self.add(.disconnect(side), to: &actions)
                        }
                    }
                    // Otherwise the relay stops at the frame's end (bounded by the close timeout).
                }
                if self[side].handshakeDone && !self[side].disconnectRequested {
                    self[side].disconnectRequested = true
                    Self.add(.disconnect(side), to: &actions)
                }
            }
            if closingSince == nil && (downstream.closeSent || downstream.closeReceived || downstream.gone || downstream.queuedClose != nil
                || upstream.closeSent || upstream.closeReceived || upstream.gone || upstream.queuedClose != nil)
            {
                closingSince = now
            }
            if downstream.gone && upstream.gone && !isFinished {
                isFinished = true
                Self.add(.finished, to: &actions)
            }
            return actions
        }

        /// Appends to a step's action list, making room at the first for the few a step produces
        /// (one allocation for a close handshake's forward, closes, disconnects and end).
        private static func add(_ action: Action, to actions: inout [Action]) {
            if actions.capacity == 0 { actions.reserveCapacity(4) }
            actions.append(action)
        }

        private mutating func recordOutcome(_ initiator: RelaySide?, byGateway: Bool, code: UInt16?, reason: String, _ ending: Ending) {
            if outcome == nil { outcome = Outcome(initiator: initiator, byGateway: byGateway, code: code, reason: reason, ending: ending) }
        }

        static func closeReason(_ payload: [UInt8]) -> String {
            payload.count > 2 ? String(decoding: payload.dropFirst(2), as: UTF8.self) : ""
        }
    }
}

extension RelaySide {
    /// How operators name this side: "client" or "backend".
    var partyName: String { self == .downstream ? "client" : "backend" }
}
