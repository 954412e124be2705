import Foundation

/// A peer run as a child process: the Python peers of `Peers/` (and any other program that
/// prints "PORT <n>" first and exits when its stdin closes, such as the Node SockJS server).
///
/// Backends report their OS-chosen port on the first line; clients print one JSON object.
final class PythonPeer: @unchecked Sendable {
    /// `Peers/`, where every peer's program is.
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Peers")
    static let script = directory.appendingPathComponent("peer.py").path

    private let process: ChildProcess
    /// The peer's stdin; it exits when this closes (when the test process is gone).
    private let lifeline: Pipe
    let port: Int

    /// Starts a backend (`backend MODE [ARG]` or `raw-backend MODE`) and waits for its port.
    convenience init(_ arguments: [String], script: String = PythonPeer.script) async throws {
        try await self.init(executable: "/usr/bin/env", arguments: ["python3", script] + arguments)
    }

    /// Starts any peer that prints "PORT <n>" on its first line and exits when its stdin closes.
    init(executable: String, arguments: [String], environment: [String: String] = [:]) async throws {
        process = ChildProcess()
        lifeline = Pipe()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        process.standardInput = lifeline
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
        // Waiting for the port blocks a thread; a Dispatch thread, never one of the two threads
        // of the concurrency pool that every test (and the gateway's JWT checks) share.
        let handle = output.fileHandleForReading
        let line = await withCheckedContinuation { (continuation: CheckedContinuation<Data, Never>) in
            DispatchQueue.global().async {
                var line = Data()
                while true {
                    let byte = handle.readData(ofLength: 1)
                    if byte.isEmpty || byte == Data("\n".utf8) { break }
                    line.append(byte)
                }
                continuation.resume(returning: line)
            }
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("PORT "), let port = Int(text.dropFirst(5)) else {
            process.terminate()
            throw PeerError(message: "peer \(arguments) did not report a port: '\(text)'")
        }
        self.port = port
    }

    /// Ends the peer: SIGKILL, then up to 2 s polling for it to be gone.
    func stop() {
        process.kill()
    }

    deinit { stop() }

    /// Runs a client (`client SCENARIO URL [JSON]` or `raw-client SCENARIO HOST PORT [JSON]`)
    /// to completion and returns its JSON result.
    static func run(_ arguments: [String], script: String = PythonPeer.script, timeout: TimeInterval = 60) async throws -> [String: Any] {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script] + arguments
        let lifeline = Pipe()
        process.standardInput = lifeline
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
        defer { withExtendedLifetime(lifeline) {} }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline {
                kill(process.processIdentifier, SIGKILL)
                throw PeerError(message: "python client timed out: \(arguments)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        guard !data.isEmpty else {
            // (Its traceback, if it raised, went to the test run's stderr.)
            throw PeerError(message: "python client \(arguments) printed nothing: it ended with status \(process.terminationStatus)")
        }
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw PeerError(message: "python client printed no JSON: \(String(decoding: data, as: UTF8.self))")
        }
        return object
    }
}

struct PeerError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
