/// The checks RFC 9113 §8 makes of a request's decoded fields before anything reads them, and
/// RFC 8441 §4's for extended CONNECT: field names lowercase tokens (what HTTP/1.1 backends can
/// be sent, and what NIOHTTP2 checks), values free of NUL, CR and LF and of whitespace at either end, pseudo-header fields
/// first, known, once each and the right ones for the method, no connection-specific fields, TE
/// only "trailers". A request that fails is malformed: a stream error (PROTOCOL_ERROR) that
/// names the rule, the connection goes on. What NIOHTTP2's header validation does for Sluice
/// today, for the HTTP/2 layer of its own (`docs/architecture.md`).
package enum HTTP2FieldCheck {
    /// Why a request's fields are malformed, or nil.
    package static func request(_ fields: [(String, String)], stream: UInt32, extendedConnect: Bool = true) -> HTTP2WireError? {
        var method: String?
        var scheme: String?
        var path: String?
        var authority = false
        var `protocol` = false
        var regularSeen = false
        // By index, each name's bytes read once: a field copied out of the list cost a retain
        // and a release of both its strings.
        for index in fields.indices {
            let pseudo = HTTPSyntax.withBytes(of: fields[index].0, Pseudo.init)
            if pseudo == .none {
                regularSeen = true
                if let problem = regularProblem(name: fields[index].0, value: fields[index].1) { return malformed(stream, problem) }
                continue
            }
            let name = fields[index].0
            if regularSeen { return malformed(stream, "pseudo-header field \(name) after a regular field") }
            switch pseudo {
            case .method:
                if method != nil { return malformed(stream, "two :method fields") }
                method = fields[index].1
            case .scheme:
                if scheme != nil { return malformed(stream, "two :scheme fields") }
                scheme = fields[index].1
            case .path:
                if path != nil { return malformed(stream, "two :path fields") }
                path = fields[index].1
            case .authority:
                if authority { return malformed(stream, "two :authority fields") }
                authority = true
            case .protocol:
                if `protocol` { return malformed(stream, "two :protocol fields") }
                guard extendedConnect else { return malformed(stream, ":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL") }
                `protocol` = true
            case .unknown, .none:
                return malformed(stream, "pseudo-header field \(name) in a request")
            }
            if let problem = valueProblem(fields[index].1) { return malformed(stream, "\(name) \(problem)") }
        }
        guard let method, !method.isEmpty else { return malformed(stream, "no :method") }
        if method == "CONNECT" && !`protocol` {
            if scheme != nil || path != nil { return malformed(stream, "CONNECT with :scheme or :path") }
            if !authority { return malformed(stream, "CONNECT without :authority") }
            return nil
        }
        if `protocol` {
            if method != "CONNECT" { return malformed(stream, ":protocol on a \(method) request") }
            if !authority { return malformed(stream, "extended CONNECT without :authority") }
        }
        guard let scheme, !scheme.isEmpty else { return malformed(stream, "no :scheme") }
        guard let path, !path.isEmpty else { return malformed(stream, "no :path") }
        if scheme == "http" || scheme == "https" {
            guard path.utf8.first == UInt8(ascii: "/") || (path == "*" && method == "OPTIONS") else {
                return malformed(stream, ":path \(path.prefix(64)) neither absolute nor * for OPTIONS")
            }
        }
        return nil
    }

    /// Which pseudo-header field a name is, read from its bytes; `none` for a regular field.
    private enum Pseudo: Equatable {
        case none, method, scheme, path, authority, `protocol`, unknown

        init(_ name: UnsafeBufferPointer<UInt8>) {
            guard name.first == UInt8(ascii: ":") else {
                self = .none
                return
            }
            // Called only for a name of the text's length.
            func named(_ text: StaticString) -> Bool {
                let expected = text.utf8Start
                for index in 1..<name.count where name[index] != expected[index] { return false }
                return true
            }
            switch name.count {
            case 5 where named(":path"): self = .path
            case 7 where named(":method"): self = .method
            case 7 where named(":scheme"): self = .scheme
            case 9 where named(":protocol"): self = .protocol
            case 10 where named(":authority"): self = .authority
            default: self = .unknown
            }
        }
    }

    /// Why a trailer section's fields are malformed, or nil: no pseudo-header fields, and the
    /// rules on every field.
    package static func trailers(_ fields: [(String, String)], stream: UInt32) -> HTTP2WireError? {
        for (name, value) in fields {
            if name.utf8.first == UInt8(ascii: ":") { return malformed(stream, "pseudo-header field \(name) in trailers") }
            if let problem = regularProblem(name: name, value: value) { return malformed(stream, problem) }
        }
        return nil
    }

    private static func malformed(_ stream: UInt32, _ reason: String) -> HTTP2WireError {
        .stream(stream, .protocolError, "malformed request: \(reason)")
    }

    private static func regularProblem(name: String, value: String) -> String? {
        // The name's bytes read once for every rule on it.
        let problem: String? = HTTPSyntax.withBytes(of: name) { bytes in
            if bytes.isEmpty { return "an empty field name" }
            if bytes.contains(where: { !HTTPSyntax.isTokenByte($0) || ($0 >= 0x41 && $0 <= 0x5a) }) {
                return "field name \(name.prefix(64).debugDescription) is not a lowercase token"
            }
            if HTTP2ResponseBlock.classify(bytes) == .dropped { return "connection-specific field \(name)" }
            if bytes.count == 2, bytes[0] == UInt8(ascii: "t"), bytes[1] == UInt8(ascii: "e"), value != "trailers" {
                return "TE other than \"trailers\""
            }
            return nil
        }
        if let problem { return problem }
        if let problem = valueProblem(value) { return "field \(name) \(problem)" }
        return nil
    }

    private static func valueProblem(_ value: String) -> String? {
        HTTPSyntax.withBytes(of: value) { bytes in
            if bytes.contains(where: { $0 == 0 || $0 == 0x0a || $0 == 0x0d }) { return "has NUL, CR or LF in its value" }
            if let first = bytes.first, first == 0x20 || first == 0x09 { return "has whitespace at the start of its value" }
            if let last = bytes.last, last == 0x20 || last == 0x09 { return "has whitespace at the end of its value" }
            return nil
        }
    }
}
