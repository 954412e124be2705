import Foundation
import Testing
@testable import SluiceConfig

/// Every rule of the config loader, each with a literal config.
@Suite("Configuration loading")
struct ConfigurationLoaderTests {
    static let minimal = """
        listeners:
          - name: public
            address: 127.0.0.1:8080
        routes:
          - name: echo
            match: { path_prefix: /ws }
            backends: ["ws://127.0.0.1:9001"]
        """

    func parse(_ yaml: String, base: String = NSTemporaryDirectory()) throws(ConfigErrors) -> Configuration {
        try ConfigurationLoader.parse(yaml: yaml, baseDirectory: base)
    }

    /// The first error of a config that must fail.
    func error(_ yaml: String) -> ConfigError? {
        do {
            _ = try parse(yaml)
            return nil
        } catch {
            return error.errors.first
        }
    }

    @Test("a minimal config decodes with defaults")
    func minimal() throws {
        let configuration = try parse(Self.minimal)
        #expect(configuration.listeners.count == 1)
        #expect(configuration.listeners[0].address == SocketAddressSpec(host: "127.0.0.1", port: 8080))
        #expect(configuration.listeners[0].backlog == 511)
        #expect(configuration.listeners[0].http.headerTimeout == .seconds(10))
        let route = configuration.routes[0]
        #expect(route.match.pathPrefix == "/ws")
        #expect(route.backends[0].target == .remote(scheme: .ws, host: "127.0.0.1", port: 9001, path: "/"))
        #expect(route.websocket.idleTimeout == .seconds(300))
        #expect(route.websocket.bufferSize == 64 << 10)
    }

    @Test("every key of a full config is read")
    func full() throws {
        let yaml = """
            log_level: debug
            listeners:
              - name: v6
                address: "[::1]:8443"
                backlog: 128
                http: { header_timeout: 2s, max_header_bytes: 8KiB, max_headers: 50, max_request_line: 4KiB }
            admin: { address: "127.0.0.1:9090" }
            routes:
              - name: chat
                listeners: [v6]
                match: { host: "*.Example.com", path_prefix: /chat/ }
                backends: ["wss://backend.internal:8443/base", "builtin:echo"]
                backend_tls: { insecure_skip_verify: true, server_name: backend }
                host_header: backend
                websocket:
                  subprotocols: [chat.v1, chat.v2]
                  max_frame_size: 1MiB
                  max_message_size: 4MiB
                  buffer_size: 32KiB
                  remask: true
                  connect_timeout: 1s
                  handshake_timeout: 2s
                  idle_timeout: off
                  close_timeout: 500ms
                  ping_interval: 20s
                  pong_timeout: 5s
                  max_lifetime: 1h
                  max_connect_attempts: 2
            """
        let configuration = try parse(yaml)
        #expect(configuration.logLevel == .debug)
        #expect(configuration.listeners[0].address == SocketAddressSpec(host: "::1", port: 8443))
        #expect(configuration.listeners[0].http.maxHeaderBytes == 8192)
        #expect(configuration.admin?.address.port == 9090)
        let route = configuration.routes[0]
        #expect(route.match.host == "*.example.com")
        #expect(route.match.pathPrefix == "/chat")
        #expect(route.backends[0].target == .remote(scheme: .wss, host: "backend.internal", port: 8443, path: "/base"))
        #expect(route.backends[1].target == .builtin(.echo))
        #expect(route.backendTLS.insecureSkipVerify)
        #expect(route.hostHeader == .backend)
        #expect(route.websocket.subprotocols == ["chat.v1", "chat.v2"])
        #expect(route.websocket.maxFrameSize == 1 << 20)
        #expect(route.websocket.idleTimeout == nil)
        #expect(route.websocket.closeTimeout == .milliseconds(500))
        #expect(route.websocket.pingInterval == .seconds(20))
        #expect(route.websocket.maxLifetime == .seconds(3600))
        #expect(route.websocket.remask)
    }

    @Test("an unknown key is an error naming its path and line")
    func unknownKey() {
        let error = error(Self.minimal.replacingOccurrences(of: "backends:", with: "bakends:"))
        #expect(error?.path == "routes[0].bakends")
        #expect(error?.line == 7)
        #expect(error?.message.contains("unknown key") == true)
    }

    @Test("an unknown top-level key is an error")
    func unknownTopLevelKey() {
        #expect(error(Self.minimal + "\nmystery: 1")?.path == "mystery")
    }

    @Test("a wrong type is an error")
    func wrongType() {
        let error = error(Self.minimal.replacingOccurrences(of: "backends: [\"ws://127.0.0.1:9001\"]", with: "backends: ws://127.0.0.1:9001"))
        #expect(error?.path == "routes[0].backends")
        #expect(error?.message == "expected a list")
    }

    @Test("a backend with a bad scheme names routes[i].backends[j]")
    func badBackendScheme() {
        let error = error(Self.minimal.replacingOccurrences(of: "ws://127.0.0.1:9001", with: "ftp://127.0.0.1:9001"))
        #expect(error?.path == "routes[0].backends[0]")
        #expect(error?.message.contains("scheme must be http, https, ws or wss") == true)
    }

