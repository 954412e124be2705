import NIOHTTP1

/// What went wrong with one request or upgrade: who failed (the client, a backend, or the
/// gateway itself), what the client is told, and the label metrics and the access log count it
/// under. One type for every refusal and failure, from a malformed head to a backend timeout.
struct SluiceError: Error, Sendable, CustomStringConvertible {
    /// Who is at fault: it picks a 4xx or a 5xx, and the side operators look at.
    enum Source: String, Sendable {
        case client, backend, gateway
    }

    /// The result label: `sluice_websocket_upgrades_total{result}`, the access log's `rejection`.
    enum Label: String, Sendable, CaseIterable {
        // The request itself.
        case badRequest = "bad_request"
        case uriTooLong = "uri_too_long"
        case headersTooLarge = "headers_too_large"
        case noRoute = "no_route"
        case methodNotAllowed = "method_not_allowed"
        case upgradeRequired = "upgrade_required"
        case originRejected = "origin_rejected"
        case tooLarge = "too_large"
        case timeout
        // Limits and rates (the limit's own name is in `limit`).
        case limitRejected = "limit_rejected"
        case rateLimited = "rate_limited"
        // Authentication.
        case authRejected = "auth_rejected"
        case authForbidden = "auth_forbidden"
        case authUnavailable = "auth_unavailable"
        case authRateLimited = "auth_rate_limited"
        /// The cluster's store (Redis) did not answer and `on_store_failure` is `deny`.
        case clusterUnavailable = "cluster_unavailable"
        // Backends.
        case noBackend = "no_backend"
        case backendRefused = "backend_refused"
        case backendTimeout = "backend_timeout"
        case backendError = "backend_error"
        case backendRejected = "backend_rejected"
    }

    let source: Source
    let status: HTTPResponseStatus
    let label: Label
    let message: String
    var headers: [(String, String)] = []
    /// A body to send as it came (a forward-auth service's own 401/403), instead of `message`.
    var body: [UInt8]?
    /// The connection can carry no further request after this answer.
    var closesConnection = false
    /// The limit that refused, for `sluice_limit_rejections_total{limit}`.
    var limit: LimitRejection?

    var description: String { "\(status.code) \(label.rawValue) (\(source.rawValue)): \(message)" }

    /// What the access log's `rejection` field says: the limit's name for a limit, else the label.
    var rejection: String { limit?.label ?? label.rawValue }

    // MARK: Makers

    /// The client's request is at fault (4xx).
    static func client(_ status: HTTPResponseStatus, _ label: Label, _ message: String, headers: [(String, String)] = [], closing: Bool = false) -> SluiceError {
        SluiceError(source: .client, status: status, label: label, message: message, headers: headers, closesConnection: closing)
    }

    /// A limit refused it.
    static func limited(_ rejection: LimitRejection) -> SluiceError {
        var error = SluiceError(
            source: .client, status: rejection.status, label: rejection.isRate ? .rateLimited : .limitRejected, message: rejection.message,
            headers: [("Retry-After", String(rejection.retryAfter))]
        )
        error.limit = rejection
        return error
    }

    /// A backend failed it (5xx).
    static func backend(_ status: HTTPResponseStatus, _ label: Label, _ message: String) -> SluiceError {
        SluiceError(source: .backend, status: status, label: label, message: message)
    }

    /// Every candidate backend failed to connect (`nil`: none could be tried).
    static func connectFailed(after last: BackendConnectFailure?) -> SluiceError {
        switch last {
        case .timeout: .backend(.gatewayTimeout, .backendTimeout, "backend connect timed out")
        case .refused(let reason): .backend(.badGateway, .backendRefused, "backend unreachable: \(reason)")
        case nil: SluiceError(source: .gateway, status: .badGateway, label: .noBackend, message: "no backend available")
        }
    }
}

extension LimitRejection {
    /// A rate limit, not a cap on what is open.
    var isRate: Bool {
        switch self {
        case .upgradeRate, .upgradeRatePerIP, .requestRate, .requestRatePerIP, .upgradeRatePerUser, .requestRatePerUser: true
        default: false
        }
    }
}
