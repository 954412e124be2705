import NIOCore
import NIOEmbedded
import Testing
@testable import Sluice

/// The loop's own timer heap: timers fire in deadline order at their deadlines, move and
/// cancel without firing; loops sharing a thread keep heaps of their own.
@Suite("Loop timers")
struct LoopTimersTests {
    /// A connection's timer, as the relay and the handlers keep one.
    final class Owner {
        var timer = DeadlineTimer()
        var fired: [NIODeadline] = []
        let loop: EmbeddedEventLoop
        init(loop: EmbeddedEventLoop) { self.loop = loop }

        func arm(at deadline: NIODeadline) {
            timer.arm(deadline, on: loop) { [self] in
                timer.fired()
                fired.append(loop.now)
            }
        }
    }

    static func freshLoop() -> (EmbeddedEventLoop, LoopTimers) {
        let loop = EmbeddedEventLoop()
        return (loop, LoopTimers.on(loop))
    }

    @Test("timers fire at their deadlines in order; an earlier deadline moves a timer, a later one does not; a cancelled timer never fires")
    func fireMoveCancel() throws {
        let (loop, timers) = Self.freshLoop()
        let start = loop.now
        let owners = (0..<6).map { _ in Owner(loop: loop) }
        for (index, owner) in owners.enumerated() { owner.arm(at: start + .seconds(Int64(10 - index))) }
        #expect(timers.count == 6)
        owners[0].arm(at: start + .seconds(1))  // earlier: moves
        owners[1].arm(at: start + .seconds(30))  // later: kept at 9
        owners[2].timer.cancel()
        #expect(timers.count == 5)
        loop.advanceTime(by: .seconds(1))
        #expect(owners[0].fired == [start + .seconds(1)])
        loop.advanceTime(by: .seconds(6))
        #expect(owners[5].fired == [start + .seconds(5)] && owners[4].fired == [start + .seconds(6)] && owners[3].fired == [start + .seconds(7)])
        #expect(owners[1].fired.isEmpty)
        loop.advanceTime(by: .seconds(2))
        #expect(owners[1].fired == [start + .seconds(9)])
        loop.advanceTime(by: .seconds(60))
        #expect(owners[2].fired.isEmpty, "cancelled")
        #expect(owners.map(\.fired.count) == [1, 1, 0, 1, 1, 1])
        #expect(timers.count == 0)
        // A timer is armed again after it fired, in the same slot.
        owners[0].arm(at: loop.now + .seconds(3))
        loop.advanceTime(by: .seconds(3))
        #expect(owners[0].fired.count == 2)
        try loop.syncShutdownGracefully()
    }

    @Test("a thousand timers armed and cancelled in random order: the rest fire, each once, in order")
    func manyRandom() throws {
        let (loop, timers) = Self.freshLoop()
        let start = loop.now
        var generator = SystemRandomNumberGenerator()
        let owners = (0..<1000).map { _ in Owner(loop: loop) }
        var deadlines: [Int64] = []
        for owner in owners {
            let seconds = Int64.random(in: 1...500, using: &generator)
            deadlines.append(seconds)
            owner.arm(at: start + .seconds(seconds))
        }
        let cancelled = Set((0..<1000).shuffled(using: &generator).prefix(400))
        for index in cancelled { owners[index].timer.cancel() }
        #expect(timers.count == 600)
        for _ in 1...500 { loop.advanceTime(by: .seconds(1)) }
        for (index, owner) in owners.enumerated() {
            #expect(owner.fired.count == (cancelled.contains(index) ? 0 : 1), "timer \(index)")
            if let at = owner.fired.first { #expect(at == start + .seconds(deadlines[index])) }
        }
        #expect(timers.count == 0)
        try loop.syncShutdownGracefully()
    }

    @Test("two loops on one thread keep separate heaps: each fires its own timers when its own clock reaches them")
    func loopsSharingAThread() throws {
        let (first, firstTimers) = Self.freshLoop()
        let (second, secondTimers) = Self.freshLoop()
        #expect(firstTimers !== secondTimers)
        let held = Owner(loop: first)
        held.arm(at: first.now + .seconds(5))
        let other = Owner(loop: second)
        other.arm(at: second.now + .seconds(2))
        second.advanceTime(by: .seconds(10))
        #expect(other.fired.count == 1 && held.fired.isEmpty, "the second loop's clock does not fire the first's timers")
        other.arm(at: second.now + .seconds(2))
        other.timer.cancel()
        second.advanceTime(by: .seconds(5))
        #expect(other.fired.count == 1, "cancelled")
        first.advanceTime(by: .seconds(5))
        #expect(held.fired.count == 1)
        try first.syncShutdownGracefully()
        try second.syncShutdownGracefully()
    }

    @Test("timers due together: one whose closure cancels another, or arms it for later, decides for it; a timer armed again for a past deadline fires again, once per arm")
    func dueTogether() throws {
        let (loop, timers) = Self.freshLoop()
        let start = loop.now
        let (first, cancelled, moved) = (Owner(loop: loop), Owner(loop: loop), Owner(loop: loop))
        // Due at the same instant, armed in this order: `first` fires first and decides for both.
        first.timer.arm(start + .seconds(1), on: loop) { [first, cancelled, moved] in
            first.timer.fired()
            first.fired.append(loop.now)
            cancelled.timer.cancel()
            moved.timer.cancel()
            moved.arm(at: start + .seconds(5))
        }
        cancelled.arm(at: start + .seconds(1))
        moved.arm(at: start + .seconds(1))
        loop.advanceTime(by: .seconds(1))
        #expect(first.fired.count == 1)
        #expect(cancelled.fired.isEmpty, "cancelled by a closure of the same batch")
        #expect(moved.fired.isEmpty, "armed again for later by a closure of the same batch")
        loop.advanceTime(by: .seconds(4))
        #expect(moved.fired == [start + .seconds(5)])
        #expect(cancelled.fired.isEmpty)

        var runs = 0
        let again = Owner(loop: loop)
        func rearm() {
            again.timer.arm(loop.now - .seconds(1), on: loop) {
                again.timer.fired()
                runs += 1
                if runs < 3 { rearm() }
            }
        }
        rearm()
        loop.run()
        #expect(runs == 3, "each arm for a past deadline fired once")
        #expect(timers.count == 0)
        try loop.syncShutdownGracefully()
    }

    @Test("a one-shot timer runs once at its deadline")
    func oneShot() throws {
        let (loop, _) = Self.freshLoop()
        var runs: [NIODeadline] = []
        LoopTimers.schedule(at: loop.now + .seconds(10), on: loop) { runs.append(loop.now) }
        loop.advanceTime(by: .seconds(9))
        #expect(runs.isEmpty)
        loop.advanceTime(by: .seconds(5))
        #expect(runs == [loop.now - .seconds(4)])
        try loop.syncShutdownGracefully()
    }
}
