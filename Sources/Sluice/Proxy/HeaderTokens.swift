import NIOHTTP1

/// Comma-separated header lists (RFC 9110 §5.6.1), across repeated headers, and the
/// case-insensitive comparisons header names and tokens need. Every proxied request goes
/// through these, so they work on UTF-8 bytes: no Foundation, no grapheme breaking, no
/// lower-cased copies, and no arrays unless a list is asked for.
enum HeaderTokens {
    static func list(_ headers: HTTPHeaders, _ name: String) -> [String] {
        var tokens: [String] = []
        for (field, value) in headers where equalIgnoringASCIICase(field, name) {
            _ = firstElement(of: value) { tokens.append(String($0)); return false }
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
        for (field, value) in headers where equalIgnoringASCIICase(field, name) {
            if firstElement(of: value, where: { equalIgnoringASCIICase($0, token) }) { return true }
        }
        return false
    }

    /// The value of the one field named `name`, or `nil` when there is none or more than one.
    /// Reads the fields in place, where `headers[name]` builds an array of them.
    static func onlyValue(_ headers: HTTPHeaders, _ name: String) -> String? {
        var found: String?
        for (field, value) in headers where equalIgnoringASCIICase(field, name) {
            if found != nil { return nil }
            found = value
        }
        return found
    }

    /// Whether `predicate` holds for an element of the list `value` (non-empty, spaces and tabs
    /// trimmed), trying them in order. Elements are slices of `value`: nothing is copied.
    static func firstElement(of value: String, where predicate: (Substring) -> Bool) -> Bool {
        let bytes = value.utf8
        var start = bytes.startIndex
        while start < bytes.endIndex {
            var end = start
            while end < bytes.endIndex, bytes[end] != UInt8(ascii: ",") { end = bytes.index(after: end) }
            let element = bytes[start..<end].trimmingSpacesAndTabs
            if !element.isEmpty, predicate(value[element.startIndex..<element.endIndex]) { return true }
            start = end < bytes.endIndex ? bytes.index(after: end) : end
        }
        return false
    }

    /// ASCII case-insensitive equality, as header names and most tokens compare. Inlined for
    /// its length check: a request's fields are compared with a dozen names each (hop-by-hop,
    /// the ones Sluice writes itself), and nearly every comparison ends there.
    @inline(__always)
    static func equalIgnoringASCIICase(_ a: some StringProtocol, _ b: some StringProtocol) -> Bool {
        guard a.utf8.count == b.utf8.count else { return false }
        return sameBytesIgnoringASCIICase(a, b)
    }

    /// `a` and `b`, of the same length, are equal ignoring ASCII case.
    private static func sameBytesIgnoringASCIICase(_ a: some StringProtocol, _ b: some StringProtocol) -> Bool {
        // Native strings keep their UTF-8 contiguous: compare the bytes in place.
        let compared = a.utf8.withContiguousStorageIfAvailable { x in
            b.utf8.withContiguousStorageIfAvailable { y in
                HTTPSyntax.equalsIgnoringCase(UnsafeRawBufferPointer(x)[...], UnsafeRawBufferPointer(y)[...])
            }
        }
        if let compared = compared ?? nil { return compared }
        for (x, y) in zip(a.utf8, b.utf8) where !HTTPSyntax.sameIgnoringCase(x, y) { return false }
        return true
    }
}

extension BidirectionalCollection where Element == UInt8 {
    /// Without leading and trailing spaces and tabs (header whitespace).
    var trimmingSpacesAndTabs: SubSequence {
        var slice = self[...]
        while let first = slice.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { slice = slice.dropFirst() }
        while let last = slice.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { slice = slice.dropLast() }
        return slice
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs (header whitespace; no Foundation).
    func trimmingSpacesAndTabs() -> String {
        let whole = Substring(self)
        let trimmed = whole.utf8.trimmingSpacesAndTabs
        return String(whole[trimmed.startIndex..<trimmed.endIndex])
    }
}
