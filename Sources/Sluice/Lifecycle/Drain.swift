import SluiceConfig

/// The order of a drain and its waits, on an injected clock so tests run it on time of their
/// own. For a shutdown (SIGTERM, `POST /drain`) and for listeners a reload removes:
///
/// 1. announce it: `/readyz` turns 503, the service manager hears STOPPING=1;
/// 2. wait `readinessDelay` while listeners still accept (balancers need to see the 503);
/// 3. stop accepting; idle kept-alive HTTP connections close, busy ones after their answer;
/// 4. close every live WebSocket (at a frame boundary) at a moment drawn at random in
///    `drainWindow`, so clients do not reconnect in one stampede;
/// 5. wait until nothing is open, and at `deadline` (from the start) close what still is.
struct DrainProcedure<C: Clock> where C.Duration == Duration {
    /// How a drain ended.
    struct Outcome: Equatable {
        /// Connections closed at the deadline rather than by their close handshake.
        var forced: Int
    }

    let readinessDelay: Duration
    let drainWindow: Duration
    let deadline: Duration
    let clock: C
    /// How often "anything left?" is asked while waiting.
    var pollInterval: Duration = .milliseconds(20)

    init(_ settings: ShutdownConfiguration, announced: Bool = true, clock: C) {
        readinessDelay = announced ? settings.readinessDelay : .zero
        drainWindow = settings.drainWindow
        deadline = settings.deadline
        self.clock = clock
    }

    func run(_ steps: DrainSteps) async -> Outcome {
        let start = clock.now
        steps.announce()
        if readinessDelay > .zero { try? await clock.sleep(for: readinessDelay) }
        await steps.stopAccepting()
        steps.closeWebSockets(drainWindow)
        let end = start.advanced(by: deadline)
        while steps.remaining() > 0 && clock.now < end {
            let left = clock.now.duration(to: end)
            try? await clock.sleep(for: min(pollInterval, left))
        }
        let left = steps.remaining()
        if left > 0 { steps.forceClose() }
        return Outcome(forced: left)
    }
}

/// What a drain does to the gateway, step by step (see `DrainProcedure`).
struct DrainSteps: Sendable {
    var announce: @Sendable () -> Void
    var stopAccepting: @Sendable () async -> Void
    /// Schedules each chosen WebSocket's close within the window.
    var closeWebSockets: @Sendable (_ window: Duration) -> Void
    /// Connections still open (the drain ends when none are).
    var remaining: @Sendable () -> Int
    /// The deadline passed: close what is left at the TCP level.
    var forceClose: @Sendable () -> Void
}

/// When each WebSocket of a drain gets its close: uniformly in the window, in random order.
enum DrainSchedule {
    static func offsets(count: Int, window: Duration, using generator: inout some RandomNumberGenerator) -> [Duration] {
        guard window > .zero else { return Array(repeating: .zero, count: count) }
        let nanoseconds = window.components.seconds * 1_000_000_000 + window.components.attoseconds / 1_000_000_000
        return (0..<count).map { _ in .nanoseconds(Int64.random(in: 0..<max(1, nanoseconds), using: &generator)) }
    }
}
