import NIOHTTP1

/// A client's WebSocket request that passed RFC 6455 §4.2.1 (an HTTP/1.1 upgrade) or RFC 8441
/// §4 (an HTTP/2 extended CONNECT), with the offer as the backend will see it: an ordinary
/// HTTP/1.1 upgrade in either case.
struct UpgradeRequest: Equatable {
    /// `Sec-WebSocket-Key`: the client's for an upgrade, one Sluice made for an extended CONNECT
    /// (whose client sends none; the backend's handshake needs one).
    var key: String
    /// Subprotocols offered, narrowed to the route's allowed list, in the client's order.
    var protocols: [String]
    /// `Sec-WebSocket-Extensions` values, as sent (the backend decides).
    var extensions: [String]
    /// Extension names the client offered, lower-cased.
    var offeredExtensionNames: Set<String>
    /// It came as an HTTP/2 extended CONNECT: the client is answered 200, not 101.
    var isExtendedConnect = false

    /// Why an upgrade is refused, with the status the client gets.
    struct Rejection: Error, Equatable {
        var status: HTTPResponseStatus
        var message: String
        var headers: [(String, String)] = []

        static func == (lhs: Rejection, rhs: Rejection) -> Bool {
            lhs.status == rhs.status && lhs.message == rhs.message
        }
    }

    /// True when the request asks for a WebSocket: its `Upgrade` names `websocket`. Such a
    /// request is then validated in full (a missing `Connection: upgrade` or key is a 400).
    /// Any other upgrade (`h2c`, which `curl --http2` offers on every plain URL) is ignored,
    /// as RFC 9110 §7.8 allows: the request is answered over HTTP/1.1, and `Upgrade`, being
    /// hop-by-hop, never reaches the backend.
    static func isAttempt(_ head: HTTPRequestHead) -> Bool {
        HeaderTokens.contains(head.headers, "upgrade", token: "websocket")
    }

    /// True when the request offers any upgrade (an `Upgrade` field, or `upgrade` in
    /// `Connection`): NIO's request decoder stops reading the connection after such a head.
    static func offersUpgrade(_ head: HTTPRequestHead) -> Bool {
        head.headers.contains(name: "upgrade") || HeaderTokens.contains(head.headers, "connection", token: "upgrade")
    }

    /// Validates `head`; `allowedProtocols` (nil = any) narrows the subprotocol offer.
    static func validate(_ head: HTTPRequestHead, allowedProtocols: [String]?) throws(Rejection) -> UpgradeRequest {
        let headers = head.headers
        guard head.method == .GET else {
            throw Rejection(status: .badRequest, message: "WebSocket upgrade requires GET, not \(head.method.rawValue)")
        }
        guard head.version.major == 1 && head.version.minor >= 1 else {
            throw Rejection(status: .badRequest, message: "WebSocket upgrade requires HTTP/1.1")
        }
        // One Host field holding one value (a host never holds a comma).
        guard let host = HeaderTokens.onlyValue(headers, "host"), !host.utf8.contains(UInt8(ascii: ",")) else {
            throw Rejection(status: .badRequest, message: "exactly one Host header is required")
        }
        guard HeaderTokens.contains(headers, "connection", token: "upgrade") else {
            throw Rejection(status: .badRequest, message: "Connection header must contain 'upgrade'")
        }
        guard HeaderTokens.contains(headers, "upgrade", token: "websocket") else {
            throw Rejection(status: .badRequest, message: "Upgrade header must contain 'websocket'")
        }
        if headers.contains(name: "transfer-encoding") {
            throw Rejection(status: .badRequest, message: "an upgrade request cannot have a body (Transfer-Encoding)")
        }
        let lengths = headers[canonicalForm: "content-length"]
        if !lengths.isEmpty && !(lengths.count == 1 && lengths[0] == "0") {
            throw Rejection(status: .badRequest, message: "an upgrade request cannot have a body (Content-Length)")
        }
        guard let version = HeaderTokens.onlyValue(headers, "sec-websocket-version"), version.trimmingSpacesAndTabs() == "13" else {
            throw Rejection(
                status: .upgradeRequired, message: "Sec-WebSocket-Version 13 is required",
                headers: [("Sec-WebSocket-Version", "13")]
            )
        }
        guard let field = HeaderTokens.onlyValue(headers, "sec-websocket-key"), case let key = field.trimmingSpacesAndTabs(), WebSocketKey.isValid(key) else {
            throw Rejection(status: .badRequest, message: "Sec-WebSocket-Key must be the base64 of 16 bytes")
        }
        return try offer(headers, key: key, allowedProtocols: allowedProtocols)
    }

    /// Validates an HTTP/2 extended CONNECT (RFC 8441 §4-5): `:method` CONNECT, `:protocol`
    /// websocket, version 13; the client sends no key, so Sluice makes one for the backend.
    static func validateExtendedConnect(_ head: HTTPRequestHead, protocol wanted: String, allowedProtocols: [String]?) throws(Rejection) -> UpgradeRequest {
        guard head.method == .CONNECT else {
            throw Rejection(status: .badRequest, message: ":protocol is only for CONNECT")
        }
        guard wanted.lowercased() == "websocket" else {
            throw Rejection(status: .notImplemented, message: "extended CONNECT for '\(wanted.prefix(32))' is not supported; only websocket")
        }
        let versions = head.headers["sec-websocket-version"]
        guard versions.count == 1, versions[0].trimmingSpacesAndTabs() == "13" else {
            throw Rejection(status: .badRequest, message: "sec-websocket-version 13 is required", headers: [("sec-websocket-version", "13")])
        }
        var request = try offer(head.headers, key: WebSocketKey.random(), allowedProtocols: allowedProtocols)
        request.isExtendedConnect = true
        return request
    }

