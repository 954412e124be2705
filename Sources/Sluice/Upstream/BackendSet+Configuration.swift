import NIOSSL
import SluiceConfig

/// Building a route's backend set from its configuration.
extension BackendSet {
    /// Builds the set for `route`; `builtinPorts` maps built-in backends to their loopback ports;
    /// `dialer`, when given, opens every connection instead of a socket (the cost benchmarks).
    static func make(
        for route: RouteConfiguration, routeIndex: Int, builtinPorts: [BackendURL.Builtin: Int], dialer: (any BackendDialer)? = nil
    ) throws(ConfigError) -> BackendSet {
        var tlsContext: NIOSSLContext?
        var result: [Backend] = []
        for (index, url) in route.backends.enumerated() {
            switch url.target {
            case .builtin(let builtin):
                guard let port = builtinPorts[builtin] else {
                    throw ConfigError(path: "routes[\(routeIndex)].backends[\(index)]", message: "built-in backend is not running")
                }
                result.append(Backend(url: url, host: "127.0.0.1", port: port, path: "/", tls: nil, serverName: nil, dialer: dialer))
            case .remote(let scheme, let host, let port, let path):
                var context: NIOSSLContext?
                if scheme.isSecure {
                    if tlsContext == nil { tlsContext = try makeClientContext(route.backendTLS, routeIndex: routeIndex) }
                    context = tlsContext
                }
                result.append(Backend(
                    url: url, host: host, port: port, path: path, tls: context,
                    serverName: route.backendTLS.serverName ?? (IPAddressText.isIPv4(host) || IPAddressText.isIPv6(host) ? nil : host),
                    dialer: dialer
                ))
            }
        }
        return BackendSet(backends: result, weights: route.weights, balance: route.balance, health: route.health, routeName: route.name)
    }

    static func makeClientContext(_ configuration: BackendTLSConfiguration, routeIndex: Int) throws(ConfigError) -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.applicationProtocols = ["http/1.1"]
        if configuration.insecureSkipVerify {
            tls.certificateVerification = .none
        } else if let caFile = configuration.caFile {
            tls.trustRoots = .file(caFile)
        }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw ConfigError(path: "routes[\(routeIndex)].backend_tls", message: "cannot build the backend TLS context: \(error)")
        }
    }
}
