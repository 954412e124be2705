import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
@testable import Sluice
@testable import SluiceConfig

/// The admission chain with no channel and no socket: a head and the connection's facts in,
/// admitted or refused (status, label, who failed, whether the connection may go on) out.
@Suite("Admission")
struct AdmissionTests {
    static let peer = IPAddress("192.0.2.10")!
    static let proxy = IPAddress("10.0.0.1")!

    /// Routes: `/ws` (WebSocket, origin-checked, chat.v1 only, one WebSocket per address),
    /// `/api` (HTTP, origin-checked, one request a second), `/jwt` (WebSocket behind a JWT),
    /// `/` on `demo.test` (the demo page).
    static func routing(trusting trusted: [CIDR] = []) async throws -> ListenerRouting.Snapshot {
        var ws = RouteConfiguration(name: "ws", match: RouteMatch(pathPrefix: "/ws"))
        ws.backends = [try BackendURL.parse("ws://127.0.0.1:1")]
        ws.origin = OriginPolicy(allowed: ["https://app.test"], allowMissing: false)
        ws.websocket.subprotocols = ["chat.v1"]
        ws.limits.maxWebSocketsPerIP = 1
        var api = RouteConfiguration(name: "api", match: RouteMatch(pathPrefix: "/api"))
        api.backends = [try BackendURL.parse("http://127.0.0.1:1")]
        api.origin = OriginPolicy(allowed: ["https://app.test"])
        api.limits.requestRatePerIP = RateLimit(perSecond: 0.001, burst: 1)
        var jwt = RouteConfiguration(name: "jwt", match: RouteMatch(pathPrefix: "/jwt"))
        jwt.backends = [try BackendURL.parse("ws://127.0.0.1:1")]
        var method = JWTAuthConfiguration(algorithms: ["HS256"])
        method.keys = [JWTKeyConfiguration(material: .hmacSecret(AuthTests.secret), algorithm: "HS256", kid: nil, source: "test")]
        method.issuer = "https://issuer.test"
        method.audience = "sluice"
        method.queryParameter = "token"
        jwt.auth.methods = [.jwt(method)]
        var demo = RouteConfiguration(name: "demo", match: RouteMatch(host: "demo.test", pathPrefix: "/"))
        demo.builtin = .demo
        let routes = [
            Route(configuration: ws, backends: try BackendSet.make(for: ws, routeIndex: 0, builtinPorts: [:])),
            Route(configuration: api, backends: try BackendSet.make(for: api, routeIndex: 1, builtinPorts: [:])),
            Route(
                configuration: jwt, backends: try BackendSet.make(for: jwt, routeIndex: 2, builtinPorts: [:]),
                authenticator: try await RouteAuthenticator(configuration: jwt.auth, routeIndex: 2, threadPool: .singleton)
            ),
            Route(configuration: demo, backends: nil),
        ]
        return ListenerRouting.Snapshot(routes: RouteTable(routes: routes, listener: "test"), trustedProxies: trusted)
    }

    static let connection = Admission.Connection(listener: "test", tls: true, peer: peer, limits: HTTPLimits())

