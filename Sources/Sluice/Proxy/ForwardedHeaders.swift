import NIOHTTP1

/// The header rewriting every proxied request and response goes through: hop-by-hop headers
/// out (RFC 9110 §7.6.1, and any named in `Connection`), forwarding headers in.
enum ForwardedHeaders {
    /// Headers meaningful only for one connection.
    static let hopByHop = ["connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"]

    /// `headers` without hop-by-hop fields and without any field `Connection` names. Most
    /// requests carry none but `Connection` itself: nothing is copied when nothing goes.
    static func endToEnd(_ headers: HTTPHeaders) -> HTTPHeaders {
        let named = HeaderTokens.list(headers, "connection")
        var dropped: [String] = []
        for (name, _) in headers {
            let drop = hopByHop.contains { HeaderTokens.equalIgnoringASCIICase(name, $0) }
                || named.contains { HeaderTokens.equalIgnoringASCIICase(name, $0) }
            if drop && !dropped.contains(where: { HeaderTokens.equalIgnoringASCIICase(name, $0) }) { dropped.append(name) }
        }
        guard !dropped.isEmpty else { return headers }
        var result = headers
        for name in dropped { result.remove(name: name) }
        return result
    }

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
        if client.trustsIncomingChain {
            chainFor = headers["x-forwarded-for"].joined(separator: ", ")
            chainForwarded = headers["forwarded"].joined(separator: ", ")
        }
        for name in ["x-forwarded-for", "forwarded", "x-forwarded-proto", "x-forwarded-host"] { headers.remove(name: name) }
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
