import Foundation
import JWTKit
import NIOCore
import NIOHTTP1
import SluiceConfig

/// Verifies JSON Web Tokens for one route with jwt-kit, after checks of its own that jwt-kit
/// leaves to the caller: the header's `alg` must be on the route's allow-list (never `none`), a
/// `kid` must name a configured key, and a key is used only with its own algorithm family — an
/// HS256 token is never checked against an RSA public key (algorithm confusion).
final class JWTVerifier: Sendable {
    /// Key families and the algorithms each may verify.
    enum Family: Sendable {
        case hmac, rsa, rsaPSS, ecdsa, eddsa

        init?(algorithm: String) {
            switch algorithm.prefix(2) {
            case "HS": self = .hmac
            case "RS": self = .rsa
            case "PS": self = .rsaPSS
            case "ES": self = .ecdsa
            default:
                guard algorithm == "EdDSA" else { return nil }
                self = .eddsa
            }
        }
    }

    /// One verification key in a collection of its own, so jwt-kit can never fall back to
    /// another key.
    struct Key: Sendable {
        var collection: JWTKeyCollection
        var families: Set<Family>
        /// The only algorithm this key verifies, when fixed.
        var algorithm: String?
        var kid: String?
    }

    let configuration: JWTAuthConfiguration
    private let keys: [Key]
    static let maxTokenBytes = 8192

    /// Parses every key now (bad PEM or JWKS is a config error); registering them with jwt-kit
    /// happens on first use.
    init(configuration: JWTAuthConfiguration, path: String) async throws(ConfigError) {
        self.configuration = configuration
        var keys: [Key] = []
        for spec in configuration.keys {
            do {
                keys += try await Self.makeKeys(spec)
            } catch let error as ConfigError {
                throw error
            } catch {
                throw ConfigError(path: path, message: "cannot use the key in \(spec.source): \(error)")
            }
        }
        self.keys = keys
    }

    private static func makeKeys(_ spec: JWTKeyConfiguration) async throws -> [Key] {
        let collection = JWTKeyCollection()
        let kid = spec.kid.map { JWKIdentifier(string: $0) }
        switch spec.material {
        case .hmacSecret(let bytes):
            let algorithm = spec.algorithm ?? "HS256"
            await collection.add(hmac: HMACKey(from: bytes), digestAlgorithm: digest(algorithm), kid: kid)
            return [Key(collection: collection, families: [.hmac], algorithm: algorithm, kid: spec.kid)]
        case .publicKeyPEM(let pem):
            let algorithm = spec.algorithm ?? "RS256"
            switch Family(algorithm: algorithm) {
            case .rsa:
                await collection.add(rsa: try Insecure.RSA.PublicKey(pem: pem), digestAlgorithm: digest(algorithm), kid: kid)
            case .rsaPSS:
                await collection.add(pss: try Insecure.RSA.PublicKey(pem: pem), digestAlgorithm: digest(algorithm), kid: kid)
            case .ecdsa:
                switch algorithm {
                case "ES256": await collection.add(ecdsa: try ES256PublicKey(pem: pem), kid: kid)
                case "ES384": await collection.add(ecdsa: try ES384PublicKey(pem: pem), kid: kid)
                default: await collection.add(ecdsa: try ES512PublicKey(pem: pem), kid: kid)
                }
            case .eddsa:
                await collection.add(eddsa: try EdDSA.PublicKey(pem: pem), kid: kid)
            case .hmac, nil:
                throw ConfigError(path: spec.source, message: "\(algorithm) is not a public-key algorithm")
            }
            return [Key(collection: collection, families: [Family(algorithm: algorithm)!], algorithm: algorithm, kid: spec.kid)]
        case .jwks(let text):
            let jwks = try JSONDecoder().decode(JWKS.self, from: Data(text.utf8))
            var keys: [Key] = []
            for jwk in jwks.keys {
                let single = JWTKeyCollection()
                try await single.add(jwk: jwk, isDefault: true)
                let families: Set<Family>
                switch jwk.keyType {
                case .rsa: families = [.rsa, .rsaPSS]
                case .ecdsa: families = [.ecdsa]
                case .octetKeyPair: families = [.eddsa]
                default: continue
                }
                keys.append(Key(collection: single, families: families, algorithm: jwk.algorithm?.rawValue, kid: jwk.keyIdentifier?.string))
            }
            return keys
        }
    }

    private static func digest(_ algorithm: String) -> DigestAlgorithm {
        if algorithm.hasSuffix("384") { return .sha384 }
        if algorithm.hasSuffix("512") { return .sha512 }
        return .sha256
    }

    // MARK: Verification

    var challenge: String { "Bearer" }

    /// The token from the places the route names, in order: cookie, bearer header, query; and
    /// where it was found.
    func token(headers: HTTPHeaders, query: String?) -> (token: String, carrier: CredentialCarrier)? {
        if let cookie = configuration.cookie, let value = CookieHeader.value(named: cookie, in: headers) { return (value, .cookie(cookie)) }
        if configuration.bearer, let value = headers.first(name: "authorization") {
            let parts = value.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { return (parts[1].trimmingSpacesAndTabs(), .authorization) }
        }
        if let parameter = configuration.queryParameter, let query, let value = QueryString.value(of: parameter, in: query) {
            return (value, .query(parameter))
        }
        return nil
    }

