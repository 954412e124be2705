/// The whole Sluice configuration: plain values, validated once when loaded.
///
/// Nothing here touches the network; `SluiceConfig` has no NIO so that `sluice check`, tests and
/// reload diffing can build and compare configurations cheaply.
public struct Configuration: Sendable, Equatable {
    /// Log level name (`trace` … `critical`); `--log-level` overrides it.
    public var logLevel: LogLevelName = .info
    public var listeners: [ListenerConfiguration] = []
    public var routes: [RouteConfiguration] = []
    /// The admin listener (metrics, connections); `nil` leaves it unbound.
    public var admin: AdminConfiguration?
    /// Connection caps and the proxies whose `X-Forwarded-For` is believed.
    public var limits: GlobalLimits = GlobalLimits()
    /// One JSON line per HTTP request and per closed WebSocket.
    public var accessLog: AccessLogDestination = .off
    /// `explicit`: every route must say `auth:` (`auth: none` for public ones).
    public var authPolicyExplicit: Bool = false
    /// The file this configuration was read from, when it came from a file.
    public var sourceFile: String?
    /// What triggers a reload besides SIGHUP and `POST /reload`.
    public var reload: ReloadConfiguration = ReloadConfiguration()
    /// How the gateway drains on SIGTERM/SIGINT and for listeners a reload removes.
    public var shutdown: ShutdownConfiguration = ShutdownConfiguration()
    /// Limits and kicks shared with other instances through Redis; `nil`: this instance alone.
    public var cluster: ClusterConfiguration?
    /// Every file the configuration reads (certificates and keys, CA bundles, htpasswd, JWT keys,
    /// the admin token): what `reload.watch` watches besides the config file itself.
    public var referencedFiles: [String] = []
    /// A short hash of the configuration text, so an operator can see which one is live
    /// (`/readyz`, the startup and reload logs).
    public var version: String = ""

    public init(
        logLevel: LogLevelName = .info,
        listeners: [ListenerConfiguration] = [],
        routes: [RouteConfiguration] = [],
        admin: AdminConfiguration? = nil,
        sourceFile: String? = nil
    ) {
        self.logLevel = logLevel
        self.listeners = listeners
        self.routes = routes
        self.admin = admin
        self.sourceFile = sourceFile
    }
}

/// `reload:`: a change of the config file, or of any file it names, can trigger the reload.
public struct ReloadConfiguration: Sendable, Equatable {
    /// Watch the files (off by default: SIGHUP and `POST /reload` always work).
    public var watch: Bool = false
    /// How often the files' sizes and modification times are looked at; a change is acted on
    /// once the files have stayed the same for one more interval (a write in progress is not read).
    public var watchInterval: Duration = .seconds(2)
    public init() {}
}

/// `shutdown:`: the drain. `/readyz` turns 503 for `readinessDelay` while listeners still accept
/// (balancers need to see it); then listeners close and live WebSockets get their close at a
/// moment drawn at random in `drainWindow`, so clients do not reconnect in one stampede; what is
/// still open at `deadline` (from the start) is closed at the TCP level.
public struct ShutdownConfiguration: Sendable, Equatable {
    public var readinessDelay: Duration = .seconds(2)
    public var drainWindow: Duration = .seconds(10)
    public var deadline: Duration = .seconds(30)
    public init() {}
}

/// The log levels an operator can name, as swift-log spells them.
public enum LogLevelName: String, Sendable, Equatable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}

/// The admin listener: plain HTTP on a loopback address by default.
public struct AdminConfiguration: Sendable, Equatable {
    public var address: SocketAddressSpec
    /// A file holding the bearer token `/metrics` and `/connections` require; `nil` = none.
    /// `/healthz` and `/readyz` never need it, so load balancers can probe them.
    public var tokenFile: String?
    public init(address: SocketAddressSpec, tokenFile: String? = nil) {
        self.address = address
        self.tokenFile = tokenFile
    }
}

/// One listening socket: plain TCP, or TLS when `tls` is set.
public struct ListenerConfiguration: Sendable, Equatable {
    public var name: String
    public var address: SocketAddressSpec
    /// `listen(2)` backlog.
    public var backlog: Int = 511
    /// `nil` = plain TCP.
    public var tls: TLSListenerConfiguration?
    public var http: HTTPLimits = HTTPLimits()
    /// HTTP/2's settings and defences, for connections that speak it.
    public var http2: HTTP2Limits = HTTP2Limits()
    /// The PROXY protocol header a balancer sends before anything else; `nil` = none expected.
    public var proxyProtocol: ProxyProtocolVersion?
    /// The peers allowed to send that header (required when `proxyProtocol` is set); a
    /// connection from anyone else is refused.
    public var proxyProtocolFrom: [CIDR] = []

    /// The HTTP versions served, in ALPN preference order: `http.versions`, or by default `h2`
    /// and `http/1.1` over TLS and `http/1.1` alone on plain TCP (where `h2` means h2c with prior
    /// knowledge).
    public var httpVersions: [HTTPProtocol] {
        http.versions ?? (tls == nil ? [.http1] : [.h2, .http1])
    }

    public init(name: String, address: SocketAddressSpec, backlog: Int = 511, tls: TLSListenerConfiguration? = nil, http: HTTPLimits = HTTPLimits()) {
        self.name = name
        self.address = address
        self.backlog = backlog
        self.tls = tls
        self.http = http
    }
}

