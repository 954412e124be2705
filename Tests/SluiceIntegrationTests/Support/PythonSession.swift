import Foundation

/// `Peers/session.py` as a child process: WebSocket clients opened, used and closed one command
/// at a time, so a test can hold connections across its own checks.
///
/// Each command is a JSON line; the answer is the next JSON line. The blocking pipe I/O runs on
/// a queue of the session's own, never on the concurrency pool.
final class PythonSession: @unchecked Sendable {
    static let script = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Peers/session.py").path

    private let process = ChildProcess()
    private let input = Pipe()
    private let output = Pipe()
    private let queue = DispatchQueue(label: "python-session")
    private var buffer = Data()

    init() throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.script]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
    }

    deinit { stop() }

    func stop() {
        process.kill()
    }

    /// Sends one command and returns its answer (or throws after `timeout`).
    @discardableResult
    func send(_ command: [String: Any], timeout: Duration = .seconds(120)) async throws -> [String: Any] {
        let line = try JSONSerialization.data(withJSONObject: command) + Data("\n".utf8)
        let pid = process.processIdentifier
        let watchdog = Task {
            try await Task.sleep(for: timeout)
            kill(pid, SIGKILL)
        }
        defer { watchdog.cancel() }
        let answer: Data = try await withCheckedThrowingContinuation { continuation in
            queue.async { [self] in
                do {
                    try input.fileHandleForWriting.write(contentsOf: line)
                    continuation.resume(returning: try readLine())
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
        guard let object = try JSONSerialization.jsonObject(with: answer) as? [String: Any] else {
            throw PeerError(message: "session answered with no JSON object: \(String(decoding: answer, as: UTF8.self))")
        }
        return object
    }

    private func readLine() throws -> Data {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = buffer[buffer.startIndex..<newline]
                buffer = Data(buffer[buffer.index(after: newline)...])
                return Data(line)
            }
            let chunk = output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { throw PeerError(message: "the python session ended (timed out or crashed)") }
            buffer.append(chunk)
        }
    }

    // MARK: Conveniences

    func open(_ id: String, _ url: String, headers: [String: String] = [:], subprotocols: [String]? = nil) async throws -> [String: Any] {
        var command: [String: Any] = ["op": "open", "id": id, "url": url, "headers": headers]
        if let subprotocols { command["subprotocols"] = subprotocols }
        return try await send(command)
    }

    /// Prometheus samples as `name{labels} → value`, parsed by `prometheus_client`.
    func metrics(_ url: String, token: String? = nil, timeout: Int = 10) async throws -> MetricSamples {
        var command: [String: Any] = ["op": "metrics", "url": url, "timeout": timeout]
        if let token { command["token"] = token }
        let answer = try await send(command)
        guard let samples = answer["samples"] as? [[Any]] else { throw PeerError(message: "no metrics: \(answer)") }
        return MetricSamples(samples.compactMap { row in
            guard row.count == 3, let name = row[0] as? String, let labels = row[1] as? [String: String],
                let value = (row[2] as? NSNumber)?.doubleValue
            else { return nil }
            return (name, labels, value)
        })
    }
}

/// Parsed Prometheus samples, looked up by name and a subset of labels.
struct MetricSamples {
    let rows: [(name: String, labels: [String: String], value: Double)]

    init(_ rows: [(String, [String: String], Double)]) { self.rows = rows.map { (name: $0.0, labels: $0.1, value: $0.2) } }

    /// The sum of every sample named `name` whose labels include `labels`; 0 when none.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double {
        rows.filter { row in row.name == name && labels.allSatisfy { row.labels[$0.key] == $0.value } }.map(\.value).reduce(0, +)
    }

    func has(_ name: String) -> Bool { rows.contains { $0.name == name } }
}
