import NIOCore

/// One timer for the deadlines of all of an HTTP/2 connection's streams (a backend's response
/// timeout, a body's idle timeout), in place of a timer per stream.
///
/// A stream is a request: scheduling and cancelling a timer for each one cost five allocations
/// a request. Here a stream only joins a list with its deadline; the timer is rescheduled only
/// for a deadline earlier than the one it already has, and when it fires it checks the streams
/// that are due and sleeps until the earliest of the rest. A stream that finishes leaves the
/// list; the timer is cancelled when the connection closes.
final class HTTP2StreamWatchdog {
    /// A stream with deadlines to keep.
    protocol Watched: AnyObject {
        /// When the stream wants to be checked; nil once it has left.
        var watchDeadline: NIODeadline? { get set }
        /// Its place in `watched`, kept by the watchdog.
        var watchIndex: Int { get set }
        /// Checks the stream's deadlines at `now`; returns the next one, if any.
        func watchdogFired(now: NIODeadline) -> NIODeadline?
    }

    private let eventLoop: any EventLoop
    private var watched: [any Watched] = []
    private var timer = DeadlineTimer()
    private var closed = false

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Makes sure `stream` is checked no later than `deadline`.
    func watch(_ stream: any Watched, until deadline: NIODeadline) {
        guard !closed else { return }
        if let pending = stream.watchDeadline {
            guard deadline < pending else { return }
        } else {
            stream.watchIndex = watched.count
            watched.append(stream)
        }
        stream.watchDeadline = deadline
        schedule(deadline)
    }

    /// `stream` has no deadlines left.
    func unwatch(_ stream: any Watched) {
        guard stream.watchDeadline != nil else { return }
        stream.watchDeadline = nil
        let index = stream.watchIndex
        let last = watched.removeLast()
        if index < watched.count {
            watched[index] = last
            last.watchIndex = index
        }
    }

    /// The connection closed: no stream is checked again.
    func close() {
        closed = true
        timer.cancel()
        for stream in watched { stream.watchDeadline = nil }
        watched.removeAll()
    }

    private func schedule(_ deadline: NIODeadline) {
        timer.arm(deadline, on: eventLoop) { [self] in
            timer.fired()
            fired()
        }
    }

    private func fired() {
        let now = eventLoop.now
        // The due streams leave the list before they are checked: a check can end a stream,
        // and an ended stream unwatches itself.
        var due: [any Watched] = []
        var index = 0
        while index < watched.count {
            let stream = watched[index]
            if let deadline = stream.watchDeadline, deadline <= now {
                unwatch(stream)
                due.append(stream)
            } else {
                index += 1
            }
        }
        for stream in due {
            if let next = stream.watchdogFired(now: now) { watch(stream, until: next) }
        }
        if let earliest = watched.lazy.compactMap({ $0.watchDeadline }).min() { schedule(earliest) }
    }
}
