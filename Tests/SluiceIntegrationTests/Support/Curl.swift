import Foundation

/// curl (Debian's, which no one here wrote) as the HTTP client of the proxy tests.
enum Curl {
    struct Result {
        var status: Int
        var headers: [String: String]
        var body: String
        var exitCode: Int32

        var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] }
    }

    /// Runs `curl -s -i ARGS URL` (or with `shell` a pipeline through /bin/sh) and parses the
    /// last response.
    static func run(_ arguments: [String], shell: String? = nil, timeout: TimeInterval = 120) async throws -> Result {
        let process = ChildProcess()
        if let shell {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", shell]
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            process.arguments = ["-s", "-i", "--max-time", "\(Int(timeout))"] + arguments
        }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        var data = Data()
        // The blocking read runs on a Dispatch thread, never on the concurrency pool (two threads
        // here): a long transfer must not starve every other test's tasks.
        let reader = Task {
            await withCheckedContinuation { (continuation: CheckedContinuation<Data, Never>) in
                DispatchQueue.global().async { continuation.resume(returning: output.fileHandleForReading.readDataToEndOfFile()) }
            }
        }
        let deadline = Date().addingTimeInterval(timeout + 5)
        while process.isRunning {
            if Date() > deadline {
                kill(process.processIdentifier, SIGKILL)
                throw PeerError(message: "curl timed out: \(arguments)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        data = await reader.value
        let text = String(decoding: data, as: UTF8.self)
        // Interim responses (100 Continue) come first; the last head is the answer.
        var rest = Substring(text)
        var head = Substring("")
        while let range = rest.range(of: "\r\n\r\n"), rest.hasPrefix("HTTP/") {
            head = rest[..<range.lowerBound]
            rest = rest[range.upperBound...]
            if !head.contains(" 100 ") { break }
        }
        let lines = head.split(separator: "\r\n")
        let status = lines.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return Result(status: status, headers: headers, body: String(rest), exitCode: process.terminationStatus)
    }
}