    func authenticate(headers: HTTPHeaders, query: String?, userHeader: String, on eventLoop: any EventLoop) -> EventLoopFuture<AuthOutcome> {
        guard let (token, carrier) = token(headers: headers, query: query) else { return eventLoop.makeSucceededFuture(.missing) }
        let candidates: [Key]
        switch precheck(token) {
        case .failure(let refusal): return eventLoop.makeSucceededFuture(refusal.outcome)
        case .success(let keys): candidates = keys
        }
        let promise = eventLoop.makePromise(of: AuthOutcome.self)
        promise.completeWithTask { [self] in
            for key in candidates {
                if let claims = try? await key.collection.verify(token, as: ClaimSet.self) {
                    return check(claims, userHeader: userHeader, carrier: carrier)
                }
            }
            return .invalid(reason: "signature does not verify")
        }
        return promise.futureResult
    }

    /// The cheap checks before any cryptography: size, shape, algorithm, key choice.
    func precheck(_ token: String) -> Result<[Key], Refusal> {
        guard token.utf8.count <= Self.maxTokenBytes else { return .failure(.init(.invalid(reason: "token too large"))) }
        let segments = token.split(separator: ".", omittingEmptySubsequences: false)
        guard segments.count == 3, let headerBytes = Base64URL.decode(segments[0]),
            let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any],
            let alg = header["alg"] as? String
        else { return .failure(.init(.invalid(reason: "malformed token"))) }
        guard alg.lowercased() != "none", configuration.algorithms.contains(alg), let family = Family(algorithm: alg) else {
            return .failure(.init(.invalid(reason: "algorithm \(alg.prefix(16)) not accepted")))
        }
        // RFC 7515 §4.1.11: a recipient must refuse a token whose `crit` names parameters it
        // does not understand. Sluice understands no extension, so any `crit` is refused.
        guard header["crit"] == nil else {
            return .failure(.init(.invalid(reason: "critical header parameter not understood")))
        }
        var usable = keys.filter { $0.families.contains(family) && ($0.algorithm == nil || $0.algorithm == alg) }
        if let kid = header["kid"] as? String {
            usable = usable.filter { $0.kid == kid }
            guard !usable.isEmpty else { return .failure(.init(.invalid(reason: "unknown kid"))) }
        }
        guard !usable.isEmpty else { return .failure(.init(.invalid(reason: "no key for algorithm \(alg)"))) }
        return .success(usable)
    }

    struct Refusal: Error {
        var outcome: AuthOutcome
        init(_ outcome: AuthOutcome) { self.outcome = outcome }
    }

    /// Time, issuer, audience and required claims, with the route's leeway.
    func check(_ claims: ClaimSet, userHeader: String, carrier: CredentialCarrier? = nil, now: Double = WallClock.now()) -> AuthOutcome {
        let leeway = Double(configuration.leeway.components.seconds)
        let expiry = claims.number("exp")
        if let exp = expiry, now > exp + leeway { return .invalid(reason: "token expired") }
        if let nbf = claims.number("nbf"), now + leeway < nbf { return .invalid(reason: "token not yet valid") }
        if claims.values["exp"] != nil && expiry == nil { return .invalid(reason: "exp is not a number") }
        if let issuer = configuration.issuer, claims.string("iss") != issuer { return .invalid(reason: "wrong issuer") }
        if let audience = configuration.audience {
            let audiences = claims.strings("aud")
            guard audiences.contains(audience) else { return .invalid(reason: "wrong audience") }
        }
        for (name, value) in configuration.requiredClaims where !claims.strings(name).contains(value) {
            return .forbidden(reason: "claim \(name) does not have the required value")
        }
        let user = claims.string(configuration.userClaim)
        return .admitted(Identity(user: user, headers: user.map { [(userHeader, $0)] } ?? [], expiresAt: expiry, method: "jwt", credential: carrier))
    }
}

/// A token's claims as JSON values, whatever they are.
struct ClaimSet: JWTPayload {
    var values: [String: JSONValue]

    init(values: [String: JSONValue]) { self.values = values }

    init(from decoder: any Swift.Decoder) throws {
        values = try decoder.singleValueContainer().decode([String: JSONValue].self)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(values)
    }

    /// Times, issuer and audience are checked by `JWTVerifier.check` with the route's leeway.
    func verify(using algorithm: some JWTAlgorithm) async throws {}

    func number(_ name: String) -> Double? {
        if case .number(let value) = values[name] { return value }
        return nil
    }

    func string(_ name: String) -> String? {
        if case .string(let value) = values[name] { return value }
        return nil
    }

    /// A string claim, or the strings of an array claim.
    func strings(_ name: String) -> [String] {
        switch values[name] {
        case .string(let value): [value]
        case .array(let items): items.compactMap { if case .string(let value) = $0 { value } else { nil } }
        default: []
        }
    }
}

/// Any JSON value.
indirect enum JSONValue: Codable, Sendable, Equatable {
    case string(String), number(Double), bool(Bool), array([JSONValue]), object([String: JSONValue]), null

    init(from decoder: any Swift.Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }
}

enum Base64URL {
    static func decode(_ text: Substring) -> [UInt8]? {
        guard text.utf8.count <= 16_384 else { return nil }
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.utf8.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).map(Array.init)
    }
}
