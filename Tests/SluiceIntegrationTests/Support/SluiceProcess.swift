import Foundation

/// The `sluice` executable, run as its own process (for measurements of its memory, and for
/// the command line itself).
final class SluiceProcess: @unchecked Sendable {
    /// `sluice` sits next to the test bundle in the build directory.
    static var executable: String {
        let testBinary = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
        return testBinary.deletingLastPathComponent().appendingPathComponent("sluice").path
    }

    private let process = ChildProcess()
    /// Runs `sluice` (by `exec`, so it keeps this shell's pid) beside a watcher that kills it
    /// when stdin (our pipe) closes. The watcher closes every other descriptor: Foundation sees
    /// a child exit only once no descendant holds the socket it gave the child.
    static let watcher = #"parent=$$; exec 3<&0; (for fd in /proc/self/fd/*; do n=${fd##*/}; [ "$n" -gt 3 ] && eval "exec $n>&-"; done; read _ <&3; kill -9 $parent) < /dev/null > /dev/null 2>&1 & exec "$0" "$@" 3<&-"#

    /// Its stdin: sluice's watcher ends it when this closes.
    private let lifeline = Pipe()
    let port: Int
    /// Every reported listener's port by name (`admin` for the admin listener), for the names
    /// the initializer was asked to wait for.
    private(set) var ports: [String: Int] = [:]

    var pid: Int32 { process.processIdentifier }

    /// Starts `sluice run` on a config written from `yaml` and waits for its first listener,
    /// and for each listener named in `waitingFor` (`admin` for the admin listener).
    /// The arguments of `sluice`: `run` on `config` unless the test says otherwise.
    private let arguments: (String) -> [String]

    /// The configuration file it runs on (rewrite it, then reload).
    let configFile: String
    /// What it logged (stderr), line by line, read as it comes so the pipe never fills.
    let log = StreamingPeer.LineBuffer()

    /// `user`: run it as that user (and the group `nogroup`) through `setpriv`; the test
    /// process must be root.
    init(
        yaml: String, waitingFor names: Set<String> = [], environment: [String: String] = [:], directory existing: String? = nil,
        user: String? = nil, arguments: @escaping (String) -> [String] = { ["run", "--config", $0, "--log-level", "notice"] }
    ) throws {
        self.arguments = arguments
        let directory = try existing ?? Scratch.directory("sluice-process-")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = "\(directory)/sluice.yaml"
        configFile = config
        try yaml.write(toFile: config, atomically: true, encoding: .utf8)
        guard FileManager.default.isExecutableFile(atPath: Self.executable) else {
            throw PeerError(message: "\(Self.executable) is missing; run `swift build` first")
        }
        // Started through a shell that execs it, beside a watcher of this process's pipe: if the
        // test process dies (a crash skips `deinit`), the pipe closes and the watcher kills it.
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        let privileges = user.map { ["/usr/bin/setpriv", "--reuid=\($0)", "--regid=nogroup", "--clear-groups"] } ?? []
        process.arguments = ["-c", Self.watcher] + privileges + [Self.executable] + arguments(config)
        process.standardInput = lifeline
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var line = ""
        var found: Int?
        let handle = errors.fileHandleForReading
        var reported: [String: Int] = [:]
        while found == nil || !names.isSubset(of: reported.keys) {
            let byte = handle.readData(ofLength: 1)
            if byte.isEmpty { break }
            if byte == Data("\n".utf8) {
                log.append(line)
                if line.contains("listening"), let range = line.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                    let port = Int(line[range].split(separator: ":").last!)
                    let name = line.contains("admin listening")
                        ? "admin" : line.range(of: #"listener=[^ ]+"#, options: .regularExpression).map { String(line[$0].dropFirst(9)) }
                    if let name, let port { reported[name] = port }
                    if found == nil, !line.contains("admin listening") { found = port }
                }
                line = ""
            } else {
                line += String(decoding: byte, as: UTF8.self)
            }
        }
        guard let found else {
            kill(process.processIdentifier, SIGKILL)
            throw PeerError(message: "sluice did not report a listening port")
        }
        port = found
        ports = reported
        log.collect(from: handle)
    }

    /// Sends it a signal.
    func signal(_ number: Int32) {
        kill(pid, number)
    }

    /// Waits (up to `timeout`) for it to exit; its exit status, or nil if it is still running.
    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return exitStatus
    }

    /// Waits (up to `timeout`) for a log line containing `text`.
    func logged(_ text: String, timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if log.first(where: { $0.contains(text) }) != nil { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Resident set size of the sluice process, in bytes.
    var residentBytes: Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return (line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0) * 1024
        }
        return 0
    }

    var hasExited: Bool { !process.isRunning }
    var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    func stop() {
        process.kill()
    }

    deinit { stop() }
}
