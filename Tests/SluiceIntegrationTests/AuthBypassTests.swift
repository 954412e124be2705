import Crypto
import Foundation
import Testing

/// The forward-auth bypasses and identity ambiguities of issue 26, tried as an attacker would,
/// through a `sluice` process: a forward-auth service that decides per path and method (Python),
/// and a backend that records what reached it. Each test asserts what the backend received, not
/// only the status.
@Suite("Auth bypass probes through a sluice process")
struct AuthBypassTests {
    /// Everything the probes run against, torn down by `stop()` (each test defers it).
    final class Setup: @unchecked Sendable {
        let auth: PythonPeer
        let backend: PythonPeer
        let echo: PythonPeer
        let sluice: SluiceProcess
        let directory: String

        init() async throws {
            directory = try await AuthIntegrationTests.scratch()
            auth = try await PythonPeer(["path-auth-server"])
            backend = try await PythonPeer(["http-backend", "b1"])
            echo = try await PythonPeer(["backend", "echo"])
            let forward = #"{ forward: { url: "http://127.0.0.1:\#(auth.port)/check", cache_ttl: 30s, copy_headers: [X-User-Id], user_header: X-User-Id } }"#
            let jwt = "{ jwt: { cookie: session, bearer: true, hmac_secret_file: \(directory)/jwt.secret, algorithms: [HS256] } }"
            sluice = try SluiceProcess(yaml: """
                listeners:
                  - { name: plain, address: "127.0.0.1:0" }
                  - { name: keep, address: "127.0.0.1:0", http: { underscore_headers: keep } }
                routes:
                  - name: app
                    match: { path_prefix: /app }
                    backends: ["http://127.0.0.1:\(backend.port)"]
                    auth: { methods: [ \(forward) ] }
                  - name: rewritten
                    match: { path_prefix: /strip }
                    backends: ["http://127.0.0.1:\(backend.port)"]
                    http: { rewrite_prefix: /app }
                    auth: { methods: [ \(forward) ] }
                  - name: jwt
                    match: { path_prefix: /jwt }
                    backends: ["http://127.0.0.1:\(backend.port)"]
                    auth: { methods: [ \(jwt) ] }
                  - name: jwt-private
                    match: { path_prefix: /private }
                    backends: ["http://127.0.0.1:\(backend.port)"]
                    auth: { methods: [ \(jwt) ], forward_credentials: false }
                  - name: basic
                    match: { path_prefix: /basic }
                    backends: ["http://127.0.0.1:\(backend.port)"]
                    auth: { methods: [ { basic: { htpasswd: \(directory)/users } } ] }
                  - name: ws
                    match: { path_prefix: /ws }
                    backends: ["ws://127.0.0.1:\(echo.port)"]
                    origin: { allowed: ["https://good.example"], allow_missing: true }
                  - name: public
                    match: { path_prefix: / }
                    backends: ["http://127.0.0.1:\(backend.port)"]
                """, waitingFor: ["plain", "keep"])
        }

        var port: Int { sluice.port }
        var keepPort: Int { sluice.ports["keep"]! }

        func stop() {
            sluice.stop()
            auth.stop()
            backend.stop()
            echo.stop()
        }

        /// One raw request (`\r\n` escapes) and its answer: status, and the backend's JSON
        /// record of what it received when the request got through.
        func send(_ request: String, port: Int? = nil) async throws -> (status: Int, received: [String: Any]?) {
            let result = try await PythonPeer.run(["http-exchange", "127.0.0.1", "\(port ?? self.port)", request, "1"])
            let responses = try #require(result["responses"] as? [[String: Any]], "\(result)")
            let first = try #require(responses.first, "no answer to \(request): \(result)")
            let body = first["body"] as? String ?? ""
            let received = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            return (first["status"] as? Int ?? 0, received?["backend"] != nil ? received : nil)
        }

