import NIOCore
import NIOPosix

/// The WebSockets still inside their backend's early-close window, one queue per event loop.
///
/// A 101 alone does not prove a backend well (it may close at once with 1011), so a WebSocket
/// counts as its backend's success once it outlived the window, or when it ended well inside
/// it. Every WebSocket waits the same time, so a loop keeps them in the order they began with
/// one timer for the oldest, instead of a scheduled task each: NIO cancels a task by searching
/// every task its loop has pending, and a task per live WebSocket made each handshake's own
/// cancels (its head, handshake and connect timeouts) scan them all: with 5,000 WebSockets
/// opened in a burst, 3.8% of the gateway's samples and 6–8% of its CPU per handshake.
final class EarlyCloseWatch {
    /// How long after its 101 a WebSocket's end still says something about its backend.
    static let window: TimeAmount = .seconds(10)

    /// Each loop's thread reads and writes only its own value, which is why the unchecked
    /// access is safe.
    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<EarlyCloseWatch>()

    /// A WebSocket in its window: its backend is told it succeeded at `due` if it is still live.
    private struct Watched {
        let due: NIODeadline
        let id: UInt64
        let registry: ConnectionRegistry
        let backends: BackendSet
        let index: Int

        func expire() {
            if registry.isLive(id) { backends.succeeded(index) }
        }
    }

    /// Oldest first: every entry waits `window`, so they are also in order of `due`.
    private var watched = CircularBuffer<Watched>()
    /// The loop the watched WebSockets and the timer belong to.
    private var loop: (any EventLoop)?
    private var timerPending = false

    private init() {}

    /// Tells `backends` that backend `index` succeeded once WebSocket `id` has been live for
    /// `window`. Must be called on `eventLoop`.
    static func watch(_ id: UInt64, in registry: ConnectionRegistry, backends: BackendSet, index: Int, on eventLoop: any EventLoop) {
        let entry = Watched(due: eventLoop.now + window, id: id, registry: registry, backends: backends, index: index)
        let watch = perThread.current { EarlyCloseWatch() }
        if watch.watched.isEmpty && !watch.timerPending {
            watch.loop = eventLoop
        } else if watch.loop !== eventLoop {
            // Another loop on this thread (embedded loops in tests share a thread): a task of its own.
            eventLoop.scheduleTask(deadline: entry.due) { entry.expire() }
            return
        }
        watch.watched.append(entry)
        if !watch.timerPending { watch.arm(entry.due, on: eventLoop) }
    }

    private func arm(_ deadline: NIODeadline, on eventLoop: any EventLoop) {
        timerPending = true
        eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in expireDue(on: eventLoop) }
    }

    private func expireDue(on eventLoop: any EventLoop) {
        timerPending = false
        let now = eventLoop.now
        while let oldest = watched.first, oldest.due <= now {
            watched.removeFirst().expire()
        }
        if let next = watched.first { arm(next.due, on: eventLoop) }
    }
}
