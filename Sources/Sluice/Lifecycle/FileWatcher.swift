#if canImport(Glibc)
import Glibc
#endif

/// Notices that files changed, for `reload.watch`: their sizes and modification times are
/// read at each poll, and a change is reported once the files have stayed the same for one
/// more poll, so a file being written (or a certificate and its key replaced one after the
/// other) is not read half-way. A value type; the reload service polls it on its own timer.
struct FileWatcher {
    /// What a poll sees of one file; `nil` when it does not exist.
    struct Stamp: Equatable {
        var size: Int64
        var modified: Int64
        var inode: UInt64
    }

    private(set) var files: [String]
    private var settled: [String: Stamp?]
    /// A change seen and not yet reported, waiting to stay still for a poll.
    private var pending: [String: Stamp?]?

    init(files: [String], stamp: (String) -> Stamp? = FileWatcher.stamp) {
        self.init(settled: Dictionary(files.map { ($0, stamp($0)) }, uniquingKeysWith: { first, _ in first }))
    }

    /// Watches from stamps taken earlier: those of the files as they were when the
    /// configuration was read, so a change made since is seen.
    init(settled: [String: Stamp?]) {
        files = settled.keys.sorted()
        self.settled = settled
    }

    /// The files' stamps now.
    static func stamps(_ files: [String]) -> [String: Stamp?] {
        Dictionary(files.map { ($0, stamp($0)) }, uniquingKeysWith: { first, _ in first })
    }

    /// Looks at the files; `true` when a change has settled and a reload should run.
    mutating func poll(stamp: (String) -> Stamp? = FileWatcher.stamp) -> Bool {
        let now = Dictionary(files.map { ($0, stamp($0)) }, uniquingKeysWith: { first, _ in first })
        if now == settled {
            pending = nil
            return false
        }
        if let pending, pending == now {
            settled = now
            self.pending = nil
            return true
        }
        pending = now
        return false
    }

    static func stamp(_ path: String) -> Stamp? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Stamp(size: Int64(info.st_size), modified: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec), inode: UInt64(info.st_ino))
    }
}
