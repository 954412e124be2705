#if canImport(Glibc)
import Glibc
#endif

/// Gives glibc's per-thread cache of freed blocks room for a gateway's bursts.
///
/// glibc keeps up to 7 freed blocks of each size per thread (its tcache) and sends the rest
/// through the arena's bins, where a free merges a block with its free neighbours and the next
/// malloc of that size splits one again. A gateway allocates and frees its per-request objects
/// (the exchange, an HTTP/2 stream and its handler, header lists, each a few hundred bytes) in
/// bursts as large as its requests in flight: 100 streams of one HTTP/2 connection answered in
/// one wake-up, a thousand across connections. Past the seventh, every one took the slow path
/// (`_int_free`, `unlink_chunk`, `_int_malloc`: 0.8 µs of a proxied HTTP/2 request's CPU at
/// 1,000 in flight, where nginx and HAProxy take such objects from pools of their own). With
/// the cache allowed 65,535 blocks a size, the blocks one burst frees are the next burst's
/// (the cache holds only blocks the burst had in use): at 10 connections × 100 streams,
/// those paths fell to 0.3 µs a request and the whole request to 0.93× the CPU (perf, the same
/// binary with and without the tuning, side by side); the resident size after such bursts was
/// 2% more (49.4 against 48.4 MB).
///
/// The count can only be set by the `GLIBC_TUNABLES` environment variable, read when the
/// process starts, so the server executable re-executes itself once with it added (same
/// process id, name, arguments, descriptors and environment otherwise). An operator's own
/// `glibc.malloc.tcache_count` is kept as it is (`glibc.malloc.tcache_count=7` is glibc's
/// default: the tuning off). Nothing happens on a system without glibc; a binary given file
/// capabilities runs in glibc's secure mode, which ignores the variable (it is re-executed
/// once all the same, and runs with the defaults).
public enum AllocatorTuning {
    /// The tunable, as glibc names it.
    static let tunable = "glibc.malloc.tcache_count"
    /// Blocks kept per size and thread: glibc's maximum.
    static let count = 65_535
    /// Set in the environment of the re-executed process, so that it re-executes no further
    /// even if the loader dropped `GLIBC_TUNABLES` (it does for set-user-ID programs).
    static let marker = "SLUICE_ALLOCATOR_TUNED"

    /// What `GLIBC_TUNABLES` should be, given what it is; nil when it names the tunable already.
    static func tunables(current: String?) -> String? {
        let entries = (current ?? "").split(separator: ":").filter { !$0.isEmpty }
        if entries.contains(where: { $0.split(separator: "=", maxSplits: 1).first == Substring(tunable) }) { return nil }
        return (entries.map(String.init) + ["\(tunable)=\(count)"]).joined(separator: ":")
    }

    /// Re-executes this program with the tunable added to its environment, unless it is there
    /// already or this process was itself re-executed for it. Returns only when the program is
    /// not re-executed (nothing to do, or `execv` failed: it then runs with glibc's defaults
    /// and says so on standard error). Call it first in `main`, before any thread starts.
    public static func applyByReexecuting() {
        #if canImport(Glibc)
        if getenv(marker) != nil {
            // The re-executed process: nothing it starts inherits the marker.
            unsetenv(marker)
            return
        }
        let current = getenv("GLIBC_TUNABLES").map { String(cString: $0) }
        guard let value = tunables(current: current) else { return }
        setenv("GLIBC_TUNABLES", value, 1)
        setenv(marker, "1", 1)
        // The executable by its own path, so the process keeps its name (`ps`, `pgrep sluice`:
        // the kernel names a process after the file it executes, and `/proc/self/exe` would
        // make it "exe"). A file renamed over it since it started reads back as "PATH
        // (deleted)", which `execv` cannot find: then by `/proc/self/exe`, the file it runs.
        if let path = executablePath() { execv(path, CommandLine.unsafeArgv) }
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        let reason = String(cString: strerror(errno))
        unsetenv(marker)
        if let current { setenv("GLIBC_TUNABLES", current, 1) } else { unsetenv("GLIBC_TUNABLES") }
        let notice = "sluice: could not re-execute with \(tunable) (\(reason)); running with glibc's allocator defaults\n"
        _ = notice.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
        #endif
    }

    /// Where this program's executable is, as the kernel resolved it when it started.
    static func executablePath() -> String? {
        #if canImport(Glibc)
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        #else
        return nil
        #endif
    }
}
