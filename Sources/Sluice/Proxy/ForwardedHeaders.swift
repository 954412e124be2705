import NIOCore
import NIOHTTP1

/// The header rewriting every proxied request and response goes through: hop-by-hop headers
/// out (RFC 9110 §7.6.1, and any named in `Connection`), forwarding headers in.
enum ForwardedHeaders {
    /// Headers meaningful only for one connection (RFC 9110 §7.6.1), for requests and backend
    /// answers alike.
    static let hopByHop = FieldNameSet([
        "connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
    ])

    /// `headers` without hop-by-hop fields, without any field `Connection` names, and without
    /// the fields in `dropping` (lower-case names), made in one pass with room for the fields the
    /// caller adds.
    static func endToEnd(_ headers: HTTPHeaders, dropping extra: [String] = []) -> HTTPHeaders {
        var kept: [(String, String)] = []
        kept.reserveCapacity(headers.count + 8)
        forEachEndToEnd(headers, dropping: FieldNameSet(extra)) { kept.append(($0, $1)) }
        return HTTPHeaders(kept)
    }

    /// Calls `body` with each field `endToEnd` keeps, in order.
    static func forEachEndToEnd(_ headers: HTTPHeaders, dropping extra: FieldNameSet, _ body: (String, String) -> Void) {
        var connectionValues: [String] = []
        for (name, value) in headers where HeaderTokens.equalIgnoringASCIICase(name, "connection") { connectionValues.append(value) }
        for (name, value) in headers {
            if hopByHop.contains(name) || extra.contains(name) { continue }
            let named = !connectionValues.isEmpty && connectionValues.contains { list in
                HeaderTokens.firstElement(of: list) { HeaderTokens.equalIgnoringASCIICase($0, name) }
            }
            if !named { body(name, value) }
        }
    }

    /// The fields `write(_:chains:into:)` writes; whatever a client sent in them is replaced.
    static let forwardingNames = ["x-forwarded-for", "forwarded", "x-forwarded-proto", "x-forwarded-host"]

    /// Who asked, as the backend is told.
    struct Client {
        /// The socket peer: the client itself, or the last proxy before Sluice.
        var address: String?
        var host: String?
        var tls: Bool
        /// The peer is a trusted proxy: its `X-Forwarded-For` and `Forwarded` chains are kept and
        /// extended. Otherwise whatever the client sent in them is dropped as a possible spoof.
        var trustsIncomingChain = false
        /// The listener keeps fields whose `_` spelling aliases one Sluice sets
        /// (`http.underscore_headers: keep`).
        var keepsUnderscoreFields = false
    }

    /// The `X-Forwarded-For` and `Forwarded` chains a trusted proxy sent (empty otherwise).
    static func incomingChains(_ headers: HTTPHeaders, client: Client) -> (for: String, forwarded: String) {
        guard client.trustsIncomingChain else { return ("", "") }
        return (headers["x-forwarded-for"].joined(separator: ", "), headers["forwarded"].joined(separator: ", "))
    }

    /// Writes the forwarding fields for `client`, extending `chains`, as field lines straight into
    /// `buffer` (no field list, no value strings). Without chains they depend only on the client
    /// connection and its `Host`, so a connection can keep them between requests.
    static func write(_ client: Client, chains: (for: String, forwarded: String) = ("", ""), into buffer: inout ByteBuffer) {
        let proto: StaticString = client.tls ? "https" : "http"
        if let address = client.address {
            buffer.writeStaticString("X-Forwarded-For: ")
            if !chains.for.isEmpty {
                buffer.writeString(chains.for)
                buffer.writeStaticString(", ")
            }
            buffer.writeString(address)
            buffer.writeStaticString("\r\n")
        } else if !chains.for.isEmpty {
            buffer.writeField("X-Forwarded-For", chains.for)
        }
        buffer.writeStaticString("X-Forwarded-Proto: ")
        buffer.writeStaticString(proto)
        buffer.writeStaticString("\r\n")
        if let host = client.host { buffer.writeField("X-Forwarded-Host", host) }
        buffer.writeStaticString("Forwarded: ")
        if !chains.forwarded.isEmpty {
            buffer.writeString(chains.forwarded)
            buffer.writeStaticString(", ")
        }
        if let address = client.address {
            if address.utf8.contains(UInt8(ascii: ":")) {
                buffer.writeStaticString("for=\"[")
                buffer.writeString(address)
                buffer.writeStaticString("]\";")
            } else {
                buffer.writeStaticString("for=")
                buffer.writeString(address)
                buffer.writeStaticString(";")
            }
        }
        // A host goes into the quoted-string only if it needs no escaping.
        if let host = client.host, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            buffer.writeStaticString("host=\"")
            buffer.writeString(host)
            buffer.writeStaticString("\";")
        }
        buffer.writeStaticString("proto=")
        buffer.writeStaticString(proto)
        buffer.writeStaticString("\r\n")
    }
}
