import NIOCore
import NIOHTTP1

/// An answer Sluice writes itself (a refusal, a failure, the demo page) as response parts, which
/// the connection's codec frames for HTTP/1.1 or HTTP/2 alike.
struct GatewayAnswer {
    var status: HTTPResponseStatus
    var contentType: String
    var body: String
    var headers: [(String, String)]

    init(_ status: HTTPResponseStatus, body: String, contentType: String = "text/plain; charset=utf-8", headers: [(String, String)] = []) {
        self.status = status
        self.body = body
        self.contentType = contentType
        self.headers = headers
    }

    /// A refused or failed request: the error's status, fields and message, or the body a
    /// forward-auth service sent, with its own `Content-Type`.
    init(_ error: SluiceError) {
        guard let body = error.body else {
            self.init(error.status, body: error.message + "\n", headers: error.headers)
            return
        }
        let contentType = error.headers.first { $0.0.lowercased() == "content-type" }?.1 ?? "text/plain; charset=utf-8"
        self.init(
            error.status, body: String(decoding: body, as: UTF8.self), contentType: contentType,
            headers: error.headers.filter { $0.0.lowercased() != "content-type" }
        )
    }

    /// Writes the head, the body (not for HEAD) and the end, flushed; the end's write is
    /// returned. `closing`: the connection ends after it (HTTP/1.1 says so in `Connection`).
    func write(to sink: some ResponseSink, version: HTTPVersion, closing: Bool, omitBody: Bool) -> EventLoopFuture<Void> {
        var fields = HTTPHeaders()
        fields.add(name: "Content-Type", value: contentType)
        fields.add(name: "Content-Length", value: "\(body.utf8.count)")
        fields.add(name: "Server", value: "sluice")
        for (name, value) in headers { fields.add(name: name, value: value) }
        if closing && version.major == 1 { fields.add(name: "Connection", value: "close") }
        sink.writeResponse(.head(HTTPResponseHead(version: version, status: status, headers: fields)), promise: nil)
        if !omitBody {
            var buffer = sink.responseAllocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            sink.writeResponse(.body(.byteBuffer(buffer)), promise: nil)
        }
        let written = sink.eventLoop.makePromise(of: Void.self)
        sink.writeResponse(.end(nil), promise: written)
        sink.flushResponse()
        return written.futureResult
    }

    /// The bytes of the body the client is sent.
    func sentBytes(omitBody: Bool) -> Int { omitBody ? 0 : body.utf8.count }
}
