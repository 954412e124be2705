import NIOCore
import NIOHTTP1

/// A downstream that serves its requests one at a time by `HTTPConnectionStateMachine` — an
/// HTTP/1 connection or an HTTP/2 stream — and may have to wait, with reads held, for the steps
/// of admission that wait (authentication, the cluster's limits). The wait and what follows it
/// are written once, here, for both.
protocol AdmissionWaiting: AnyObject {
    /// Where the answer goes: the HTTP/1 handler's context, an HTTP/2 stream.
    associatedtype Client: ResponseSink
    var state: HTTPConnectionStateMachine<RequestAnswer, HTTPProxyExchange, WebSocketUpgrade> { get set }
    /// The client while the request is being served (nil once it went away).
    var context: Client? { get }
    var services: GatewayServices { get }
    /// The connection's facts admission reads.
    func admissionFacts(_ context: Client) -> Admission.Connection
    func beginExchange(context: Client, _ screened: Admission.Screened, _ admissionRequest: Admission.Request, identity: Identity?)
    func admit(
        context: Client, _ screened: Admission.Screened, upgrade: UpgradeRequest, head: HTTPRequestHead, identity: Identity?,
        leases: Admission.Leases?
    )
    /// Admission refused once it had waited: the answer ends the request (and, on HTTP/1, the
    /// connection, whose reads were held).
    func refuseAfterWaiting(context: Client, _ error: SluiceError)
}

extension AdmissionWaiting {
    /// Runs the steps of admission that wait for `answer` with reads held, then goes on with
    /// the answer it kept, or answers the refusal.
    func authorize(context: Client, _ answer: RequestAnswer, _ screened: Admission.Screened, _ admissionRequest: Admission.Request) {
        state.authorizing(answer)
        Admission.decide(
            screened, admissionRequest, on: admissionFacts(context), cluster: services.cluster, registry: services.registry,
            eventLoop: context.eventLoop
        ).assumeIsolated().whenSuccess { [self] result in
            guard state.isAuthorizing, let context = self.context else {
                // The request ended while admission waited.
                if case .success(let grant) = result { grant.leases?.release() }
                return
            }
            switch result {
            case .success(let grant):
                switch state.authorized() {
                case .proxy(let screened, let admissionRequest):
                    beginExchange(context: context, screened, admissionRequest, identity: grant.identity)
                case .upgrade(let screened, let upgrade, let admissionRequest):
                    admit(context: context, screened, upgrade: upgrade, head: admissionRequest.head, identity: grant.identity, leases: grant.leases)
                case .refuse, .demoPage, nil:
                    grant.leases?.release()
                }
            case .failure(let error):
                if case .upgrade = screened.purpose { services.metrics.upgradeFailed(route: screened.route.name, error) }
                services.metrics.refused(error)
                refuseAfterWaiting(context: context, error)
            }
        }
    }
}
