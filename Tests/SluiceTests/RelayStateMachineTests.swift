import NIOCore
import Testing
@testable import Sluice

/// The relay's close paths and timers, without channels, on a clock of the test's own.
@Suite("Relay state machine")
struct RelayStateMachineTests {
    typealias Machine = WebSocketRelay.StateMachine
    typealias Streams = Machine.Streams

    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static let timing = Machine.Timing(closeTimeout: .seconds(5), idleTimeout: .seconds(60), pingInterval: nil, pongTimeout: .seconds(10), maxLifetime: nil)
    static let between = Streams.betweenFrames
    static let insideToUpstream = Streams(insideFrameToDownstream: false, insideFrameToUpstream: true)
    static let insideToDownstream = Streams(insideFrameToDownstream: true, insideFrameToUpstream: false)

    static func close(_ code: UInt16, _ reason: String = "") -> RelayDirection.ControlFrame {
        let payload = [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8)
        return RelayDirection.ControlFrame(opcode: 8, payload: payload, wire: [0x88, UInt8(payload.count)] + payload)
    }

    static func machine(_ timing: Machine.Timing = timing) -> Machine { Machine(timing: timing, now: t0) }

    @Test("a client-initiated close is forwarded both ways; the backend is disconnected first")
    func clientInitiated() {
        var machine = Self.machine()
        let clientClose = Self.close(1000, "bye")
        #expect(machine.controlFrame(clientClose, from: .downstream, streams: Self.between, now: Self.t0) == [.forward(clientClose, to: .upstream)])
        #expect(machine.phase(of: .downstream) == .awaitingAnswer)
        #expect(machine.phase(of: .upstream) == .awaitingClose)
        let backendClose = Self.close(1000)
        #expect(machine.controlFrame(backendClose, from: .upstream, streams: Self.between, now: Self.t0) == [
            .forward(backendClose, to: .downstream), .disconnect(.upstream), .disconnect(.downstream),
        ])
        #expect(machine.peerGone(.upstream, streams: Self.between, now: Self.t0) == [])
        #expect(machine.peerGone(.downstream, streams: Self.between, now: Self.t0) == [.finished])
        #expect(machine.outcome == .init(initiator: .downstream, byGateway: false, code: 1000, reason: "bye", ending: .closeHandshake))
        #expect(machine.isFinished)
    }

    @Test("a backend-initiated close waits for the client's answer")
    func backendInitiated() {
        var machine = Self.machine()
        let backendClose = Self.close(4001, "backend bye")
        #expect(machine.controlFrame(backendClose, from: .upstream, streams: Self.between, now: Self.t0) == [.forward(backendClose, to: .downstream)])
        let clientClose = Self.close(4001)
        #expect(machine.controlFrame(clientClose, from: .downstream, streams: Self.between, now: Self.t0) == [
            .forward(clientClose, to: .upstream), .disconnect(.upstream), .disconnect(.downstream),
        ])
    }

    @Test("a vanished backend gets the client a 1014; a vanished client gets the backend a 1001")
    func peerGone() {
        var machine = Self.machine()
        #expect(machine.peerGone(.upstream, streams: Self.between, now: Self.t0) == [
            .sendClose(code: 1014, reason: "backend went away", to: .downstream),
        ])
        #expect(machine.controlFrame(Self.close(1014), from: .downstream, streams: Self.between, now: Self.t0) == [.disconnect(.downstream)])
        #expect(machine.peerGone(.downstream, streams: Self.between, now: Self.t0) == [.finished])
        #expect(machine.outcome?.ending == .vanished)

        var other = Self.machine()
        #expect(other.peerGone(.downstream, streams: Self.between, now: Self.t0) == [.sendClose(code: 1001, reason: "", to: .upstream)])
        #expect(other.peerGone(.upstream, streams: Self.between, now: Self.t0) == [.finished])
    }

    @Test("a client that vanishes inside a frame gets the backend disconnected at once, without a close")
    func clientVanishesMidFrame() {
        var machine = Self.machine()
        #expect(machine.peerGone(.downstream, streams: Self.insideToUpstream, now: Self.t0) == [.disconnect(.upstream)])
        #expect(machine.outcome == .init(initiator: .downstream, byGateway: false, code: nil, reason: "client vanished inside a frame", ending: .vanishedMidFrame))
        #expect(machine.peerGone(.upstream, streams: Self.between, now: Self.t0) == [.finished])
    }

    @Test("a backend that vanishes inside a frame gets the client disconnected, even while the client's own close waits")
    func backendVanishesMidFrame() {
        var machine = Self.machine()
        // The client closes while the backend is mid-frame: the close is forwarded (the client's
        // stream is between frames), and the client awaits the backend's answer.
        _ = machine.controlFrame(Self.close(1000), from: .downstream, streams: Self.insideToDownstream, now: Self.t0)
        // The backend goes before the frame it was sending ends: the client can never get a
        // valid close, so its connection is closed.
        let actions = machine.peerGone(.upstream, streams: Self.insideToDownstream, now: Self.t0)
        #expect(actions == [.disconnect(.downstream)])
    }

    @Test("a kick waiting for a frame boundary ends when the source vanishes: the destination is disconnected")
    func boundaryNeverComes() {
        var machine = Self.machine()
        let kick = machine.closeBoth(downstreamCode: 1008, upstreamCode: 1001, reason: "closed by operator", ending: .kicked, streams: Self.insideToUpstream, now: Self.t0)
        #expect(kick == [.sendClose(code: 1008, reason: "closed by operator", to: .downstream)])
        #expect(machine.awaitsBoundary(to: .upstream))
        #expect(machine.phase(of: .upstream) == .closeQueued)
        #expect(machine.peerGone(.downstream, streams: Self.insideToUpstream, now: Self.t0) == [.disconnect(.upstream)])
        #expect(machine.outcome?.ending == .kicked)
    }

    @Test("a queued close goes out at the frame boundary")
    func boundaryArrives() {
        var machine = Self.machine()
        _ = machine.closeBoth(downstreamCode: 1001, upstreamCode: 1001, reason: "idle timeout", ending: .idleTimeout, streams: Self.insideToDownstream, now: Self.t0)
        #expect(machine.awaitsBoundary(to: .downstream))
        #expect(machine.frameBoundary(streams: Self.between, now: Self.t0) == [.sendClose(code: 1001, reason: "idle timeout", to: .downstream)])
        #expect(!machine.awaitsBoundary(to: .downstream))
    }

    @Test("a drain's close waits for the end of a fragmented message, not only of a frame; a kick does not")
    func drainWaitsForTheMessageEnd() {
        let betweenFragments = Streams(insideMessageToDownstream: true)
        var drain = Self.machine()
        // The backend is sending a fragmented message: neither side is closed until it ends (the
        // backend would answer its close before finishing the message).
        #expect(drain.closeBoth(downstreamCode: 1001, upstreamCode: 1001, reason: "gateway shutting down", ending: .shutdown, streams: betweenFragments, now: Self.t0) == [])
        #expect(drain.awaitsBoundary(to: .downstream))
        // The next fragment ends, the message does not: still waiting.
        #expect(drain.frameBoundary(streams: betweenFragments, now: Self.t0) == [])
        #expect(drain.frameBoundary(streams: Self.between, now: Self.t0) == [
            .sendClose(code: 1001, reason: "gateway shutting down", to: .upstream),
            .sendClose(code: 1001, reason: "gateway shutting down", to: .downstream),
        ])

        var kick = Self.machine()
        #expect(kick.closeBoth(downstreamCode: 1008, upstreamCode: 1001, reason: "kick", ending: .kicked, streams: betweenFragments, now: Self.t0).count == 2)

        // A backend that closes inside its fragmented message will never end it: no wait; its
        // close goes to the client, and the gateway's own answers the backend.
        var closing = Self.machine()
        _ = closing.closeBoth(downstreamCode: 1001, upstreamCode: 1001, reason: "gateway shutting down", ending: .shutdown, streams: betweenFragments, now: Self.t0)
        let actions = closing.controlFrame(Self.close(1001), from: .upstream, streams: betweenFragments, now: Self.t0)
        #expect(actions == [
            .sendClose(code: 1001, reason: "gateway shutting down", to: .upstream), .disconnect(.upstream),
            .sendClose(code: 1001, reason: "gateway shutting down", to: .downstream),
        ], "\(actions)")
    }

    @Test("a frame boundary that never comes is bounded by the close timeout: both connections are aborted")
    func closeTimeoutAborts() {
        var machine = Self.machine()
        _ = machine.closeBoth(downstreamCode: 1001, upstreamCode: 1001, reason: "gateway shutting down", ending: .shutdown, streams: Self.insideToDownstream, now: Self.t0)
        let deadline = machine.nextDeadline(lastActivity: Self.t0)
        #expect(deadline == Self.t0 + .seconds(5))
        let early = machine.timerFired(now: Self.t0 + .seconds(4), lastActivity: Self.t0, lastHeard: (Self.t0, Self.t0), streams: Self.insideToDownstream)
        #expect(early == [])
        let actions = machine.timerFired(now: Self.t0 + .seconds(5), lastActivity: Self.t0, lastHeard: (Self.t0, Self.t0), streams: Self.insideToDownstream)
        #expect(actions == [.abort(.upstream), .abort(.downstream)])
        // Nothing more to time: the connections' ends are what is left to come.
        #expect(machine.nextDeadline(lastActivity: Self.t0) == nil)
        #expect(machine.timerFired(now: Self.t0 + .seconds(6), lastActivity: Self.t0, lastHeard: (Self.t0, Self.t0), streams: Self.between) == [])
    }

    @Test("a kick of a connection already closing answers whoever still waits, and keeps the first close deadline")
    func kickWhileClosing() {
        var machine = Self.machine()
        _ = machine.controlFrame(Self.close(1000), from: .upstream, streams: Self.between, now: Self.t0)
        // The backend waits for the client's answer; the kick answers it instead.
        #expect(machine.closeBoth(downstreamCode: 1008, upstreamCode: 1001, reason: "closed by operator", ending: .kicked, streams: Self.between, now: Self.t0 + .seconds(1)) == [
            .sendClose(code: 1001, reason: "closed by operator", to: .upstream), .disconnect(.upstream),
        ])
        #expect(machine.nextDeadline(lastActivity: Self.t0) == Self.t0 + .seconds(5))
        #expect(machine.outcome?.ending == .closeHandshake)
    }

    @Test("after a violation the other side is heard for a moment, then the violator gets its code and the other side 1001")
    func violationLingers() {
        var machine = Self.machine()
        // Nothing goes out at once: what the backend sends meanwhile still reaches the client.
        #expect(machine.violation(code: 1002, reason: "bad", from: .downstream, streams: Self.between, now: Self.t0) == [])
        #expect(machine.phase(of: .downstream) == .closeQueued)
        #expect(!machine.awaitsBoundary(to: .downstream))
        #expect(machine.nextDeadline(lastActivity: Self.t0) == Self.t0 + .milliseconds(250))
        let ended = machine.timerFired(now: Self.t0 + .milliseconds(250), lastActivity: Self.t0, lastHeard: (Self.t0, Self.t0), streams: Self.between)
        #expect(ended == [
            .sendClose(code: 1001, reason: "", to: .upstream),
            .sendClose(code: 1002, reason: "bad", to: .downstream), .disconnect(.downstream),
        ])
        #expect(machine.controlFrame(Self.close(1001), from: .upstream, streams: Self.between, now: Self.t0 + .milliseconds(260)) == [.disconnect(.upstream)])
        #expect(machine.outcome == .init(initiator: .downstream, byGateway: true, code: 1002, reason: "bad", ending: .violation))
    }

    @Test("the linger ends early when the other side closes or vanishes")
    func violationLingerEndsEarly() {
        var closing = Self.machine()
        _ = closing.violation(code: 1009, reason: "too big", from: .upstream, streams: Self.between, now: Self.t0)
        #expect(closing.controlFrame(Self.close(1000), from: .downstream, streams: Self.between, now: Self.t0 + .milliseconds(10)) == [
            .sendClose(code: 1009, reason: "too big", to: .upstream), .disconnect(.upstream),
            .sendClose(code: 1001, reason: "", to: .downstream), .disconnect(.downstream),
        ])
        var vanishing = Self.machine()
        _ = vanishing.violation(code: 1002, reason: "bad", from: .downstream, streams: Self.between, now: Self.t0)
        #expect(vanishing.peerGone(.upstream, streams: Self.between, now: Self.t0) == [
            .sendClose(code: 1002, reason: "bad", to: .downstream), .disconnect(.downstream),
        ])
        // A linger is never longer than a quarter of a short close timeout.
        var short = Self.machine(Machine.Timing(closeTimeout: .milliseconds(400), idleTimeout: nil, pingInterval: nil, pongTimeout: .seconds(1), maxLifetime: nil))
        _ = short.violation(code: 1002, reason: "bad", from: .downstream, streams: Self.between, now: Self.t0)
        #expect(short.nextDeadline(lastActivity: Self.t0) == Self.t0 + .milliseconds(100))
    }

    @Test("idle, lifetime and expiry close both sides, each at its own deadline")
    func openTimers() {
        var timing = Self.timing
        timing.maxLifetime = .seconds(30)
        var machine = Self.machine(timing)
        machine.expire(at: Self.t0 + .seconds(20))
        #expect(machine.nextDeadline(lastActivity: Self.t0) == Self.t0 + .seconds(20))
        let expired = machine.timerFired(now: Self.t0 + .seconds(20), lastActivity: Self.t0 + .seconds(19), lastHeard: (Self.t0, Self.t0), streams: Self.between)
        #expect(expired == [.sendClose(code: 1001, reason: "credential expired", to: .upstream), .sendClose(code: 1008, reason: "credential expired", to: .downstream)])

        var lifetime = Self.machine(timing)
        #expect(lifetime.nextDeadline(lastActivity: Self.t0 + .seconds(25)) == Self.t0 + .seconds(30))
        #expect(lifetime.timerFired(now: Self.t0 + .seconds(30), lastActivity: Self.t0 + .seconds(29), lastHeard: (Self.t0, Self.t0), streams: Self.between).count == 2)
        #expect(lifetime.outcome?.ending == .maxLifetime)

        var idle = Self.machine()
        // Activity moved the deadline on: an early wake-up does nothing.
        #expect(idle.timerFired(now: Self.t0 + .seconds(60), lastActivity: Self.t0 + .seconds(30), lastHeard: (Self.t0, Self.t0), streams: Self.between) == [])
        #expect(idle.nextDeadline(lastActivity: Self.t0 + .seconds(30)) == Self.t0 + .seconds(90))
        #expect(idle.timerFired(now: Self.t0 + .seconds(90), lastActivity: Self.t0 + .seconds(30), lastHeard: (Self.t0, Self.t0), streams: Self.between).count == 2)
        #expect(idle.idleTimedOut)
    }

    @Test("the gateway's pongs are consumed; a side silent after a ping for pong_timeout is dropped")
    func pings() {
        var timing = Self.timing
        timing.pingInterval = .seconds(10)
        timing.pongTimeout = .seconds(3)
        var machine = Self.machine(timing)
        #expect(machine.nextDeadline(lastActivity: Self.t0) == Self.t0 + .seconds(10))
        let tick = machine.timerFired(now: Self.t0 + .seconds(10), lastActivity: Self.t0, lastHeard: (Self.t0, Self.t0), streams: Self.insideToDownstream)
        // The client is receiving a frame: it is skipped this round.
        guard tick.count == 1, case .sendPing(let payload, to: .upstream) = tick[0] else {
            Issue.record("expected one ping to the backend: \(tick)")
            return
        }
        #expect(machine.nextDeadline(lastActivity: Self.t0) == Self.t0 + .seconds(13))
        let ourPong = RelayDirection.ControlFrame(opcode: 10, payload: payload, wire: [])
        #expect(machine.controlFrame(ourPong, from: .upstream, streams: Self.between, now: Self.t0 + .seconds(11)) == [])
        #expect(machine.controlFrame(ourPong, from: .upstream, streams: Self.between, now: Self.t0 + .seconds(11)) == [.forward(ourPong, to: .downstream)])
        let ping = RelayDirection.ControlFrame(opcode: 9, payload: [1], wire: [0x89, 1, 1])
        #expect(machine.controlFrame(ping, from: .downstream, streams: Self.between, now: Self.t0 + .seconds(11)) == [.forward(ping, to: .upstream)])

        // Next round: the backend stays silent past the pong timeout.
        _ = machine.timerFired(now: Self.t0 + .seconds(20), lastActivity: Self.t0 + .seconds(19), lastHeard: (Self.t0 + .seconds(19), Self.t0 + .seconds(11)), streams: Self.between)
        let silent = machine.timerFired(now: Self.t0 + .seconds(23), lastActivity: Self.t0 + .seconds(19), lastHeard: (Self.t0 + .seconds(22), Self.t0 + .seconds(11)), streams: Self.between)
        #expect(silent == [
            .sendClose(code: 1001, reason: "no answer to ping", to: .upstream), .disconnect(.upstream),
            .sendClose(code: 1014, reason: "backend not responding", to: .downstream),
        ])
        #expect(machine.outcome?.ending == .pingTimeout)
    }

    @Test("after a close went to a side, nothing more is forwarded to it")
    func nothingAfterClose() {
        var machine = Self.machine()
        _ = machine.controlFrame(Self.close(1000), from: .downstream, streams: Self.between, now: Self.t0)
        let ping = RelayDirection.ControlFrame(opcode: 9, payload: [], wire: [0x89, 0])
        #expect(machine.controlFrame(ping, from: .downstream, streams: Self.between, now: Self.t0) == [])
    }
}

