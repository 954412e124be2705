import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceConfig

/// A route's authentication: its methods tried in order (the first that admits wins), the
/// answer when none does, and the per-address limit on failures.
final class RouteAuthenticator: Sendable {
    enum Method: Sendable {
        case basic(BasicAuthenticator)
        case jwt(JWTVerifier)
        case forward(ForwardAuthenticator)
    }

    let configuration: RouteAuthConfiguration
    let methods: [Method]
    let failures: FailureLimiter

    init(configuration: RouteAuthConfiguration, routeIndex: Int, threadPool: NIOThreadPool) async throws(ConfigError) {
        self.configuration = configuration
        var methods: [Method] = []
        for (index, method) in configuration.methods.enumerated() {
            switch method {
            case .basic(let basic): methods.append(.basic(BasicAuthenticator(configuration: basic, threadPool: threadPool)))
            case .jwt(let jwt):
                methods.append(.jwt(try await JWTVerifier(configuration: jwt, path: "routes[\(routeIndex)].auth.methods[\(index)].jwt")))
            case .forward(let forward): methods.append(.forward(ForwardAuthenticator(configuration: forward)))
            }
        }
        self.methods = methods
        failures = FailureLimiter(limit: configuration.failureLimit)
    }

    /// What reaches the authenticator of one request.
    struct Request {
        var head: HTTPRequestHead
        var query: String?
        /// The target the backend will receive (`Route.upstreamTarget`).
        var target: String
        /// The request's host: its `Host`, or the authority of an absolute-form target.
        var host: String?
        var client: IPAddress?
        var tls: Bool
    }

    /// Admits the request or says how to refuse it. Runs the methods one after another on
    /// `eventLoop` (password checks hop to the thread pool and back).
    func authenticate(_ request: Request, on eventLoop: any EventLoop) -> EventLoopFuture<Result<Identity, SluiceError>> {
        if let client = request.client, let retry = failures.blocked(client) {
            return eventLoop.makeSucceededFuture(.failure(.client(
                .tooManyRequests, .authRateLimited, "too many failed attempts; retry later", headers: [("Retry-After", String(retry))]
            )))
        }
        return run(0, request, outcomes: [], on: eventLoop).map { [self] outcomes in
            if case .admitted(let identity)? = outcomes.last { return .success(identity) }
            if let client = request.client, outcomes.contains(where: \.isFailure) { failures.record(client) }
            return .failure(refusal(for: outcomes))
        }
    }

    private func run(_ index: Int, _ request: Request, outcomes: [AuthOutcome], on eventLoop: any EventLoop) -> EventLoopFuture<[AuthOutcome]> {
        guard index < methods.count else { return eventLoop.makeSucceededFuture(outcomes) }
        let userHeader = configuration.userHeader
        let attempt: EventLoopFuture<AuthOutcome>
        switch methods[index] {
        case .basic(let basic):
            attempt = basic.authenticate(request.head.headers, userHeader: userHeader, on: eventLoop)
        case .jwt(let jwt):
            attempt = jwt.authenticate(headers: request.head.headers, query: request.query, userHeader: userHeader, on: eventLoop)
        case .forward(let forward):
            attempt = forward.authenticate(
                ForwardAuthenticator.Request(
                    method: request.head.method.rawValue, target: request.target, headers: request.head.headers,
                    client: request.client?.description, host: request.host, tls: request.tls
                ),
                userHeader: userHeader, on: eventLoop
            )
        }
        return attempt.flatMap { [self] outcome in
            if case .admitted = outcome { return eventLoop.makeSucceededFuture(outcomes + [outcome]) }
            return run(index + 1, request, outcomes: outcomes + [outcome], on: eventLoop)
        }
    }

    /// The most telling answer: the auth service's own 401/403, else 503 when a method could
    /// not decide, else 403 for valid-but-not-allowed, else 401 with every challenge.
    func refusal(for outcomes: [AuthOutcome]) -> SluiceError {
        for outcome in outcomes {
            if case .passThrough(let status, let headers, let body) = outcome {
                var error = SluiceError.client(HTTPResponseStatus(statusCode: Int(status)), .authRejected, "", headers: headers.map { ($0.key, $0.value) })
                error.body = body
                return error
            }
        }
        if outcomes.contains(where: { if case .unavailable = $0 { true } else { false } }) {
            return SluiceError(source: .gateway, status: .serviceUnavailable, label: .authUnavailable, message: "authentication is unavailable; retry later")
        }
        if outcomes.contains(where: { if case .forbidden = $0 { true } else { false } }) {
            return .client(.forbidden, .authForbidden, "not allowed")
        }
        let presented = outcomes.contains { if case .invalid = $0 { true } else { false } }
        var challenges: [(String, String)] = []
        for (method, outcome) in zip(methods, outcomes) {
            switch method {
            case .basic(let basic): challenges.append(("WWW-Authenticate", basic.challenge))
            case .jwt:
                if case .invalid = outcome {
                    challenges.append(("WWW-Authenticate", #"Bearer error="invalid_token""#))
                } else {
                    challenges.append(("WWW-Authenticate", "Bearer"))
                }
            case .forward: break
            }
        }
        return .client(.unauthorized, .authRejected, presented ? "invalid credentials" : "authentication required", headers: challenges)
    }

    /// Why the outcomes refused, for the debug log (never a credential).
    static func reasons(_ outcomes: [AuthOutcome]) -> String {
        outcomes.map { outcome in
            switch outcome {
            case .admitted: "admitted"
            case .missing: "missing"
            case .invalid(let reason), .forbidden(let reason), .unavailable(let reason): reason
            case .passThrough(let status, _, _): "auth service \(status)"
            }
        }.joined(separator: "; ")
    }
}

/// Failed attempts per client address, as a token bucket each: a client out of tokens gets
/// 429 without its credentials being checked at all.
final class FailureLimiter: Sendable {
    private let limit: RateLimit
    private let buckets = NIOLockedValueBox<[IPAddress: TokenBucket]>([:])

    init(limit: RateLimit) { self.limit = limit }

    /// Seconds to wait when `client` has no failures left, else `nil`.
    func blocked(_ client: IPAddress) -> Int? {
        let now = MonotonicClock.nanoseconds()
        return buckets.withLockedValue { buckets in
            guard var bucket = buckets[client] else { return nil }
            if bucket.isFull(now: now) {
                buckets.removeValue(forKey: client)
                return nil
            }
            // Peek: take a token and give it back, so only failures spend them.
            if bucket.take(now: now) { return nil }
            buckets[client] = bucket
            return bucket.secondsUntilToken()
        }
    }

    func record(_ client: IPAddress) {
        let now = MonotonicClock.nanoseconds()
        buckets.withLockedValue { buckets in
            if buckets.count > 65_536 { buckets = buckets.filter { !$0.value.isFull(now: now) } }
            var bucket = buckets[client] ?? TokenBucket(limit, now: now)
            _ = bucket.take(now: now)
            buckets[client] = bucket
        }
    }
}