/// TLS termination settings for a listener.
public struct TLSListenerConfiguration: Sendable, Equatable {
    public enum MinimumVersion: String, Sendable, Equatable {
        case tls12 = "1.2"
        case tls13 = "1.3"
    }

    /// Certificate/key pairs; SNI picks among them by the names in each certificate.
    public var certificates: [CertificateConfiguration]
    /// Index in `certificates` of the one served to unknown or absent SNI names.
    public var defaultCertificateIndex: Int = 0
    public var minimumVersion: MinimumVersion = .tls12
    /// A client that has not finished the TLS handshake by then is disconnected.
    public var handshakeTimeout: Duration = .seconds(10)

    public init(certificates: [CertificateConfiguration], defaultCertificateIndex: Int = 0, minimumVersion: MinimumVersion = .tls12, handshakeTimeout: Duration = .seconds(10)) {
        self.certificates = certificates
        self.defaultCertificateIndex = defaultCertificateIndex
        self.minimumVersion = minimumVersion
        self.handshakeTimeout = handshakeTimeout
    }
}

/// One PEM certificate chain and its private key.
public struct CertificateConfiguration: Sendable, Equatable {
    /// Absolute path of the PEM chain (leaf first).
    public var certificateFile: String
    /// Absolute path of the PEM private key.
    public var keyFile: String
    /// Generate a self-signed development certificate for localhost when both files are missing.
    public var generateIfMissing: Bool = false
    /// The key path of this entry in the config, for errors found later (key mismatch).
    public var configPath: String = ""
    /// Its line in the config file, for the same errors.
    public var configLine: Int?

    public init(certificateFile: String, keyFile: String, generateIfMissing: Bool = false, configPath: String = "") {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.generateIfMissing = generateIfMissing
        self.configPath = configPath
    }
}

/// An HTTP version a listener can serve; the raw values are ALPN's protocol names.
public enum HTTPProtocol: String, Sendable, Equatable, CaseIterable {
    case h2
    case http1 = "http/1.1"
}

/// HTTP/2's settings and the limits that defend a connection from a peer that abuses the
/// protocol: too many streams, huge header lists, streams opened and reset in a loop
/// (CVE-2023-44487), CONTINUATION floods, PING and SETTINGS floods, idle connections.
public struct HTTP2Limits: Sendable, Equatable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams (requests and WebSockets) open at once per connection.
    public var maxConcurrentStreams: Int = 100
    /// SETTINGS_MAX_HEADER_LIST_SIZE: the decoded size of one header list.
    public var maxHeaderListSize: Int = 16 * 1024
    /// SETTINGS_INITIAL_WINDOW_SIZE: what a client may send on a stream before Sluice reads it.
    public var initialWindowSize: Int = 65535
    /// The connection-wide receive window.
    public var connectionWindowSize: Int = 1 << 20
    /// SETTINGS_MAX_FRAME_SIZE.
    public var maxFrameSize: Int = 16384
    /// Streams a client may reset within `resetWindow` before the connection is closed.
    public var maxResets: Int = 200
    public var resetWindow: Duration = .seconds(30)
    /// CONTINUATION frames allowed after one HEADERS frame.
    public var maxContinuationFrames: Int = 5
    /// PING, SETTINGS and PRIORITY frames allowed within `controlFrameWindow`.
    public var maxControlFrames: Int = 200
    public var controlFrameWindow: Duration = .seconds(30)
    /// A connection with no open stream for this long is sent GOAWAY and closed.
    public var idleTimeout: Duration = .seconds(120)
    /// Which HTTP/2 layer serves the listener's connections.
    public var engine: HTTP2Engine = .wire

    /// The HTTP/2 layers Sluice has.
    public enum HTTP2Engine: String, Sendable, Equatable, CaseIterable {
        /// swift-nio-http2, the layer Sluice began with: kept as a fallback.
        case nio
        /// Sluice's own layer (`HTTP2WireConnection`), the default: the same requests, RFC 8441
        /// WebSockets and defences at about half the CPU per request.
        case wire
    }

    public init() {}
}

/// Limits on HTTP/1.1 request heads, enforced before routing.
public struct HTTPLimits: Sendable, Equatable {
    /// Time allowed for a full request head (and for the next one on a kept-alive connection).
    public var headerTimeout: Duration = .seconds(10)
    /// Total bytes of all header lines.
    public var maxHeaderBytes: Int = 16 * 1024
    /// Number of header fields.
    public var maxHeaders: Int = 100
    /// Length of the request line (method, target, version).
    public var maxRequestLine: Int = 8 * 1024
    /// What happens to request fields whose name, with `_` read as `-`, is one Sluice sets
    /// (identity, forwarding): CGI, WSGI and PHP backends read `X_Sluice_User` and
    /// `X-Sluice-User` as one variable, so by default such fields are dropped.
    public var underscoreHeaders: UnderscoreHeaders = .drop
    /// The versions offered (`ListenerConfiguration.httpVersions` applies the default).
    public var versions: [HTTPProtocol]?

    public enum UnderscoreHeaders: String, Sendable, Equatable {
        case drop, keep
    }

    public init() {}
}

/// Which PROXY protocol header (haproxy.org's proxy-protocol.txt) a listener reads.
public enum ProxyProtocolVersion: String, Sendable, Equatable {
    /// The text form: `PROXY TCP4 1.2.3.4 5.6.7.8 1234 443\r\n`.
    case v1
    /// The binary form, with its 12-byte signature.
    case v2
    /// Either, told apart by the first bytes.
    case any
}
