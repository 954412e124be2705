#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import SluiceConfig
import Synchronization

/// One JSON line per HTTP request and per closed WebSocket, to stdout, stderr or a file.
///
/// Records carry only what the gateway chose to put in them: paths without query strings,
/// never header values that can hold credentials (cookies, authorization, tokens). Each line is
/// one `write(2)` under a lock, so lines from different event loops never interleave. It lives
/// as long as the gateway: a reload may point it elsewhere or turn it off, and SIGUSR1 reopens
/// its file (after logrotate moved it away).
public final class AccessLog: Sendable {
    private struct Target {
        var destination: AccessLogDestination
        var fd: Int32
        var owned: Bool
    }

    private let lock = NIOLock()
    private nonisolated(unsafe) var target: Target
    private let enabled = Atomic<Bool>(false)

    /// `off` until `point(to:)` says otherwise.
    public init() {
        target = Target(destination: .off, fd: -1, owned: false)
    }

    /// Whether lines are written at all: callers skip building records when not.
    var isEnabled: Bool { enabled.load(ordering: .relaxed) }

    /// Writes to `destination` from now on (opening a file first; on failure nothing changes).
    public func point(to destination: AccessLogDestination) throws(AccessLogError) {
        let opened = try Self.open(destination)
        lock.withLock {
            if target.owned { Glibc.close(target.fd) }
            target = Target(destination: destination, fd: opened.fd, owned: opened.owned)
        }
        enabled.store(destination != .off, ordering: .relaxed)
    }

    /// Opens the file again by name (logrotate moved the old one away); stdout, stderr and off
    /// are left alone.
    public func reopen() throws(AccessLogError) {
        let destination = lock.withLock { target.destination }
        guard case .file = destination else { return }
        try point(to: destination)
    }

    private static func open(_ destination: AccessLogDestination) throws(AccessLogError) -> (fd: Int32, owned: Bool) {
        switch destination {
        case .off: return (-1, false)
        case .stdout: return (1, false)
        case .stderr: return (2, false)
        case .file(let path):
            let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
            guard fd >= 0 else { throw AccessLogError(path: path, errno: errno) }
            return (fd, true)
        }
    }

    deinit {
        if target.owned { Glibc.close(target.fd) }
    }

    func write(_ record: consuming AccessRecord) {
        guard isEnabled else { return }
        record.finish()
        let line = record.bytes
        lock.withLock {
            let fd = target.fd
            guard fd >= 0 else { return }
            line.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                    if written < 0 && errno == EINTR { continue }
                    guard written > 0 else { return }
                    offset += written
                }
            }
        }
    }
}

/// The access log file could not be opened.
public struct AccessLogError: Error, CustomStringConvertible {
    public var path: String
    public var errno: Int32
    public var description: String { "cannot open access log \(path): \(String(cString: strerror(errno)))" }
}

/// One access-log line being written: JSON fields appended in order, straight into the line's
/// bytes (one buffer per line; no field list, no intermediate strings for numbers and the
/// timestamp). Values are strings, integers, doubles, booleans and null.
struct AccessRecord {
    private(set) var bytes: [UInt8] = []

    init(type: String) {
        bytes.reserveCapacity(768)
        bytes.append(UInt8(ascii: "{"))
        appendKey("ts")
        bytes.append(UInt8(ascii: "\""))
        Self.appendTimestamp(to: &bytes)
        bytes.append(UInt8(ascii: "\""))
        set("type", type)
    }

    mutating func set(_ key: String, _ value: (some StringProtocol)?) {
        appendKey(key)
        if let value { Self.appendQuoted(value, to: &bytes) } else { appendLiteral("null") }
    }

    mutating func set<I: BinaryInteger>(_ key: String, _ value: I) {
        appendKey(key)
        Self.appendDecimal(Int64(clamping: value), to: &bytes)
    }

    mutating func set(_ key: String, _ value: Double) {
        appendKey(key)
        if value.isFinite { bytes.append(contentsOf: String(value).utf8) } else { appendLiteral("null") }
    }

    mutating func set(_ key: String, _ value: Bool) {
        appendKey(key)
        appendLiteral(value ? "true" : "false")
    }

    mutating func setNull(_ key: String) {
        appendKey(key)
        appendLiteral("null")
    }

    /// Ends the object and the line.
    mutating func finish() {
        bytes.append(UInt8(ascii: "}"))
        bytes.append(UInt8(ascii: "\n"))
    }

    /// The record as a JSON object (for tests and callers that want the text).
    var json: String { String(decoding: bytes, as: UTF8.self) + "}" }

    private mutating func appendKey(_ key: String) {
        if bytes.count > 1 { bytes.append(UInt8(ascii: ",")) }
        Self.appendQuoted(key, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
    }

    private mutating func appendLiteral(_ literal: StaticString) {
        literal.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    static func appendDecimal(_ value: Int64, to out: inout [UInt8]) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        // Digits come lowest first: collect them in a fixed buffer, then copy them in order.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { buffer in
            var count = 0
            repeat {
                buffer[count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            } while magnitude > 0
            for index in stride(from: count - 1, through: 0, by: -1) { out.append(buffer[index]) }
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// `text` as a JSON string: quotes, backslashes and control characters escaped; other bytes
    /// (UTF-8 included) as they are.
    static func appendQuoted(_ text: some StringProtocol, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "\n"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
            case UInt8(ascii: "\t"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
            case 0..<0x20, 0x7f:
                for escape in "\\u00".utf8 { out.append(escape) }
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0xf)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// `text` as a JSON string, appended to a `String` (the admin API's text answers).
    static func appendQuoted(_ text: String, to out: inout String) {
        var bytes: [UInt8] = []
        appendQuoted(text, to: &bytes)
        out += String(decoding: bytes, as: UTF8.self)
    }

    /// RFC 3339 UTC with milliseconds, written as digits.
    static func appendTimestamp(to out: inout [UInt8]) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func digits(_ value: Int32, _ width: Int) {
            var divisor: Int32 = 1
            for _ in 1..<width { divisor *= 10 }
            let value = max(0, value)
            while divisor > 0 {
                out.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
                divisor /= 10
            }
        }
        digits(parts.tm_year + 1900, 4)
        out.append(UInt8(ascii: "-"))
        digits(parts.tm_mon + 1, 2)
        out.append(UInt8(ascii: "-"))
        digits(parts.tm_mday, 2)
        out.append(UInt8(ascii: "T"))
        digits(parts.tm_hour, 2)
        out.append(UInt8(ascii: ":"))
        digits(parts.tm_min, 2)
        out.append(UInt8(ascii: ":"))
        digits(parts.tm_sec, 2)
        out.append(UInt8(ascii: "."))
        digits(Int32(now.tv_nsec / 1_000_000), 3)
        out.append(UInt8(ascii: "Z"))
    }
}
