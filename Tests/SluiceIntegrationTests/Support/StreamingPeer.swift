import Foundation

/// A peer process whose output the test reads as it comes: it waits for a line (`OPEN 2000`)
/// before acting, then for the final JSON object. Killed when released.
final class StreamingPeer: @unchecked Sendable {
    private let process = ChildProcess()
    private let lifeline = Pipe()
    private let output = Pipe()
    private let lines = LineBuffer()

    /// Lines a process wrote, kept as they come.
    final class LineBuffer: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        func append(_ line: String) { lock.withLock { lines.append(line) } }
        func first(where match: (String) -> Bool) -> String? { lock.withLock { lines.first(where: match) } }

        /// Reads `handle` to its end on a thread of its own, a line at a time.
        func collect(from handle: FileHandle) {
            Thread.detachNewThread { [self] in
                var pending = Data()
                while true {
                    let chunk = handle.availableData
                    if chunk.isEmpty { break }
                    pending.append(chunk)
                    while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        append(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                        pending = Data(pending[pending.index(after: newline)...])
                    }
                }
            }
        }
    }

    init(script: String, arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script] + arguments
        process.standardInput = lifeline
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
        lines.collect(from: output.fileHandleForReading)
    }

    /// The first line starting with `prefix`, waited for up to `timeout`.
    func line(startingWith prefix: String, timeout: Duration = .seconds(120)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let line = lines.first(where: { $0.hasPrefix(prefix) }) { return line }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw PeerError(message: "no line starting with '\(prefix)' within \(timeout)")
    }

    /// The JSON object the peer prints last.
    func result(timeout: Duration = .seconds(120)) async throws -> [String: Any] {
        let line = try await self.line(startingWith: "{", timeout: timeout)
        guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw PeerError(message: "not a JSON object: \(line)")
        }
        return object
    }

    /// Tells the peer something by a signal (what each peer makes of it, its usage says).
    func signal(_ signal: Int32) {
        process.signal(signal)
    }

    func stop() {
        process.kill()
    }

    deinit { stop() }
}
