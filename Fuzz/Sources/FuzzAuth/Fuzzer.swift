import Dispatch
import Foundation
import NIOHTTP1
import SluiceConfig
@testable import Sluice

/// The parsers in front of authentication, on arbitrary text: a JWT's shape, header and
/// algorithm checks (before any cryptography), its claims, Basic credentials, cookies, query
/// tokens, and the upstream field policy that strips credentials.
private let verifier: JWTVerifier = {
    var configuration = JWTAuthConfiguration(algorithms: ["HS256", "RS256", "ES256"])
    configuration.keys = [JWTKeyConfiguration(material: .hmacSecret(Array("a-fuzzing-secret-of-at-least-32-bytes!!".utf8)), algorithm: "HS256", kid: "k1", source: "fuzz")]
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var made: JWTVerifier?
    Task {
        made = try? await JWTVerifier(configuration: configuration, path: "fuzz")
        done.signal()
    }
    done.wait()
    return made!
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAuth(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeRawBufferPointer(start: start, count: count), as: UTF8.self)
    _ = verifier.precheck(text)
    let segments = text.split(separator: ".", omittingEmptySubsequences: false)
    if segments.count == 3, let payload = Base64URL.decode(segments[1]),
        let claims = try? JSONDecoder().decode(ClaimSet.self, from: Data(payload))
    {
        _ = verifier.check(claims, userHeader: "X-User", carrier: .authorization)
    }
    let headers = HTTPHeaders([("Authorization", text), ("Cookie", text), ("X_Sluice_User", text)])
    if let (user, password) = BasicAuthenticator.credentials(HTTPHeaders([("Authorization", "Basic " + text)])) {
        precondition(!(user + password).unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F })
    }
    _ = CookieHeader.value(named: "session", in: headers)
    _ = QueryString.value(of: "token", in: text)
    _ = QueryString.removing("token", from: "/p?" + text)
    var auth = RouteAuthConfiguration()
    var jwt = JWTAuthConfiguration(algorithms: ["HS256"])
    jwt.cookie = "session"
    auth.methods = [.jwt(jwt)]
    let fields = UpstreamFields(auth: auth, identityHeaders: ["x-sluice-user"])
    let identity = Identity(user: "u", headers: [], expiresAt: nil, method: "jwt", credential: .cookie("session"))
    fields.forEach(headers, client: .init(address: nil, host: nil, tls: false), identity: identity) { name, value in
        precondition(name.lowercased() != "x-sluice-user" && name.lowercased() != "x_sluice_user")
        _ = value
    }
    return 0
}
