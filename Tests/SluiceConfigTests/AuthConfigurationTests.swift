import Foundation
import Testing
@testable import SluiceConfig

/// `auth:`, `origin:` and `auth_policy` in the config, and the htpasswd formats accepted.
@Suite("Auth configuration")
final class AuthConfigurationTests {
    /// The suite's files, made for each test and removed after it.
    let directory: String

    init() throws {
        directory = NSTemporaryDirectory() + "sluice-auth-config-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "alice:$2y$05$Ls2Vv0dtyW9zS0o8q9Qqa.ZKc9n1O5bP4D8m0vQfGQ2y5wY5nqk6G\n".write(toFile: "\(directory)/users", atomically: true, encoding: .utf8)
        try String(repeating: "s", count: 40).write(toFile: "\(directory)/secret", atomically: true, encoding: .utf8)
        try "short".write(toFile: "\(directory)/short", atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func parse(_ route: String, top: String = "") throws(ConfigErrors) -> Configuration {
        try ConfigurationLoader.parse(yaml: """
            \(top)
            listeners:
              - name: public
                address: 127.0.0.1:8080
            routes:
              - name: ws
                match: { path_prefix: /ws }
                backends: ["ws://127.0.0.1:9001"]
                \(route)
            """, baseDirectory: directory)
    }

    func firstError(_ route: String, top: String = "") -> String? {
        do {
            _ = try parse(route, top: top)
            return nil
        } catch {
            return error.errors.first.map { "\($0.path): \($0.message)" }
        }
    }

    @Test("the three methods decode with their options")
    func decode() throws {
        let route = try parse("""
            auth: { methods: [ { basic: { htpasswd: users, realm: Staff, users: [alice] } }, { jwt: { cookie: session, query: access_token, algorithms: [HS256], hmac_secret_file: secret, issuer: iss, audience: aud, claims: { role: admin }, user_claim: email } }, { forward: { url: "http://127.0.0.1:9999/check", timeout: 1s, copy_headers: [X-User-Id], user_header: X-User-Id, cache_ttl: 10s } } ], user_header: X-Remote-User, close_on_expiry: true }
                origin: { allowed: ["https://app.test", "https://*.example.com"], allow_missing: false }
            """).routes[0]
        #expect(route.auth.methods.map(\.name) == ["basic", "jwt", "forward"])
        #expect(route.auth.userHeader == "X-Remote-User")
        #expect(route.auth.closeOnExpiry)
        guard case .basic(let basic) = route.auth.methods[0], case .jwt(let jwt) = route.auth.methods[1], case .forward(let forward) = route.auth.methods[2] else {
            Issue.record("wrong methods")
            return
        }
        #expect(basic.realm == "Staff" && basic.allowedUsers == ["alice"] && basic.users["alice"] != nil)
        #expect(jwt.cookie == "session" && jwt.queryParameter == "access_token" && jwt.requiredClaims == ["role": "admin"] && jwt.userClaim == "email")
        #expect(forward.host == "127.0.0.1" && forward.port == 9999 && forward.path == "/check" && forward.cacheTTL == .seconds(10))
        #expect(route.origin?.allowMissing == false)
    }

    @Test("weak htpasswd hashes are refused naming the file line; strong ones accepted")
    func htpasswdFormats() throws {
        for (line, kind) in [("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "{SHA}"), ("bob:$apr1$abc$def", "$apr1$"), ("bob:plaintext", "plain text")] {
            #expect(throws: ValueError.self) { try Htpasswd.parse("# users\nalice:$2y$05$x\n\(line)\n", file: "users") }
            do {
                _ = try Htpasswd.parse("# users\nalice:$2y$05$x\n\(line)\n", file: "users")
            } catch {
                #expect(error.message.contains("users:3") && error.message.contains(kind), "\(error.message)")
            }
        }
        let users = try Htpasswd.parse("a:$2b$x\nb:$5$x\nc:$6$x\nd:$y$x\n\n", file: "f")
        #expect(users.count == 4)
        #expect(throws: ValueError.self) { try Htpasswd.parse("a:$2b$x\na:$2b$y", file: "f") }
    }

    @Test("auth mistakes are config errors: none, unknown algorithms, short HMAC secrets, unknown users, missing keys")
    func refusals() {
        #expect(firstError("auth: { methods: [ { jwt: { algorithms: [none], hmac_secret_file: secret } } ] }")?.contains("never accepted") == true)
        #expect(firstError("auth: { methods: [ { jwt: { algorithms: [XS256], hmac_secret_file: secret } } ] }")?.contains("unknown algorithm") == true)
        #expect(firstError("auth: { methods: [ { jwt: { algorithms: [HS256], hmac_secret_file: short } } ] }")?.contains("at least 32") == true)
        #expect(firstError("auth: { methods: [ { jwt: { algorithms: [HS256] } } ] }")?.contains("needs hmac_secret_file") == true)
        #expect(firstError("auth: { methods: [ { basic: { htpasswd: users, users: [mallory] } } ] }")?.contains("mallory") == true)
        #expect(firstError("auth: { methods: [ { basic: { htpasswd: nowhere } } ] }")?.contains("cannot read") == true)
        #expect(firstError("auth: { methods: [ { forward: { url: \"https://auth\" } } ] }")?.contains("http://") == true)
        #expect(firstError("auth: { methods: [] }")?.contains("auth: none") == true)
        #expect(firstError("auth: { methods: [ { ldap: {} } ] }")?.contains("unknown auth method") == true)
        #expect(firstError("auth: { methods: [ { basic: { htpasswd: users } } ], close_on_expiry: true }")?.contains("needs a jwt") == true)
        #expect(firstError("origin: { allowed: [\"app.test\"] }")?.contains("not an origin") == true)
        #expect(firstError("origin: { allowed: [\"https://a.*.test\"] }")?.contains("wildcard") == true)
    }

    @Test("auth_policy explicit: a route without 'auth:' is an error; 'auth: none' is public")
    func explicitPolicy() throws {
        #expect(firstError("", top: "auth_policy: explicit")?.contains("auth: none") == true)
        let open = try parse("auth: none", top: "auth_policy: explicit")
        #expect(open.routes[0].auth.isPublic && open.routes[0].authDeclared)
        #expect(try parse("").routes[0].auth.isPublic)
    }

    @Test("Origin patterns: exact, wildcard subdomains only, scheme-sensitive; missing per policy")
    func originPolicy() {
        let policy = OriginPolicy(allowed: ["https://app.test", "https://*.example.com"], allowMissing: false)
        #expect(policy.allows("https://app.test"))
        #expect(policy.allows("HTTPS://APP.test"))
        #expect(policy.allows("https://chat.example.com"))
        #expect(policy.allows("https://a.b.example.com"))
        #expect(!policy.allows("https://example.com"))
        #expect(!policy.allows("https://evilexample.com"))
        #expect(!policy.allows("http://chat.example.com"))
        #expect(!policy.allows("https://app.test.evil.com"))
        #expect(!policy.allows(nil))
        #expect(OriginPolicy(allowed: []).allows(nil))
    }

    @Test("sluice check warns about cookie-authenticated WebSocket routes without an origin policy")
    func hijackingWarning() throws {
        let cookieRoute = try parse("auth: { methods: [ { jwt: { cookie: session, algorithms: [HS256], hmac_secret_file: secret } } ] }")
        #expect(ConfigurationWarnings.compute(cookieRoute).first?.contains("cross-site WebSocket hijacking") == true)
        let guarded = try parse("auth: { methods: [ { jwt: { cookie: session, algorithms: [HS256], hmac_secret_file: secret } } ] }\n    origin: { allowed: [\"https://app.test\"] }")
        #expect(ConfigurationWarnings.compute(guarded).isEmpty)
        let bearer = try parse("auth: { methods: [ { jwt: { algorithms: [HS256], hmac_secret_file: secret } } ] }")
        #expect(ConfigurationWarnings.compute(bearer).isEmpty)
    }
}
