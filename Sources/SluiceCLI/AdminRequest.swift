import NIOCore
import NIOHTTP1
import NIOPosix

/// One request to a running gateway's admin listener, for `sluice stop`.
enum AdminRequest {
    struct Answer {
        var status: Int
        var body: String
    }

    static func post(host: String, port: Int, path: String, headers extra: [String: String]) async throws -> Answer {
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: Answer.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(Collector(promise: promise))
                }
            }
            .connect(host: host, port: port).get()
        } catch {
            promise.fail(error)
            throw error
        }
        var headers = HTTPHeaders([("Host", host), ("Content-Length", "0"), ("Connection", "close")])
        for (name, value) in extra { headers.add(name: name, value: value) }
        channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(10)) { promise.fail(ChannelError.connectTimeout(.seconds(10))) }
        defer {
            timeout.cancel()
            channel.close(promise: nil)
        }
        return try await promise.futureResult.get()
    }

    private final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        private let promise: EventLoopPromise<Answer>
        private var answer = Answer(status: 0, body: "")

        init(promise: EventLoopPromise<Answer>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): answer.status = Int(head.status.code)
            case .body(let buffer): answer.body += String(buffer: buffer)
            case .end: promise.succeed(answer)
            }
        }

        func channelInactive(context: ChannelHandlerContext) { promise.fail(ChannelError.eof) }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.close(promise: nil)
        }
    }
}
