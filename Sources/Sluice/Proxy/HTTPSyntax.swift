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

    /// Two byte strings equal but for the case of ASCII letters (names and tokens).
    static func equalsIgnoringCase<Other: Collection<UInt8>>(_ bytes: Slice<UnsafeRawBufferPointer>, _ other: Other) -> Bool {
        bytes.count == other.count && zip(bytes, other).allSatisfy { sameIgnoringCase($0, $1) }
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
