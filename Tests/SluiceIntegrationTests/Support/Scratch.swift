import Foundation
import Synchronization

/// Names in the temporary directory for a test's files (configurations, certificates, logs,
/// records of peers), removed when the test process exits, whether its tests passed or not:
/// a run leaves no keys or logs behind in /tmp.
enum Scratch {
    private static let paths = Mutex<[String]>([])
    private static let cleanup: Void = { atexit { Scratch.removeAll() } }()

    /// A new, empty directory named with `prefix`.
    static func directory(_ prefix: String) throws -> String {
        let path = path(prefix)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A new name with `prefix` and `suffix`, for a file or directory something else makes.
    static func path(_ prefix: String, suffix: String = "") -> String {
        _ = cleanup
        let path = NSTemporaryDirectory() + prefix + UUID().uuidString + suffix
        paths.withLock { $0.append(path) }
        return path
    }

    private static func removeAll() {
        for path in paths.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
    }
}