/// Every state the relay can reach has a bounded way out: walked as a table of states × events.
@Suite("Relay state machine: every state ends")
struct RelayStateMachineBoundsTests {
    typealias Machine = WebSocketRelay.StateMachine
    typealias Streams = Machine.Streams

    /// The events a relay can meet; each is tried in every reachable state.
    enum Event: CaseIterable {
        case closeFromClient, closeFromBackend
        case pingFromClient, pongFromBackend
        case violationByClient, violationByBackend
        case clientGoneBetweenFrames, clientGoneMidFrame, backendGoneBetweenFrames, backendGoneMidFrame
        case kickWhileFrameToClient, shutdownBetweenFrames
        case boundary
        case timer

    }

    static let timing = Machine.Timing(closeTimeout: .seconds(5), idleTimeout: .seconds(60), pingInterval: .seconds(20), pongTimeout: .seconds(5), maxLifetime: nil)
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    /// One relay under test: the machine, the clock, and what its actions did to the sockets.
    struct Run {
        var machine = Machine(timing: RelayStateMachineBoundsTests.timing, now: RelayStateMachineBoundsTests.t0)
        var now = RelayStateMachineBoundsTests.t0
        var streams = Streams.betweenFrames
        var finished = 0
        var trace: [String] = []
        /// Sides that can send nothing more: gone, or their close or violation was read (the
        /// relay reads nothing after either).
        var silenced: Set<RelaySide> = []

