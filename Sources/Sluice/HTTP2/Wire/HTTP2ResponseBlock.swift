import NIOCore
import NIOHTTP1

/// An answer's header block, written in HPACK (RFC 7541) straight from its HTTP/1 head, with the
/// static table only: `:status` as an indexed field where the table has the code, every other
/// field a literal without indexing whose name is the static table's index when the table has
/// the name, no Huffman coding. Names go out lower-cased; connection-specific fields, and those
/// a `Connection` field names, are left out (RFC 9113 §8.2.2).
///
/// No dynamic table, as nginx and HAProxy encode their answers: what a proxy relays changes from
/// answer to answer (dates, lengths, tags), so indexing saves few bytes, and NIOHPACK's encoder
/// searched its tables for every field (a third of the cost of writing an answer) after the
/// head had been copied into `HPACKHeaders`. A decoder's table is untouched by such a block, so
/// the client's SETTINGS_HEADER_TABLE_SIZE never matters.
enum HTTP2ResponseBlock {
    /// An answer's head: as parts (Sluice's own answers, 100 Continue), or a backend's as it
    /// was read (`UpstreamResponseParser.Head`: its end-to-end fields' bytes, no strings made).
    enum Head {
        case parts(HTTPResponseHead)
        /// With `Via` and the sticky cookie, if any, added after the backend's fields.
        case backend(UpstreamResponseParser.Head, setCookie: String?)
    }

    /// Appends the block for `head` to `out`, in one write to the buffer (each of a buffer's
    /// writes costs more than the bytes it copies).
    static func write(_ head: Head, to out: inout ByteBuffer) {
        switch head {
        case .parts(let head): write(head, to: &out)
        case .backend(let head, let setCookie): write(head, setCookie: setCookie, to: &out)
        }
    }

    static func write(_ head: HTTPResponseHead, to out: inout ByteBuffer) {
        // Fields a `Connection` field names (a proxied answer has none left: its head comes
        // end-to-end only), so the set is built only when there is one.
        var named: Set<String> = []
        var bound = 32
        for (name, value) in head.headers {
            bound += name.utf8.count + value.utf8.count + 16
            if name.utf8.count == 10, HTTPSyntax.withBytes(of: name, { matches($0, "connection") }) {
                named = Set(head.headers[canonicalForm: "connection"].map { $0.lowercased() })
            }
        }
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { bytes in
            var block = Writer(bytes: bytes)
            block.status(head.status.code)
            for (name, value) in head.headers {
                switch HTTPSyntax.withBytes(of: name, classify) {
                case .dropped:
                    continue
                case .indexed(let index):
                    if !named.isEmpty && named.contains(name.lowercased()) { continue }
                    // Literal without indexing, indexed name: 0000 and a 4-bit prefix.
                    block.integer(index, prefix: 4, flags: 0)
                case .literal:
                    if !named.isEmpty && named.contains(name.lowercased()) { continue }
                    block.byte(0)
                    HTTPSyntax.withBytes(of: name) { block.string($0, lowercased: true) }
                }
                HTTPSyntax.withBytes(of: value) { block.string($0, lowercased: false) }
            }
            return block.at
        }
    }

    /// A backend's head as read: its end-to-end fields (the parser has left out the
    /// hop-by-hop ones and those `Connection` names), `via`, and `setCookie`.
    static func write(_ head: UpstreamResponseParser.Head, setCookie: String?, to out: inout ByteBuffer) {
        let bound = 64 + head.bytes.readableBytes + head.fields.count * 16 + (setCookie?.utf8.count ?? 0)
        head.bytes.withUnsafeReadableBytes { raw in
            let source = raw.bindMemory(to: UInt8.self)
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { bytes in
                var block = Writer(bytes: bytes)
                block.status(UInt(head.status))
                for field in head.fields where field.endToEnd {
                    let name = UnsafeBufferPointer(rebasing: source[field.name])
                    switch classify(name) {
                    case .dropped:
                        continue
                    case .indexed(let index):
                        block.integer(index, prefix: 4, flags: 0)
                    case .literal:
                        block.byte(0)
                        block.string(name, lowercased: true)
                    }
                    block.string(UnsafeBufferPointer(rebasing: source[field.value]), lowercased: false)
                }
                // via (static table 60)
                block.integer(60, prefix: 4, flags: 0)
                block.string(HTTPWireFormat.viaValue)
                if let setCookie {
                    block.integer(55, prefix: 4, flags: 0)
                    HTTPSyntax.withBytes(of: setCookie) { block.string($0, lowercased: false) }
                }
                return block.at
            }
        }
    }

    /// Bytes into the buffer's writable space, which the caller sized.
    private struct Writer {
        let bytes: UnsafeMutableRawBufferPointer
        var at = 0

