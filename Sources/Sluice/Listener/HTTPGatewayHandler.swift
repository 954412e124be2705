import Logging
import NIOCore
import NIOHTTP1
import SluiceConfig

/// Serves one client connection's HTTP/1.1 requests: limits, routing, and the hand-off of
/// WebSocket upgrades to `WebSocketUpgrade`.
///
/// Requests are answered one at a time and in order, so keep-alive and pipelining are safe.
/// While an upgrade is in flight the handler withholds `read()`, so bytes the client sends
/// early stay in the decoder and reach the relay in order.
final class HTTPGatewayHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Per-listener settings.
    struct Configuration {
        var listener: String
        var tls: Bool
        var limits: HTTPLimits
    }

    /// What the handler is doing with the current request.
    private enum State {
        /// Waiting for a request head.
        case idle
        /// Head seen; the answer is sent when the request ends.
        case pending(Answer)
        /// A backend upgrade is in flight.
        case upgrading(WebSocketUpgrade)
        /// The relay took over, or the connection is closing.
        case done
    }

    /// The answer to give once the request body (if any) has been read.
    private enum Answer {
        case respond(HTTPResponseStatus, String, headers: [(String, String)], keepAlive: Bool, head: Bool)
        case demoPage(head: Bool, keepAlive: Bool)
        case upgrade(Route, HTTPRequestHead, UpgradeRequest, RequestPath)
    }

    private let configuration: Configuration
    private let routes: RouteTable
    private let registry: ConnectionRegistry
    private let logger: Logger
    private let decoder: ByteToMessageHandler<HTTPRequestDecoder>
    private let encoder: HTTPResponseEncoder
    private var state: State = .idle
    private var headerTimer: Scheduled<Void>?

    init(
        configuration: Configuration, routes: RouteTable, registry: ConnectionRegistry, logger: Logger,
        decoder: ByteToMessageHandler<HTTPRequestDecoder>, encoder: HTTPResponseEncoder
    ) {
        self.configuration = configuration
        self.routes = routes
        self.registry = registry
        self.logger = logger
        self.decoder = decoder
        self.encoder = encoder
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armHeaderTimer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armHeaderTimer(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        headerTimer?.cancel()
        if case .upgrading(let upgrade) = state { upgrade.cancel() }
        state = .done
        context.fireChannelInactive()
    }

    private func armHeaderTimer(context: ChannelHandlerContext) {
        headerTimer?.cancel()
        let timeout = TimeAmount(configuration.limits.headerTimeout)
        headerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            guard case .idle = state else { return }
            respondAndClose(context: context, .requestTimeout, "request head not received in time")
        }
    }

    // MARK: Reads

    func read(context: ChannelHandlerContext) {
        if case .upgrading = state { return }
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard case .idle = state else { return }
            headerTimer?.cancel()
            state = .pending(answer(for: head, context: context))
        case .body:
            break
        case .end:
            guard case .pending(let answer) = state else { return }
            perform(answer, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state {
        case .idle, .pending:
            if let parserError = error as? HTTPParserError {
                let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
                respondAndClose(context: context, status, status == .badRequest ? "malformed request" : "request head too large")
            } else {
                context.close(promise: nil)
            }
        case .upgrading, .done:
            context.close(promise: nil)
        }
    }

    // MARK: Decisions

    /// Decides the answer from the head alone: limits, framing, routing, upgrade validation.
    private func answer(for head: HTTPRequestHead, context: ChannelHandlerContext) -> Answer {
        let keepAlive = head.isKeepAlive
        let isHead = head.method == .HEAD
        func refuse(_ status: HTTPResponseStatus, _ message: String, headers: [(String, String)] = [], close: Bool = false) -> Answer {
            .respond(status, message, headers: headers, keepAlive: keepAlive && !close, head: isHead)
        }
        let limits = configuration.limits
        if head.method.rawValue.utf8.count + head.uri.utf8.count + 10 > limits.maxRequestLine {
            return refuse(.uriTooLong, "request line longer than \(limits.maxRequestLine) bytes", close: true)
        }
        var headerBytes = 0
        for (name, value) in head.headers { headerBytes += name.utf8.count + value.utf8.count + 4 }
        if head.headers.count > limits.maxHeaders || headerBytes > limits.maxHeaderBytes {
            return refuse(.requestHeaderFieldsTooLarge, "request headers exceed \(limits.maxHeaders) fields or \(limits.maxHeaderBytes) bytes", close: true)
        }
        let lengths = head.headers[canonicalForm: "content-length"]
        if head.headers.contains(name: "transfer-encoding") && !lengths.isEmpty {
            return refuse(.badRequest, "both Content-Length and Transfer-Encoding", close: true)
        }
        if Set(lengths).count > 1 {
            return refuse(.badRequest, "conflicting Content-Length values", close: true)
        }
        if head.version.major == 1 && head.version.minor >= 1 && head.headers[canonicalForm: "host"].count != 1 {
            return refuse(.badRequest, "exactly one Host header is required", close: true)
        }
        let path: RequestPath
        do {
            path = try RequestPath.parse(head.uri)
        } catch {
            return refuse(.badRequest, "invalid request target", close: true)
        }
        let host = head.headers.first(name: "host")
        guard let route = routes.route(host: host, path: path.path) else {
            return refuse(.notFound, "no route for this host and path")
        }
        if route.configuration.builtin == .demo {
            guard head.method == .GET || head.method == .HEAD else {
                return refuse(.methodNotAllowed, "only GET and HEAD", headers: [("Allow", "GET, HEAD")])
            }
            return .demoPage(head: isHead, keepAlive: keepAlive)
        }
        guard UpgradeRequest.isAttempt(head) else {
            return refuse(.upgradeRequired, "this route accepts WebSocket connections only", headers: [("Upgrade", "websocket")])
        }
        do {
            let upgrade = try UpgradeRequest.validate(head, allowedProtocols: route.websocket.subprotocols)
            return .upgrade(route, head, upgrade, path)
        } catch {
            return refuse(error.status, error.message, headers: error.headers, close: true)
        }
    }

    private func perform(_ answer: Answer, context: ChannelHandlerContext) {
        switch answer {
        case .respond(let status, let message, let headers, let keepAlive, let isHead):
            respond(context: context, status, body: message + "\n", contentType: "text/plain; charset=utf-8", headers: headers, keepAlive: keepAlive, omitBody: isHead)
        case .demoPage(let isHead, let keepAlive):
            respond(context: context, .ok, body: DemoPage.html, contentType: "text/html; charset=utf-8", headers: [("Cache-Control", "no-store")], keepAlive: keepAlive, omitBody: isHead)
        case .upgrade(let route, let head, let request, let path):
            startUpgrade(context: context, route: route, head: head, request: request, path: path)
        }
    }

    private func startUpgrade(context: ChannelHandlerContext, route: Route, head: HTTPRequestHead, request: UpgradeRequest, path: RequestPath) {
        let client = ForwardedHeaders.Client(
            address: context.channel.remoteAddress?.ipAddress, host: head.headers.first(name: "host"), tls: configuration.tls
        )
        let downstream = WebSocketUpgrade.Downstream(
            context: context,
            respond: { [self] status, message in respondAndClose(context: context, status, message) },
            switchToRelay: { [self] head, relayHandler in switchToRelay(context: context, head: head, relayHandler: relayHandler) }
        )
        let upgrade = WebSocketUpgrade(
            downstream: downstream, route: route, clientHead: head, upgrade: request, requestTarget: path.target,
            client: client, registry: registry, logger: logger
        ) { [self] outcome in
            if case .responded = outcome { state = .done }
        }
        state = .upgrading(upgrade)
        upgrade.start()
    }

    /// Writes the 101 and leaves the pipeline to the relay; bytes the decoder still holds go to
    /// the relay handler, in order.
    private func switchToRelay(context: ChannelHandlerContext, head: HTTPResponseHead, relayHandler: RelayHandler) -> EventLoopFuture<Void> {
        state = .done
        context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandler(relayHandler)
        } catch {
            context.close(promise: nil)
            return context.eventLoop.makeFailedFuture(error)
        }
        let channel = context.channel
        _ = pipeline.removeHandler(context: context)
        _ = pipeline.removeHandler(encoder)
        let decoderGone = pipeline.removeHandler(decoder)
        channel.read()
        return decoderGone
    }

    // MARK: Responses

    private func respond(
        context: ChannelHandlerContext, _ status: HTTPResponseStatus, body: String, contentType: String,
        headers extra: [(String, String)] = [], keepAlive: Bool, omitBody: Bool = false
    ) {
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
            state = .idle
            armHeaderTimer(context: context)
        } else {
            state = .done
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    private func respondAndClose(context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ message: String) {
        respond(context: context, status, body: message + "\n", contentType: "text/plain; charset=utf-8", keepAlive: false)
    }
}
