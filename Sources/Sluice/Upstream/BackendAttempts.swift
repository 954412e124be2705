import NIOCore
import NIOHTTP1
import SluiceConfig

/// The backends one request or upgrade tries, in order, and what each try does to their
/// health: the balancer's choice (policy, weights, pins by cookie, address or hashed key,
/// backends down, ejected or draining left out), a bounded number of tries within the
/// `retry_budget`, and passive health (successes and failures reported to the set). Plain
/// requests and upgrades try backends by the same rules, so a client's polling and its
/// upgrade land alike.
struct BackendAttempts {
    let backends: BackendSet
    private let candidates: [Int]
    private var next = 0
    /// The backend being tried, once one is.
    private(set) var current: Int?
    private var lastFailure: BackendConnectFailure?
    private let startedAt: NIODeadline

    /// - Parameters:
    ///   - attempts: how many backends at most (each once).
    ///   - client: the client's address, for stickiness by address.
    ///   - headers: the request's fields, for stickiness by cookie and hashing by field.
    ///   - user: who authenticated, for hashing by user.
    init(_ backends: BackendSet, attempts: Int, client: IPAddress?, headers: HTTPHeaders, user: String? = nil, now: NIODeadline = .now()) {
        self.backends = backends
        startedAt = now
        var pin = BackendSet.Pin(client: client)
        if case .cookie(let name) = backends.balance.sticky { pin.stickyCookie = CookieHeader.value(named: name, in: headers) }
        switch backends.balance.hash {
        case .header(let name): pin.hashKey = headers.first(name: name).map { Array($0.utf8) }
        case .cookie(let name): pin.hashKey = CookieHeader.value(named: name, in: headers).map { Array($0.utf8) }
        case .user: pin.hashKey = user.map { Array($0.utf8) }
        case nil: break
        }
        candidates = backends.candidates(attempts: attempts, pin: pin, now: Int64(clamping: now.uptimeNanoseconds))
    }

    /// The next backend to try, or `nil` when every candidate has been.
    mutating func nextBackend() -> (index: Int, backend: Backend)? {
        guard next < candidates.count else { return nil }
        let index = candidates[next]
        next += 1
        current = index
        return (index, backends.backend(index))
    }

    /// The current backend answered as a healthy one does (a 101, a response below 500).
    func succeeded() {
        if let current { backends.succeeded(current) }
    }

    /// The current backend answered a plain request with `status` (`BackendSet.answered`).
    func answered(status: Int, to request: @autoclosure () -> String) {
        if let current { backends.answered(current, status: status, to: request()) }
    }

    /// The connect to the current backend failed: it counts against its health.
    mutating func failed(_ error: any Error) {
        let failure = BackendConnectFailure(error)
        if let current { backends.failed(current, reason: failure.reason) }
        lastFailure = failure
    }

    /// The current backend failed after the connect (a handshake timeout, a 5xx, an invalid
    /// 101): it counts against its health.
    func failedAnswer(_ reason: String) {
        if let current { backends.failed(current, reason: reason) }
    }

    /// Whether another backend may be tried after the current one failed before anything
    /// reached the client: a candidate is left and the `retry_budget` is not spent. Counted in
    /// `sluice_backend_retries_total` under `reason` when it may.
    func mayRetry(reason: String, now: NIODeadline = .now()) -> Bool {
        guard hasMore, now - startedAt < TimeAmount.nanoseconds(backends.balance.retryBudget.nanoseconds) else { return false }
        if let current { backends.retried(current, reason: reason) }
        return true
    }

    /// Tries the current backend once more (a kept-alive connection it had closed).
    mutating func again() {
        next = max(0, next - 1)
    }

    /// Whether a try is left.
    var hasMore: Bool { next < candidates.count }

    /// What the client is told once no candidate is left.
    var exhausted: SluiceError {
        guard !candidates.isEmpty else {
            return SluiceError(
                source: .gateway, status: .serviceUnavailable, label: .noBackend,
                message: "every backend of route '\(backends.routeName)' is draining"
            )
        }
        return .connectFailed(after: lastFailure)
    }
}

extension BackendConnectFailure {
    /// In the operator's view of recent failures.
    var reason: String {
        switch self {
        case .timeout: "connect timed out"
        case .refused(let why): "connect: \(why)"
        }
    }
}
