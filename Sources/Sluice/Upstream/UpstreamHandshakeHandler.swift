import NIOCore
import NIOHTTP1

/// Sends the upgrade request to a backend and reports its answer, part by part.
///
/// The only handler of the backend channel (above TLS for wss) until the answer is known. It
/// writes the request as bytes and reads the answer with `UpstreamResponseParser`, as the plain
/// proxy does: no NIO HTTP codecs are built for a connection that speaks HTTP for one exchange.
/// On a 101 the `WebSocketUpgrade` puts the relay behind it and removes it; bytes the backend
/// sent right behind its 101 (a first frame in the same packet) go on to the relay then. Any
/// other answer is streamed to the client as it comes.
final class UpstreamHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What the backend sent.
    enum Event {
        /// The head as read (byte ranges; `responseHead` makes NIO's type of it).
        case head(UpstreamResponseParser.Head)
        case body(ByteBuffer)
        case end
        case failed(any Error)
    }

    private let request: ByteBuffer
    private var onEvent: ((Event) -> Void)?
    private var parser = UpstreamResponseParser()
    /// The backend answered 101: what follows is the WebSocket's.
    private var switched = false
    /// What came behind the 101: the WebSocket's first bytes, passed on when the handler leaves.
    private var afterSwitch: ByteBuffer?

    init(request: ByteBuffer, onEvent: @escaping (Event) -> Void) {
        self.request = request
        self.onEvent = onEvent
        parser.expectResponse(toHEAD: false, upgrading: true)
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        guard onEvent != nil else {
            // Detached. After a 101 the bytes are the relay's, passed on as this handler leaves;
            // otherwise the upgrade is done with the channel and has closed it.
            if switched {
                if afterSwitch == nil { afterSwitch = buffer } else { afterSwitch!.writeBuffer(&buffer) }
            }
            return
        }
        do {
            while onEvent != nil, let event = try parser.next(&buffer) {
                switch event {
                case .head(let head):
                    if head.status == 101 {
                        // The rest is the WebSocket's: kept before the 101 is reported, since
                        // the upgrade may remove this handler while it handles the report.
                        switched = true
                        afterSwitch = buffer.readableBytes > 0 ? buffer : nil
                        onEvent?(.head(head))
                        onEvent?(.end)
                        return
                    }
                    onEvent?(.head(head))
                case .body(let body):
                    onEvent?(.body(body))
                case .end:
                    onEvent?(.end)
                }
            }
        } catch {
            report(.failed(error))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        do {
            if let event = try parser.inputClosed(), case .end = event {
                // A body read until the backend closed ends here.
                report(.end)
            } else {
                report(.failed(ChannelError.eof))
            }
        } catch {
            report(.failed(error))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        report(.failed(error))
        context.close(promise: nil)
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        if let bytes = afterSwitch {
            afterSwitch = nil
            context.fireChannelRead(wrapInboundOut(bytes))
        }
        context.leavePipeline(removalToken: removalToken)
    }

    /// Stops reporting (the upgrade is finished with this channel).
    func detach() { onEvent = nil }

    private func report(_ event: Event) {
        let callback = onEvent
        onEvent = nil
        callback?(event)
    }
}

extension UpstreamResponseParser.Head {
    /// The head as NIO's type, every field kept, for the upgrade's checks and a refusal passed on.
    var responseHead: HTTPResponseHead {
        var fields: [(String, String)] = []
        fields.reserveCapacity(self.fields.count)
        let reasonPhrase = bytes.withUnsafeReadableBytes { raw in
            func text(_ range: Range<Int>) -> String { String(decoding: UnsafeRawBufferPointer(rebasing: raw[range]), as: UTF8.self) }
            for field in self.fields { fields.append((text(field.name), text(field.value))) }
            return text(reason)
        }
        return HTTPResponseHead(
            version: .http1_1, status: HTTPResponseStatus(statusCode: status, reasonPhrase: reasonPhrase), headers: HTTPHeaders(fields)
        )
    }
}
