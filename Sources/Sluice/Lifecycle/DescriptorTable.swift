import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Grows the process's descriptor table once, before traffic, to the open-file limit.
///
/// Linux grows a process's descriptor table by doubling as descriptors are opened (at 256, 512,
/// 1,024, …), and in a multi-threaded process each growth waits for an RCU grace period: 5–16 ms
/// measured here, during which the event loop that accepted a client or dialed a backend does
/// nothing else, and every handshake queued behind it waits too (the slowest percent of
/// handshakes while a fresh process ramps up). Growing the table once at start-up moves that wait
/// out of the traffic. The table never shrinks; it costs the kernel 8 bytes and 2 bits per slot.
public enum DescriptorTable {
    /// The most slots reserved, whatever the limit (512 KiB of kernel memory).
    public static let cap = 1 << 16

    /// Makes the table hold descriptors below `min(soft open-file limit, cap)`; returns that
    /// count, or nil where it cannot (no limit readable, not Linux). Never touches an open
    /// descriptor.
    @discardableResult
    public static func reserve(cap: Int = cap) -> Int? {
        #if os(Linux)
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        let slots = Int(min(UInt64(limit.rlim_cur), UInt64(max(cap, 1))))
        let probe = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard probe >= 0 else { return nil }
        defer { close(probe) }
        // The lowest free descriptor at or above the last slot: the table grows to hold it, and
        // a descriptor already open there is never replaced.
        let grown = fcntl(probe, F_DUPFD_CLOEXEC, Int32(slots - 1))
        guard grown >= 0 else { return nil }
        close(grown)
        return slots
        #else
        return nil
        #endif
    }

    /// How many slots the table holds now (`FDSize` in `/proc/self/status`); nil where unknown.
    public static func size() -> Int? {
        #if os(Linux)
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("FDSize:") {
            return Int(line.dropFirst("FDSize:".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
        #else
        return nil
        #endif
    }
}
