import NIOCore
import NIOHTTP1
import SluiceConfig

/// The backends one request or upgrade tries, in order, and what each try does to their
/// health: the balancer's choice (policy, stickiness by cookie or address, backends that failed
/// skipped for their cool-down), a bounded number of tries, and passive health (connect
/// failures in a row). Plain requests and upgrades try backends by the same rules, so a
/// client's polling and its upgrade land alike.
struct BackendAttempts {
    let backends: BackendSet
    private let candidates: [Int]
    private var next = 0
    /// The backend being tried, once one is.
    private(set) var current: Int?
    private var lastFailure: BackendConnectFailure?

    /// - Parameters:
    ///   - attempts: how many backends at most (each once).
    ///   - client: the client's address, for stickiness by address.
    ///   - headers: the request's fields, for stickiness by cookie.
    init(_ backends: BackendSet, attempts: Int, client: IPAddress?, headers: HTTPHeaders) {
        self.backends = backends
        var sticky: String?
        if case .cookie(let name) = backends.balance.sticky { sticky = CookieHeader.value(named: name, in: headers) }
        candidates = backends.candidates(attempts: attempts, client: client, stickyCookie: sticky)
    }

    /// The next backend to try, or `nil` when every candidate has been.
    mutating func nextBackend() -> (index: Int, backend: Backend)? {
        guard next < candidates.count else { return nil }
        let index = candidates[next]
        next += 1
        current = index
        return (index, backends.backend(index))
    }

    /// The connect to the current backend succeeded.
    func connected() {
        if let current { backends.connectSucceeded(current) }
    }

    /// The connect to the current backend failed: it counts against its health.
    mutating func failed(_ error: any Error) {
        if let current { backends.connectFailed(current) }
        lastFailure = BackendConnectFailure(error)
    }

    /// Tries the current backend once more (a kept-alive connection it had closed).
    mutating func again() {
        next = max(0, next - 1)
    }

    /// Whether a try is left.
    var hasMore: Bool { next < candidates.count }

    /// What the client is told once no candidate is left.
    var exhausted: SluiceError { .connectFailed(after: lastFailure) }
}