        /// The side an event comes from, when it comes from a peer.
        static func source(of event: Event) -> RelaySide? {
            switch event {
            case .closeFromClient, .pingFromClient, .violationByClient, .clientGoneBetweenFrames, .clientGoneMidFrame: .downstream
            case .closeFromBackend, .pongFromBackend, .violationByBackend, .backendGoneBetweenFrames, .backendGoneMidFrame: .upstream
            case .kickWhileFrameToClient, .shutdownBetweenFrames, .boundary, .timer: nil
            }
        }

        mutating func apply(_ event: Event) {
            if let source = Self.source(of: event) {
                if silenced.contains(source) { return }
                switch event {
                case .closeFromClient, .closeFromBackend, .violationByClient, .violationByBackend,
                    .clientGoneBetweenFrames, .clientGoneMidFrame, .backendGoneBetweenFrames, .backendGoneMidFrame:
                    silenced.insert(source)
                default: break
                }
            }
            trace.append("\(event)")
            let close = RelayStateMachineTests.close(1000)
            let actions: [Machine.Action]
            switch event {
            case .closeFromClient: actions = machine.controlFrame(close, from: .downstream, streams: streams, now: now)
            case .closeFromBackend: actions = machine.controlFrame(close, from: .upstream, streams: streams, now: now)
            case .pingFromClient:
                actions = machine.controlFrame(.init(opcode: 9, payload: [], wire: [0x89, 0]), from: .downstream, streams: streams, now: now)
            case .pongFromBackend:
                actions = machine.controlFrame(.init(opcode: 10, payload: [], wire: [0x8A, 0]), from: .upstream, streams: streams, now: now)
            case .violationByClient: actions = machine.violation(code: 1002, reason: "bad", from: .downstream, streams: streams, now: now)
            case .violationByBackend: actions = machine.violation(code: 1009, reason: "big", from: .upstream, streams: streams, now: now)
            case .clientGoneBetweenFrames:
                streams.insideFrameToUpstream = false
                actions = machine.peerGone(.downstream, streams: streams, now: now)
            case .clientGoneMidFrame:
                streams.insideFrameToUpstream = true
                actions = machine.peerGone(.downstream, streams: streams, now: now)
            case .backendGoneBetweenFrames:
                streams.insideFrameToDownstream = false
                actions = machine.peerGone(.upstream, streams: streams, now: now)
            case .backendGoneMidFrame:
                streams.insideFrameToDownstream = true
                actions = machine.peerGone(.upstream, streams: streams, now: now)
            case .kickWhileFrameToClient:
                streams.insideFrameToDownstream = true
                actions = machine.closeBoth(downstreamCode: 1008, upstreamCode: 1001, reason: "kick", ending: .kicked, streams: streams, now: now)
            case .shutdownBetweenFrames:
                actions = machine.closeBoth(downstreamCode: 1001, upstreamCode: 1001, reason: "shutdown", ending: .shutdown, streams: streams, now: now)
            case .boundary:
                // Only a live source can bring a frame to its end.
                if machine.phase(of: .upstream) != .gone { streams.insideFrameToDownstream = false }
                if machine.phase(of: .downstream) != .gone { streams.insideFrameToUpstream = false }
                actions = machine.frameBoundary(streams: streams, now: now)
            case .timer:
                if let deadline = machine.nextDeadline(lastActivity: RelayStateMachineBoundsTests.t0), deadline > now { now = deadline }
                actions = machine.timerFired(now: now, lastActivity: RelayStateMachineBoundsTests.t0, lastHeard: (RelayStateMachineBoundsTests.t0, RelayStateMachineBoundsTests.t0), streams: streams)
            }
            react(to: actions)
        }

