import NIOCore
import NIOPosix
import Sluice

/// One churned client connection: sends the upgrade for its cell, then fails (the client's
/// cells) or watches the backend fail (the backend's cells), recording what it saw.
final class ChurnClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let cell: ChurnCell
    private let id: Int
    private let tally: ChurnTally
    private var head = ByteBuffer()
    private var upgraded = false
    private var reader = ChurnWire.Reader()
    private let big = ChurnWire.BigFrame()

    init(cell: ChurnCell, id: Int, tally: ChurnTally) {
        self.cell = cell
        self.id = id
        self.tally = tally
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        if cell.fault == .head {
            // Part of a request head, then gone: no backend connection is ever made.
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "GET \(cell.path(id: id)) HTTP/1.1\r\nHo")), promise: nil)
            tally.record(id, cell, .none)
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(100)) { channel.reset() }
            return
        }
        let key = "dGhlIHNhbXBsZSBub25jZQ=="
        let request = "GET \(cell.path(id: id)) HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: request)), promise: nil)
        if cell.side == .client && cell.fault == .handshake {
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(300)) { channel.reset() }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if !upgraded {
            head.writeBuffer(&bytes)
            guard let text = head.getString(at: head.readerIndex, length: head.readableBytes), let end = text.range(of: "\r\n\r\n") else { return }
            let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
            guard status == 101 else {
                if cell.side == .backend { tally.record(id, cell, .status(status)) }
                context.close(promise: nil)
                return
            }
            upgraded = true
            let rest = text.utf8.distance(from: text.startIndex, to: end.upperBound)
            bytes = head.getSlice(at: head.readerIndex + rest, length: head.readableBytes - rest) ?? ByteBuffer()
            begin(context)
        }
        guard bytes.readableBytes > 0 else { return }
        for frame in reader.feed(bytes) where frame.opcode == FrameHeader.Opcode.close {
            closeArrived(context, code: frame.code ?? 1005)
            return
        }
    }

    /// The 101 came: fail, or start watching.
    private func begin(_ context: ChannelHandlerContext) {
        let channel = context.channel
        let allocator = channel.allocator
        guard cell.side == .client else {
            let id = self.id, cell = self.cell, tally = self.tally
            let timer = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(12)) {
                tally.record(id, cell, .timeout)
                channel.close(promise: nil)
            }
            channel.closeFuture.whenComplete { _ in
                timer.cancel()
                tally.record(id, cell, .tcp)
            }
            if cell.fault == .ignoreClose {
                context.writeAndFlush(wrapOutboundOut(ChurnWire.close(1000, masked: true, allocator: allocator)), promise: nil)
            }
            if cell.fault == .slowReader { big.start(context, masked: true) }
            return
        }
        ChurnWire.fail(cell.fault, context: context, masked: true)
    }

    private func closeArrived(_ context: ChannelHandlerContext, code: UInt16) {
        if cell.side == .backend {
            tally.record(id, cell, .close(code))
            context.writeAndFlush(wrapOutboundOut(ChurnWire.close(code, masked: true, allocator: context.channel.allocator)))
                .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        } else if cell.fault == .clean {
            context.close(promise: nil)
        }
        // A client ignoring closes reads on until Sluice drops it.
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        big.pump(context)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
