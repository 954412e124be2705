#if canImport(Glibc)
import Glibc
#endif

/// Wall-clock seconds since the Unix epoch, for figures shown to operators (start times, last
/// activity). Durations are always measured on the monotonic clock.
enum WallClock {
    static func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}
