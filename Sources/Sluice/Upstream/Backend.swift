import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import SluiceConfig
import Crypto
import Foundation

/// One backend ready to connect to: address, scheme, and for `wss` the TLS context built once.
/// A class, made once per configuration: every proxied request refers to its backend, and a
/// reference costs one retain where a copy of the fields costs one per field.
final class Backend: Sendable {
    let url: BackendURL
    let host: String
    let port: Int
    let path: String
    /// `nil` for plain `ws`.
    let tls: NIOSSLContext?
    /// SNI and verification name for `wss`.
    let serverName: String?
    /// The address itself when `host` is an IP literal: connecting to it skips name resolution
    /// (NIO's resolver hands getaddrinfo to a dispatch queue and back) and the happy-eyeballs
    /// machinery.
    let literalAddress: SocketAddress?
    /// `Host` value naming this backend (default ports omitted).
    let hostHeader: String
    /// Which pooled connections this backend may use, hashed once.
    let poolIdentity: PoolIdentity
    /// Opens connections instead of a socket (the cost benchmarks' embedded channels); `nil` in
    /// the gateway.
    let dialer: (any BackendDialer)?

    init(url: BackendURL, host: String, port: Int, path: String, tls: NIOSSLContext?, serverName: String?, dialer: (any BackendDialer)? = nil) {
        self.dialer = dialer
        self.url = url
        self.host = host
        self.port = port
        self.path = path
        self.tls = tls
        self.serverName = serverName
        literalAddress = IPAddressText.isIPv4(host) || IPAddressText.isIPv6(host) ? try? SocketAddress(ipAddress: host, port: port) : nil
        let defaultPort = tls == nil ? 80 : 443
        let name = host.contains(":") ? "[\(host)]" : host
        hostHeader = port == defaultPort ? name : "\(name):\(port)"
        poolIdentity = PoolIdentity(url: url.text, tls: tls.map { ObjectIdentifier($0) }, serverName: serverName)
    }

    /// Connections are shared only between identical backends: same URL, same TLS context (so
    /// the same CA and verification) and server name. Two routes that verify one address
    /// differently never share a connection; two routes naming the same backend do.
    struct PoolIdentity: Hashable, Sendable {
        let url: String
        let tls: ObjectIdentifier?
        let serverName: String?
        /// Computed once: the pool looks an identity up twice per request.
        let hash: Int

        init(url: String, tls: ObjectIdentifier?, serverName: String?) {
            self.url = url
            self.tls = tls
            self.serverName = serverName
            var hasher = Hasher()
            hasher.combine(url)
            hasher.combine(tls)
            hasher.combine(serverName)
            hash = hasher.finalize()
        }

        func hash(into hasher: inout Hasher) { hasher.combine(hash) }

        static func == (lhs: PoolIdentity, rhs: PoolIdentity) -> Bool {
            lhs.hash == rhs.hash && lhs.tls == rhs.tls && lhs.url == rhs.url && lhs.serverName == rhs.serverName
        }
    }

    /// Connects to this backend (TLS first for wss/https) with `handler` reading and writing the
    /// bytes itself: Sluice's own HTTP/1.1 framing for plain requests, upgrades and health
    /// checks alike, no NIO codecs.
    func connectBytes<Handler: ChannelHandler>(on eventLoop: any EventLoop, timeout: TimeAmount, handler: Handler) -> EventLoopFuture<any Channel> {
        // The initializer runs on `eventLoop`, where the handler was made.
        let handler = NIOLoopBound(handler, eventLoop: eventLoop)
        if let dialer {
            return dialer.dial(on: eventLoop) { [self] channel in try setUp(channel, handler: handler.value) }
        }
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    // Synchronously, not as a bootstrap option applied through futures. (TCP_NODELAY
                    // is the bootstrap's own default.)
                    guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
                    try options.setOption(.recvAllocator, value: ReceiveBuffers.backend)
                    try setUp(channel, handler: handler.value)
                }
            }
        if let address = literalAddress { return bootstrap.connect(to: address) }
        return bootstrap.connect(host: host, port: port)
    }

    /// The pipeline of a backend connection: TLS for wss/https, then the handler.
    private func setUp<Handler: ChannelHandler>(_ channel: any Channel, handler: Handler) throws {
        let sync = channel.pipeline.syncOperations
        if let tls {
            try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverName))
        }
        try sync.addHandler(handler)
    }

    /// The request target for a client path: the backend URL's path, then the client's.
    func target(for requestTarget: String) -> String {
        if path == "/" || path.isEmpty { return requestTarget }
        let base = path.hasSuffix("/") ? String(path.dropLast()) : path
        return base + requestTarget
    }
}