    @Test("bad durations, sizes and addresses are errors", arguments: [
        ("    websocket: { idle_timeout: 30 }", "routes[0].websocket.idle_timeout"),
        ("    websocket: { idle_timeout: 5 minutes }", "routes[0].websocket.idle_timeout"),
        ("    websocket: { max_frame_size: 12 parsecs }", "routes[0].websocket.max_frame_size"),
        ("    websocket: { buffer_size: 1B }", "routes[0].websocket.buffer_size"),
        ("    websocket: { max_frame_size: 2MiB, max_message_size: 1MiB }", "routes[0].websocket"),
        ("    websocket: { subprotocols: [\"bad proto\"] }", "routes[0].websocket.subprotocols[0]"),
    ])
    func badValues(line: String, path: String) {
        #expect(error(Self.minimal + "\n" + line)?.path == path)
    }

    @Test("bad listener addresses are errors", arguments: [
        "127.0.0.1", "127.0.0.1:99999", "::1:8080", "[::1:8080", "300.1.1.1:80", "bad host:80",
    ])
    func badAddress(address: String) {
        let error = error(Self.minimal.replacingOccurrences(of: "127.0.0.1:8080", with: "\"\(address)\""))
        #expect(error?.path == "listeners[0].address", "\(address)")
    }

    @Test("duplicate listener and route names are errors")
    func duplicateNames() {
        let twoListeners = Self.minimal.replacingOccurrences(of: "routes:", with: """
              - name: public
                address: 127.0.0.1:8081
            routes:
            """)
        #expect(error(twoListeners)?.path == "listeners[1].name")
        let twoRoutes = Self.minimal + """

              - name: echo
                match: { path_prefix: /other }
                backends: ["ws://127.0.0.1:9001"]
            """
        #expect(error(twoRoutes)?.path == "routes[1].name")
    }

    @Test("two routes with the same host and prefix are an error")
    func duplicateMatch() {
        let yaml = Self.minimal + """

              - name: second
                match: { path_prefix: /ws/ }
                backends: ["ws://127.0.0.1:9002"]
            """
        let error = error(yaml)
        #expect(error?.path == "routes[1].match")
        #expect(error?.message.contains("routes[0]") == true)
    }

    @Test("a missing certificate file is an error naming the key")
    func missingCertificate() {
        let yaml = Self.minimal.replacingOccurrences(of: "    address: 127.0.0.1:8080", with: """
                address: 127.0.0.1:8080
                tls:
                  certificates:
                    - cert: /nonexistent/cert.pem
                      key: /nonexistent/key.pem
            """)
        let error = error(yaml)
        #expect(error?.path == "listeners[0].tls.certificates[0].cert")
        #expect(error?.message.contains("does not exist") == true)
    }

    @Test("missing certificate files are fine when the dev certificate may be generated")
    func generateIfMissing() throws {
        let yaml = Self.minimal.replacingOccurrences(of: "    address: 127.0.0.1:8080", with: """
                address: 127.0.0.1:8080
                tls:
                  certificates:
                    - cert: certs/none.pem
                      key: certs/none-key.pem
                      generate_if_missing: true
            """)
        let configuration = try parse(yaml, base: "/srv/sluice/conf")
        let certificate = try #require(configuration.listeners[0].tls?.certificates[0])
        #expect(certificate.certificateFile == "/srv/sluice/conf/certs/none.pem")
        #expect(certificate.generateIfMissing)
    }

    @Test("relative paths resolve against the config file's directory")
    func relativePaths() throws {
        let yaml = Self.minimal + "\n    backend_tls: { ca_file: ../ca.pem }"
        do {
            _ = try parse(yaml, base: "/etc/sluice/conf")
            Issue.record("a missing CA file must be an error")
        } catch {
            #expect(error.errors.first?.message.contains("/etc/sluice/ca.pem") == true)
        }
    }

    @Test("a route needs backends or a builtin, not both")
    func backendsOrBuiltin() {
        let neither = Self.minimal.replacingOccurrences(of: "    backends: [\"ws://127.0.0.1:9001\"]", with: "")
        #expect(error(neither)?.message.contains("needs 'backends'") == true)
        let both = Self.minimal + "\n    builtin: demo"
        #expect(error(both)?.message.contains("not both") == true)
    }

    @Test("a route naming an unknown listener is an error")
    func unknownListener() {
        #expect(error(Self.minimal + "\n    listeners: [nope]")?.path == "routes[0].listeners[0]")
    }

    @Test("invalid YAML reports its line")
    func invalidYAML() {
        let error = error("listeners:\n  - name: [unclosed\n")
        #expect(error?.line != nil)
        #expect(error?.message.contains("invalid YAML") == true)
    }

    @Test("several problems are reported together")
    func severalErrors() {
        do {
            _ = try parse(Self.minimal.replacingOccurrences(of: "127.0.0.1:8080", with: "nope") + "\n    oops: 1")
            Issue.record("expected errors")
        } catch {
            #expect(error.errors.count == 2)
        }
    }

    @Test("path prefixes must be normalised", arguments: ["ws", "/a/../b", "/a/./b", "/a%2Fb", "/a//b"])
    func badPrefix(prefix: String) {
        #expect(error(Self.minimal.replacingOccurrences(of: "/ws", with: prefix))?.path == "routes[0].match.path_prefix")
    }

    @Test("the default config in conf/ loads")
    func defaultConfig() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("conf/sluice.yaml").path
        let configuration = try ConfigurationLoader.load(file: file)
        #expect(configuration.listeners[0].tls?.certificates[0].generateIfMissing == true)
        #expect(configuration.admin?.address == SocketAddressSpec(host: "127.0.0.1", port: 9090))
    }
}
