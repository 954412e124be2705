import NIOCore

/// Opens connections at exact times with one event loop's timers, at most `window` in flight.
///
/// Task sleeps wake late on a busy core and then start the opens that fell due in a burst; a
/// burst queues in the gateway and shows up as its handshake latency. The loop's timers keep an
/// open-loop schedule, so the latency measured is the gateway's, not the load generator's.
final class PacedOpens: @unchecked Sendable {  // every mutable field is touched only on `loop`
    /// What the opens came to.
    struct Outcome: Sendable {
        var channels: [any Channel] = []
        /// Seconds from each successful open's connect to its 101.
        var handshakes: [Double] = []
        var failures = 0
        var firstError: String?
    }

    typealias Open = @Sendable (Int) -> EventLoopFuture<(channel: any Channel, handshake: TimeAmount)>

    private let loop: any EventLoop
    private let total: Int
    private let rate: Int
    private let window: Int
    private let open: Open
    private let done: EventLoopPromise<Outcome>
    private var started = NIODeadline.now()
    private var next = 0
    private var inFlight = 0
    private var timerArmed = false
    private var outcome = Outcome()

    init(loop: any EventLoop, total: Int, rate: Int, window: Int = 64, open: @escaping Open) {
        precondition(total > 0 && rate > 0 && window > 0)
        self.loop = loop
        self.total = total
        self.rate = rate
        self.window = window
        self.open = open
        done = loop.makePromise()
    }

    /// Starts the schedule now; the future completes once every open has succeeded or failed.
    func run() -> EventLoopFuture<Outcome> {
        loop.execute { [self] in
            started = .now()
            pump()
        }
        return done.futureResult
    }

    /// Starts every open that is due while the window has room, and arms the timer for the next.
    private func pump() {
        while next < total && inFlight < window {
            let due = started + .nanoseconds(Int64(Double(next) * 1e9 / Double(rate)))
            if due > .now() {
                if !timerArmed {
                    timerArmed = true
                    loop.scheduleTask(deadline: due) { [self] in
                        timerArmed = false
                        pump()
                    }
                }
                return
            }
            let index = next
            next += 1
            inFlight += 1
            open(index).hop(to: loop).whenComplete { [self] result in
                inFlight -= 1
                switch result {
                case .success(let (channel, handshake)):
                    outcome.channels.append(channel)
                    outcome.handshakes.append(Double(handshake.nanoseconds) / 1e9)
                case .failure(let error):
                    outcome.failures += 1
                    outcome.firstError = outcome.firstError ?? "\(error)"
                }
                if next == total && inFlight == 0 { done.succeed(outcome) } else { pump() }
            }
        }
    }
}
