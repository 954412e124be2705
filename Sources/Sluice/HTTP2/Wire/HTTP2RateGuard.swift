import NIOCore

/// A bound on how often a client may do something cheap for it and costly for Sluice on one
/// connection — reset streams it opened (rapid reset, CVE-2023-44487), send PING, SETTINGS or
/// PRIORITY frames (each answered or processed) — as `listeners[].http2` sets it: at most
/// `limit` within `window`, as a leaky bucket (it drains at `limit` per `window`, each event adds
/// one), so a connection keeps two numbers however busy it is. Past the bound the connection
/// ends with ENHANCE_YOUR_CALM. Time is passed in, so tests need no clock.
package struct HTTP2RateGuard: Sendable {
    package let limit: Int
    package let window: TimeAmount
    /// What the bucket holds, in events, as of `updated`.
    private var level = 0.0
    private var updated: NIODeadline?

    package init(limit: Int, window: TimeAmount) {
        precondition(limit > 0 && window.nanoseconds > 0)
        self.limit = limit
        self.window = window
    }

    /// Counts one event at `now`; the error to end the connection with once the bound is
    /// passed, described by `what` (e.g. "stream resets").
    package mutating func count(at now: NIODeadline, _ what: String) -> HTTP2WireError? {
        if let updated, now > updated {
            let drained = Double((now - updated).nanoseconds) * Double(limit) / Double(window.nanoseconds)
            level = max(0, level - drained)
        }
        updated = now
        level += 1
        guard level <= Double(limit) else {
            return .connection(.enhanceYourCalm, "more than \(limit) \(what) within \(window.nanoseconds / 1_000_000_000) s")
        }
        return nil
    }
}