    /// The subprotocol and extension offer, narrowed to `allowedProtocols`.
    private static func offer(_ headers: HTTPHeaders, key: String, allowedProtocols: [String]?) throws(Rejection) -> UpgradeRequest {
        let offered = HeaderTokens.list(headers, "sec-websocket-protocol")
        for name in offered where !isToken(name) {
            throw Rejection(status: .badRequest, message: "'\(name)' is not a valid subprotocol name")
        }
        var protocols = offered
        if let allowed = allowedProtocols, !offered.isEmpty {
            protocols = offered.filter { allowed.contains($0) }
            if protocols.isEmpty {
                throw Rejection(status: .badRequest, message: "none of the offered subprotocols is allowed; allowed: \(allowed.joined(separator: ", "))")
            }
        }
        let extensions = headers["sec-websocket-extensions"]
        let names = Set(HeaderTokens.extensionNames(headers))
        return UpgradeRequest(
            key: key, protocols: protocols,
            extensions: extensions, offeredExtensionNames: names
        )
    }

    /// `Sec-WebSocket-Accept` for this key (RFC 6455 §4.2.2).
    var expectedAccept: String {
        WebSocketKey.accept(for: key)
    }

    private static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { byte in
            byte > 0x20 && byte < 0x7F && !"()<>@,;:\\\"/[]?={}".utf8.contains(byte)
        }
    }
}

/// The backend's 101, checked against what the client offered.
struct UpgradeResponse: Equatable {
    var `protocol`: String?
    var extensions: [String]
    /// An extension was negotiated (RSV1 is then legal on data frames).
    var usesExtensions: Bool

    /// Why the backend's answer cannot be passed on (502).
    struct Invalid: Error, Equatable {
        var message: String
    }

    /// Checks the backend's 101 as it was read, in place: only the chosen subprotocol and the
    /// extension fields become `String`s. `expectedAccept` is the accept for Sluice's key (the
    /// one the backend was sent).
    static func validate(_ head: UpstreamResponseParser.Head, for request: UpgradeRequest, expectedAccept: String) throws(Invalid) -> UpgradeResponse {
        var upgradesToWebSocket = false, connectionUpgrade = false
        var accepts = 0, acceptMatches = false
        var chosenCount = 0, chosen: String?
        var extensions: [String] = []
        var usesExtensions = false, unoffered: String?
        head.bytes.withUnsafeReadableBytes { raw in
            for field in head.fields {
                let name = raw[field.name], value = raw[field.value]
                switch name.count {
                case 7 where HTTPSyntax.equalsIgnoringCase(name, "upgrade"):
                    HTTPSyntax.forEachListElement(value) { if HTTPSyntax.equalsIgnoringCase($0, "websocket") { upgradesToWebSocket = true } }
                case 10 where HTTPSyntax.equalsIgnoringCase(name, "connection"):
                    HTTPSyntax.forEachListElement(value) { if HTTPSyntax.equalsIgnoringCase($0, "upgrade") { connectionUpgrade = true } }
                case 20 where HTTPSyntax.equalsIgnoringCase(name, "sec-websocket-accept"):
                    accepts += 1
                    acceptMatches = expectedAccept.utf8.elementsEqual(value)
                case 22 where HTTPSyntax.equalsIgnoringCase(name, "sec-websocket-protocol"):
                    HTTPSyntax.forEachListElement(value) { element in
                        chosenCount += 1
                        if chosen == nil { chosen = String(decoding: element, as: UTF8.self) }
                    }
                case 24 where HTTPSyntax.equalsIgnoringCase(name, "sec-websocket-extensions"):
                    extensions.append(String(decoding: value, as: UTF8.self))
                    HTTPSyntax.forEachListElement(value) { element in
                        // The extension's name: its first non-empty `;` piece, trimmed.
                        var start = element.startIndex
                        while start < element.endIndex, element.base[start] == UInt8(ascii: ";") { start += 1 }
                        guard start < element.endIndex else { return }
                        var end = start
                        while end < element.endIndex, element.base[end] != UInt8(ascii: ";") { end += 1 }
                        let extensionName = String(decoding: element.base[start..<end].trimmingSpacesAndTabs, as: UTF8.self).lowercased()
                        usesExtensions = true
                        if unoffered == nil, !request.offeredExtensionNames.contains(extensionName) { unoffered = extensionName }
                    }
                default:
                    break
                }
            }
        }
        guard upgradesToWebSocket else { throw Invalid(message: "backend's 101 lacks 'Upgrade: websocket'") }
        guard connectionUpgrade else { throw Invalid(message: "backend's 101 lacks 'Connection: upgrade'") }
        guard accepts == 1, acceptMatches else { throw Invalid(message: "backend's Sec-WebSocket-Accept does not match the key") }
        guard chosenCount <= 1 else { throw Invalid(message: "backend chose more than one subprotocol") }
        if let name = chosen, !request.protocols.contains(name) {
            throw Invalid(message: "backend chose subprotocol '\(name)', which the client did not offer")
        }
        if let name = unoffered { throw Invalid(message: "backend chose extension '\(name)', which the client did not offer") }
        return UpgradeResponse(protocol: chosen, extensions: extensions, usesExtensions: usesExtensions)
    }
}
