import NIOCore
import SluiceConfig

/// A listener's `http2` block (`HTTP2Limits`) as the settings and bounds of Sluice's own HTTP/2
/// layer, so that it defends a connection exactly as configured, as NIOHTTP2 is configured from
/// the same block in `HTTP2Connection`.
extension HTTP2ConnectionState.Settings {
    package init(_ limits: HTTP2Limits) {
        self.init()
        maxConcurrentStreams = limits.maxConcurrentStreams
        initialWindowSize = limits.initialWindowSize
        connectionWindowSize = max(limits.connectionWindowSize, 65_535)
        maxFrameSize = limits.maxFrameSize
        maxHeaderListSize = limits.maxHeaderListSize
    }
}

extension HTTP2FrameReader {
    /// A reader bounding header blocks as the listener does: no encoded block larger than the
    /// decoded list may be (NIOHTTP2's rule too), and at most `max_continuation_frames`.
    package init(_ limits: HTTP2Limits) {
        self.init(maxHeaderBlock: limits.maxHeaderListSize, maxContinuations: limits.maxContinuationFrames)
    }
}

extension HTTP2RateGuard {
    /// The bound on stream resets (rapid reset): `max_resets` per `reset_window`.
    package static func resets(_ limits: HTTP2Limits) -> HTTP2RateGuard {
        HTTP2RateGuard(limit: limits.maxResets, window: TimeAmount(limits.resetWindow))
    }

    /// The bound on PING, SETTINGS and PRIORITY frames: `max_control_frames` per
    /// `control_frame_window`.
    package static func controlFrames(_ limits: HTTP2Limits) -> HTTP2RateGuard {
        HTTP2RateGuard(limit: limits.maxControlFrames, window: TimeAmount(limits.controlFrameWindow))
    }
}

extension HTTP2RateGuard {
    /// The bound on stream errors Sluice sends a client (malformed requests, frames on closed
    /// streams): NIOHTTP2's fixed 200 per 30 s, which `listeners[].http2` does not set.
    package static func streamErrors() -> HTTP2RateGuard {
        HTTP2RateGuard(limit: 200, window: .seconds(30))
    }
}
