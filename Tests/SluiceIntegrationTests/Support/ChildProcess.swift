import Foundation
import Glibc

/// A child process started with `posix_spawn`, with the part of Foundation's `Process` API the
/// tests use.
///
/// Foundation's `Process.run()` on Linux (swift-corelibs-foundation in Swift 6.3) reads
/// `/proc/self/fd` to close the child's descriptors with a 256-byte copy of each directory entry,
/// which reads past glibc's buffer now and then and crashes the whole test process (fixed
/// upstream in swift-corelibs-foundation #5472, not in this toolchain). With hundreds of
/// descriptors open in the parallel suite it did, now and then. Here the kernel closes them
/// (`closefrom` as a spawn action) and no directory is read. A child another waiter reaped
/// reads as ended with status 0.
final class ChildProcess: @unchecked Sendable {
    var executableURL: URL?
    var arguments: [String] = []
    /// The child's whole environment; nil inherits this process's.
    var environment: [String: String]?
    /// A `Pipe` (the child gets its reading end), a `FileHandle`, or nil to inherit.
    var standardInput: Any?
    /// A `Pipe` (the child gets its writing end), a `FileHandle`, or nil to inherit.
    var standardOutput: Any?
    var standardError: Any?

    private let lock = NSLock()
    private var pid: pid_t = 0
    /// The wait status once the child was reaped.
    private var status: Int32?

    var processIdentifier: Int32 { lock.withLock { pid } }

    /// Starts the child; throws when it cannot be spawned (the path is wrong, say).
    func run() throws {
        guard let path = executableURL?.path else { throw PeerError(message: "no executable set") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let streams: [(Any?, Int32, Bool)] = [(standardInput, 0, true), (standardOutput, 1, false), (standardError, 2, false)]
        for (stream, target, reading) in streams {
            guard let source = Self.descriptor(stream, reading: reading), source != target else { continue }
            posix_spawn_file_actions_adddup2(&actions, source, target)
        }
        // Everything else this process has open stays out of the child: another test's pipe
        // end held by a child would keep that test from ever seeing its end of file.
        guard let closeFrom = Self.addCloseFrom, closeFrom(&actions, 3) == 0 else {
            throw PeerError(message: "this glibc has no posix_spawn_file_actions_addclosefrom_np (glibc 2.34 or later is needed)")
        }

        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let variables = environment ?? ProcessInfo.processInfo.environment
        let envp = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in envp { free(pointer) } }

        // The child starts with every signal at its default and none blocked, whatever this
        // process ignores (SIGPIPE) or blocks.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var child: pid_t = 0
        let result = posix_spawn(&child, path, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw PeerError(message: "cannot start \(path): \(String(cString: strerror(result)))")
        }
        lock.withLock { pid = child }
        // The child's ends of our pipes are the child's alone now: closed here, a reader of its
        // output sees the end of file when the child exits.
        if let pipe = standardInput as? Pipe { try? pipe.fileHandleForReading.close() }
        if let pipe = standardOutput as? Pipe { try? pipe.fileHandleForWriting.close() }
        if let pipe = standardError as? Pipe { try? pipe.fileHandleForWriting.close() }
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift's Glibc
    /// module does not declare (it is a GNU extension), looked up by name.
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    private static func descriptor(_ stream: Any?, reading: Bool) -> Int32? {
        if let pipe = stream as? Pipe {
            return reading ? pipe.fileHandleForReading.fileDescriptor : pipe.fileHandleForWriting.fileDescriptor
        }
        return (stream as? FileHandle)?.fileDescriptor
    }

    /// Whether the child still runs (it is reaped the first time it is seen gone).
    var isRunning: Bool {
        lock.withLock {
            guard pid > 0, status == nil else { return false }
            var waited: Int32 = 0
            let result = waitpid(pid, &waited, WNOHANG)
            if result == pid { status = waited }
            return result == 0
        }
    }

    /// The exit code, or the signal that ended the child.
    var terminationStatus: Int32 {
        lock.withLock {
            guard let status else { return 0 }
            let signal = status & 0x7f
            return signal == 0 ? (status >> 8) & 0xff : signal
        }
    }

    /// Blocks until the child exits (polling: the caller is a test, never an event loop). A
    /// child still running after `timeout` is killed, so no test waits on one for ever.
    func waitUntilExit(timeout: TimeInterval = 60) {
        let deadline = Date().addingTimeInterval(timeout)
        var killed = false
        while isRunning {
            if !killed && Date() > deadline {
                Glibc.kill(processIdentifier, SIGKILL)
                killed = true
            }
            usleep(5_000)
        }
    }

    /// Kills the child now (SIGKILL; a stopped child is continued so it can die) and waits up
    /// to 2 s to reap it. What every test peer's `stop()` does.
    func kill() {
        guard isRunning else { return }
        let child = processIdentifier
        Glibc.kill(child, SIGCONT)
        Glibc.kill(child, SIGKILL)
        waitUntilExit(timeout: 2)
    }

    func terminate() {
        signal(SIGTERM)
    }

    /// Sends `signal` to the child if it is still running.
    func signal(_ signal: Int32) {
        let child = processIdentifier
        if child > 0 && isRunning { Glibc.kill(child, signal) }
    }
}
