import Foundation
import Yams

/// Reads, decodes and validates a configuration file.
///
/// Parse, validate, freeze: every problem found is reported with its key path and line, and a
/// configuration that comes out of here is safe to bind. Relative file paths resolve against the
/// directory of the config file, so `sluice` works from any working directory.
public enum ConfigurationLoader {
    /// Loads `path`; throws `ConfigErrors` listing every problem found.
    public static func load(file path: String) throws(ConfigErrors) -> Configuration {
        let absolute = absolutePath(path, base: FileManager.default.currentDirectoryPath)
        let text: String
        do {
            text = try String(contentsOfFile: absolute, encoding: .utf8)
        } catch {
            throw ConfigErrors([ConfigError(path: "", message: "cannot read config file: \(describe(error))", file: absolute)])
        }
        let baseDirectory = (absolute as NSString).deletingLastPathComponent
        do {
            var configuration = try parse(yaml: text, baseDirectory: baseDirectory)
            configuration.sourceFile = absolute
            return configuration
        } catch {
            throw ConfigErrors(error.errors.map { var e = $0; e.file = absolute; return e })
        }
    }

    /// Decodes and validates YAML text; relative paths resolve against `baseDirectory`.
    public static func parse(yaml: String, baseDirectory: String) throws(ConfigErrors) -> Configuration {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: yaml) else {
                throw ConfigErrors([ConfigError(path: "", message: "the config file is empty")])
            }
            root = node
        } catch let error as ConfigErrors {
            throw error
        } catch {
            throw ConfigErrors([yamlError(error)])
        }
        let decoder = Decoder(baseDirectory: baseDirectory)
        let rootNode = ConfigNode(node: root, path: "")
        var configuration = decoder.decodeRoot(rootNode)
        decoder.validate(configuration)
        decoder.checkAdminAndLog(configuration)
        if !decoder.errors.isEmpty { throw ConfigErrors(withLines(decoder.errors, from: rootNode)) }
        configuration.referencedFiles = Array(Set(decoder.readFiles)).sorted()
        configuration.version = version(of: yaml)
        return configuration
    }

    /// Errors found after decoding know their key path, not their line: the line of the longest
    /// key path of the document that begins theirs.
    static func withLines(_ errors: [ConfigError], from root: ConfigNode) -> [ConfigError] {
        guard errors.contains(where: { $0.line == nil && !$0.path.isEmpty }) else { return errors }
        let lines = root.lines()
        return errors.map { error in
            guard error.line == nil, !error.path.isEmpty else { return error }
            var error = error
            var path = Substring(error.path)
            while !path.isEmpty {
                if let line = lines[String(path)] {
                    error.line = line
                    break
                }
                guard let cut = path.lastIndex(where: { $0 == "." || $0 == "[" }) else { break }
                path = path[..<cut]
            }
            return error
        }
    }

    /// 64-bit FNV-1a of the text, in hex: an identifier for a configuration, not a secret.
    static func version(of text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    static func yamlError(_ error: any Error) -> ConfigError {
        if let yaml = error as? YamlError {
            switch yaml {
            case .scanner(let context, let problem, let mark, _),
                .parser(let context, let problem, let mark, _),
                .composer(let context, let problem, let mark, _):
                let text = [context?.text, problem].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ": ")
                return ConfigError(path: "", line: mark.line, message: "invalid YAML: \(text)")
            case .duplicatedKeysInMapping(let duplicates, let context):
                return ConfigError(path: "", line: context.mark.line, message: "duplicate keys: \(duplicates.joined(separator: ", "))")
            default:
                return ConfigError(path: "", message: "invalid YAML: \(yaml)")
            }
        }
        return ConfigError(path: "", message: "invalid YAML: \(error)")
    }

    static func absolutePath(_ path: String, base: String) -> String {
        let joined = path.hasPrefix("/") ? path : (base as NSString).appendingPathComponent(path)
        return (joined as NSString).standardizingPath
    }

    static func describe(_ error: any Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError,
            underlying.domain == NSPOSIXErrorDomain, let code = POSIXErrorCode(rawValue: Int32(underlying.code))
        {
            return String(cString: strerror(code.rawValue))
        }
        return nsError.localizedDescription
    }
}

/// Walks the YAML tree into `Configuration`, collecting errors instead of stopping at the first.
final class Decoder {
    let baseDirectory: String
    var errors: [ConfigError] = []
    /// Files the configuration reads (not the access log, which it writes).
    var readFiles: [String] = []

