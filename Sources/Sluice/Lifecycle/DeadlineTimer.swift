import NIOCore

/// A timer that fires no later than the earliest deadline it was armed with: the one timer a
/// connection keeps for all its deadlines (a relay's idle, ping and close deadlines, an HTTP/1
/// connection's header and response deadlines, an HTTP/2 connection's streams', an upgrade's
/// handshake), rescheduled only when a deadline earlier than the pending one comes.
///
/// Its owner runs on one event loop; the closure it arms runs there and must call `fired()`
/// first.
struct DeadlineTimer {
    private var scheduled: Scheduled<Void>?
    /// When the pending timer fires, if one is pending.
    private(set) var deadline: NIODeadline?

    /// A timer is pending at or before `deadline`: arming for it would change nothing. (A caller
    /// whose closure captures more than one reference asks first, so as not to allocate the
    /// closure for nothing.)
    func isPending(atOrBefore deadline: NIODeadline) -> Bool {
        self.deadline.map { $0 <= deadline } ?? false
    }

    /// Makes sure `fire` runs on `eventLoop` no later than `deadline`; a timer pending at or
    /// before it is kept (and its closure with it).
    mutating func arm(_ deadline: NIODeadline, on eventLoop: any EventLoop, _ fire: @escaping () -> Void) {
        if let pending = self.deadline, pending <= deadline { return }
        scheduled?.cancel()
        self.deadline = deadline
        scheduled = eventLoop.assumeIsolated().scheduleTask(deadline: deadline, fire)
    }

    /// The timer fired: nothing is pending.
    mutating func fired() {
        scheduled = nil
        deadline = nil
    }

    mutating func cancel() {
        scheduled?.cancel()
        fired()
    }
}
