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

    func write(_ record: AccessRecord) {
        guard isEnabled else { return }
        var line = record.json
        line.append("\n")
        lock.withLock {
            let fd = target.fd
            guard fd >= 0 else { return }
            var utf8 = Array(line.utf8)
            var offset = 0
            while offset < utf8.count {
                let written = utf8.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return }
                offset += written
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

/// An ordered set of JSON fields; only strings, integers, doubles, booleans and null.
struct AccessRecord {
    enum Value {
        case string(String)
        case int(Int64)
        case double(Double)
        case bool(Bool)
        case null
    }

    private(set) var fields: [(String, Value)] = []

    init(type: String) {
        fields.append(("ts", .string(Self.timestamp())))
        fields.append(("type", .string(type)))
    }

    subscript(key: String) -> Value? {
        get { fields.first { $0.0 == key }?.1 }
        set {
            fields.removeAll { $0.0 == key }
            if let newValue { fields.append((key, newValue)) }
        }
    }

    mutating func set(_ key: String, _ value: String?) { self[key] = value.map(Value.string) ?? .null }
    mutating func set<I: BinaryInteger>(_ key: String, _ value: I) { self[key] = .int(Int64(clamping: value)) }
    mutating func set(_ key: String, _ value: Double) { self[key] = .double(value) }
    mutating func set(_ key: String, _ value: Bool) { self[key] = .bool(value) }

    var json: String {
        var out = "{"
        for (index, (key, value)) in fields.enumerated() {
            if index > 0 { out += "," }
            Self.appendQuoted(key, to: &out)
            out += ":"
            switch value {
            case .string(let text): Self.appendQuoted(text, to: &out)
            case .int(let number): out += String(number)
            case .double(let number): out += number.isFinite ? String(number) : "null"
            case .bool(let flag): out += flag ? "true" : "false"
            case .null: out += "null"
            }
        }
        return out + "}"
    }

    static func appendQuoted(_ text: String, to out: inout String) {
        out += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7f:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }

    /// RFC 3339 UTC with milliseconds.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let millis = Int32(now.tv_nsec / 1_000_000)
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(millis, 3))Z"
    }
}
