import Foundation

/// The `auth:` and `origin:` blocks of a route.
extension Decoder {
    static let jwtAlgorithms: Set<String> = [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    ]

    func decodeAuth(_ node: ConfigNode) throws(ConfigError) -> RouteAuthConfiguration {
        var auth = RouteAuthConfiguration()
        if case .scalar = node.node {
            let text = try node.string()
            guard text == "none" else { throw node.error("auth is 'none' (public) or a mapping with 'methods'") }
            return auth
        }
        var map = try node.mapping()
        let methodsNode = try map.required("methods")
        let items = try methodsNode.sequence()
        guard !items.isEmpty else { throw methodsNode.error("at least one method; write 'auth: none' for a public route") }
        for item in items {
            var entry = try item.mapping()
            guard entry.entries.count == 1, let (name, child) = entry.entries.first.map({ ($0.key, $0.node) }) else {
                throw item.error("each method is one of basic, jwt, forward, as in '- basic: { htpasswd: users }'")
            }
            _ = entry.optional(name)
            switch name {
            case "basic": auth.methods.append(.basic(try decodeBasic(child)))
            case "jwt": auth.methods.append(.jwt(try decodeJWT(child)))
            case "forward": auth.methods.append(.forward(try decodeForward(child)))
            default: throw item.error("unknown auth method '\(name)'; known: basic, jwt, forward")
            }
            try entry.finish()
        }
        if let value = map.optional("user_header") {
            let text = try value.string()
            guard HTTPToken.isToken(text) else { throw value.error("'\(text)' is not a header name") }
            auth.userHeader = text
        }
        if let value = map.optional("close_on_expiry") { auth.closeOnExpiry = try value.bool() }
        if let value = map.optional("failure_limit") { auth.failureLimit = try decodeRate(value) }
        if let value = map.optional("forward_credentials") { auth.forwardCredentials = try value.bool() }
        try map.finish()
        if auth.closeOnExpiry && !auth.methods.contains(where: { if case .jwt = $0 { true } else { false } }) {
            throw node.error("close_on_expiry needs a jwt method")
        }
        return auth
    }

