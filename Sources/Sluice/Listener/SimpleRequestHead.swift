import NIOHTTP1

/// Reads the commonest requests there are — a head in plain syntax with no body or a body of
/// one `Content-Length`, and a WebSocket upgrade in its usual shape — straight from their bytes,
/// so that most requests skip NIO's decoder and the llhttp machinery behind it.
///
/// It is a fast path, never a second opinion: it accepts a strict subset of what llhttp
/// accepts, and everything else (a chunked body, `Transfer-Encoding`, a `Content-Length` that
/// is repeated or not plain digits, an upgrade to anything but `websocket` or in another shape,
/// obs-fold, a bare LF,
/// trailing whitespace, bytes outside printable ASCII, an unusual method or target form, a head
/// not complete in the bytes at hand) is declined and goes to NIO's decoder from the same
/// message boundary. So the smuggling defences and error answers stay llhttp's and the
/// gateway's, and a request read here yields the same `HTTPRequestHead` NIO would have made
/// (checked against NIO's decoder in the tests).
enum SimpleRequestHead {
    enum Outcome {
        /// A complete head of `length` bytes. Its body, `vetted.framing.contentLength` bytes
        /// if that is set, follows it (the fast path passes it on as it arrives).
        case request(HTTPRequestHead, length: Int, vetted: Vetted)
        /// Not for the fast path; NIO's decoder reads these bytes.
        case declined
    }

    /// What the gateway would read again from the head's fields, learned while reading them:
    /// its framing (sizes, `Host` count, body length), whether the connection stays open, its
    /// `Host`, and whether it offers an upgrade. Equal to what the gateway derives from NIO's
    /// head (tested).
    struct Vetted: Equatable {
        var framing = RequestFraming()
        var keepAlive = false
        var host: String?
        /// A WebSocket upgrade head: `GET`, HTTP/1.1, one `Upgrade: websocket`, one `Connection`
        /// whose tokens are `upgrade` and perhaps `keep-alive`, no body. As after any head
        /// llhttp takes for an upgrade, nothing behind it is read as HTTP: the bytes wait for
        /// the relay (`RequestFastPath`). A head that names `Upgrade` or the `upgrade` token in
        /// any other way is declined.
        var offersUpgrade = false
    }

    /// Longer heads are left to NIO's decoder (and the gateway's limits).
    static let maxLength = 16 * 1024
    static let maxFields = 128

    static func parse(_ raw: UnsafeRawBufferPointer) -> Outcome {
        var reader = Reader(raw: raw)
        return reader.read() ?? .declined
    }

    private struct Reader {
        let raw: UnsafeRawBufferPointer
        var position = 0

        var end: Int { min(raw.count, SimpleRequestHead.maxLength) }

