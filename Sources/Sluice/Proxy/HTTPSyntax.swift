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

    /// Equal bytes, or the same ASCII letter in either case.
    static func sameIgnoringCase(_ x: UInt8, _ y: UInt8) -> Bool {
        x == y || (x | 0x20 == y | 0x20 && (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(x | 0x20))
    }

    /// CTLs other than HTAB, and DEL: never valid in a field value or reason phrase.
    static func isControl(_ byte: UInt8) -> Bool {
        (byte < 0x20 && byte != UInt8(ascii: "\t")) || byte == 0x7F
    }
}
