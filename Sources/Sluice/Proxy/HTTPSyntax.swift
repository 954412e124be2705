/// Byte classes of HTTP/1.1's grammar, shared by the readers of requests and responses.
enum HTTPSyntax {
    /// tchar (RFC 9110 §5.6.2).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default: false
        }
    }

    /// Two byte strings equal but for the case of ASCII letters (names and tokens). Indexed
    /// loops over raw bytes: every response field and most request heads pass through here.
    static func equalsIgnoringCase(_ bytes: Slice<UnsafeRawBufferPointer>, _ other: Slice<UnsafeRawBufferPointer>) -> Bool {
        guard bytes.count == other.count else { return false }
        var index = bytes.startIndex, otherIndex = other.startIndex
        while index < bytes.endIndex {
            guard sameIgnoringCase(bytes.base[index], other.base[otherIndex]) else { return false }
            index += 1
            otherIndex += 1
        }
        return true
    }

    /// `bytes` against a lower-case name or token written in the source.
    static func equalsIgnoringCase(_ bytes: Slice<UnsafeRawBufferPointer>, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        return lowercase.withUTF8Buffer { equalsIgnoringCase(bytes, UnsafeRawBufferPointer($0)[...]) }
    }

    /// Calls `body` with each element of a comma-separated field value (RFC 9110 §5.6.1), spaces
    /// and tabs trimmed, empty elements skipped. The slices index `list`'s base, as `list` does.
    static func forEachListElement(_ list: Slice<UnsafeRawBufferPointer>, _ body: (Slice<UnsafeRawBufferPointer>) -> Void) {
        var start = list.startIndex
        while start < list.endIndex {
            var end = start
            while end < list.endIndex && list.base[end] != UInt8(ascii: ",") { end += 1 }
            let element = list.base[start..<end].trimmingSpacesAndTabs
            if !element.isEmpty { body(element) }
            start = end + 1
        }
    }

    /// Equal bytes, or the same ASCII letter in either case.
    static func sameIgnoringCase(_ x: UInt8, _ y: UInt8) -> Bool {
        x == y || (x | 0x20 == y | 0x20 && (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(x | 0x20))
    }

    /// CTLs other than HTAB, and DEL: never valid in a field value or reason phrase.
    static func isControl(_ byte: UInt8) -> Bool {
        (byte < 0x20 && byte != UInt8(ascii: "\t")) || byte == 0x7F
    }

    /// A `Host` value as RFC 9110 §7.2 allows it: `uri-host [ ":" port ]`, the host a reg-name
    /// (unreserved, percent-encoded and sub-delims bytes), an IPv4 address, or an IP literal in
    /// brackets; empty is allowed. Anything else (spaces, slashes, quotes, `@`) is refused
    /// before it reaches routing, `X-Forwarded-Host` or the backend.
    static func isValidHost(_ value: String) -> Bool {
        withBytes(of: value) { isValidHost($0[...]) }
    }

    private static func isValidHost(_ host: Slice<UnsafeBufferPointer<UInt8>>) -> Bool {
        var bytes = host
        if bytes.first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else { return false }
            let literal = bytes[bytes.index(after: bytes.startIndex)..<close]
            guard !literal.isEmpty, literal.allSatisfy({ isRegNameByte($0) || $0 == UInt8(ascii: ":") }) else { return false }
            bytes = bytes[bytes.index(after: close)...]
            guard let colon = bytes.first else { return true }
            return colon == UInt8(ascii: ":") && bytes.dropFirst().allSatisfy(isDigit)
        }
        if let colon = bytes.lastIndex(of: UInt8(ascii: ":")) {
            guard bytes[bytes.index(after: colon)...].allSatisfy(isDigit) else { return false }
            bytes = bytes[..<colon]
        }
        return bytes.allSatisfy(isRegNameByte)
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    /// unreserved / pct-encoded / sub-delims (RFC 3986 §3.2.2), the `%` of an escape included.
    private static func isRegNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "%"),
            UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="):
            true
        default: false
        }
    }

    /// `body` over the string's UTF-8 bytes in one piece (a string Sluice decoded or parsed
    /// always is; any other is copied into one first): scans over a buffer cost a fraction of
    /// scans over a `String.UTF8View`.
    static func withBytes<Result>(of string: String, _ body: (UnsafeBufferPointer<UInt8>) -> Result) -> Result {
        if let result = string.utf8.withContiguousStorageIfAvailable(body) { return result }
        var copy = string
        copy.makeContiguousUTF8()
        return copy.utf8.withContiguousStorageIfAvailable(body)!
    }
}
