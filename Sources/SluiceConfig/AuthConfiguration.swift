/// Who may use a route: the methods tried in order (any one that succeeds admits), and what the
/// backend is told about the user. `methods` empty means the route is public.
public struct RouteAuthConfiguration: Sendable, Equatable {
    public var methods: [AuthMethod] = []
    /// The header that carries the authenticated user to the backend.
    public var userHeader: String = "X-Sluice-User"
    /// Close a WebSocket with 1008 when the JWT that admitted it expires.
    public var closeOnExpiry: Bool = false
    /// Failed attempts allowed per client address before 429s.
    public var failureLimit: RateLimit = RateLimit(perSecond: 1, burst: 30)
    /// The backend receives the credential that admitted the request (`true`), or none of the
    /// credentials the route reads (`false`). Either way, credentials the route reads that did
    /// not admit the request (a second token for someone else) never reach the backend.
    public var forwardCredentials: Bool = true

    public init() {}

    public var isPublic: Bool { methods.isEmpty }
}

/// One way to authenticate.
public enum AuthMethod: Sendable, Equatable {
    case basic(BasicAuthConfiguration)
    case jwt(JWTAuthConfiguration)
    case forward(ForwardAuthConfiguration)

    public var name: String {
        switch self {
        case .basic: "basic"
        case .jwt: "jwt"
        case .forward: "forward"
        }
    }
}

/// HTTP Basic against an htpasswd file (bcrypt, SHA-crypt or yescrypt hashes only).
public struct BasicAuthConfiguration: Sendable, Equatable {
    public var htpasswdFile: String
    /// User → hash, read and checked when the config loads.
    public var users: [String: String]
    public var realm: String = "sluice"
    /// Only these users may use the route; `nil` = everyone in the file.
    public var allowedUsers: [String]?
    /// How long a successful check is remembered (keyed by a hash of the credentials).
    public var cacheTTL: Duration = .seconds(60)

    public init(htpasswdFile: String, users: [String: String]) {
        self.htpasswdFile = htpasswdFile
        self.users = users
    }
}

/// A JSON Web Token from a cookie, the `Authorization: Bearer` header, or a query parameter.
public struct JWTAuthConfiguration: Sendable, Equatable {
    /// Where the token is looked for, in this order.
    public var cookie: String?
    public var bearer: Bool = true
    /// Removed from the request before it reaches the backend, and never logged.
    public var queryParameter: String?
    public var keys: [JWTKeyConfiguration] = []
    /// Algorithms accepted on this route (`none` never is).
    public var algorithms: [String]
    public var issuer: String?
    public var audience: String?
    public var leeway: Duration = .seconds(30)
    /// Claims the token must carry with exactly these string values.
    public var requiredClaims: [String: String] = [:]
    /// The claim naming the user.
    public var userClaim: String = "sub"

    public init(algorithms: [String]) { self.algorithms = algorithms }
}

/// One verification key.
public struct JWTKeyConfiguration: Sendable, Equatable {
    public enum Material: Sendable, Equatable {
        /// Secret bytes for HS256/384/512 (at least 32).
        case hmacSecret([UInt8])
        /// A PEM public key (RSA or EC).
        case publicKeyPEM(String)
        /// A JWKS document (keys chosen by `kid`).
        case jwks(String)
    }

    public var material: Material
    /// For HMAC and PEM keys, the algorithm the key is used with (`HS256`, `RS256`, `ES256`, …).
    public var algorithm: String?
    public var kid: String?
    /// Where it came from, for error messages.
    public var source: String

    public init(material: Material, algorithm: String?, kid: String?, source: String) {
        self.material = material
        self.algorithm = algorithm
        self.kid = kid
        self.source = source
    }
}

/// The app decides: Sluice asks an auth service with the client's credentials.
public struct ForwardAuthConfiguration: Sendable, Equatable {
    /// `http://host:port/path` of the auth service.
    public var url: String
    public var host: String
    public var port: Int
    public var path: String
    public var timeout: Duration = .seconds(2)
    /// Response headers of a 2xx copied onto the upstream request (e.g. `X-User-Id`).
    public var copyHeaders: [String] = []
    /// Of the copied headers, the one naming the user (for limits, logs and `/connections`).
    public var userHeader: String?
    /// How long a decision is remembered, keyed by a hash of the credentials; zero = off.
    public var cacheTTL: Duration = .zero

