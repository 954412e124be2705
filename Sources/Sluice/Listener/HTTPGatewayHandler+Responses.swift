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
        guard let request = request.take() else { return }
        request.write(to: services.accessLog, listener: configuration.listener, status: status, bytes: bytes)
    }

    func respond(context: ChannelHandlerContext, _ answer: GatewayAnswer, keepAlive: Bool, omitBody: Bool = false) {
        // A draining gateway ends the connection after this answer, and says so.
        let keepAlive = state.answered(keepAlive: keepAlive)
        logRequest(status: answer.status, bytes: answer.sentBytes(omitBody: omitBody))
        let written = answer.write(to: context, version: .http1_1, closing: !keepAlive, omitBody: omitBody)
        if keepAlive {
            armHeaderTimer(context: context)
        } else {
            written.assumeIsolated().whenComplete { _ in Self.lingeringClose(context) }
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

    /// The answer to a refused or failed request.
    func respond(context: ChannelHandlerContext, _ error: SluiceError, keepAlive: Bool, omitBody: Bool = false) {
        respond(context: context, GatewayAnswer(error), keepAlive: keepAlive, omitBody: omitBody)
    }

    func respondAndClose(context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ message: String) {
        respond(context: context, GatewayAnswer(status, body: message + "\n"), keepAlive: false)
    }
}
