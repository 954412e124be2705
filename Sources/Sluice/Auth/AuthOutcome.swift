import NIOHTTP1

/// Who was admitted, as the backend, the limits and the logs see them.
struct Identity: Sendable, Equatable {
    /// The user name (basic user, a JWT claim, or a forward-auth header); `nil` when the method
    /// admits without naming one.
    var user: String?
    /// Headers for the upstream request (the user header, copied forward-auth headers).
    var headers: [(String, String)]
    /// When the credential stops being valid (JWT `exp`), seconds since the epoch.
    var expiresAt: Double?
    var method: String
    /// Where the credential that admitted the request was: the backend receives it (or not,
    /// per `auth.forward_credentials`), never another credential the route reads.
    var credential: CredentialCarrier?

    static func == (lhs: Identity, rhs: Identity) -> Bool {
        lhs.user == rhs.user && lhs.expiresAt == rhs.expiresAt && lhs.method == rhs.method && lhs.credential == rhs.credential
            && lhs.headers.map { "\($0.0):\($0.1)" } == rhs.headers.map { "\($0.0):\($0.1)" }
    }
}

/// A place in a request where a route's authentication reads a credential.
enum CredentialCarrier: Sendable, Hashable {
    /// The `Authorization` field (Basic, or a bearer token).
    case authorization
    /// One cookie, by name (a JWT).
    case cookie(String)
    /// A query parameter (a JWT); always removed before the backend, since URLs get logged.
    case query(String)
    /// `Cookie` and `Authorization` as a whole, as forward auth shows them to the auth service.
    case forwardedFields
}

/// What one authentication method concluded. Reasons are for debug logs and never contain a
/// credential.
enum AuthOutcome: Sendable, Equatable {
    case admitted(Identity)
    /// No credential for this method in the request.
    case missing
    /// A credential that does not verify (bad password, bad signature, expired, wrong issuer).
    case invalid(reason: String)
    /// A valid credential that may not use this route (user not listed, claims not met).
    case forbidden(reason: String)
    /// The forward-auth service's own 401/403, returned to the client as it came.
    case passThrough(status: UInt, headers: [String: String], body: [UInt8])
    /// The method could not decide (auth service down or slow): fail closed.
    case unavailable(reason: String)

    var isFailure: Bool {
        switch self {
        case .invalid, .forbidden, .passThrough: true
        case .admitted, .missing, .unavailable: false
        }
    }
}