        /// What the sockets do with the actions, in the worst case for liveness: a graceful
        /// disconnect never completes (the peer reads nothing), only an abort closes at once.
        mutating func react(to actions: [Machine.Action]) {
            for action in actions {
                switch action {
                case .abort(let side):
                    silenced.insert(side)
                    react(to: machine.peerGone(side, streams: streams, now: now))
                case .finished:
                    finished += 1
                default:
                    break
                }
            }
        }

        /// Lets time pass with no event from either peer; returns when the relay finished.
        mutating func runOutTheClock(limit: Int = 8) -> NIODeadline? {
            var lastDeadline: NIODeadline?
            for _ in 0..<limit {
                if machine.isFinished { return now }
                guard let deadline = machine.nextDeadline(lastActivity: RelayStateMachineBoundsTests.t0) else { return nil }
                // A deadline already handled must not come back: the relay's timer would spin.
                if let lastDeadline, deadline <= lastDeadline { return nil }
                lastDeadline = deadline
                now = max(now, deadline)
                react(to: machine.timerFired(now: now, lastActivity: RelayStateMachineBoundsTests.t0, lastHeard: (RelayStateMachineBoundsTests.t0, RelayStateMachineBoundsTests.t0), streams: streams))
            }
            return machine.isFinished ? now : nil
        }
    }

