import NIOHTTP1
import SluiceConfig

/// Which of a client's request fields a backend receives, for plain requests and upgrades alike.
///
/// Dropped: hop-by-hop fields; the fields Sluice writes itself (identity, forwarding, `Host`,
/// `Expect`) and, unless the listener keeps them, their spellings with `_` for `-` (CGI, WSGI
/// and PHP read `X_Sluice_User` as `X-Sluice-User`); a client's `X-Real-IP` unless it is a
/// trusted proxy (as its `X-Forwarded-For`); and every credential the route reads except the
/// one that admitted the request — which itself goes through only with `forward_credentials`.
/// So a request carrying alice's cookie and bob's bearer token, admitted as alice, never shows
/// bob's token to the backend.
///
/// A class: a route keeps one, and every request reads it in place (as a struct, read from the
/// route it was copied, each of its collections retained and released, once a request).
final class UpstreamFields: Sendable {
    /// Fields Sluice writes itself.
    let replaced: FieldNameSet
    /// `replaced` and `x-real-ip`: what is dropped from a peer that is not a trusted proxy.
    let replacedFromUntrusted: FieldNameSet
    /// Names (lower-cased, with `-`) whose underscore spellings are dropped.
    let aliased: Set<String>
    /// The backend receives the credential that admitted the request.
    let forwardCredentials: Bool
    /// `Authorization` carries a credential this route reads (Basic, or a JWT bearer token).
    let authorizationIsCredential: Bool
    /// Cookies that carry a JWT this route reads.
    let credentialCookies: [String]

    init(auth: RouteAuthConfiguration, identityHeaders: Set<String>) {
        let replaced = identityHeaders.sorted() + ["expect", "host"] + ForwardedHeaders.forwardingNames
        self.replaced = FieldNameSet(replaced)
        replacedFromUntrusted = FieldNameSet(replaced + ["x-real-ip"])
        aliased = identityHeaders.union(ForwardedHeaders.forwardingNames).union(["x-real-ip"])
        forwardCredentials = auth.forwardCredentials
        var readsAuthorization = false
        var cookies: [String] = []
        for method in auth.methods {
            switch method {
            case .basic: readsAuthorization = true
            case .jwt(let jwt):
                if jwt.bearer { readsAuthorization = true }
                if let cookie = jwt.cookie { cookies.append(cookie) }
            case .forward: break
            }
        }
        authorizationIsCredential = readsAuthorization
        credentialCookies = cookies
    }

    /// Calls `body` with each field the backend receives, in order.
    /// - Parameters:
    ///   - client: who asked; a trusted proxy keeps its `X-Real-IP`, and the listener says whether
    ///     underscore spellings are kept.
    ///   - identity: who the route's authentication admitted; `nil` on a public route.
    func forEach(_ headers: HTTPHeaders, client: ForwardedHeaders.Client, identity: Identity?, _ body: (String, String) -> Void) {
        let dropped = client.trustsIncomingChain ? replaced : replacedFromUntrusted
        let dropAliases = !client.keepsUnderscoreFields
        var cookies = identity.map { CookieEdit(fields: self, admittedBy: $0.credential) }
        ForwardedHeaders.forEachEndToEnd(headers, dropping: dropped) { name, value in
            if dropAliases && Self.hasUnderscore(name) && aliased.contains(Self.hyphenated(name)) { return }
            if let identity {
                switch name.utf8.count {
                case 13 where HeaderTokens.equalIgnoringASCIICase(name, "authorization"):
                    guard keepsAuthorization(admittedBy: identity.credential) else { return }
                case 6 where HeaderTokens.equalIgnoringASCIICase(name, "cookie"):
                    guard let kept = cookies?.apply(to: value) else { return }
                    body(name, kept)
                    return
                default:
                    break
                }
            }
            body(name, value)
        }
    }

    /// Read in place: `utf8.contains` walked a field's name index by index, a few hundred
    /// instructions a request.
    static func hasUnderscore(_ name: String) -> Bool {
        HTTPSyntax.withBytes(of: name) { $0.contains(UInt8(ascii: "_")) }
    }

    /// `name` lower-cased with `_` read as `-`.
    static func hyphenated(_ name: String) -> String {
        String(decoding: name.utf8.map { byte -> UInt8 in
            if byte == UInt8(ascii: "_") { return UInt8(ascii: "-") }
            return byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
        }, as: UTF8.self)
    }

    private func keepsAuthorization(admittedBy credential: CredentialCarrier?) -> Bool {
        switch credential {
        case .forwardedFields: forwardCredentials
        case .authorization: forwardCredentials
        default: !authorizationIsCredential
        }
    }

    /// Rewrites `Cookie` fields: credential cookies the route reads go, except (with
    /// `forward_credentials`) the one that admitted the request, kept once.
    private struct CookieEdit {
        let dropAll: Bool
        let credentialCookies: [String]
        /// The cookie that admitted the request, while its first occurrence is still to come.
        var keep: String?

        init(fields: UpstreamFields, admittedBy credential: CredentialCarrier?) {
            switch credential {
            case .forwardedFields:
                // The auth service judged the whole field; it goes through whole, or not at all.
                dropAll = !fields.forwardCredentials
                credentialCookies = []
                keep = nil
            case .cookie(let name):
                dropAll = false
                credentialCookies = fields.credentialCookies
                keep = fields.forwardCredentials ? name : nil
            default:
                dropAll = false
                credentialCookies = fields.credentialCookies
                keep = nil
            }
        }

        /// The field's new value, or `nil` when nothing of it is left.
        mutating func apply(to value: String) -> String? {
            if dropAll { return nil }
            if credentialCookies.isEmpty { return value }
            var kept: [Substring] = []
            var changed = false
            for pair in value.split(separator: ";") {
                let trimmed = pair.drop { $0 == " " }
                let name = trimmed.prefix { $0 != "=" }
                if credentialCookies.contains(where: { name == $0[...] }) {
                    if let keep, name == keep[...] {
                        self.keep = nil
                        kept.append(trimmed)
                    } else {
                        changed = true
                    }
                    continue
                }
                kept.append(trimmed)
            }
            if !changed { return value }
            return kept.isEmpty ? nil : kept.joined(separator: "; ")
        }
    }
}
