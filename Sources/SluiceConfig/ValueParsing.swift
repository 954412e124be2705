/// Parsers for the string forms the config uses: durations, sizes, addresses and backend URLs.
///
/// Each returns `nil` (or throws a message) for bad input; the reader turns that into a
/// `ConfigError` with the key path.
public enum ValueParsing {
    /// `30s`, `500ms`, `2m`, `1h`, `1m30s`. Zero is allowed (`0s`); a bare number is not, so
    /// `30` cannot be misread as milliseconds or seconds.
    public static func duration(_ text: String) -> Duration? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        var rest = Substring(text.trimmingSpaces())
        guard !rest.isEmpty else { return nil }
        var totalMillis: Int64 = 0
        while !rest.isEmpty {
            let digits = rest.prefix(while: { $0.isASCII && $0.isNumber })
            guard !digits.isEmpty, digits.count <= 12, let value = Int64(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            let unitText = rest.prefix(while: { $0.isASCII && $0.isLetter })
            guard let unit = units.first(where: { $0.0 == unitText }) else { return nil }
            rest = rest.dropFirst(unitText.count)
            totalMillis += value * unit.1
        }
        return .milliseconds(totalMillis)
    }

    /// `64KiB`, `16MiB`, `1GiB`, `512B`, `10KB` (decimal), or a bare byte count.
    public static func size(_ text: String) -> Int? {
        let trimmed = text.trimmingSpaces()
        let digits = trimmed.prefix(while: { $0.isASCII && $0.isNumber })
        guard !digits.isEmpty, digits.count <= 15, let value = Int(digits) else { return nil }
        let unit = trimmed.dropFirst(digits.count).trimmingSpaces()
        let multipliers: [String: Int] = [
            "": 1, "B": 1,
            "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
            "KB": 1_000, "MB": 1_000_000, "GB": 1_000_000_000,
        ]
        guard let multiplier = multipliers[unit] else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }

    /// `host:port` with an IPv4 literal, a bracketed IPv6 literal, or a host name.
    public static func address(_ text: String) throws(ValueError) -> SocketAddressSpec {
        let host: String
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw ValueError("IPv6 address needs a closing ']', as in [::1]:8443")
            }
            host = String(text[text.index(after: text.startIndex)..<close])
            let after = text[text.index(after: close)...]
            guard after.hasPrefix(":") else { throw ValueError("expected ':port' after ']'") }
            portText = after.dropFirst()
            guard IPAddressText.isIPv6(host) else { throw ValueError("'\(host)' is not an IPv6 address") }
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw ValueError("expected host:port, as in 127.0.0.1:8443")
            }
            host = String(text[..<colon])
            portText = text[text.index(after: colon)...]
            if host.contains(":") {
                throw ValueError("an IPv6 address must be in brackets, as in [::1]:8443")
            }
            guard !host.isEmpty else { throw ValueError("missing host before ':'") }
            guard IPAddressText.isIPv4(host) || IPAddressText.isHostName(host) else {
                throw ValueError("'\(host)' is neither an IP address nor a host name")
            }
        }
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw ValueError("port must be a number from 0 to 65535, got '\(portText)'")
        }
        return SocketAddressSpec(host: host, port: port)
    }
}

/// A parse failure's message, before it is given a key path.
public struct ValueError: Error, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

/// A listen or connect address as written in the config: a host (IP literal or name) and a port.
public struct SocketAddressSpec: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Syntax checks for IP literals and host names (no resolution).
public enum IPAddressText {
    public static func isIPv4(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        return parts.allSatisfy { part in
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                let value = Int(part)
            else { return false }
            return value <= 255
        }
    }

    public static func isIPv6(_ text: String) -> Bool {
        guard text.contains(":"), text.count <= 45 else { return false }
        let allowed = Set("0123456789abcdefABCDEF:.")
        guard text.allSatisfy({ allowed.contains($0) }) else { return false }
        let doubleColons = text.components(separatedBy: "::").count - 1
        guard doubleColons <= 1 else { return false }
        let groups = text.split(separator: ":", omittingEmptySubsequences: true)
        for (index, group) in groups.enumerated() {
            if group.contains(".") {
                guard index == groups.count - 1, isIPv4(String(group)) else { return false }
            } else if group.count > 4 {
                return false
            }
        }
        let maxGroups = groups.last?.contains(".") == true ? 7 : 8
        return doubleColons == 1 ? groups.count < maxGroups : groups.count == maxGroups
    }

    public static func isHostName(_ text: String) -> Bool {
        guard !text.isEmpty, text.utf8.count <= 253 else { return false }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        // All-numeric dotted names are malformed IPv4 addresses, not host names.
        if labels.allSatisfy({ $0.allSatisfy { $0.isASCII && $0.isNumber } }) { return false }
        return labels.allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" || $0 == "_" }
        }
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        String(self.drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