        mutating func read() -> Outcome? {
            guard let method = readMethod(), take(UInt8(ascii: " ")) else { return nil }
            let targetStart = position
            guard position < end, raw[position] == UInt8(ascii: "/") else { return nil }
            while position < end, Self.isTargetByte(raw[position]) { position += 1 }
            let target = targetStart..<position
            guard take(UInt8(ascii: " ")), let version = readVersion(), takeCRLF() else { return nil }

            var headers = HTTPHeaders()
            headers.reserveCapacity(16)
            var vetted = Vetted()
            // At most one `Connection` field, `keep-alive` or `close`, or `upgrade` with perhaps
            // `keep-alive`: with more, llhttp's verdict (which NIO's decoder keeps) and the one
            // `HTTPHeaders` computes can differ.
            var connection: Bool?
            var connectionUpgrade = false
            var upgradeField = false
            while true {
                guard position < end else { return nil }
                if raw[position] == UInt8(ascii: "\r") {
                    guard takeCRLF() else { return nil }
                    break
                }
                guard headers.count < SimpleRequestHead.maxFields, let (name, value) = readField() else { return nil }
                let valueString = string(value)
                // Fields that decide framing or a change of protocol send the request to NIO's
                // decoder; `Host` and `Connection` are noted on the way.
                switch name.count {
                case 14 where equalsIgnoringCase(name, "content-length"):
                    // One field of plain digits; a second one, a list or a sign goes to NIO.
                    guard vetted.framing.contentLength == nil, !value.isEmpty, value.count <= 18,
                          value.allSatisfy({ raw[$0] >= UInt8(ascii: "0") && raw[$0] <= UInt8(ascii: "9") })
                    else { return nil }
                    vetted.framing.contentLength = value.reduce(0) { $0 * 10 + Int(raw[$1] - UInt8(ascii: "0")) }
                case 17 where equalsIgnoringCase(name, "transfer-encoding"): return nil
                case 7 where equalsIgnoringCase(name, "upgrade"):
                    guard !upgradeField, equalsIgnoringCase(value, "websocket") else { return nil }
                    upgradeField = true
                    vetted.framing.upgradeCount += 1
                case 10 where equalsIgnoringCase(name, "connection"):
                    guard connection == nil else { return nil }
                    if equalsIgnoringCase(value, "close") {
                        connection = false
                    } else if equalsIgnoringCase(value, "keep-alive") {
                        connection = true
                    } else if readUpgradeTokens(value) {
                        connection = true
                        connectionUpgrade = true
                    } else {
                        return nil
                    }
                case 4 where equalsIgnoringCase(name, "host"):
                    vetted.framing.hostCount += elementCount(value)
                    if vetted.host == nil { vetted.host = valueString }
                case 6 where equalsIgnoringCase(name, "origin"):
                    vetted.framing.originCount += 1
                case 6 where equalsIgnoringCase(name, "expect"):
                    vetted.framing.expectsContinue = vetted.framing.expectsContinue
                        || HeaderTokens.firstElement(of: valueString) { HeaderTokens.equalIgnoringASCIICase($0, "100-continue") }
                case 13 where equalsIgnoringCase(name, "authorization"):
                    vetted.framing.authorizationCount += 1
                default:
                    break
                }
                vetted.framing.fieldCount += 1
                vetted.framing.fieldBytes += name.count + value.count + 4
                headers.add(name: string(name), value: valueString)
            }
            vetted.keepAlive = connection ?? (version == .http1_1)
            if upgradeField || connectionUpgrade {
                // `Content-Length: 0` is no body (NIO's own WebSocket client sends it); a body
                // behind an upgrade head goes to NIO's decoder.
                guard upgradeField, connectionUpgrade, method == .GET, version == .http1_1, (vetted.framing.contentLength ?? 0) == 0
                else { return nil }
                vetted.offersUpgrade = true
            }
            let head = HTTPRequestHead(version: version, method: method, uri: string(target), headers: headers)
            return .request(head, length: position, vetted: vetted)
        }

        /// A `Connection` value of `upgrade` and at most one `keep-alive`, in either order,
        /// separated by a comma and optional whitespace: what NIO reads as keep-alive (HTTP/1.1
        /// only reaches here with it) and llhttp as an upgrade.
        func readUpgradeTokens(_ range: Range<Int>) -> Bool {
            var upgrade = false
            var keepAlive = false
            var start = range.lowerBound
            while start <= range.upperBound {
                var end = start
                while end < range.upperBound, raw[end] != UInt8(ascii: ",") { end += 1 }
                var first = start
                var last = end
                while first < last, raw[first] == UInt8(ascii: " ") || raw[first] == UInt8(ascii: "\t") { first += 1 }
                while last > first, raw[last - 1] == UInt8(ascii: " ") || raw[last - 1] == UInt8(ascii: "\t") { last -= 1 }
                if !upgrade, equalsIgnoringCase(first..<last, "upgrade") {
                    upgrade = true
                } else if !keepAlive, equalsIgnoringCase(first..<last, "keep-alive") {
                    keepAlive = true
                } else {
                    return false
                }
                start = end + 1
            }
            return upgrade
        }

