import Crypto
import CryptoExtras
import Foundation
import JWTKit
import NIOPosix
import NIOHTTP1
import Testing
@testable import Sluice
@testable import SluiceConfig

/// The verifiers with no sockets: JWT checks (each way a token can be wrong), password hashes
/// written by other tools, credential parsing.
@Suite("Authentication")
struct AuthTests {
    static let secret = Array("0123456789abcdef0123456789abcdef-secret".utf8)

    func hmacVerifier(_ change: (inout JWTAuthConfiguration) -> Void = { _ in }) async throws -> JWTVerifier {
        var configuration = JWTAuthConfiguration(algorithms: ["HS256"])
        configuration.keys = [JWTKeyConfiguration(material: .hmacSecret(Self.secret), algorithm: "HS256", kid: nil, source: "test")]
        configuration.issuer = "https://issuer.test"
        configuration.audience = "sluice"
        change(&configuration)
        return try await JWTVerifier(configuration: configuration, path: "test")
    }

    func sign(_ claims: [String: JSONValue], kid: String? = nil) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: Self.secret), digestAlgorithm: .sha256)
        var header = JWTHeader()
        if let kid { header.kid = kid }
        return try await keys.sign(ClaimSet(values: claims), header: header)
    }

    static func claims(exp: Double = WallClock.now() + 300, extra: [String: JSONValue] = [:]) -> [String: JSONValue] {
        ["sub": .string("alice"), "iss": .string("https://issuer.test"), "aud": .string("sluice"), "exp": .number(exp)].merging(extra) { $1 }
    }

    func outcome(_ verifier: JWTVerifier, _ token: String) async throws -> AuthOutcome {
        var headers = HTTPHeaders()
        headers.add(name: "Authorization", value: "Bearer \(token)")
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        return try await verifier.authenticate(headers: headers, query: nil, userHeader: "X-Sluice-User", on: loop).get()
    }

    func isInvalid(_ outcome: AuthOutcome) -> Bool {
        if case .invalid = outcome { return true }
        return false
    }

    @Test("a valid HS256 token admits with its subject as the user and its expiry")
    func validToken() async throws {
        let verifier = try await hmacVerifier()
        let exp = WallClock.now() + 300
        let result = try await outcome(verifier, try await sign(Self.claims(exp: exp)))
        guard case .admitted(let identity) = result else { Issue.record("\(result)"); return }
        #expect(identity.user == "alice")
        #expect(identity.expiresAt == exp)
        #expect(identity.headers.first?.0 == "X-Sluice-User" && identity.headers.first?.1 == "alice")
    }

    @Test("expired, not yet valid, wrong issuer, wrong audience: 401; leeway is honoured")
    func timesAndNames() async throws {
        let verifier = try await hmacVerifier()
        let now = WallClock.now()
        #expect(isInvalid(try await outcome(verifier, try await sign(Self.claims(exp: now - 120)))))
        let withinLeeway = try await outcome(verifier, try await sign(Self.claims(exp: WallClock.now() - 10)))
        if case .admitted = withinLeeway {} else { Issue.record("leeway of 30 s not honoured: \(withinLeeway)") }
        #expect(isInvalid(try await outcome(verifier, try await sign(Self.claims(extra: ["nbf": .number(now + 120)])))))
        #expect(isInvalid(try await outcome(verifier, try await sign(Self.claims(extra: ["iss": .string("https://evil.test")])))))
        #expect(isInvalid(try await outcome(verifier, try await sign(Self.claims(extra: ["aud": .array([.string("other")])])))))
        if case .admitted = try await outcome(verifier, try await sign(Self.claims(extra: ["aud": .array([.string("other"), .string("sluice")])]))) {} else {
            Issue.record("an audience list containing ours must pass")
        }
    }

    @Test("required claims: a valid token without them is 403, not 401")
    func requiredClaims() async throws {
        let verifier = try await hmacVerifier { $0.requiredClaims = ["role": "admin"] }
        let plain = try await outcome(verifier, try await sign(Self.claims()))
        guard case .forbidden = plain else { Issue.record("\(plain)"); return }
        let admin = try await outcome(verifier, try await sign(Self.claims(extra: ["role": .string("admin")])))
        guard case .admitted = admin else { Issue.record("\(admin)"); return }
        let roles = try await outcome(verifier, try await sign(Self.claims(extra: ["role": .array([.string("user"), .string("admin")])])))
        guard case .admitted = roles else { Issue.record("\(roles)"); return }
    }

    @Test("alg none, a tampered payload, malformed base64 and huge tokens are refused before any key is used")
    func malformed() async throws {
        let verifier = try await hmacVerifier()
        let good = try await sign(Self.claims())
        let parts = good.split(separator: ".")
        let noneHeader = Data(#"{"alg":"none","typ":"JWT"}"#.utf8).base64URL
        #expect(isInvalid(try await outcome(verifier, "\(noneHeader).\(parts[1]).")))
        let noneUpper = Data(#"{"alg":"NONE"}"#.utf8).base64URL
        #expect(isInvalid(try await outcome(verifier, "\(noneUpper).\(parts[1]).\(parts[2])")))
        let forged = Data(#"{"sub":"root","iss":"https://issuer.test","aud":"sluice"}"#.utf8).base64URL
        #expect(isInvalid(try await outcome(verifier, "\(parts[0]).\(forged).\(parts[2])")))
        #expect(isInvalid(try await outcome(verifier, "!!!.@@@.###")))
        #expect(isInvalid(try await outcome(verifier, "only.two")))
        #expect(isInvalid(try await outcome(verifier, String(repeating: "a", count: 20_000) + "." + parts[1] + "." + parts[2])))
    }

    @Test("an HS256 token signed with the RSA public key is refused (algorithm confusion); RS256 with it passes")
    func algorithmConfusion() async throws {
        let privateKey = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let publicPEM = privateKey.publicKey.pemRepresentation
        var configuration = JWTAuthConfiguration(algorithms: ["RS256", "HS256"])
        configuration.keys = [JWTKeyConfiguration(material: .publicKeyPEM(publicPEM), algorithm: "RS256", kid: nil, source: "test")]
        let verifier = try await JWTVerifier(configuration: configuration, path: "test")

        let header = Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8).base64URL
        let payload = Data(#"{"sub":"mallory","exp":\#(Int(WallClock.now()) + 300)}"#.utf8).base64URL
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(header).\(payload)".utf8), using: SymmetricKey(data: Data(publicPEM.utf8)))
        let confused = "\(header).\(payload).\(Data(mac).base64URL)"
        #expect(isInvalid(try await outcome(verifier, confused)))

        let signer = JWTKeyCollection()
        await signer.add(rsa: try Insecure.RSA.PrivateKey(pem: privateKey.pemRepresentation), digestAlgorithm: .sha256)
        let honest = try await signer.sign(ClaimSet(values: ["sub": .string("bob"), "exp": .number(WallClock.now() + 300)]))
        let result = try await outcome(verifier, honest)
        guard case .admitted(let identity) = result else { Issue.record("\(result)"); return }
        #expect(identity.user == "bob")
    }

    @Test("kid selects the key; an unknown kid is refused instead of falling back to another key")
    func keyIDs() async throws {
        let verifier = try await hmacVerifier { configuration in
            configuration.keys = [
                JWTKeyConfiguration(material: .hmacSecret(Self.secret), algorithm: "HS256", kid: "k1", source: "test"),
                JWTKeyConfiguration(material: .hmacSecret(Array(repeating: 7, count: 40)), algorithm: "HS256", kid: "k2", source: "test"),
            ]
        }
        if case .admitted = try await outcome(verifier, try await sign(Self.claims(), kid: "k1")) {} else { Issue.record("k1 should verify") }
        #expect(isInvalid(try await outcome(verifier, try await sign(Self.claims(), kid: "k2"))))
        #expect(isInvalid(try await outcome(verifier, try await sign(Self.claims(), kid: "k9"))))
    }

    @Test("a JWKS file: keys chosen by kid, each only for its own key type")
    func jwks() async throws {
        let ecKey = ES256PrivateKey()
        let x = ecKey.parameters!.x, y = ecKey.parameters!.y
        let jwks = #"{"keys":[{"kty":"EC","crv":"P-256","kid":"ec1","alg":"ES256","x":"\#(x)","y":"\#(y)"}]}"#
        var configuration = JWTAuthConfiguration(algorithms: ["ES256", "HS256"])
        configuration.keys = [JWTKeyConfiguration(material: .jwks(jwks), algorithm: nil, kid: nil, source: "jwks")]
        let verifier = try await JWTVerifier(configuration: configuration, path: "test")
        let signer = JWTKeyCollection()
        await signer.add(ecdsa: ecKey, kid: "ec1")
        let token = try await signer.sign(ClaimSet(values: ["sub": .string("eve"), "exp": .number(WallClock.now() + 60)]), kid: "ec1")
        guard case .admitted = try await outcome(verifier, token) else { Issue.record("ES256 via JWKS should verify"); return }
        #expect(isInvalid(try await outcome(verifier, try await sign(Self.claims(), kid: "ec1"))))
    }

    @Test("hashes written by htpasswd -B / Python's crypt verify through libxcrypt: bcrypt, SHA-crypt, yescrypt")
    func passwordHashes() {
        // Written by Python's crypt (libxcrypt) on this machine; htpasswd -B files are checked
        // in the integration tests.
        #expect(PasswordHasher.verify(password: "yes-secret", hash: "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$QNSFf/jyi64S/Irl5FZ.OBt9O4rMo7ft.nyLa245Iw2"))
        #expect(PasswordHasher.verify(password: "sha-secret", hash: "$6$CdR8fMz.EXIEMfdT$TPwZSxQN/JtH3rCVCugBOBF6WKDP0V/QxlI7QKhzGso94qRKXD5CP6UwAIUot9tvblhimisy4NcQfGrDLXuZ30"))
        #expect(PasswordHasher.verify(password: "sha256-secret", hash: "$5$HFN6.cWbdkLxxr1q$0mE49exPA827JXx7TG86VR67hCtplZS46z9wTeNrwjB"))
        #expect(!PasswordHasher.verify(password: "wrong", hash: "$6$CdR8fMz.EXIEMfdT$TPwZSxQN/JtH3rCVCugBOBF6WKDP0V/QxlI7QKhzGso94qRKXD5CP6UwAIUot9tvblhimisy4NcQfGrDLXuZ30"))
        let made = PasswordHasher.bcrypt(password: "pw", cost: 10)
        #expect(made?.hasPrefix("$2b$10$") == true)
        #expect(made.map { PasswordHasher.verify(password: "pw", hash: $0) } == true)
        #expect(made.map { PasswordHasher.verify(password: "pW", hash: $0) } == false)
        #expect(!PasswordHasher.verify(password: "pw", hash: "not-a-hash"))
    }

    @Test("Basic credentials, cookies and token query parameters are parsed, and the parameter is removed")
    func credentialParsing() {
        var headers = HTTPHeaders([("Authorization", "Basic " + Data("alice:pa:ss".utf8).base64EncodedString())])
        #expect(BasicAuthenticator.credentials(headers)?.0 == "alice")
        #expect(BasicAuthenticator.credentials(headers)?.1 == "pa:ss")
        headers = HTTPHeaders([("Authorization", "Basic %%%")])
        #expect(BasicAuthenticator.credentials(headers) == nil)
        headers = HTTPHeaders([("Cookie", "a=1; session=tok.en.x; b=2")])
        #expect(CookieHeader.value(named: "session", in: headers) == "tok.en.x")
        #expect(CookieHeader.value(named: "sess", in: headers) == nil)
        #expect(QueryString.value(of: "access_token", in: "room=1&access_token=abc%2Edef") == "abc.def")
        #expect(QueryString.removing("access_token", from: "/ws?room=1&access_token=abc&x=2") == "/ws?room=1&x=2")
        #expect(QueryString.removing("access_token", from: "/ws?access_token=abc") == "/ws")
        #expect(QueryString.removing("access_token", from: "/ws?access%5Ftoken=abc") == "/ws")
    }

    @Test("repeated failures from one address are answered 429 until the bucket refills")
    func failureLimiter() {
        let limiter = FailureLimiter(limit: RateLimit(perSecond: 1.0 / 60, burst: 2))
        let client = IPAddress("192.0.2.9")!
        #expect(limiter.blocked(client) == nil)
        limiter.record(client)
        #expect(limiter.blocked(client) == nil)
        limiter.record(client)
        #expect(limiter.blocked(client).map { $0 > 1 } == true)
        #expect(limiter.blocked(IPAddress("192.0.2.10")!) == nil)
    }
}

extension Data {
    var base64URL: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
