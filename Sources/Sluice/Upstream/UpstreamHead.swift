import NIOHTTP1

/// The request head a backend receives, one policy for plain requests and upgrades alike: the
/// client's fields the route lets through (`UpstreamFields`: no hop-by-hop, no spoofed identity
/// or forwarding field, no credential but the admitting one), the admitted identity's fields,
/// `Host` as the route says, and last the forwarding fields and `Via`.
enum UpstreamHead {
    /// Calls `field` with each field up to the forwarding block, in order.
    /// - Parameters:
    ///   - headers: the client's request fields.
    ///   - dropping: more fields the caller writes itself (an upgrade's own).
    static func forEachField(
        route: Route, headers: HTTPHeaders, client: ForwardedHeaders.Client, identity: Identity?, backend: Backend,
        dropping extra: FieldNameSet? = nil, _ field: (String, String) -> Void
    ) {
        route.upstreamFields.forEach(headers, client: client, identity: identity) { name, value in
            if let extra, extra.contains(name) { return }
            field(name, value)
        }
        for (name, value) in identity?.headers ?? [] { field(name, value) }
        field("Host", host(route: route, client: client, backend: backend))
    }

    /// `Host` as the route says: the client's (the request's host), or the backend's own.
    static func host(route: Route, client: ForwardedHeaders.Client, backend: Backend) -> String {
        route.configuration.hostHeader == .backend ? backend.hostHeader : (client.host ?? backend.hostHeader)
    }
}
