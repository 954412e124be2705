import NIOCore

/// Turns a Redis connection's bytes into RESP values for `RedisClient`, and gives it the close.
/// Owns no requests: matching answers to commands is the client's (answers come in order).
final class RedisChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var buffer: ByteBuffer?
    private let parser = RESPParser()
    private let onValue: (RESPValue) -> Void
    private let onFailure: (String) -> Void

    init(onValue: @escaping (RESPValue) -> Void, onFailure: @escaping (String) -> Void) {
        self.onValue = onValue
        self.onFailure = onFailure
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil || buffer!.readableBytes == 0 {
            buffer = incoming
        } else {
            buffer!.writeBuffer(&incoming)
        }
        do {
            while buffer!.readableBytes > 0, let value = try parser.next(from: &buffer!) {
                onValue(value)
            }
            buffer!.discardReadBytes()
        } catch {
            onFailure(error.reason)
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        onFailure("\(error)")
        context.close(promise: nil)
    }
}
