import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import SluiceConfig

/// Answers the gateway writes itself, their access-log lines and metrics, and closing after them.
extension HTTPGatewayHandler {
    /// Writes the access-log line and counts the request, once per request.
    func logRequest(status: HTTPResponseStatus, bytes: Int) {
        let route = request?.route
        if let last = lastRequestCounter, last.status == status.code, last.route == route {
            last.counter.increment()
        } else {
            let counter = services.metrics.httpRequestCounter(listener: configuration.listener, route: route, status: status.code)
            lastRequestCounter = (route, status.code, counter)
            counter.increment()
        }
        guard let request else { return }
        self.request = nil
        let accessLog = services.accessLog
        guard accessLog.isEnabled else { return }
        var record = AccessRecord(type: "http")
        record.set("listener", configuration.listener)
        record.set("route", request.route)
        record.set("client", request.client?.description)
        record.set("user", request.user)
        record.set("method", request.method)
        record.set("path", request.path)
        record.set("status", status.code)
        record.set("bytes_sent", bytes)
        record.set("duration_ms", Double((NIODeadline.now() - request.startedAt).nanoseconds / 1000) / 1000)
        record.set("user_agent", request.userAgent)
        if let rejection = request.rejection { record.set("rejection", rejection) }
        accessLog.write(record)
    }

    func respond(
        context: ChannelHandlerContext, _ status: HTTPResponseStatus, body: String, contentType: String,
        headers extra: [(String, String)] = [], keepAlive: Bool, omitBody: Bool = false
    ) {
        // A draining gateway ends the connection after this answer, and says so.
        let keepAlive = state.answered(keepAlive: keepAlive)
        logRequest(status: status, bytes: omitBody ? 0 : body.utf8.count)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Server", value: "sluice")
        for (name, value) in extra { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !omitBody {
            var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            armHeaderTimer(context: context)
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                Self.lingeringClose(context)
            }
        }
    }

    /// Closes after a response the client may still be sending a body to: output first (the
    /// client reads the answer and a FIN), then, after a grace period or the client's own close,
    /// the rest. Closing at once with unread input would send a reset that can destroy the
    /// answer in flight (a 413 to an upload, say).
    static func lingeringClose(_ context: ChannelHandlerContext) {
        let channel = context.channel
        context.close(mode: .output).assumeIsolated().whenComplete { result in
            if case .failure = result {
                channel.close(promise: nil)
                return
            }
            channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
            channel.read()
        }
    }

    /// The answer to a refused or failed request: the error's status, fields and message (or
    /// the body a forward-auth service sent, with its own `Content-Type`).
    func respond(context: ChannelHandlerContext, _ error: SluiceError, keepAlive: Bool, omitBody: Bool = false) {
        guard let body = error.body else {
            respond(
                context: context, error.status, body: error.message + "\n", contentType: "text/plain; charset=utf-8", headers: error.headers,
                keepAlive: keepAlive, omitBody: omitBody
            )
            return
        }
        let contentType = error.headers.first { $0.0.lowercased() == "content-type" }?.1 ?? "text/plain; charset=utf-8"
        let headers = error.headers.filter { $0.0.lowercased() != "content-type" }
        respond(
            context: context, error.status, body: String(decoding: body, as: UTF8.self), contentType: contentType, headers: headers,
            keepAlive: keepAlive, omitBody: omitBody
        )
    }

    func respondAndClose(context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ message: String) {
        respond(context: context, status, body: message + "\n", contentType: "text/plain; charset=utf-8", keepAlive: false)
    }
}