        mutating func byte(_ value: UInt8) {
            bytes[at] = value
            at += 1
        }

        mutating func status(_ code: UInt) {
            let indexed: UInt8? =
                switch code {
                case 200: 8
                case 204: 9
                case 206: 10
                case 304: 11
                case 400: 12
                case 404: 13
                case 500: 14
                default: nil
                }
            if let indexed {
                byte(0x80 | indexed)
            } else {
                // Literal without indexing, the name `:status` (index 8).
                byte(8)
                HTTPSyntax.withBytes(of: String(code)) { string($0, lowercased: false) }
            }
        }

        /// An integer with a `prefix`-bit prefix (RFC 7541 §5.1), `flags` in the first byte's
        /// other bits.
        mutating func integer(_ value: Int, prefix: Int, flags: UInt8) {
            let limit = (1 << prefix) - 1
            guard value >= limit else {
                byte(flags | UInt8(value))
                return
            }
            byte(flags | UInt8(limit))
            var rest = value - limit
            while rest >= 128 {
                byte(UInt8(rest & 0x7f | 0x80))
                rest >>= 7
            }
            byte(UInt8(rest))
        }

        /// A string literal, not Huffman-coded (RFC 7541 §5.2); a name lower-cased.
        mutating func string(_ source: UnsafeBufferPointer<UInt8>, lowercased: Bool) {
            integer(source.count, prefix: 7, flags: 0)
            let start = at
            if let base = source.baseAddress { (bytes.baseAddress! + start).copyMemory(from: base, byteCount: source.count) }
            at += source.count
            guard lowercased else { return }
            for index in start..<at where bytes[index] >= UInt8(ascii: "A") && bytes[index] <= UInt8(ascii: "Z") {
                bytes[index] |= 0x20
            }
        }

        mutating func string(_ source: StaticString) {
            source.withUTF8Buffer { string($0, lowercased: false) }
        }
    }

    /// How a field's name goes out.
    enum Name: Equatable {
        /// Connection-specific (RFC 9113 §8.2.2): HTTP/2 does not carry it.
        case dropped
        /// The static table's index for the name (RFC 7541 Appendix A).
        case indexed(Int)
        /// Written out, lower-cased.
        case literal
    }

    /// What `name` (a token, any case) is, for the names answers carry.
    static func classify(_ name: UnsafeBufferPointer<UInt8>) -> Name {
        func named(_ lower: StaticString, _ index: Int) -> Name? { matches(name, lower) ? .indexed(index) : nil }
        func dropped(_ lower: StaticString) -> Name? { matches(name, lower) ? .dropped : nil }
        let found: Name? =
            switch name.count {
            case 3: named("via", 60) ?? named("age", 21)
            case 4: named("date", 33) ?? named("etag", 34) ?? named("vary", 59) ?? named("link", 45)
            case 5: named("allow", 22)
            case 6: named("server", 54)
            case 7: named("expires", 36) ?? named("refresh", 52) ?? dropped("upgrade")
            case 8: named("location", 46)
            case 10: named("set-cookie", 55) ?? dropped("connection") ?? dropped("keep-alive")
            case 11: named("retry-after", 53)
            case 12: named("content-type", 31)
            case 13: named("cache-control", 24) ?? named("last-modified", 44) ?? named("accept-ranges", 18) ?? named("content-range", 30)
            case 14: named("content-length", 28)
            case 16:
                named("content-encoding", 26) ?? named("content-language", 27) ?? named("content-location", 29)
                    ?? named("www-authenticate", 61) ?? dropped("proxy-connection")
            case 17: dropped("transfer-encoding")
            case 18: named("proxy-authenticate", 48)
            case 19: named("content-disposition", 25)
            case 25: named("strict-transport-security", 56)
            case 27: named("access-control-allow-origin", 20)
            default: nil
            }
        return found ?? .literal
    }

    /// RFC 9113 §8.2.2's connection-specific fields (any case), which HTTP/2 does not carry:
    /// left out of answers here, refused in requests (`HTTP2FieldCheck`).
    static func isConnectionSpecific(_ name: String) -> Bool {
        HTTPSyntax.withBytes(of: name, classify) == .dropped
    }

    /// `name` (a token, any case) is `lower`, of the same length. Only letters of `name` are
    /// folded: the expected names are lower-case letters and `-`, which no other byte of a
    /// token folds to.
    private static func matches(_ name: UnsafeBufferPointer<UInt8>, _ lower: StaticString) -> Bool {
        lower.withUTF8Buffer { expected in
            guard name.count == expected.count else { return false }
            for index in 0..<name.count {
                let byte = name[index]
                let folded = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
                if folded != expected[index] { return false }
            }
            return true
        }
    }
}