    @Test("from every state reached by up to four events, time alone ends the relay, within close_timeout once closing")
    func everyStateEnds() {
        var seen: Set<String> = []
        var checked = 0
        func explore(_ run: Run, depth: Int) {
            let phases = "\(run.machine.phase(of: .downstream))/\(run.machine.phase(of: .upstream))"
            seen.insert(phases)
            checked += 1
            #expect(run.finished <= 1, "finished twice after \(run.trace)")
            var idle = run
            let closingStarted = !run.machine.isOpen ? run.now : nil
            if !run.machine.isFinished {
                #expect(run.machine.nextDeadline(lastActivity: Self.t0) != nil, "no timer in \(phases) after \(run.trace)")
            }
            let end = idle.runOutTheClock()
            #expect(end != nil, "never finished from \(phases) after \(run.trace)")
            if let closingStarted, let end {
                // Closing began at or before the last event; it ends within close_timeout of that start.
                #expect(end - closingStarted <= Self.timing.closeTimeout, "took \(end - closingStarted) from \(phases) after \(run.trace)")
            }
            guard depth > 0, !run.machine.isFinished else { return }
            for event in Event.allCases {
                var next = run
                next.apply(event)
                explore(next, depth: depth - 1)
            }
        }
        explore(Run(), depth: 4)
        // The walk reached every phase on each side.
        for phase in Machine.Phase.allCases {
            #expect(seen.contains { $0.hasPrefix("\(phase)/") }, "client side never \(phase)")
            #expect(seen.contains { $0.hasSuffix("/\(phase)") }, "backend side never \(phase)")
        }
        #expect(checked > 10_000)
    }

    @Test("closing never takes longer than close_timeout from its first event, whatever comes after")
    func closingIsBoundedFromItsStart() {
        // Closing starts with the first event; any sequence of later events (but the boundary
        // that a vanished source can never bring) still ends by then.
        for first in Event.allCases where first != .timer && first != .boundary && first != .pingFromClient && first != .pongFromBackend {
            for second in Event.allCases {
                for third in Event.allCases {
                    var run = Run()
                    run.apply(first)
                    let start = run.now
                    run.apply(second)
                    run.apply(third)
                    let end = run.runOutTheClock()
                    #expect(end != nil && end! - start <= Self.timing.closeTimeout, "\(run.trace) \(run.machine.phase(of: .downstream))/\(run.machine.phase(of: .upstream))")
                }
            }
        }
    }
}
