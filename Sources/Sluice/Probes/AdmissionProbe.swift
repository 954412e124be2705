import NIOCore
import NIOHTTP1
import SluiceConfig

/// The admission chain as a value, no channel: an upgrade request screened (route, Origin,
/// limits), its route lease taken and given back. What every WebSocket pays before its backend
/// is dialed, counted by the cost benchmarks.
package struct AdmissionProbe {
    private let routing: ListenerRouting.Snapshot
    private let connection: Admission.Connection
    private let request: Admission.Request

    package init() throws {
        let routes = try ProbeRoutes.make()
        routing = ListenerRouting.Snapshot(routes: RouteTable(routes: routes, listener: "probe"), trustedProxies: [])
        connection = Admission.Connection(listener: "probe", tls: true, peer: IPAddress("192.0.2.1"), limits: HTTPLimits())
        let headers = HTTPHeaders([
            ("Host", "app.test"), ("Origin", "https://app.test"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        ])
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/ws/chat?room=1", headers: headers)
        request = Admission.Request(head: head, host: "app.test", framing: RequestFraming.read(headers))
    }

    /// Screens the request and takes and returns its lease.
    package func admitAndRelease() throws {
        let screened: Admission.Screened
        switch Admission.screen(request, on: connection, routing: routing) {
        case .success(let value): screened = value
        case .failure(let refusal): throw ProbeFailure("refused: \(refusal.error)")
        }
        switch Admission.lease(screened, identity: nil) {
        case .success(let lease): lease.release()
        case .failure(let error): throw ProbeFailure("no lease: \(error)")
        }
    }
}
