import Foundation
import JWTKit
import Logging
import Testing

/// Authentication over loopback: 101 vs 401 vs 403 for each method on real upgrades, with
/// htpasswd files from `htpasswd -B` and Python's crypt, a forward-auth service in Python, and
/// tokens signed by jwt-kit.
@Suite("Authentication over loopback")
struct AuthIntegrationTests {
    static let jwtSecret = "an-hmac-secret-of-at-least-32-bytes-0123456789"

    /// A scratch directory with an htpasswd file: alice (bcrypt, by `htpasswd -B` when it is
    /// installed, else Python's crypt), bob (bcrypt), carol (SHA-512-crypt by Python's crypt).
    static func scratch() async throws -> String {
        let directory = try Scratch.directory("sluice-auth-")
        try jwtSecret.write(toFile: "\(directory)/jwt.secret", atomically: true, encoding: .utf8)
        let file = "\(directory)/users"
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/htpasswd") {
            try await run("/usr/bin/htpasswd", ["-B", "-b", "-c", file, "alice", "alice-password-1"])
            try await run("/usr/bin/htpasswd", ["-B", "-b", file, "bob", "bob-password-2"])
        } else {
            try await run("/usr/bin/env", ["python3", "-c", "import crypt; open('\(file)','w').write('alice:'+crypt.crypt('alice-password-1', crypt.mksalt(crypt.METHOD_BLOWFISH))+'\\nbob:'+crypt.crypt('bob-password-2', crypt.mksalt(crypt.METHOD_BLOWFISH))+'\\n')"])
        }
        try await run("/usr/bin/env", ["python3", "-W", "ignore", "-c", "import crypt; open('\(file)','a').write('carol:'+crypt.crypt('carol-password-3', crypt.mksalt(crypt.METHOD_SHA512))+'\\n')"])
        return directory
    }

    static func run(_ tool: String, _ arguments: [String]) async throws {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        while process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        guard process.terminationStatus == 0 else { throw PeerError(message: "\(tool) \(arguments) failed") }
    }

    static func basicHeader(_ user: String, _ password: String) -> String {
        "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    static func token(sub: String, expiresIn seconds: Double = 300, extra: [String: String] = [:]) async throws -> String {
        struct Claims: JWTPayload {
            var sub: SubjectClaim
            var exp: ExpirationClaim
            var role: String?
            func verify(using algorithm: some JWTAlgorithm) async throws {}
        }
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: Array(jwtSecret.utf8)), digestAlgorithm: .sha256)
        return try await keys.sign(Claims(sub: .init(value: sub), exp: .init(value: Date().addingTimeInterval(seconds)), role: extra["role"]))
    }

    /// What the echo backend saw of the upgrade request.
    func backendSaw(_ session: PythonSession, _ id: String) async throws -> [String: String] {
        let answer = try await session.send(["op": "send", "id": id, "data": "headers?"])
        let text = try #require(answer["echo"] as? String, "\(answer)")
        return try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: String])
    }

    @Test("basic: 401 with the realm, 401 for a wrong password, 403 for a user not listed, 101 for bcrypt and SHA-crypt users; the identity header is Sluice's")
    func basic() async throws {
        let directory = try await Self.scratch()
        let backend = try await PythonPeer(["backend", "echo"])
        let gateway = try await TestGateway(yaml: """
            listeners: [ { name: plain, address: 127.0.0.1:0 } ]
            routes:
              - name: staff
                match: { path_prefix: /ws }
                backends: ["ws://127.0.0.1:\(backend.port)"]
                auth: { methods: [ { basic: { htpasswd: users, realm: Staff, users: [alice, carol] } } ] }
              - name: open
                match: { path_prefix: /open }
                backends: ["ws://127.0.0.1:\(backend.port)"]
                auth: none
            """, baseDirectory: directory)
        let session = try PythonSession()
        let none = try await session.open("none", gateway.url())
        #expect(none["status"] as? Int == 401)
        #expect((none["headers"] as? [String: String])?["www-authenticate"]?.contains(#"Basic realm="Staff""#) == true)
        #expect(try await session.open("wrong", gateway.url(), headers: ["Authorization": Self.basicHeader("alice", "nope")])["status"] as? Int == 401)
        #expect(try await session.open("bob", gateway.url(), headers: ["Authorization": Self.basicHeader("bob", "bob-password-2")])["status"] as? Int == 403)
        let spoof = ["Authorization": Self.basicHeader("alice", "alice-password-1"), "X-Sluice-User": "root"]
        #expect(try await session.open("alice", gateway.url(), headers: spoof)["status"] as? Int == 101)
        let saw = try await backendSaw(session, "alice")
        #expect(saw["x-sluice-user"] == "alice")
        #expect(try await session.open("carol", gateway.url(), headers: ["Authorization": Self.basicHeader("carol", "carol-password-3")])["status"] as? Int == 101)
        // On a public route the spoofed identity header is removed, not passed on.
        #expect(try await session.open("open", gateway.url("/open"), headers: ["X-Sluice-User": "root"])["status"] as? Int == 101)
        #expect(try await backendSaw(session, "open")["x-sluice-user"] == nil)
        // Path normalisation cannot reach the protected route through the public prefix.
        #expect(try await session.open("sneak", gateway.url("/open/../ws"))["status"] as? Int == 401)
        #expect(try await session.open("sneak2", gateway.url("/open/%2e%2e/ws"))["status"] as? Int == 401)
        session.stop()
        await gateway.stop()
        backend.stop()
    }

    @Test("jwt: bearer, cookie and query tokens; the query token never reaches the backend; expired 401; cross-origin 403; per-user cap; close_on_expiry → 1008")
    func jwt() async throws {
        let directory = try await Self.scratch()
        let backend = try await PythonPeer(["backend", "echo"])
        let gateway = try await TestGateway(yaml: """
            listeners: [ { name: plain, address: 127.0.0.1:0 } ]
            routes:
              - name: app
                match: { path_prefix: /ws }
                backends: ["ws://127.0.0.1:\(backend.port)"]
                auth:
                  methods: [ { jwt: { cookie: session, query: access_token, algorithms: [HS256], hmac_secret_file: jwt.secret, leeway: 0s } } ]
                  close_on_expiry: true
                origin: { allowed: ["https://app.test"] }
                limits: { max_websockets_per_user: 1 }
            """, baseDirectory: directory)
        let session = try PythonSession()
        let ann = try await Self.token(sub: "ann")
        let bearer = try await session.open("bearer", gateway.url(), headers: ["Authorization": "Bearer \(ann)"])
        #expect(bearer["status"] as? Int == 101, "\(bearer)")
        #expect(try await backendSaw(session, "bearer")["x-sluice-user"] == "ann")
        let second = try await session.open("again", gateway.url(), headers: ["Authorization": "Bearer \(ann)"])
        #expect(second["status"] as? Int == 429, "max_websockets_per_user")
        try await session.send(["op": "close", "id": "bearer"])

        let ben = try await Self.token(sub: "ben")
        #expect(try await session.open("query", gateway.url("/ws/room?x=1&access_token=\(ben)"))["status"] as? Int == 101)
        let saw = try await backendSaw(session, "query")
        #expect(saw[":path"] == "/ws/room?x=1", "\(saw)")
        #expect(saw["x-sluice-user"] == "ben")

        let cat = try await Self.token(sub: "cat")
        #expect(try await session.open("cookie", gateway.url(), headers: ["Cookie": "theme=dark; session=\(cat)", "Origin": "https://app.test"])["status"] as? Int == 101)
        let dan = try await Self.token(sub: "dan")
        #expect(try await session.open("evil", gateway.url(), headers: ["Cookie": "session=\(dan)", "Origin": "https://evil.test"])["status"] as? Int == 403)

        let expired = try await session.open("expired", gateway.url(), headers: ["Authorization": "Bearer \(try await Self.token(sub: "eve", expiresIn: -5))"])
        #expect(expired["status"] as? Int == 401)
        #expect((expired["headers"] as? [String: String])?["www-authenticate"] == #"Bearer error="invalid_token""#)
        #expect(try await session.open("garbage", gateway.url(), headers: ["Authorization": "Bearer not.a.token"])["status"] as? Int == 401)

        // Long enough for the upgrade to be admitted while the token holds even when the suite's
        // other tests keep the verification thread pool busy (a 2 s token once expired first).
        let short = try await Self.token(sub: "fay", expiresIn: 8)
        let started = Date()
        #expect(try await session.open("short", gateway.url(), headers: ["Authorization": "Bearer \(short)"])["status"] as? Int == 101)
        let closed = try await session.send(["op": "wait-close", "id": "short", "timeout": 30])
        #expect(closed["close_code"] as? Int == 1008, "\(closed)")
        // Closed at the expiry, not before it (exp is in whole seconds: up to 1 s early).
        #expect(Date().timeIntervalSince(started) >= 6.5)
        session.stop()
        await gateway.stop()
        backend.stop()
    }

    @Test("forward auth: admits with copied headers, passes the app's 401/403 through, fails closed on timeouts and errors, caches decisions, rate-limits failures")
    func forward() async throws {
        let auth = try await PythonPeer(["auth-server"])
        let backend = try await PythonPeer(["backend", "echo"])
        let authURL = "http://127.0.0.1:\(auth.port)/check"
        let gateway = try await TestGateway(yaml: """
            listeners: [ { name: plain, address: 127.0.0.1:0 } ]
            routes:
              - name: app
                match: { path_prefix: /ws }
                backends: ["ws://127.0.0.1:\(backend.port)"]
                # 5 s: a freshly started auth server under the whole suite's load has taken over
                # 2 s to answer its first call; the slow case sleeps far past it (20 s).
                auth:
                  methods: [ { forward: { url: "\(authURL)", timeout: 5s, copy_headers: [X-User-Id, X-Team], user_header: X-User-Id } } ]
                  failure_limit: { rate: 1/m, burst: 3 }
                origin: { allowed: ["https://app.test"] }
              - name: cached
                match: { path_prefix: /cached }
                backends: ["ws://127.0.0.1:\(backend.port)"]
                auth: { methods: [ { forward: { url: "\(authURL)", cache_ttl: 30s } } ] }
                origin: { allowed: ["https://app.test"] }
            """)
        let session = try PythonSession()
        let calls = { () async throws -> Int in
            let answer = try await session.send(["op": "http", "url": "http://127.0.0.1:\(auth.port)/calls"])
            let body = try JSONSerialization.jsonObject(with: Data((answer["body"] as? String ?? "{}").utf8)) as? [String: Any]
            return body?["calls"] as? Int ?? -1
        }
        let good = ["Cookie": "session=good", "X-Team": "spoofed", "X-User-Id": "spoofed"]
        // The auth server's first answer is its slowest (the whole suite starts at once): have it
        // given before the gateway asks anything.
        #expect(try await calls() == 0)
        let admitted = try await session.open("good", gateway.url("/ws/x?y=1"), headers: good)
        #expect(admitted["status"] as? Int == 101, "\(admitted)")
        let saw = try await backendSaw(session, "good")
        #expect(saw["x-user-id"] == "u-good" && saw["x-team"] == "blue" && saw["x-sluice-user"] == "u-good", "\(saw)")
        let asked = try await session.send(["op": "http", "url": "http://127.0.0.1:\(auth.port)/calls"])
        let last = try #require((try JSONSerialization.jsonObject(with: Data((asked["body"] as? String ?? "").utf8)) as? [String: Any])?["last"] as? [String: String])
        #expect(last["cookie"] == "session=good" && last["x-forwarded-uri"] == "/ws/x?y=1" && last["x-forwarded-method"] == "GET")
        #expect(last["x-forwarded-for"] == "127.0.0.1")

        let anonymous = try await session.open("anonymous", gateway.url())
        #expect(anonymous["status"] as? Int == 401)
        #expect((anonymous["headers"] as? [String: String])?["www-authenticate"] == #"Cookie realm="app""#)
        #expect((anonymous["body"] as? String) == "denied by the app\n")
        #expect(try await session.open("bad", gateway.url(), headers: ["Cookie": "session=bad"])["status"] as? Int == 403)
        #expect(try await session.open("slow", gateway.url(), headers: ["Cookie": "session=slow"])["status"] as? Int == 503)
        #expect(try await session.open("broken", gateway.url(), headers: ["Cookie": "session=broken"])["status"] as? Int == 503)
        // Three failures (401, 403, and one more) spend the bucket; the next attempt is a 429 without asking the app.
        #expect(try await session.open("bad2", gateway.url(), headers: ["Cookie": "session=bad"])["status"] as? Int == 403)
        let before = try await calls()
        let limited = try await session.open("bad3", gateway.url(), headers: ["Cookie": "session=bad"])
        #expect(limited["status"] as? Int == 429)
        #expect((limited["headers"] as? [String: String])?["retry-after"] != nil)
        #expect(try await calls() == before)

        let start = try await calls()
        for index in 0..<3 {
            #expect(try await session.open("c\(index)", gateway.url("/cached"), headers: ["Cookie": "session=good"])["status"] as? Int == 101)
        }
        #expect(try await calls() == start + 1, "the cache should answer the second and third")
        session.stop()
        await gateway.stop()
        backend.stop()
        auth.stop()
    }

    @Test("no password, token, cookie or query credential appears in any log line or access-log line")
    func secretsNeverLogged() async throws {
        let directory = try await Self.scratch()
        let backend = try await PythonPeer(["backend", "echo"])
        let store = CapturingLogHandler.Store()
        var logger = Logger(label: "sluice-secrets") { _ in CapturingLogHandler(store: store) }
        logger.logLevel = .trace
        let gateway = try await TestGateway(yaml: """
            listeners: [ { name: plain, address: 127.0.0.1:0 } ]
            access_log: \(directory)/access.log
            routes:
              - name: basic
                match: { path_prefix: /basic }
                backends: ["ws://127.0.0.1:\(backend.port)"]
                auth: { methods: [ { basic: { htpasswd: users } } ] }
              - name: jwt
                match: { path_prefix: /jwt }
                backends: ["ws://127.0.0.1:\(backend.port)"]
                auth: { methods: [ { jwt: { cookie: session, query: access_token, algorithms: [HS256], hmac_secret_file: jwt.secret } } ] }
            """, baseDirectory: directory, logger: logger)
        let session = try PythonSession()
        let token = try await Self.token(sub: "gus")
        let expiredToken = try await Self.token(sub: "gus", expiresIn: -60)
        _ = try await session.open("a", gateway.url("/basic"), headers: ["Authorization": Self.basicHeader("alice", "alice-password-1")])
        _ = try await session.open("b", gateway.url("/basic"), headers: ["Authorization": Self.basicHeader("alice", "wrong-password-9")])
        _ = try await session.open("c", gateway.url("/jwt?access_token=\(token)"))
        _ = try await session.open("d", gateway.url("/jwt"), headers: ["Cookie": "session=\(expiredToken)"])
        _ = try await session.open("e", gateway.url("/jwt?access_token=\(expiredToken)&x=1"))
        try await session.send(["op": "close", "id": "a"])
        try await session.send(["op": "close", "id": "c"])
        _ = await gateway.eventually { gateway.gateway.registry.count == 0 }
        session.stop()
        await gateway.stop()
        backend.stop()
        let access = (try? String(contentsOfFile: "\(directory)/access.log", encoding: .utf8)) ?? ""
        #expect(store.count > 5, "the gateway logged at trace level")
        #expect(access.split(separator: "\n").count >= 5)
        for secret in ["alice-password-1", "wrong-password-9", token, expiredToken, Data("alice:alice-password-1".utf8).base64EncodedString(), Self.jwtSecret] {
            #expect(!store.text.contains(secret), "a secret reached the log")
            #expect(!access.contains(secret), "a secret reached the access log")
        }
    }
}
