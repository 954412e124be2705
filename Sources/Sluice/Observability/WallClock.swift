#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Wall-clock seconds since the Unix epoch, for figures shown to operators (start times, last
/// activity). Durations are always measured on the monotonic clock.
enum WallClock {
    static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}

/// Nanoseconds of the monotonic clock, for token buckets, pool idle times and health
/// cool-downs: plain integers, so the value-type state machines take the clock as an argument.
enum MonotonicClock {
    static func nanoseconds() -> Int64 { Int64(clamping: NIODeadline.now().uptimeNanoseconds) }
}

extension Duration {
    /// The whole duration in nanoseconds (config durations are far below the overflow).
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }
}