        func get(_ path: String, _ fields: [String] = [], method: String = "GET", port: Int? = nil) async throws -> (status: Int, received: [String: Any]?) {
            var lines = ["\(method) \(path) HTTP/1.1", "Host: example.test"] + fields
            if method == "POST" { lines.append("Content-Length: 0") }
            return try await send(lines.joined(separator: "\\r\\n") + "\\r\\n\\r\\n", port: port)
        }

        /// What the auth service was shown, call by call.
        func authCalls() async throws -> [[String: Any]] {
            let session = try PythonSession()
            defer { session.stop() }
            let answer = try await session.send(["op": "http", "url": "http://127.0.0.1:\(auth.port)/calls"])
            let body = try #require(answer["body"] as? String)
            return try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [[String: Any]])
        }

        /// Requests the backend has answered so far (this one, asked directly, included).
        func backendRequests() async throws -> Int {
            let result = try await PythonPeer.run(["http-exchange", "127.0.0.1", "\(backend.port)", "GET /stats HTTP/1.1\\r\\nHost: b\\r\\n\\r\\n", "1"])
            let body = ((result["responses"] as? [[String: Any]])?.first?["body"] as? String) ?? "{}"
            let stats = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            return stats?["requests"] as? Int ?? -1
        }
    }

    static func headers(_ received: [String: Any]?) -> [String: String] {
        (received?["headers"] as? [String: String]) ?? [:]
    }

    @Test("a forward-auth decision is cached per method and target: an allowed path never admits another path or method")
    func cacheKey() async throws {
        let setup = try await Setup()
        defer { setup.stop() }
        let cookie = "Cookie: session=s"
        let ok = try await setup.get("/app/ok/1", [cookie])
        #expect(ok.status == 200 && ok.received?["path"] as? String == "/app/ok/1", "\(ok)")
        let before = try await setup.backendRequests()
        let admin = try await setup.get("/app/admin/1", [cookie], method: "POST")
        #expect(admin.status == 403 && admin.received == nil, "\(admin)")
        let adminGet = try await setup.get("/app/admin/1", [cookie])
        #expect(adminGet.status == 403, "\(adminGet)")
        #expect(try await setup.backendRequests() == before + 1, "only the /stats probe itself reached the backend")
        // A cached refusal of /app/admin does not refuse /app/ok either.
        #expect(try await setup.get("/app/ok/2", [cookie]).status == 200)
        // The method is part of the decision: GET /app/ro is allowed, POST is not, cached or not.
        #expect(try await setup.get("/app/ro/1", [cookie]).status == 200)
        #expect(try await setup.get("/app/ro/1", [cookie], method: "POST").status == 403)
        #expect(try await setup.get("/app/ro/1", [cookie]).status == 200)
        // Within cache_ttl the same request is not asked again. A target decided just before, not
        // the test's first: on a loaded machine the steps above took longer than the 30 s TTL.
        #expect(try await setup.get("/app/ok/3", [cookie]).status == 200)
        let calls = try await setup.authCalls().count
        #expect(try await setup.get("/app/ok/3", [cookie]).status == 200)
        #expect(try await setup.authCalls().count == calls)
    }

    @Test("the auth service is shown exactly the path the backend receives, for every way of spelling it")
    func normalisedPath() async throws {
        let setup = try await Setup()
        defer { setup.stop() }
        let cookie = "Cookie: session=s"
        let variants = ["/app/%61dmin/1", "/app/ok/../admin/1", "/app//admin/1", "/app/%2e%2e/app/admin/1", "/app/ok/%2E%2E/admin/1", "http://example.test/app/admin/1"]
        // A session each: with one, every variant after the first would be the cached decision
        // for the same normalised target (which is right, but shows the service nothing new).
        for (index, variant) in variants.enumerated() {
            let answer = try await setup.get(variant, ["Cookie: session=s\(index)"])
            #expect(answer.status == 403 && answer.received == nil, "\(variant): \(answer)")
        }
        let shown = try await setup.authCalls().map { $0["uri"] as? String ?? "" }
        #expect(shown.count == variants.count)
        #expect(shown.allSatisfy { $0 == "/app/admin/1" }, "\(shown)")
        // The query goes along; after a prefix rewrite the service sees the rewritten target.
        let rewritten = try await setup.get("/strip/admin/1?x=1", [cookie])
        #expect(rewritten.status == 403)
        let allowed = try await setup.get("/strip/ok/1?x=1", [cookie])
        #expect(allowed.status == 200 && allowed.received?["path"] as? String == "/app/ok/1?x=1", "\(allowed)")
        let last = try await setup.authCalls().suffix(2).map { $0["uri"] as? String ?? "" }
        #expect(last == ["/app/admin/1?x=1", "/app/ok/1?x=1"])
    }

    @Test("underscore spellings of identity and forwarding fields, and a client's X-Real-IP, never reach the backend (unless the listener keeps them)")
    func underscoreAndRealIP() async throws {
        let setup = try await Setup()
        defer { setup.stop() }
        let spoofs = ["X_Sluice_User: admin", "X-Sluice_User: admin", "X_User_Id: u-0", "X_Forwarded_For: 6.6.6.6", "X-Real-IP: 6.6.6.6", "X_Unrelated: kept"]
        let answer = try await setup.get("/public/x", spoofs)
        let seen = Self.headers(answer.received)
        #expect(answer.status == 200)
        #expect(Set(seen.keys.map { $0.lowercased() }).intersection(["x_sluice_user", "x-sluice_user", "x_user_id", "x_forwarded_for", "x-real-ip"]).isEmpty, "\(seen)")
        #expect(seen["x_unrelated"] == "kept")
        #expect(seen["x-forwarded-for"] == "127.0.0.1")
        // Through forward auth, only Sluice's own X-User-Id arrives.
        let admitted = try await setup.get("/app/ok/1", ["Cookie: session=s", "X_User_Id: admin"])
        #expect(Self.headers(admitted.received)["x-user-id"] == "u-1")
        #expect(Self.headers(admitted.received)["x_user_id"] == nil)
        // A listener that keeps them passes them as sent (X-Real-IP is still a client's spoof).
        let kept = Self.headers(try await setup.get("/public/x", spoofs, port: setup.keepPort).received)
        #expect(kept["x_sluice_user"] == "admin" && kept["x-real-ip"] == nil, "\(kept)")
        // The same for an upgrade.
        let session = try PythonSession()
        defer { session.stop() }
        #expect(try await session.open("a", "ws://127.0.0.1:\(setup.port)/ws", headers: ["X_Sluice_User": "admin", "X-Real-IP": "6.6.6.6"])["status"] as? Int == 101)
        let echoed = try await session.send(["op": "send", "id": "a", "data": "headers?"])
        let upgrade = try #require(try JSONSerialization.jsonObject(with: Data((echoed["echo"] as? String ?? "{}").utf8)) as? [String: String])
        #expect(upgrade["x_sluice_user"] == nil && upgrade["x-real-ip"] == nil, "\(upgrade)")
    }

    @Test("Basic credentials with a NUL or another control character are refused")
    func basicControlCharacters() async throws {
        let setup = try await Setup()
        defer { setup.stop() }
        func basic(_ text: String) -> String { "Authorization: Basic " + Data(text.utf8).base64EncodedString() }
        #expect(try await setup.get("/basic/x", [basic("alice:alice-password-1")]).status == 200)
        #expect(try await setup.get("/basic/x", [basic("alice:alice-password-1\u{0}anything")]).status == 401)
        #expect(try await setup.get("/basic/x", [basic("alice:alice-password-1\u{1}")]).status == 401)
        #expect(try await setup.get("/basic/x", [basic("ali\u{0}ce:alice-password-1")]).status == 401)
        #expect(try await setup.get("/basic/x", [basic("alice:alice-password-1\u{7F}")]).status == 401)
    }

    /// An HS256 token signed here by hand, so its header can carry what jwt-kit would not write.
    static func token(header: String, claims: String) -> String {
        func encode(_ bytes: some Sequence<UInt8>) -> String {
            Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        }
        let signingInput = encode(Array(header.utf8)) + "." + encode(Array(claims.utf8))
        let signature = HMAC<SHA256>.authenticationCode(for: Array(signingInput.utf8), using: SymmetricKey(data: Array(AuthIntegrationTests.jwtSecret.utf8)))
        return signingInput + "." + encode(signature)
    }

    @Test("a JWT with a crit header parameter is refused (RFC 7515 §4.1.11)")
    func jwtCrit() async throws {
        let setup = try await Setup()
        defer { setup.stop() }
        let exp = Int(Date().timeIntervalSince1970) + 300
        let plain = Self.token(header: #"{"alg":"HS256","typ":"JWT"}"#, claims: #"{"sub":"alice","exp":\#(exp)}"#)
        #expect(try await setup.get("/jwt/x", ["Authorization: Bearer \(plain)"]).status == 200)
        let critical = Self.token(header: #"{"alg":"HS256","crit":["exp"],"exp":1}"#, claims: #"{"sub":"alice","exp":\#(exp)}"#)
        #expect(try await setup.get("/jwt/x", ["Authorization: Bearer \(critical)"]).status == 401)
        let unknown = Self.token(header: #"{"alg":"HS256","crit":["x-sluice-unknown"],"x-sluice-unknown":true}"#, claims: #"{"sub":"alice","exp":\#(exp)}"#)
        #expect(try await setup.get("/jwt/x", ["Authorization: Bearer \(unknown)"]).status == 401)
    }

    @Test("two Authorization, Origin or Host fields are a 400; a second credential for someone else never reaches the backend")
    func duplicates() async throws {
        let setup = try await Setup()
        defer { setup.stop() }
        let exp = Int(Date().timeIntervalSince1970) + 300
        let alice = Self.token(header: #"{"alg":"HS256","typ":"JWT"}"#, claims: #"{"sub":"alice","exp":\#(exp)}"#)
        let bob = Self.token(header: #"{"alg":"HS256","typ":"JWT"}"#, claims: #"{"sub":"bob","exp":\#(exp)}"#)
        #expect(try await setup.get("/jwt/x", ["Authorization: Bearer \(alice)", "Authorization: Bearer \(bob)"]).status == 400)
        #expect(try await setup.get("/public/x", ["Host: other.test"]).status == 400)
        #expect(try await setup.send("GET /public/x HTTP/1.0\\r\\nHost: a\\r\\nHost: b\\r\\n\\r\\n").status == 400)
        let upgrade = [
            "GET /ws HTTP/1.1", "Host: example.test", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Origin: https://good.example", "Origin: https://evil.example",
        ]
        #expect(try await setup.send(upgrade.joined(separator: "\\r\\n") + "\\r\\n\\r\\n").status == 400)

        // Alice's cookie and Bob's bearer token: admitted as alice (the cookie is read first);
        // Bob's token stays out, Alice's cookie goes through (forward_credentials defaults to true).
        let mixed = try await setup.get("/jwt/x", ["Cookie: theme=dark; session=\(alice)", "Authorization: Bearer \(bob)"])
        let seen = Self.headers(mixed.received)
        #expect(mixed.status == 200)
        #expect(seen["x-sluice-user"] == "alice")
        #expect(seen["authorization"] == nil, "\(seen)")
        #expect(seen["cookie"] == "theme=dark; session=\(alice)")
        // With forward_credentials: false, the backend gets no credential at all.
        let stripped = Self.headers(try await setup.get("/private/x", ["Cookie: theme=dark; session=\(alice)", "Authorization: Bearer \(bob)"]).received)
        #expect(stripped["x-sluice-user"] == "alice")
        #expect(stripped["authorization"] == nil && stripped["cookie"] == "theme=dark", "\(stripped)")
        let bearerOnly = Self.headers(try await setup.get("/private/x", ["Authorization: Bearer \(bob)"]).received)
        #expect(bearerOnly["x-sluice-user"] == "bob" && bearerOnly["authorization"] == nil)
    }
}