    public init(url: String, host: String, port: Int, path: String) {
        self.url = url
        self.host = host
        self.port = port
        self.path = path
    }
}

/// Which `Origin` a browser WebSocket may come from.
public struct OriginPolicy: Sendable, Equatable {
    /// Exact origins (`https://app.example.com`) and wildcards (`https://*.example.com`).
    public var allowed: [String]
    /// Requests without `Origin` (non-browser clients) are let through.
    public var allowMissing: Bool = true

    public init(allowed: [String], allowMissing: Bool = true) {
        self.allowed = allowed
        self.allowMissing = allowMissing
    }

    /// Whether `origin` (as the browser sent it) is allowed.
    public func allows(_ origin: String?) -> Bool {
        guard let origin else { return allowMissing }
        // Exact rules first, compared in place (origins are ASCII: browsers send hosts in
        // punycode); only wildcard rules need the lower-cased copies below.
        for pattern in allowed where Self.equalIgnoringASCIICase(pattern, origin) { return true }
        let value = origin.lowercased()
        for pattern in allowed where pattern.contains("://*.") {
            let rule = pattern.lowercased()
            guard let star = rule.range(of: "://*.") else { continue }
            let scheme = rule[..<star.lowerBound]
            let suffix = rule[star.upperBound...]
            guard let separator = value.range(of: "://"), value[..<separator.lowerBound] == scheme else { continue }
            let host = value[separator.upperBound...]
            if host.hasSuffix("." + suffix) && !host.dropLast(suffix.count + 1).isEmpty && !host.dropLast(suffix.count + 1).contains("/") {
                return true
            }
        }
        return false
    }

    private static func equalIgnoringASCIICase(_ a: String, _ b: String) -> Bool {
        guard a.utf8.count == b.utf8.count else { return false }
        for (x, y) in zip(a.utf8, b.utf8) where x != y {
            let lowerX = x >= 0x41 && x <= 0x5A ? x | 0x20 : x
            let lowerY = y >= 0x41 && y <= 0x5A ? y | 0x20 : y
            if lowerX != lowerY { return false }
        }
        return true
    }
}

/// Lines of an htpasswd file, with the hash formats Sluice accepts.
public enum Htpasswd {
    /// Hash prefixes verified through libxcrypt: bcrypt, SHA-256/512-crypt, yescrypt.
    public static let acceptedPrefixes = ["$2y$", "$2b$", "$5$", "$6$", "$y$"]

    /// Parses `user:hash` lines; blank lines and `#` comments are skipped. Weak or unknown
    /// formats (plain text, `{SHA}`, `$apr1$`, crypt DES) are refused with their line number.
    public static func parse(_ text: String, file: String) throws(ValueError) -> [String: String] {
        var users: [String: String] = [:]
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingSpaces().trimmingCharacters(in: ["\r"])
            guard !line.isEmpty, !line.hasPrefix("#") else { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw ValueError("\(file):\(index + 1): expected user:hash")
            }
            let user = String(line[..<colon])
            let hash = String(line[line.index(after: colon)...])
            guard !user.isEmpty else { throw ValueError("\(file):\(index + 1): empty user name") }
            guard acceptedPrefixes.contains(where: { hash.hasPrefix($0) }) else {
                let kind = hash.hasPrefix("{SHA}") ? "{SHA}" : hash.hasPrefix("$apr1$") ? "$apr1$ (MD5)" : hash.hasPrefix("$1$") ? "$1$ (MD5)" : "plain text or crypt DES"
                throw ValueError("\(file):\(index + 1): user '\(user)' has a weak or unknown hash (\(kind)); use bcrypt: htpasswd -B or sluice passwd \(user)")
            }
            guard users[user] == nil else { throw ValueError("\(file):\(index + 1): user '\(user)' appears twice") }
            users[user] = hash
        }
        return users
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: Set<Character>) -> String {
        var slice = Substring(self)
        while let last = slice.last, set.contains(last) { slice.removeLast() }
        return String(slice)
    }
}
