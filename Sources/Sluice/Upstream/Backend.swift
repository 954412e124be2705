import NIOCore
import NIOSSL
import Synchronization
import SluiceConfig

/// One backend ready to connect to: address, scheme, and for `wss` the TLS context built once.
struct Backend: Sendable {
    var url: BackendURL
    var host: String
    var port: Int
    var path: String
    /// `nil` for plain `ws`.
    var tls: NIOSSLContext?
    /// SNI and verification name for `wss`.
    var serverName: String?

    /// `Host` value naming this backend (default ports omitted).
    var hostHeader: String {
        let defaultPort = tls == nil ? 80 : 443
        let name = host.contains(":") ? "[\(host)]" : host
        return port == defaultPort ? name : "\(name):\(port)"
    }

    /// The request target for a client path: the backend URL's path, then the client's.
    func target(for requestTarget: String) -> String {
        if path == "/" || path.isEmpty { return requestTarget }
        let base = path.hasSuffix("/") ? String(path.dropLast()) : path
        return base + requestTarget
    }
}

/// A route's backends and the choice among them (round robin).
final class BackendSet: Sendable {
    let backends: [Backend]
    private let next = Atomic<Int>(0)

    init(backends: [Backend]) {
        precondition(!backends.isEmpty, "a route has at least one backend")
        self.backends = backends
    }

    /// Up to `attempts` distinct backends in round-robin order, for one connection and its retries.
    func candidates(attempts: Int) -> [Backend] {
        let start = next.add(1, ordering: .relaxed).oldValue
        let count = min(attempts, backends.count)
        return (0..<count).map { backends[(start &+ $0) % backends.count] }
    }

    /// Builds the set for `route`; `builtinAddresses` maps built-in backends to their loopback ports.
    static func make(for route: RouteConfiguration, routeIndex: Int, builtinPorts: [BackendURL.Builtin: Int]) throws(ConfigError) -> BackendSet {
        var tlsContext: NIOSSLContext?
        var result: [Backend] = []
        for (index, url) in route.backends.enumerated() {
            switch url.target {
            case .builtin(let builtin):
                guard let port = builtinPorts[builtin] else {
                    throw ConfigError(path: "routes[\(routeIndex)].backends[\(index)]", message: "built-in backend is not running")
                }
                result.append(Backend(url: url, host: "127.0.0.1", port: port, path: "/", tls: nil, serverName: nil))
            case .remote(let scheme, let host, let port, let path):
                var context: NIOSSLContext?
                if scheme == .wss {
                    if tlsContext == nil { tlsContext = try makeClientContext(route.backendTLS, routeIndex: routeIndex) }
                    context = tlsContext
                }
                result.append(Backend(
                    url: url, host: host, port: port, path: path, tls: context,
                    serverName: route.backendTLS.serverName ?? (IPAddressText.isIPv4(host) || IPAddressText.isIPv6(host) ? nil : host)
                ))
            }
        }
        return BackendSet(backends: result)
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
