import NIOHTTP1

/// The answer to a request decided from its head, given once its body (if any) has been
/// read: HTTP/1 connections and HTTP/2 streams decide alike.
enum RequestAnswer {
    /// Admission refused it.
    case refuse(SluiceError, keepAlive: Bool, head: Bool)
    case demoPage(head: Bool, keepAlive: Bool)
    /// A WebSocket upgrade, admitted so far as its head goes.
    case upgrade(Admission.Screened, UpgradeRequest, Admission.Request)
    /// A plain request to proxy (started at its head, so the body can stream).
    case proxy(Admission.Screened, Admission.Request)
}
