import NIOHTTP1

/// The header rewriting every proxied request and response goes through: hop-by-hop headers
/// out (RFC 9110 §7.6.1, and any named in `Connection`), forwarding headers in.
enum ForwardedHeaders {
    /// Headers meaningful only for one connection.
    static let hopByHop = ["connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"]

    /// `headers` without hop-by-hop fields, without any field `Connection` names, and without
    /// the fields in `dropping` (lower-case names), made in one pass with room for the fields the
    /// caller adds.
    static func endToEnd(_ headers: HTTPHeaders, dropping extra: [String] = []) -> HTTPHeaders {
        var connectionValues: [String] = []
        for (name, value) in headers where HeaderTokens.equalIgnoringASCIICase(name, "connection") { connectionValues.append(value) }
        var kept: [(String, String)] = []
        kept.reserveCapacity(headers.count + 8)
        for (name, value) in headers {
            if hopByHop.contains(where: { HeaderTokens.equalIgnoringASCIICase(name, $0) }) { continue }
            if extra.contains(where: { HeaderTokens.equalIgnoringASCIICase(name, $0) }) { continue }
            let named = connectionValues.contains { list in
                HeaderTokens.firstElement(of: list) { HeaderTokens.equalIgnoringASCIICase($0, name) }
            }
            if !named { kept.append((name, value)) }
        }
        return HTTPHeaders(kept)
    }

    /// The fields `addForwarding` writes; whatever a client sent in them is replaced.
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
    }

    /// Adds `X-Forwarded-For` (appended to a trusted chain), `X-Forwarded-Proto`,
    /// `X-Forwarded-Host` and `Forwarded`.
    static func addForwarding(to headers: inout HTTPHeaders, client: Client) {
        let proto = client.tls ? "https" : "http"
        var chainFor = "", chainForwarded = ""
        let present = headers.contains { field in forwardingNames.contains { HeaderTokens.equalIgnoringASCIICase(field.name, $0) } }
        if present {
            if client.trustsIncomingChain {
                chainFor = headers["x-forwarded-for"].joined(separator: ", ")
                chainForwarded = headers["forwarded"].joined(separator: ", ")
            }
            for name in forwardingNames { headers.remove(name: name) }
        }
        if let address = client.address {
            headers.add(name: "X-Forwarded-For", value: chainFor.isEmpty ? address : chainFor + ", " + address)
        } else if !chainFor.isEmpty {
            headers.add(name: "X-Forwarded-For", value: chainFor)
        }
        headers.add(name: "X-Forwarded-Proto", value: proto)
        if let host = client.host { headers.add(name: "X-Forwarded-Host", value: host) }
        var element = ""
        if let address = client.address {
            element = address.utf8.contains(UInt8(ascii: ":")) ? "for=\"[" + address + "]\";" : "for=" + address + ";"
        }
        // A host goes into the quoted-string only if it needs no escaping.
        if let host = client.host, host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            element += "host=\"" + host + "\";"
        }
        element += "proto=" + proto
        headers.add(name: "Forwarded", value: chainForwarded.isEmpty ? element : chainForwarded + ", " + element)
    }
}
