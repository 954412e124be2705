import NIOCore
import NIOPosix

/// The gateway's connection timers on one event loop, kept in a heap of their own that NIO
/// sees as one scheduled task (at the earliest deadline).
///
/// NIO keeps scheduled tasks in a heap whose cancellation searches it from end to end: with a
/// timer pending for every connection (an idle timeout, a WebSocket's early-close window),
/// every cancellation — three or four in each handshake, one in each close — cost a scan of all
/// of them, so the price of a handshake grew with the connections held (4.6% of a handshake's
/// CPU with 5,000 held). Here each timer knows its place in the heap: arming, moving and
/// cancelling are O(log n), and NIO's own heap stays a few entries deep.
///
/// One instance per event loop, found through its thread: each loop's thread reads and writes
/// only its own, which is why the unchecked access is safe (every lookup, arm and cancel checks
/// it runs on the loop's thread, as NIO's `assumeIsolated` does). Embedded loops in tests share a
/// thread; each gets its own heap, forgotten when its loop is gone.
final class LoopTimers {
    /// A timer's place in the heap, kept across arms (allocated once per owner).
    final class Slot {
        fileprivate(set) var deadline = NIODeadline.distantFuture
        /// Its index in `heap`, or nil when it is not pending.
        fileprivate var index: Int?
        fileprivate var fire: (() -> Void)?
        /// The loop's timers it was last armed in.
        fileprivate(set) weak var owner: LoopTimers?

        var isPending: Bool { index != nil }
    }

    /// The timers of the loops of one thread: in production the one loop's; embedded loops in
    /// tests share a thread.
    private final class OfThread {
        var all: [LoopTimers] = []
    }

    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<OfThread>()

    private var heap: [Slot] = []
    private weak var loop: (any EventLoop)?
    private var wakeUp: Scheduled<Void>?
    private var wakeUpAt: NIODeadline?

    private init(loop: any EventLoop) {
        self.loop = loop
    }

    /// The timers of `eventLoop`; called on its thread.
    static func on(_ eventLoop: any EventLoop) -> LoopTimers {
        eventLoop.preconditionInEventLoop()
        let thread = perThread.current { OfThread() }
        if let found = thread.all.first(where: { $0.loop === eventLoop }) { return found }
        // The timers of loops that are gone (embedded loops of finished tests) go with them.
        thread.all.removeAll { $0.loop == nil }
        let timers = LoopTimers(loop: eventLoop)
        thread.all.append(timers)
        return timers
    }

    /// Sets `slot` to fire `fire` at `deadline`, moving it if it is pending.
    func arm(_ slot: Slot, at deadline: NIODeadline, _ fire: @escaping () -> Void) {
        loop?.preconditionInEventLoop()
        slot.fire = fire
        slot.owner = self
        slot.deadline = deadline
        if let index = slot.index {
            siftUp(siftDown(index))
        } else {
            slot.index = heap.count
            heap.append(slot)
            siftUp(heap.count - 1)
        }
        wake(at: heap[0].deadline)
    }

    /// Runs `fire` on `eventLoop` at `deadline`, with no way to cancel it.
    static func schedule(at deadline: NIODeadline, on eventLoop: any EventLoop, _ fire: @escaping () -> Void) {
        on(eventLoop).arm(Slot(), at: deadline, fire)
    }

    /// Takes `slot` out of the heap; its closure is dropped.
    func cancel(_ slot: Slot) {
        loop?.preconditionInEventLoop()
        slot.fire = nil
        guard let index = slot.index else { return }
        remove(at: index)
    }

    /// How many timers are pending (for tests).
    var count: Int { heap.count }

    private func remove(at index: Int) {
        let removed = heap[index]
        removed.index = nil
        let last = heap.removeLast()
        guard index < heap.count else { return }
        heap[index] = last
        last.index = index
        siftUp(siftDown(index))
    }

    /// Makes sure NIO wakes this loop's timers no later than `deadline`.
    private func wake(at deadline: NIODeadline) {
        if let pending = wakeUpAt, pending <= deadline { return }
        guard let loop else { return }
        wakeUp?.cancel()
        wakeUpAt = deadline
        wakeUp = loop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            wakeUp = nil
            wakeUpAt = nil
            fireDue()
        }
    }

    /// Fires the timers due now. Those due are taken out first and then fired: a timer its own
    /// closure (or another's) arms again, even for a deadline already past, waits for the next
    /// wake-up instead of firing again in this one, and one cancelled or armed again by an
    /// earlier closure of the batch does not fire.
    private func fireDue() {
        guard let loop else { return }
        let now = loop.now
        var due: [Slot] = []
        while let first = heap.first, first.deadline <= now {
            remove(at: 0)
            due.append(first)
        }
        for slot in due where slot.index == nil {
            let fire = slot.fire
            slot.fire = nil
            fire?()
        }
        if let first = heap.first { wake(at: first.deadline) }
    }

    // MARK: The heap

    /// Moves the entry at `index` up while it is earlier than its parent; returns where it ends.
    @discardableResult
    private func siftUp(_ index: Int) -> Int {
        var child = index
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].deadline < heap[parent].deadline else { break }
            swapAt(child, parent)
            child = parent
        }
        return child
    }

    /// Moves the entry at `index` down while a child is earlier; returns where it ends.
    private func siftDown(_ index: Int) -> Int {
        var parent = index
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { return parent }
            let right = left + 1
            let earlier = right < heap.count && heap[right].deadline < heap[left].deadline ? right : left
            guard heap[earlier].deadline < heap[parent].deadline else { return parent }
            swapAt(parent, earlier)
            parent = earlier
        }
    }

    private func swapAt(_ a: Int, _ b: Int) {
        heap.swapAt(a, b)
        heap[a].index = a
        heap[b].index = b
    }
}