    init(baseDirectory: String) { self.baseDirectory = baseDirectory }

    func record<T>(_ body: () throws(ConfigError) -> T) -> T? {
        do { return try body() } catch {
            errors.append(error)
            return nil
        }
    }

    func decodeRoot(_ node: ConfigNode) -> Configuration {
        var configuration = Configuration()
        guard var root = record({ () throws(ConfigError) in try node.mapping() }) else { return configuration }
        if let level = root.optional("log_level") {
            _ = record { () throws(ConfigError) in
                let text = try level.string()
                guard let value = LogLevelName(rawValue: text) else {
                    throw level.error("unknown log level '\(text)'; one of \(LogLevelName.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                configuration.logLevel = value
            }
        }
        if let listeners = root.optional("listeners") {
            if let items = record({ () throws(ConfigError) in try listeners.sequence() }) {
                for item in items {
                    if let listener = record({ () throws(ConfigError) in try decodeListener(item) }) {
                        configuration.listeners.append(listener)
                    }
                }
            }
        } else {
            errors.append(node.error("missing required key 'listeners'"))
        }
        if let routes = root.optional("routes"), let items = record({ () throws(ConfigError) in try routes.sequence() }) {
            for item in items {
                if let route = record({ () throws(ConfigError) in try decodeRoute(item) }) {
                    configuration.routes.append(route)
                }
            }
        }
        if let admin = root.optional("admin") {
            configuration.admin = record { () throws(ConfigError) in
                var map = try admin.mapping()
                var configuration = AdminConfiguration(address: try address(try map.required("address")))
                if let token = map.optional("token_file") { configuration.tokenFile = try filePath(token) }
                try map.finish()
                return configuration
            }
        }
        if let limits = root.optional("limits") {
            if let value = record({ () throws(ConfigError) in try decodeGlobalLimits(limits) }) { configuration.limits = value }
        }
        if let policy = root.optional("auth_policy") {
            _ = record { () throws(ConfigError) in
                let text = try policy.string()
                guard text == "explicit" || text == "open" else {
                    throw policy.error("auth_policy is 'explicit' (every route says auth:) or 'open', got '\(text)'")
                }
                configuration.authPolicyExplicit = text == "explicit"
            }
        }
        if let log = root.optional("access_log") {
            _ = record { () throws(ConfigError) in
                let text = try log.string()
                switch text {
                case "off": configuration.accessLog = .off
                case "stdout": configuration.accessLog = .stdout
                case "stderr": configuration.accessLog = .stderr
                default: configuration.accessLog = .file(try outputPath(log))
                }
            }
        }
        if let reload = root.optional("reload") {
            if let value = record({ () throws(ConfigError) in try decodeReload(reload) }) { configuration.reload = value }
        }
        if let shutdown = root.optional("shutdown") {
            if let value = record({ () throws(ConfigError) in try decodeShutdown(shutdown) }) { configuration.shutdown = value }
        }
        if let cluster = root.optional("cluster") {
            configuration.cluster = record { () throws(ConfigError) in try decodeCluster(cluster) }
        }
        _ = record { () throws(ConfigError) in try root.finish() }
        return configuration
    }

    func decodeReload(_ node: ConfigNode) throws(ConfigError) -> ReloadConfiguration {
        var map = try node.mapping()
        var reload = ReloadConfiguration()
        if let value = map.optional("watch") { reload.watch = try value.bool() }
        if let value = map.optional("watch_interval") {
            reload.watchInterval = try positive(value)
            guard reload.watchInterval >= .milliseconds(100) else { throw value.error("must be at least 100ms") }
        }
        try map.finish()
        return reload
    }

    func decodeShutdown(_ node: ConfigNode) throws(ConfigError) -> ShutdownConfiguration {
        var map = try node.mapping()
        var shutdown = ShutdownConfiguration()
        if let value = map.optional("readiness_delay") { shutdown.readinessDelay = try value.duration() }
        if let value = map.optional("drain_window") { shutdown.drainWindow = try value.duration() }
        if let value = map.optional("deadline") { shutdown.deadline = try positive(value) }
        try map.finish()
        guard shutdown.deadline >= shutdown.readinessDelay + shutdown.drainWindow else {
            throw node.error("deadline (\(shutdown.deadline)) must be at least readiness_delay + drain_window (\(shutdown.readinessDelay + shutdown.drainWindow))")
        }
        return shutdown
    }

    func address(_ node: ConfigNode) throws(ConfigError) -> SocketAddressSpec {
        let text = try node.string()
        do {
            return try ValueParsing.address(text)
        } catch {
            throw node.error(error.message)
        }
    }

    func name(_ node: ConfigNode) throws(ConfigError) -> String {
        let name = try node.string()
        guard !name.isEmpty, name.count <= 64,
            name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") })
        else {
            throw node.error("names use letters, digits, '-', '_' and '.' (1 to 64 of them), got '\(name)'")
        }
        return name
    }

    /// A file the configuration reads, made absolute (and remembered for `reload.watch`).
    func filePath(_ node: ConfigNode) throws(ConfigError) -> String {
        let path = try outputPath(node)
        readFiles.append(path)
        return path
    }

    /// A file Sluice writes (the access log), made absolute.
    func outputPath(_ node: ConfigNode) throws(ConfigError) -> String {
        let text = try node.string()
        guard !text.isEmpty else { throw node.error("empty file path") }
        return ConfigurationLoader.absolutePath(text, base: baseDirectory)
    }

    func decodeListener(_ node: ConfigNode) throws(ConfigError) -> ListenerConfiguration {
        var map = try node.mapping()
        var listener = ListenerConfiguration(
            name: try name(try map.required("name")),
            address: try address(try map.required("address"))
        )
        if let backlog = map.optional("backlog") { listener.backlog = try backlog.int(in: 1...65535) }
        if let tls = map.optional("tls") { listener.tls = try decodeTLS(tls) }
        if let http = map.optional("http") { listener.http = try decodeHTTPLimits(http) }
        if let http2 = map.optional("http2") { listener.http2 = try decodeHTTP2Limits(http2) }
        if let value = map.optional("proxy_protocol") {
            let text = try value.string()
            guard let version = ProxyProtocolVersion(rawValue: text) else { throw value.error("proxy_protocol is v1, v2 or any, got '\(text)'") }
            listener.proxyProtocol = version
        }
        if let value = map.optional("proxy_protocol_from") {
            for item in try value.sequence() {
                let text = try item.string()
                do throws(ValueError) {
                    listener.proxyProtocolFrom.append(try CIDR(text))
                } catch {
                    throw item.error(error.message)
                }
            }
        }
        if listener.proxyProtocol != nil && listener.proxyProtocolFrom.isEmpty {
            throw node.error("proxy_protocol needs proxy_protocol_from: the balancers' addresses (CIDRs) allowed to send the header")
        }
        if listener.proxyProtocol == nil && !listener.proxyProtocolFrom.isEmpty {
            throw node.error("proxy_protocol_from is set but proxy_protocol is not")
        }
        try map.finish()
        return listener
    }

    func decodeTLS(_ node: ConfigNode) throws(ConfigError) -> TLSListenerConfiguration {
        var map = try node.mapping()
        let certificatesNode = try map.required("certificates")
        let items = try certificatesNode.sequence()
        guard !items.isEmpty else { throw certificatesNode.error("at least one certificate is needed") }
        var certificates: [CertificateConfiguration] = []
        var defaultIndex: Int?
        for (index, item) in items.enumerated() {
            var entry = try item.mapping()
            var certificate = CertificateConfiguration(
                certificateFile: try filePath(try entry.required("cert")),
                keyFile: try filePath(try entry.required("key")),
                configPath: item.path
            )
            certificate.configLine = item.line
            if let generate = entry.optional("generate_if_missing") { certificate.generateIfMissing = try generate.bool() }
            if let isDefault = entry.optional("default"), try isDefault.bool() {
                if defaultIndex != nil { throw isDefault.error("only one certificate can be the default") }
                defaultIndex = index
            }
            try entry.finish()
            certificates.append(certificate)
        }
        var tls = TLSListenerConfiguration(certificates: certificates, defaultCertificateIndex: defaultIndex ?? 0)
        if let version = map.optional("min_version") {
            let text = try version.string()
            guard let value = TLSListenerConfiguration.MinimumVersion(rawValue: text) else {
                throw version.error("min_version must be \"1.2\" or \"1.3\", got '\(text)'")
            }
            tls.minimumVersion = value
        }
        if let timeout = map.optional("handshake_timeout") { tls.handshakeTimeout = try positive(timeout) }
        try map.finish()
        return tls
    }

    func positive(_ node: ConfigNode) throws(ConfigError) -> Duration {
        let value = try node.duration()
        guard value > .zero else { throw node.error("must be longer than 0") }
        return value
    }

    func decodeHTTPLimits(_ node: ConfigNode) throws(ConfigError) -> HTTPLimits {
        var map = try node.mapping()
        var limits = HTTPLimits()
        if let value = map.optional("header_timeout") { limits.headerTimeout = try positive(value) }
        if let value = map.optional("max_header_bytes") { limits.maxHeaderBytes = try sizeIn(value, 256...(1 << 20)) }
        if let value = map.optional("max_headers") { limits.maxHeaders = try value.int(in: 1...1000) }
        if let value = map.optional("max_request_line") { limits.maxRequestLine = try sizeIn(value, 64...(1 << 20)) }
        if let value = map.optional("underscore_headers") {
            let text = try value.string()
            guard let choice = HTTPLimits.UnderscoreHeaders(rawValue: text) else {
                throw value.error("must be drop or keep, got '\(text)'")
            }
            limits.underscoreHeaders = choice
        }
        if let value = map.optional("versions") {
            let items = try value.sequence()
            guard !items.isEmpty else { throw value.error("at least one version is needed: h2, http/1.1") }
            var versions: [HTTPProtocol] = []
            for item in items {
                let text = try item.string()
                guard let version = HTTPProtocol(rawValue: text) else {
                    throw item.error("unknown HTTP version '\(text)'; expected h2 or http/1.1")
                }
                guard !versions.contains(version) else { throw item.error("'\(text)' is listed twice") }
                versions.append(version)
            }
            limits.versions = versions
        }
        try map.finish()
        return limits
    }

    func decodeHTTP2Limits(_ node: ConfigNode) throws(ConfigError) -> HTTP2Limits {
        var map = try node.mapping()
        var limits = HTTP2Limits()
        if let value = map.optional("max_concurrent_streams") { limits.maxConcurrentStreams = try value.int(in: 1...100_000) }
        if let value = map.optional("max_header_list_size") { limits.maxHeaderListSize = try sizeIn(value, 1024...(1 << 20)) }
        if let value = map.optional("initial_window_size") { limits.initialWindowSize = try sizeIn(value, 1024...Int(Int32.max)) }
        if let value = map.optional("connection_window_size") { limits.connectionWindowSize = try sizeIn(value, 65535...Int(Int32.max)) }
        if let value = map.optional("max_frame_size") { limits.maxFrameSize = try sizeIn(value, 16384...16_777_215) }
        if let value = map.optional("max_resets") { limits.maxResets = try value.int(in: 1...1_000_000) }
        if let value = map.optional("reset_window") { limits.resetWindow = try positive(value) }
        if let value = map.optional("max_continuation_frames") { limits.maxContinuationFrames = try value.int(in: 1...1000) }
        if let value = map.optional("max_control_frames") { limits.maxControlFrames = try value.int(in: 1...1_000_000) }
        if let value = map.optional("control_frame_window") { limits.controlFrameWindow = try positive(value) }
        if let value = map.optional("idle_timeout") { limits.idleTimeout = try positive(value) }
        if let value = map.optional("engine") {
            let text = try value.string()
            guard let engine = HTTP2Limits.HTTP2Engine(rawValue: text) else {
                throw value.error("http2 engine is \(HTTP2Limits.HTTP2Engine.allCases.map(\.rawValue).joined(separator: " or ")), got '\(text)'")
            }
            limits.engine = engine
        }
        try map.finish()
        return limits
    }

    func sizeIn(_ node: ConfigNode, _ range: ClosedRange<Int>) throws(ConfigError) -> Int {
        let value = try node.size()
        guard range.contains(value) else {
            throw node.error("must be from \(range.lowerBound) to \(range.upperBound) bytes, got \(value)")
        }
        return value
    }

    func decodeRoute(_ node: ConfigNode) throws(ConfigError) -> RouteConfiguration {
        var map = try node.mapping()
        let routeName = try name(try map.required("name"))
        // No `match:` matches every host and path, as each of its fields does when left out.
        let match = try map.optional("match").map { (node) throws(ConfigError) in try decodeMatch(node) } ?? RouteMatch()
        var route = RouteConfiguration(name: routeName, match: match)
        if let listeners = map.optional("listeners") {
            route.listeners = try listeners.sequence().map { (item) throws(ConfigError) in try name(item) }
        }
        if let backends = map.optional("backends") {
            for item in try backends.sequence() {
                let (url, weight) = try decodeBackend(item)
                route.backends.append(url)
                route.weights.append(weight)
            }
        }
        if let health = map.optional("health") { route.health = try decodeHealthCheck(health) }
        if let builtin = map.optional("builtin") {
            let text = try builtin.string()
            guard let value = BuiltinHandler(rawValue: text) else {
                throw builtin.error("unknown built-in handler '\(text)'; known: \(BuiltinHandler.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            route.builtin = value
        }
        if let tls = map.optional("backend_tls") { route.backendTLS = try decodeBackendTLS(tls) }
        if let host = map.optional("host_header") {
            let text = try host.string()
            guard let value = HostHeaderPolicy(rawValue: text) else {
                throw host.error("host_header must be 'client' or 'backend', got '\(text)'")
            }
            route.hostHeader = value
        }
        if let websocket = map.optional("websocket") { route.websocket = try decodeWebSocket(websocket) }
        if let limits = map.optional("limits") { route.limits = try decodeRouteLimits(limits) }
        if let auth = map.optional("auth") {
            route.auth = try decodeAuth(auth)
            route.authDeclared = true
        }
        if let origin = map.optional("origin") { route.origin = try decodeOrigin(origin) }
        if let http = map.optional("http") { route.http = try decodeHTTPProxy(http) }
        if let balance = map.optional("balance") { route.balance = try decodeBalance(balance) }
        try map.finish()
        if route.builtin == nil && route.backends.isEmpty {
            throw node.error("a route needs 'backends' (at least one) or 'builtin'")
        }
        if route.builtin != nil && !route.backends.isEmpty {
            throw node.error("a route has either 'backends' or 'builtin', not both")
        }
        return route
    }

    func decodeMatch(_ node: ConfigNode) throws(ConfigError) -> RouteMatch {
        var map = try node.mapping()
        var match = RouteMatch()
        if let host = map.optional("host") {
            let text = try host.string().lowercased()
            let bare = text.hasPrefix("*.") ? String(text.dropFirst(2)) : text
            guard text != "*" else { throw host.error("omit 'host' to match any host; '*' alone is not a pattern") }
            guard IPAddressText.isHostName(bare) || IPAddressText.isIPv4(bare) || IPAddressText.isIPv6(bare) else {
                throw host.error("'\(text)' is not a host name or '*.domain' pattern (no port)")
            }
            match.host = text
        }
        if let prefix = map.optional("path_prefix") {
            let text = try prefix.string()
            guard text.hasPrefix("/") else { throw prefix.error("path_prefix must start with '/', got '\(text)'") }
            let segments = text.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
            if segments.contains(where: { $0 == "." || $0 == ".." }) || text.contains("%") || text.contains("?") || text.contains("#") {
                throw prefix.error("path_prefix must be a plain normalised path (no '.', '..', '%', '?' or '#'), got '\(text)'")
            }
            var normalised = text
            while normalised.count > 1 && normalised.hasSuffix("/") { normalised.removeLast() }
            if normalised.contains("//") { throw prefix.error("path_prefix cannot contain '//'") }
            match.pathPrefix = normalised
        }
        try map.finish()
        return match
    }

    func decodeBackendTLS(_ node: ConfigNode) throws(ConfigError) -> BackendTLSConfiguration {
        var map = try node.mapping()
        var tls = BackendTLSConfiguration()
        if let ca = map.optional("ca_file") { tls.caFile = try filePath(ca) }
        if let skip = map.optional("insecure_skip_verify") { tls.insecureSkipVerify = try skip.bool() }
        if let name = map.optional("server_name") { tls.serverName = try name.string() }
        if tls.insecureSkipVerify && tls.caFile != nil {
            throw node.error("set either ca_file or insecure_skip_verify, not both")
        }
        try map.finish()
        return tls
    }

    func decodeWebSocket(_ node: ConfigNode) throws(ConfigError) -> WebSocketRouteSettings {
        var map = try node.mapping()
        var settings = WebSocketRouteSettings()
        if let value = map.optional("subprotocols") {
            let list = try value.stringList()
            guard !list.isEmpty else { throw value.error("omit subprotocols to allow any; an empty list allows none") }
            for (index, name) in list.enumerated() where !HTTPToken.isToken(name) {
                throw ConfigError(path: "\(value.path)[\(index)]", line: value.line, message: "'\(name)' is not a valid subprotocol token")
            }
            settings.subprotocols = list
        }
        if let value = map.optional("max_message_size") {
            settings.maxMessageSize = try sizeIn(value, 125...(1 << 40))
            settings.maxFrameSize = min(settings.maxFrameSize, settings.maxMessageSize)
        }
        if let value = map.optional("max_frame_size") { settings.maxFrameSize = try sizeIn(value, 125...(1 << 40)) }
        if let value = map.optional("buffer_size") { settings.bufferSize = try sizeIn(value, 1024...(64 << 20)) }
        if let value = map.optional("remask") { settings.remask = try value.bool() }
        if let value = map.optional("connect_timeout") { settings.connectTimeout = try positive(value) }
        if let value = map.optional("handshake_timeout") { settings.handshakeTimeout = try positive(value) }
        if let value = map.optional("idle_timeout") { settings.idleTimeout = try value.optionalDuration() }
        if let value = map.optional("close_timeout") { settings.closeTimeout = try positive(value) }
        if let value = map.optional("ping_interval") { settings.pingInterval = try value.optionalDuration() }
        if let value = map.optional("pong_timeout") { settings.pongTimeout = try positive(value) }
        if let value = map.optional("max_lifetime") { settings.maxLifetime = try value.optionalDuration() }
        if let value = map.optional("max_connect_attempts") { settings.maxConnectAttempts = try value.int(in: 1...16) }
        if settings.maxMessageSize < settings.maxFrameSize {
            throw node.error("max_message_size (\(settings.maxMessageSize)) is smaller than max_frame_size (\(settings.maxFrameSize))")
        }
        try map.finish()
        return settings
    }

    func decodeHTTPProxy(_ node: ConfigNode) throws(ConfigError) -> HTTPProxySettings {
        var map = try node.mapping()
        var settings = HTTPProxySettings()
        if let value = map.optional("connect_timeout") { settings.connectTimeout = try positive(value) }
        if let value = map.optional("response_timeout") { settings.responseTimeout = try positive(value) }
        if let value = map.optional("idle_timeout") { settings.idleTimeout = try positive(value) }
        if let value = map.optional("max_request_body") { settings.maxRequestBody = try sizeIn(value, 0...(1 << 50)) }
        if let value = map.optional("strip_prefix") { settings.stripPrefix = try value.bool() }
        if let value = map.optional("rewrite_prefix") {
            let text = try value.string()
            guard text.hasPrefix("/"), !text.contains("?"), !text.contains("#"), !text.contains("..") else {
                throw value.error("rewrite_prefix must be a plain path starting with '/', got '\(text)'")
            }
            settings.rewritePrefix = text
        }
        if settings.stripPrefix && settings.rewritePrefix != nil {
            throw node.error("set strip_prefix or rewrite_prefix, not both")
        }
        if let pool = map.optional("pool") {
            var poolMap = try pool.mapping()
            if let value = poolMap.optional("max_idle") { settings.poolMaxIdle = try value.int(in: 0...10_000) }
            if let value = poolMap.optional("idle_timeout") { settings.poolIdleTimeout = try positive(value) }
            try poolMap.finish()
        }
        try map.finish()
        return settings
    }

    func decodeBalance(_ node: ConfigNode) throws(ConfigError) -> BalancingConfiguration {
        var map = try node.mapping()
        var balance = BalancingConfiguration()
        if let value = map.optional("policy") {
            let text = try value.string()
            guard let policy = BalancingConfiguration.Policy(rawValue: text) else {
                throw value.error("policy is round_robin or least_connections, got '\(text)'")
            }
            balance.policy = policy
        }
        var cookieName = "sluice_backend"
        if let value = map.optional("cookie_name") {
            cookieName = try value.string()
            guard HTTPToken.isToken(cookieName) else { throw value.error("'\(cookieName)' is not a cookie name") }
        }
        if let value = map.optional("sticky") {
            switch try value.string() {
            case "none": balance.sticky = .none
            case "cookie": balance.sticky = .cookie(name: cookieName)
            case "ip": balance.sticky = .clientIP
            case let other: throw value.error("sticky is none, cookie or ip, got '\(other)'")
            }
        }
        if let value = map.optional("max_fails") { balance.maxFails = try value.int(in: 1...1000) }
        if let value = map.optional("cool_down") { balance.coolDown = try positive(value) }
        try decodeOutlierSettings(&map, into: &balance)
        try map.finish()
        return balance
    }

    func decodeGlobalLimits(_ node: ConfigNode) throws(ConfigError) -> GlobalLimits {
        var map = try node.mapping()
        var limits = GlobalLimits()
        if let value = map.optional("max_connections") { limits.maxConnections = try value.int(in: 1...10_000_000) }
        if let value = map.optional("max_connections_per_ip") { limits.maxConnectionsPerIP = try value.int(in: 1...10_000_000) }
        if let value = map.optional("trusted_proxies") {
            let items = try value.sequence()
            for item in items {
                let text = try item.string()
                do throws(ValueError) {
                    limits.trustedProxies.append(try CIDR(text))
                } catch {
                    throw item.error(error.message)
                }
            }
        }
        try map.finish()
        return limits
    }

    func decodeRouteLimits(_ node: ConfigNode) throws(ConfigError) -> RouteLimits {
        var map = try node.mapping()
        var limits = RouteLimits()
        if let value = map.optional("max_websockets") { limits.maxWebSockets = try value.int(in: 1...10_000_000) }
        if let value = map.optional("max_websockets_per_ip") { limits.maxWebSocketsPerIP = try value.int(in: 1...10_000_000) }
        if let value = map.optional("max_websockets_per_user") { limits.maxWebSocketsPerUser = try value.int(in: 1...10_000_000) }
        if let value = map.optional("upgrade_rate") { limits.upgradeRate = try decodeRate(value) }
        if let value = map.optional("upgrade_rate_per_ip") { limits.upgradeRatePerIP = try decodeRate(value) }
        if let value = map.optional("request_rate") { limits.requestRate = try decodeRate(value) }
        if let value = map.optional("request_rate_per_ip") { limits.requestRatePerIP = try decodeRate(value) }
        if let value = map.optional("upgrade_rate_per_user") { limits.upgradeRatePerUser = try decodeRate(value) }
        if let value = map.optional("request_rate_per_user") { limits.requestRatePerUser = try decodeRate(value) }
        if let value = map.optional("retry_after") { limits.retryAfter = try positive(value) }
        try map.finish()
        return limits
    }

    /// `{rate: 20/s, burst: 40}`; `burst` defaults to one second's worth (at least 1).
    func decodeRate(_ node: ConfigNode) throws(ConfigError) -> RateLimit {
        var map = try node.mapping()
        let rateNode = try map.required("rate")
        let text = try rateNode.string()
        guard let perSecond = RateLimit.parseRate(text) else {
            throw rateNode.error("rate must be a count per unit, as in 20/s, 600/m or 1000/h, got '\(text)'")
        }
        var burst = max(1, Int(perSecond.rounded(.up)))
        if let value = map.optional("burst") { burst = try value.int(in: 1...10_000_000) }
        try map.finish()
        return RateLimit(perSecond: perSecond, burst: burst)
    }

    /// Rules that span several entries: unique names, unique matches, files that exist.
    func validate(_ configuration: Configuration) {
        var listenerNames: [String: Int] = [:]
        var addresses: [SocketAddressSpec: Int] = [:]
        for (index, listener) in configuration.listeners.enumerated() {
            if let first = listenerNames[listener.name] {
                errors.append(ConfigError(path: "listeners[\(index)].name", message: "duplicate listener name '\(listener.name)' (also listeners[\(first)])"))
            } else {
                listenerNames[listener.name] = index
            }
            if listener.address.port != 0, let first = addresses[listener.address] {
                errors.append(ConfigError(path: "listeners[\(index)].address", message: "address \(listener.address) is also used by listeners[\(first)]"))
            } else {
                addresses[listener.address] = index
            }
            for (certIndex, certificate) in (listener.tls?.certificates ?? []).enumerated() {
                let path = "listeners[\(index)].tls.certificates[\(certIndex)]"
                let fm = FileManager.default
                let bothMissing = !fm.fileExists(atPath: certificate.certificateFile) && !fm.fileExists(atPath: certificate.keyFile)
                if certificate.generateIfMissing && bothMissing { continue }
                checkReadable(certificate.certificateFile, path: "\(path).cert")
                checkReadable(certificate.keyFile, path: "\(path).key")
            }
        }
        if let admin = configuration.admin, admin.address.port != 0, let index = addresses[admin.address] {
            errors.append(ConfigError(path: "admin.address", message: "address \(admin.address) is also used by listeners[\(index)]"))
        }
        if configuration.listeners.isEmpty && errors.isEmpty {
            errors.append(ConfigError(path: "listeners", message: "at least one listener is needed"))
        }
        var routeNames: [String: Int] = [:]
        var matches: [String: Int] = [:]
        for (index, route) in configuration.routes.enumerated() {
            if let first = routeNames[route.name] {
                errors.append(ConfigError(path: "routes[\(index)].name", message: "duplicate route name '\(route.name)' (also routes[\(first)])"))
            } else {
                routeNames[route.name] = index
            }
            for (listenerIndex, name) in route.listeners.enumerated() where listenerNames[name] == nil {
                errors.append(ConfigError(path: "routes[\(index)].listeners[\(listenerIndex)]", message: "no listener is named '\(name)'"))
            }
            let scopes = route.listeners.isEmpty ? ["*"] : route.listeners
            for scope in scopes {
                let key = "\(route.match.host ?? "*any*") \(route.match.pathPrefix) @\(scope)"
                let anyKey = "\(route.match.host ?? "*any*") \(route.match.pathPrefix) @*"
                if let first = matches[key] ?? (scope == "*" ? nil : matches[anyKey]) {
                    errors.append(ConfigError(path: "routes[\(index)].match", message: "same host and path_prefix as routes[\(first)]"))
                    break
                }
                matches[key] = index
            }
            if let ca = route.backendTLS.caFile { checkReadable(ca, path: "routes[\(index)].backend_tls.ca_file") }
            if configuration.authPolicyExplicit && !route.authDeclared {
                errors.append(ConfigError(path: "routes[\(index)]", message: "auth_policy is explicit: route '\(route.name)' must say 'auth:' (write 'auth: none' to make it public)"))
            }
            if let perUser = route.limits.maxWebSocketsPerUser, let total = route.limits.maxWebSockets, perUser > total {
                errors.append(ConfigError(path: "routes[\(index)].limits.max_websockets_per_user", message: "is larger than max_websockets (\(total))"))
            }
            if let perIP = route.limits.maxWebSocketsPerIP, let total = route.limits.maxWebSockets, perIP > total {
                errors.append(ConfigError(path: "routes[\(index)].limits.max_websockets_per_ip", message: "is larger than max_websockets (\(total))"))
            }
            if let subprotocols = route.websocket.subprotocols, Set(subprotocols).count != subprotocols.count {
                errors.append(ConfigError(path: "routes[\(index)].websocket.subprotocols", message: "duplicate subprotocol names"))
            }
        }
    }

    func checkAdminAndLog(_ configuration: Configuration) {
        if let token = configuration.admin?.tokenFile {
            checkReadable(token, path: "admin.token_file")
            if let text = try? String(contentsOfFile: token, encoding: .utf8), text.trimmingCharacters(in: .whitespacesAndNewlines).count < 16 {
                errors.append(ConfigError(path: "admin.token_file", message: "the token in \(token) is shorter than 16 characters"))
            }
        }
        if case .file(let path) = configuration.accessLog {
            let directory = (path as NSString).deletingLastPathComponent
            var isDirectory: ObjCBool = false
            if !FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) || !isDirectory.boolValue {
                errors.append(ConfigError(path: "access_log", message: "directory \(directory) does not exist"))
            }
        }
        if let perIP = configuration.limits.maxConnectionsPerIP, let total = configuration.limits.maxConnections, perIP > total {
            errors.append(ConfigError(path: "limits.max_connections_per_ip", message: "is larger than max_connections (\(total))"))
        }
    }

    func checkReadable(_ file: String, path: String) {
        if !FileManager.default.isReadableFile(atPath: file) {
            let reason = FileManager.default.fileExists(atPath: file) ? "is not readable" : "does not exist"
            errors.append(ConfigError(path: path, message: "file \(file) \(reason)"))
        }
    }
}

/// RFC 9110 token syntax, used for subprotocol names.
public enum HTTPToken {
    public static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
                return true
            default:
                return "!#$%&'*+-.^_`|~".utf8.contains(byte)
            }
        }
    }
}
