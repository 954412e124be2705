/// Where a route sends its WebSocket connections: `ws://host:port/path`, `wss://…`, or a backend
/// built into Sluice (`builtin:echo`).
public struct BackendURL: Sendable, Hashable, CustomStringConvertible {
    /// How Sluice reaches the backend.
    public enum Scheme: String, Sendable, Hashable {
        case ws, wss, http, https

        /// The connection to the backend is TLS.
        public var isSecure: Bool { self == .wss || self == .https }
    }

    /// Backends served inside the Sluice process, for demos and smoke tests.
    public enum Builtin: String, Sendable, Hashable, CaseIterable {
        /// Echoes every message back; answers pings.
        case echo
    }

    public enum Target: Sendable, Hashable {
        case remote(scheme: Scheme, host: String, port: Int, path: String)
        case builtin(Builtin)
    }

    public var target: Target
    /// The text as written in the config, for logs and `sluice check`.
    public var text: String

    public init(target: Target, text: String) {
        self.target = target
        self.text = text
    }

    public var description: String { text }

    /// Parses a backend URL; the error says what an operator must change.
    public static func parse(_ text: String) throws(ValueError) -> BackendURL {
        if text.hasPrefix("builtin:") {
            let name = String(text.dropFirst("builtin:".count))
            guard let builtin = Builtin(rawValue: name) else {
                let known = Builtin.allCases.map { "builtin:\($0.rawValue)" }.joined(separator: ", ")
                throw ValueError("unknown built-in backend '\(name)'; known: \(known)")
            }
            return BackendURL(target: .builtin(builtin), text: text)
        }
        guard let schemeEnd = text.range(of: "://") else {
            throw ValueError("'\(text)' is not a URL; expected http://, https://, ws:// or wss://host:port")
        }
        let schemeText = text[..<schemeEnd.lowerBound].lowercased()
        guard let scheme = Scheme(rawValue: schemeText) else {
            throw ValueError("scheme must be http, https, ws or wss, got '\(schemeText)'")
        }
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = String(rest[..<authorityEnd])
        var path = String(rest[authorityEnd...])
        if path.contains("#") { throw ValueError("a backend URL cannot have a fragment") }
        if path.contains("?") { throw ValueError("a backend URL cannot have a query") }
        if path.isEmpty { path = "/" }
        guard !authority.isEmpty else { throw ValueError("missing host in '\(text)'") }
        if authority.contains("@") { throw ValueError("credentials in a backend URL are not supported") }
        let defaultPort = scheme.isSecure ? 443 : 80
        let address: SocketAddressSpec
        if authority.hasPrefix("[") || authority.contains(":") {
            let withPort = authority.hasSuffix("]") ? "\(authority):\(defaultPort)" : authority
            address = try ValueParsing.address(withPort)
        } else {
            address = try ValueParsing.address("\(authority):\(defaultPort)")
        }
        guard address.port > 0 else { throw ValueError("backend port must be from 1 to 65535") }
        return BackendURL(
            target: .remote(scheme: scheme, host: address.host, port: address.port, path: path),
            text: text
        )
    }
}