        /// Non-empty elements of a comma-separated list, as `HeaderTokens.firstElement` counts
        /// them (the value has no leading or trailing whitespace, and no control bytes).
        func elementCount(_ range: Range<Int>) -> Int {
            var count = 0
            var filled = false
            for index in range {
                switch raw[index] {
                case UInt8(ascii: ","):
                    if filled { count += 1 }
                    filled = false
                case UInt8(ascii: " "), UInt8(ascii: "\t"): break
                default: filled = true
                }
            }
            return filled ? count + 1 : count
        }

        mutating func take(_ byte: UInt8) -> Bool {
            guard position < end, raw[position] == byte else { return false }
            position += 1
            return true
        }

        mutating func takeCRLF() -> Bool {
            take(UInt8(ascii: "\r")) && take(UInt8(ascii: "\n"))
        }

        /// The methods read here; any other goes to NIO's decoder.
        mutating func readMethod() -> HTTPMethod? {
            let start = position
            while position < end, raw[position] >= UInt8(ascii: "A"), raw[position] <= UInt8(ascii: "Z") { position += 1 }
            let name = raw[start..<position]
            for (text, method) in Self.methods where HTTPSyntax.equalsIgnoringCase(name, text) {
                return method
            }
            return nil
        }

        /// Upper-case names only (`readMethod` reads no other bytes), so the comparison is exact.
        static let methods: [(StaticString, HTTPMethod)] = [
            ("GET", .GET), ("HEAD", .HEAD), ("POST", .POST), ("PUT", .PUT), ("DELETE", .DELETE), ("OPTIONS", .OPTIONS), ("PATCH", .PATCH),
        ]

        mutating func readVersion() -> HTTPVersion? {
            let prefix: StaticString = "HTTP/1."
            guard end - position >= prefix.utf8CodeUnitCount + 1 else { return nil }
            for offset in 0..<prefix.utf8CodeUnitCount where raw[position + offset] != prefix.utf8Start[offset] { return nil }
            position += prefix.utf8CodeUnitCount
            switch raw[position] {
            case UInt8(ascii: "1"): position += 1; return .http1_1
            case UInt8(ascii: "0"): position += 1; return .http1_0
            default: return nil
            }
        }

        /// `name: value CRLF` with a token name, optional leading whitespace, and a value of
        /// printable ASCII, spaces and tabs that does not end in whitespace.
        mutating func readField() -> (Range<Int>, Range<Int>)? {
            let nameStart = position
            while position < end, HTTPSyntax.isTokenByte(raw[position]) { position += 1 }
            let name = nameStart..<position
            guard !name.isEmpty, take(UInt8(ascii: ":")) else { return nil }
            while position < end, raw[position] == UInt8(ascii: " ") || raw[position] == UInt8(ascii: "\t") { position += 1 }
            let valueStart = position
            while position < end, (raw[position] >= 0x20 && raw[position] < 0x7F) || raw[position] == UInt8(ascii: "\t") { position += 1 }
            let value = valueStart..<position
            if let last = value.last, raw[last] == UInt8(ascii: " ") || raw[last] == UInt8(ascii: "\t") { return nil }
            guard takeCRLF() else { return nil }
            return (name, value)
        }

        func equalsIgnoringCase(_ range: Range<Int>, _ lowercase: StaticString) -> Bool {
            HTTPSyntax.equalsIgnoringCase(raw[range], lowercase)
        }

        func string(_ range: Range<Int>) -> String {
            String(decoding: UnsafeRawBufferPointer(rebasing: raw[range]), as: UTF8.self)
        }

        /// What an origin-form target may hold here: unreserved, sub-delims, ":", "@", "/", "?"
        /// and "%" (RFC 3986). Anything else, a fragment included, is left to NIO's decoder.
        static func isTargetByte(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
            case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "!"), UInt8(ascii: "$"),
                UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"),
                UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "/"),
                UInt8(ascii: "?"), UInt8(ascii: "%"):
                true
            default: false
            }
        }
    }
}
