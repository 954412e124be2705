import SluiceConfig

/// One active check's reading of what a backend sent back, with no I/O: the status line of an
/// `http` check against `expect_status`; for a `websocket` check, a valid 101 (its
/// `Sec-WebSocket-Accept` computed from the key sent), then the pong to the check's ping.
struct HealthProbe {
    /// What the checker does next.
    enum Step: Equatable {
        case wait
        /// The 101 was valid: send the ping.
        case ping
        case pass
        case fail(String)
    }

    let mode: HealthCheckConfiguration.Mode
    let expectStatus: [ClosedRange<Int>]
    /// The `Sec-WebSocket-Accept` a valid 101 carries.
    let expectedAccept: String
    private var buffer: [UInt8] = []
    private var headRead = false
    private var done = false

    /// Response heads longer than this are a failed check, not a growing buffer.
    static let maxHead = 16 * 1024

    init(mode: HealthCheckConfiguration.Mode, expectStatus: [ClosedRange<Int>], key: String) {
        self.mode = mode
        self.expectStatus = expectStatus
        expectedAccept = WebSocketKey.accept(for: key)
    }

    /// The request a check sends.
    static func request(mode: HealthCheckConfiguration.Mode, target: String, host: String, key: String) -> String {
        var text = "GET \(target) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: sluice-health-check\r\n"
        switch mode {
        case .http:
            text += "Connection: close\r\n"
        case .websocket:
            text += "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: \(key)\r\n"
        }
        return text + "\r\n"
    }

    /// Bytes arrived.
    mutating func received(_ bytes: some Sequence<UInt8>) -> Step {
        guard !done else { return .wait }
        buffer.append(contentsOf: bytes)
        if !headRead {
            guard let end = Self.headEnd(buffer) else {
                return buffer.count > Self.maxHead ? finish(.fail("response head longer than \(Self.maxHead) bytes")) : .wait
            }
            headRead = true
            let head = Array(buffer[..<end])
            buffer.removeFirst(end + 4)
            let step = judge(head: head)
            if step != .ping { return finish(step) }
            // Frames that came behind the 101 are read once the ping is out.
            return .ping
        }
        return readFrames()
    }

    /// The connection ended before a verdict.
    mutating func closed() -> Step {
        guard !done else { return .wait }
        return finish(.fail(headRead ? "closed before the pong" : "closed before answering"))
    }

    private mutating func finish(_ step: Step) -> Step {
        done = true
        return step
    }

    private func judge(head: [UInt8]) -> Step {
        let text = String(decoding: head, as: UTF8.self)
        let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusLine = lines.first.map(String.init) ?? ""
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3, let status = Int(parts[1]) else {
            return .fail("not an HTTP/1.x status line: '\(statusLine.prefix(60))'")
        }
        switch mode {
        case .http:
            return expectStatus.contains { $0.contains(status) } ? .pass : .fail("status \(status)")
        case .websocket:
            guard status == 101 else { return .fail("status \(status) to the upgrade") }
            let accept = lines.dropFirst().compactMap { line -> String? in
                guard let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == "sec-websocket-accept" else { return nil }
                return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }.first
            return accept == expectedAccept ? .ping : .fail("101 without the right Sec-WebSocket-Accept")
        }
    }

    /// After the ping: skips data frames, passes on the pong, fails on a close.
    mutating func readFrames() -> Step {
        while !buffer.isEmpty {
            let parsed = buffer.withUnsafeBytes { FrameHeader.parse($0) }
            guard case .complete(let header) = parsed else {
                if case .invalidLength = parsed { return finish(.fail("invalid frame length")) }
                return .wait
            }
            let total = header.headerLength + Int(clamping: header.payloadLength)
            if header.opcode == FrameHeader.Opcode.close { return finish(.fail("closed the WebSocket instead of answering the ping")) }
            if header.opcode == FrameHeader.Opcode.pong { return finish(.pass) }
            guard buffer.count >= total else {
                // A large data frame ahead of the pong: never held beyond the head limit.
                return total > Self.maxHead * 64 ? finish(.fail("a frame of \(total) bytes before the pong")) : .wait
            }
            buffer.removeFirst(total)
        }
        return .wait
    }

    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4) where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index
        }
        return nil
    }
}