    static func request(_ uri: String, _ fields: [(String, String)] = [], host: String? = "app.test", method: HTTPMethod = .GET) -> Admission.Request {
        var headers = HTTPHeaders(fields)
        if let host { headers.add(name: "Host", value: host) }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)
        return Admission.Request(head: head, host: host, framing: RequestFraming.read(headers))
    }

    static let upgradeFields = [
        ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Origin", "https://app.test"), ("Sec-WebSocket-Protocol", "chat.v1"),
    ]

    static func refusal(_ result: Result<Admission.Screened, Admission.Refusal>) -> Admission.Refusal? {
        if case .failure(let refusal) = result { refusal } else { nil }
    }

    @Test("a valid upgrade is admitted with its route, subprotocol, target and client")
    func admitsUpgrade() async throws {
        let routing = try await Self.routing()
        let result = Admission.screen(Self.request("/ws/room?x=1", Self.upgradeFields), on: Self.connection, routing: routing)
        let screened = try result.get()
        #expect(screened.route.name == "ws")
        #expect(screened.target == "/ws/room?x=1")
        #expect(screened.client.address == Self.peer)
        guard case .upgrade(let upgrade) = screened.purpose else {
            Issue.record("not an upgrade: \(screened.purpose)")
            return
        }
        #expect(upgrade.protocols == ["chat.v1"])
        #expect(!upgrade.isExtendedConnect)
    }

    @Test("refusals name who failed, the label, the status and whether the connection goes on")
    func refusals() async throws {
        let routing = try await Self.routing()
        func screen(_ request: Admission.Request) -> Admission.Refusal? {
            Self.refusal(Admission.screen(request, on: Self.connection, routing: routing))
        }
        // (request, status, label, closes the connection, counted as a refused upgrade)
        let upgradeWithout: (String) -> [(String, String)] = { name in Self.upgradeFields.filter { $0.0 != name } }
        let cases: [(Admission.Request, UInt, SluiceError.Label, Bool, Bool)] = [
            (Self.request("/nothing"), 404, .noRoute, false, false),
            (Self.request("/ws", Self.upgradeFields + [("Host", "again.test")]), 400, .badRequest, true, false),
            (Self.request("/ws", [], host: nil), 400, .badRequest, true, false),
            (Self.request("/ws", [("Authorization", "Basic a"), ("Authorization", "Basic b")]), 400, .badRequest, true, false),
            (Self.request("/ws", [], host: "bad host"), 400, .badRequest, true, false),
            (Self.request("/" + String(repeating: "a", count: 9000)), 414, .uriTooLong, true, false),
            (Self.request("/ws"), 426, .upgradeRequired, false, false),
            (Self.request("/ws", upgradeWithout("Origin")), 403, .originRejected, true, true),
            (Self.request("/ws", upgradeWithout("Sec-WebSocket-Key")), 400, .badRequest, true, true),
            (Self.request("/ws", upgradeWithout("Sec-WebSocket-Protocol") + [("Sec-WebSocket-Protocol", "other")]), 400, .badRequest, true, true),
            (Self.request("/api", [("Origin", "https://evil.test")]), 403, .originRejected, false, false),
            (Self.request("/", [], host: "demo.test", method: .POST), 405, .methodNotAllowed, false, false),
            (Self.request("/favicon.ico", [], host: "demo.test"), 404, .noRoute, false, false),
        ]
        for (request, status, label, closes, upgrade) in cases {
            let refusal = try #require(screen(request), "\(request.head.uri.prefix(40)) was admitted")
            #expect(refusal.error.status.code == status, "\(request.head.uri.prefix(40))")
            #expect(refusal.error.label == label, "\(request.head.uri.prefix(40))")
            #expect(refusal.error.source == .client)
            #expect(refusal.error.closesConnection == closes, "\(request.head.uri.prefix(40))")
            #expect((refusal.upgradeRoute != nil) == upgrade, "\(request.head.uri.prefix(40))")
        }
        // A version the gateway does not speak is told the one it does.
        let version = try #require(screen(Self.request("/ws", upgradeWithout("Sec-WebSocket-Version") + [("Sec-WebSocket-Version", "8")])))
        #expect(version.error.headers.contains { $0.0.lowercased() == "sec-websocket-version" && $0.1 == "13" })
        #expect(screen(Self.request("/", [], host: "demo.test")) == nil)
    }

    @Test("request rates refuse with 429, Retry-After and the limit's name")
    func requestRate() async throws {
        let routing = try await Self.routing()
        #expect(Self.refusal(Admission.screen(Self.request("/api/a"), on: Self.connection, routing: routing)) == nil)
        let refusal = try #require(Self.refusal(Admission.screen(Self.request("/api/a"), on: Self.connection, routing: routing)))
        #expect(refusal.error.status == .tooManyRequests)
        #expect(refusal.error.label == .rateLimited)
        #expect({ if case .requestRatePerIP = refusal.error.limit { true } else { false } }())
        #expect(refusal.error.rejection == "request_rate_per_ip")
        #expect(refusal.error.headers.contains { $0.0 == "Retry-After" })
        #expect(!refusal.error.closesConnection)
        // Another address has its own share.
        var other = Self.connection
        other.peer = IPAddress("192.0.2.11")
        #expect(Self.refusal(Admission.screen(Self.request("/api/a"), on: other, routing: routing)) == nil)
    }

    @Test("the client is the socket peer unless the peer is a trusted proxy")
    func clientAddress() async throws {
        let forwarded = [("X-Forwarded-For", "198.51.100.7")]
        let untrusted = try Admission.screen(Self.request("/api/b", forwarded), on: Self.connection, routing: try await Self.routing()).get()
        #expect(untrusted.client.address == Self.peer)
        #expect(!untrusted.client.peerIsTrustedProxy)
        var behindProxy = Self.connection
        behindProxy.peer = Self.proxy
        let routing = try await Self.routing(trusting: [try CIDR("10.0.0.0/8")])
        let trusted = try Admission.screen(Self.request("/api/b", forwarded), on: behindProxy, routing: routing).get()
        #expect(trusted.client.address == IPAddress("198.51.100.7"))
        #expect(trusted.client.peer == Self.proxy)
        #expect(trusted.client.peerIsTrustedProxy)
    }

    @Test("an HTTP/2 extended CONNECT is admitted by the same rules as an upgrade")
    func extendedConnect() async throws {
        let routing = try await Self.routing()
        func connect(_ wanted: String, _ fields: [(String, String)]) -> Result<Admission.Screened, Admission.Refusal> {
            var request = Self.request("/ws/room", fields, method: .CONNECT)
            request.extendedConnect = wanted
            var http2 = Self.connection
            http2.http2 = true
            return Admission.screen(request, on: http2, routing: routing)
        }
        let fields = [("Sec-WebSocket-Version", "13"), ("Origin", "https://app.test"), ("Sec-WebSocket-Protocol", "chat.v1")]
        let screened = try connect("websocket", fields).get()
        guard case .upgrade(let upgrade) = screened.purpose else {
            Issue.record("not an upgrade")
            return
        }
        #expect(upgrade.isExtendedConnect)
        #expect(upgrade.protocols == ["chat.v1"])
        // The key the backend gets is made here, valid for RFC 6455.
        #expect(Data(base64Encoded: upgrade.key)?.count == 16)
        #expect(Self.refusal(connect("websocket", fields.filter { $0.0 != "Origin" }))?.error.label == .originRejected)
        #expect(Self.refusal(connect("chat", fields))?.error.status == .notImplemented)
        #expect(Self.refusal(connect("websocket", fields.filter { $0.0 != "Sec-WebSocket-Version" }))?.error.status == .badRequest)
    }

    @Test("authentication admits a valid token and refuses a missing one with its challenge")
    func authenticate() async throws {
        let routing = try await Self.routing()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let token = try await AuthTests().sign(AuthTests.claims())
        let withToken = Self.request("/jwt/x?token=\(token)&y=2", [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])
        let screened = try Admission.screen(withToken, on: Self.connection, routing: routing).get()
        // The token never reaches the backend.
        #expect(screened.target == "/jwt/x?y=2")
        let admitted = try await Admission.authenticate(screened, withToken, on: Self.connection, eventLoop: loop).get()
        #expect(try admitted.get()?.user == "alice")

        let without = Self.request("/jwt/x", [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])
        let bare = try Admission.screen(without, on: Self.connection, routing: routing).get()
        let refused = try await Admission.authenticate(bare, without, on: Self.connection, eventLoop: loop).get()
        guard case .failure(let error) = refused else {
            Issue.record("admitted without a token")
            return
        }
        #expect(error.status == .unauthorized)
        #expect(error.label == .authRejected)
        #expect(error.headers.contains { $0.0 == "WWW-Authenticate" && $0.1.hasPrefix("Bearer") })
    }

    @Test("leases count WebSockets per address and give the place back once")
    func lease() async throws {
        let routing = try await Self.routing()
        let screened = try Admission.screen(Self.request("/ws", Self.upgradeFields), on: Self.connection, routing: routing).get()
        let first = try Admission.lease(screened, identity: nil).get()
        guard case .failure(let error) = Admission.lease(screened, identity: nil) else {
            Issue.record("a second WebSocket from the address was admitted")
            return
        }
        #expect(error.label == .limitRejected)
        #expect(error.limit == .maxWebSocketsPerIP(retryAfter: 5))
        #expect(error.status == .tooManyRequests)
        first.release()
        first.release()
        let again = try Admission.lease(screened, identity: nil).get()
        guard case .failure = Admission.lease(screened, identity: nil) else {
            Issue.record("a double release gave back two places")
            return
        }
        again.release()
    }

    @Test("every backend failing to connect is a backend error, timeouts 504, none tried 502")
    func connectFailures() {
        let timeout = SluiceError.connectFailed(after: .timeout)
        #expect(timeout.status == .gatewayTimeout && timeout.source == .backend && timeout.label == .backendTimeout)
        let refused = SluiceError.connectFailed(after: .refused("connection refused"))
        #expect(refused.status == .badGateway && refused.label == .backendRefused && refused.message.contains("connection refused"))
        let none = SluiceError.connectFailed(after: nil)
        #expect(none.source == .gateway && none.label == .noBackend)
    }
}
