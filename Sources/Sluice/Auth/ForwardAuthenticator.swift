import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceConfig

/// Lets an auth service decide, as nginx's `auth_request` and Traefik's ForwardAuth do: a GET
/// with the client's `Cookie`, `Authorization`, method, the target the backend will receive and
/// forwarding headers. A 2xx admits (copying the configured headers onto the upstream request);
/// a 401 or 403 goes back to the client as it came; anything else, a timeout or an error fails
/// closed.
///
/// The service is shown the target after normalisation, prefix rewriting and token removal —
/// exactly what the backend gets — so a rule on `/app/admin` in the service cannot be walked
/// around with `/app/%61dmin` or `/app/ok/../admin`. A decision is cached (`cache_ttl`) under
/// everything the service was shown: method, target, host, scheme, client address, `Cookie` and
/// `Authorization`; a decision for one path or method is never reused for another.
final class ForwardAuthenticator: Sendable {
    let configuration: ForwardAuthConfiguration
    private let cache = NIOLockedValueBox<[[UInt8]: (expires: NIODeadline, outcome: AuthOutcome)]>([:])
    /// Largest response body kept from the auth service.
    static let maxBody = 16 * 1024

    init(configuration: ForwardAuthConfiguration) { self.configuration = configuration }

    struct Request {
        var method: String
        /// The target the backend will receive (normalised path, prefix rewritten, tokens
        /// removed, query kept).
        var target: String
        var headers: HTTPHeaders
        var client: String?
        var host: String?
        var tls: Bool
    }

    func authenticate(_ request: Request, userHeader: String, on eventLoop: any EventLoop) -> EventLoopFuture<AuthOutcome> {
        let cookie = request.headers[canonicalForm: "cookie"].joined(separator: "; ")
        let authorization = request.headers.first(name: "authorization") ?? ""
        let key = PasswordHasher.digest(
            request.method, request.target, request.host ?? "", request.tls ? "https" : "http", request.client ?? "", cookie, authorization
        )
        let useCache = configuration.cacheTTL > .zero
        let now = NIODeadline.now()
        if useCache, let hit = cache.withLockedValue({ $0[key] }), hit.expires > now {
            return eventLoop.makeSucceededFuture(hit.outcome)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: configuration.port == 80 ? configuration.host : "\(configuration.host):\(configuration.port)")
        if !cookie.isEmpty { headers.add(name: "Cookie", value: cookie) }
        if !authorization.isEmpty { headers.add(name: "Authorization", value: authorization) }
        headers.add(name: "X-Forwarded-Method", value: request.method)
        headers.add(name: "X-Forwarded-Uri", value: request.target)
        if let client = request.client { headers.add(name: "X-Forwarded-For", value: client) }
        headers.add(name: "X-Forwarded-Proto", value: request.tls ? "https" : "http")
        if let host = request.host { headers.add(name: "X-Forwarded-Host", value: host) }
        headers.add(name: "Connection", value: "close")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: configuration.path, headers: headers)

        let copy = configuration.copyHeaders
        let userSource = configuration.userHeader
        let ttl = configuration.cacheTTL
        return Self.exchange(head, host: configuration.host, port: configuration.port, timeout: TimeAmount(configuration.timeout), on: eventLoop)
            .map { [cache] response -> AuthOutcome in
                let outcome: AuthOutcome
                switch response.head.status.code {
                case 200..<300:
                    var identity = Identity(user: nil, headers: [], expiresAt: nil, method: "forward", credential: .forwardedFields)
                    for name in copy {
                        for value in response.head.headers[name] { identity.headers.append((name, value)) }
                    }
                    if let userSource, let user = response.head.headers.first(name: userSource) {
                        identity.user = user
                        identity.headers.append((userHeader, user))
                    }
                    outcome = .admitted(identity)
                case 401, 403:
                    var passed: [String: String] = [:]
                    for name in ["www-authenticate", "content-type", "location", "set-cookie"] {
                        if let value = response.head.headers.first(name: name) { passed[name] = value }
                    }
                    outcome = .passThrough(status: response.head.status.code, headers: passed, body: response.body)
                default:
                    return .unavailable(reason: "auth service answered \(response.head.status.code)")
                }
                if ttl > .zero {
                    cache.withLockedValue { cache in
                        if cache.count > 10_000 { cache = cache.filter { $0.value.expires > now } }
                        cache[key] = (NIODeadline.now() + TimeAmount(ttl), outcome)
                    }
                }
                return outcome
            }
            .recover { error in .unavailable(reason: "auth service unreachable or slow: \(BackendConnectFailure.describe(error))") }
    }

    struct Response {
        var head: HTTPResponseHead
        var body: [UInt8]
    }

    struct Timeout: Error, CustomStringConvertible {
        var description: String { "timed out" }
    }

    /// One request on a fresh connection, bounded by `timeout` from connect to the last byte.
    static func exchange(_ head: HTTPRequestHead, host: String, port: Int, timeout: TimeAmount, on eventLoop: any EventLoop) -> EventLoopFuture<Response> {
        let promise = eventLoop.makePromise(of: Response.self)
        let handler = ResponseCollector(promise: promise, maxBody: maxBody)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let timer = eventLoop.scheduleTask(in: timeout) { promise.fail(Timeout()) }
        bootstrap.connect(host: host, port: port).whenComplete { result in
            switch result {
            case .success(let channel):
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            case .failure(let error):
                promise.fail(error)
            }
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return promise.futureResult
    }

    /// Gathers one response (head and a bounded body).
    private final class ResponseCollector: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPClientResponsePart
        private let promise: EventLoopPromise<Response>
        private let maxBody: Int
        private let state = NIOLockedValueBox<(head: HTTPResponseHead?, body: [UInt8])>((nil, []))

        init(promise: EventLoopPromise<Response>, maxBody: Int) {
            self.promise = promise
            self.maxBody = maxBody
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                state.withLockedValue { $0.head = head }
            case .body(let buffer):
                state.withLockedValue { state in
                    let room = maxBody - state.body.count
                    if room > 0 { state.body += buffer.getBytes(at: buffer.readerIndex, length: min(room, buffer.readableBytes)) ?? [] }
                }
            case .end:
                let (head, body) = state.withLockedValue { ($0.head, $0.body) }
                if let head { promise.succeed(Response(head: head, body: body)) }
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(ChannelError.eof)
            context.fireChannelInactive()
        }
    }
}
