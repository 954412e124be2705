import NIOHTTP1

/// Comma-separated header lists (RFC 9110 §5.6.1), across repeated headers, and the
/// case-insensitive comparisons header names and tokens need. Every proxied request goes
/// through these, so they work on bytes: no Foundation, no lower-cased copies.
enum HeaderTokens {
    static func list(_ headers: HTTPHeaders, _ name: String) -> [String] {
        var tokens: [String] = []
        for value in headers[name] {
            for part in value.split(separator: ",") {
                let token = part.trimmingSpacesAndTabs()
                if !token.isEmpty { tokens.append(token) }
            }
        }
        return tokens
    }

    /// Lower-cased names of the extensions in `Sec-WebSocket-Extensions` (parameters dropped).
    static func extensionNames(_ headers: HTTPHeaders) -> [String] {
        list(headers, "sec-websocket-extensions").compactMap { item in
            item.split(separator: ";").first.map { $0.trimmingSpacesAndTabs().lowercased() }
        }
    }

    static func contains(_ headers: HTTPHeaders, _ name: String, token: String) -> Bool {
        for value in headers[name] {
            for part in value.split(separator: ",") where equalIgnoringASCIICase(part.trimmingSpacesAndTabs(), token) {
                return true
            }
        }
        return false
    }

    /// ASCII case-insensitive equality, as header names and most tokens compare.
    static func equalIgnoringASCIICase(_ a: some StringProtocol, _ b: some StringProtocol) -> Bool {
        guard a.utf8.count == b.utf8.count else { return false }
        for (x, y) in zip(a.utf8, b.utf8) where x != y {
            guard x | 0x20 == y | 0x20, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(x | 0x20) else { return false }
        }
        return true
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs (header whitespace; no Foundation).
    func trimmingSpacesAndTabs() -> String {
        var slice = self[...]
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return String(slice)
    }
}