    func decodeBasic(_ node: ConfigNode) throws(ConfigError) -> BasicAuthConfiguration {
        var map = try node.mapping()
        let fileNode = try map.required("htpasswd")
        let file = try filePath(fileNode)
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw fileNode.error("cannot read \(file): \(ConfigurationLoader.describe(error))")
        }
        let users: [String: String]
        do throws(ValueError) {
            users = try Htpasswd.parse(text, file: file)
        } catch {
            throw fileNode.error(error.message)
        }
        var basic = BasicAuthConfiguration(htpasswdFile: file, users: users)
        if let value = map.optional("realm") {
            let realm = try value.string()
            guard !realm.contains("\""), !realm.contains("\\"), realm.allSatisfy({ $0.isASCII && !$0.isNewline }) else {
                throw value.error("realm must be printable ASCII without quotes or backslashes")
            }
            basic.realm = realm
        }
        if let value = map.optional("users") {
            let list = try value.stringList()
            for user in list where users[user] == nil {
                throw value.error("user '\(user)' is not in \(file)")
            }
            basic.allowedUsers = list
        }
        if let value = map.optional("cache_ttl") { basic.cacheTTL = try value.optionalDuration() ?? .zero }
        try map.finish()
        return basic
    }

    func decodeJWT(_ node: ConfigNode) throws(ConfigError) -> JWTAuthConfiguration {
        var map = try node.mapping()
        let algorithmsNode = try map.required("algorithms")
        let algorithms = try algorithmsNode.stringList()
        guard !algorithms.isEmpty else { throw algorithmsNode.error("list the algorithms tokens may use, as in [RS256]") }
        for name in algorithms {
            if name.lowercased() == "none" { throw algorithmsNode.error("'none' is never accepted: an unsigned token proves nothing") }
            guard Self.jwtAlgorithms.contains(name) else {
                throw algorithmsNode.error("unknown algorithm '\(name)'; known: \(Self.jwtAlgorithms.sorted().joined(separator: ", "))")
            }
        }
        var jwt = JWTAuthConfiguration(algorithms: algorithms)
        if let value = map.optional("cookie") { jwt.cookie = try value.string() }
        if let value = map.optional("bearer") { jwt.bearer = try value.bool() }
        if let value = map.optional("query") { jwt.queryParameter = try value.string() }
        if jwt.cookie == nil && !jwt.bearer && jwt.queryParameter == nil {
            throw node.error("say where the token is: cookie, bearer or query")
        }
        if let value = map.optional("hmac_secret_file") {
            let file = try filePath(value)
            guard var bytes = FileManager.default.contents(atPath: file).map(Array.init) else { throw value.error("cannot read \(file)") }
            while let last = bytes.last, last == 10 || last == 13 { bytes.removeLast() }
            guard bytes.count >= 32 else {
                throw value.error("the HMAC secret in \(file) is \(bytes.count) bytes; at least 32 are needed")
            }
            let hmac = algorithms.first { $0.hasPrefix("HS") }
            guard let hmac else { throw value.error("an HMAC secret needs an HS256, HS384 or HS512 entry in algorithms") }
            jwt.keys.append(JWTKeyConfiguration(material: .hmacSecret(bytes), algorithm: hmac, kid: nil, source: file))
        }
        if let value = map.optional("public_keys") {
            for item in try value.sequence() {
                var entry = try item.mapping()
                let fileNode = try entry.required("file")
                let file = try filePath(fileNode)
                guard let pem = try? String(contentsOfFile: file, encoding: .utf8) else { throw fileNode.error("cannot read \(file)") }
                let algorithmNode = try entry.required("algorithm")
                let algorithm = try algorithmNode.string()
                guard algorithms.contains(algorithm), !algorithm.hasPrefix("HS") else {
                    throw algorithmNode.error("'\(algorithm)' must be a public-key algorithm listed in algorithms")
                }
                let kid = try entry.optional("kid")?.string()
                try entry.finish()
                jwt.keys.append(JWTKeyConfiguration(material: .publicKeyPEM(pem), algorithm: algorithm, kid: kid, source: file))
            }
        }
        if let value = map.optional("jwks_file") {
            let file = try filePath(value)
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw value.error("cannot read \(file)") }
            jwt.keys.append(JWTKeyConfiguration(material: .jwks(text), algorithm: nil, kid: nil, source: file))
        }
        guard !jwt.keys.isEmpty else { throw node.error("a jwt method needs hmac_secret_file, public_keys or jwks_file") }
        if let value = map.optional("issuer") { jwt.issuer = try value.string() }
        if let value = map.optional("audience") { jwt.audience = try value.string() }
        if let value = map.optional("leeway") { jwt.leeway = try value.duration() }
        if let value = map.optional("user_claim") { jwt.userClaim = try value.string() }
        if let value = map.optional("claims") {
            let claims = try value.mapping()
            for entry in claims.entries {
                jwt.requiredClaims[entry.key] = try entry.node.string()
            }
        }
        try map.finish()
        return jwt
    }

    func decodeForward(_ node: ConfigNode) throws(ConfigError) -> ForwardAuthConfiguration {
        var map = try node.mapping()
        let urlNode = try map.required("url")
        let url = try urlNode.string()
        guard url.hasPrefix("http://") else { throw urlNode.error("the auth service URL must be http://host:port/path, got '\(url)'") }
        let rest = url.dropFirst("http://".count)
        let authority = String(rest.prefix { $0 != "/" })
        let path = rest.dropFirst(authority.count)
        let address: SocketAddressSpec
        do throws(ValueError) {
            address = try ValueParsing.address(authority.contains(":") && !authority.hasSuffix("]") ? authority : authority + ":80")
        } catch {
            throw urlNode.error(error.message)
        }
        var forward = ForwardAuthConfiguration(url: url, host: address.host, port: address.port, path: path.isEmpty ? "/" : String(path))
        if let value = map.optional("timeout") { forward.timeout = try positive(value) }
        if let value = map.optional("copy_headers") {
            forward.copyHeaders = try value.stringList()
            for name in forward.copyHeaders where !HTTPToken.isToken(name) { throw value.error("'\(name)' is not a header name") }
        }
        if let value = map.optional("user_header") {
            let name = try value.string()
            guard forward.copyHeaders.contains(where: { $0.lowercased() == name.lowercased() }) else {
                throw value.error("user_header must be one of copy_headers")
            }
            forward.userHeader = name
        }
        if let value = map.optional("cache_ttl") { forward.cacheTTL = try value.optionalDuration() ?? .zero }
        try map.finish()
        return forward
    }

    func decodeOrigin(_ node: ConfigNode) throws(ConfigError) -> OriginPolicy {
        var map = try node.mapping()
        let allowedNode = try map.required("allowed")
        let allowed = try allowedNode.stringList()
        for origin in allowed {
            let parts = origin.components(separatedBy: "://")
            guard parts.count == 2, ["http", "https"].contains(parts[0].lowercased()), !parts[1].isEmpty, !parts[1].contains("/") else {
                throw allowedNode.error("'\(origin)' is not an origin; write https://app.example.com or https://*.example.com")
            }
            if parts[1].contains("*") && !(parts[1].hasPrefix("*.") && !parts[1].dropFirst(2).contains("*")) {
                throw allowedNode.error("'\(origin)': a wildcard stands only for the leftmost labels, as in https://*.example.com")
            }
        }
        var policy = OriginPolicy(allowed: allowed)
        if let value = map.optional("allow_missing") { policy.allowMissing = try value.bool() }
        try map.finish()
        return policy
    }
}
