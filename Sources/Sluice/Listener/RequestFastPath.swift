import NIOCore
import NIOHTTP1

/// Sits where NIO's request decoder would, and reads simple requests itself
/// (`SimpleRequestHead`: plain heads without a body or with one `Content-Length`), handing the
/// gateway the same `.head`, `.body` and `.end` parts the decoder would have. Those are most
/// requests a gateway sees (page, asset and API reads, form and JSON posts), and NIO's decoder,
/// llhttp and the `ByteToMessageHandler` around them were about a seventh of a proxied
/// request's user CPU.
///
/// At the first head it declines it steps aside for good: it makes NIO's decoder (a connection
/// whose requests are all simple never pays for one), puts it in its place, hands it those
/// bytes (always at a message boundary, since it only ever consumes whole heads and the bodies
/// they announce) and leaves the pipeline. From then on the connection is exactly what it was
/// without the fast path, which is also how every chunked body and malformed request is read.
///
/// After a WebSocket upgrade head it reads nothing more as HTTP, as NIO's decoder does after
/// one: what the client sends behind the head is kept, in order, until the gateway either hands
/// the connection to the relay (`handOverToRelay`: the kept bytes go to the relay and this
/// handler leaves) or answers and closes.
final class RequestFastPath: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPServerRequestPart

    /// The handler right behind this one, given each head directly with what was learned
    /// reading it: no pipeline hop, no type-erased part, and the fields are not read again.
    /// Without one, the parts go down the pipeline. It is also told of the decoder made when
    /// this handler steps aside (it removes the decoder when it hands the connection to a relay).
    let gateway: HTTPGatewayHandler?

    init(gateway: HTTPGatewayHandler?) {
        self.gateway = gateway
    }

    /// Set once NIO's decoder is behind this handler. Until this handler is out of the
    /// pipeline, reads can still reach it re-entrantly (NIO drains the socket when a write
    /// fails, from inside the decoder's error path): they go straight on to the decoder.
    private var steppedAside = false
    /// True while a read is being handled. A read that arrives re-entrantly meanwhile (NIO
    /// drains the socket when a write made while handing on a head fails) holds bytes that
    /// come after the ones being read: they wait in `arrivedMeanwhile` and are read in turn,
    /// never before them and never dropped.
    private var reading = false
    private var arrivedMeanwhile: ByteBuffer?
    /// Bytes still to come of the body of the request read last, passed on as they arrive.
    private var bodyRemaining = 0
    /// An upgrade head was read: nothing more is read as HTTP.
    private var upgraded = false
    /// What the client sent behind its upgrade head, kept for the relay.
    private var keptForRelay: ByteBuffer?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        keptForRelay = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if steppedAside {
            context.fireChannelRead(data)
            return
        }
        var buffer = unwrapInboundIn(data)
        if reading {
            if arrivedMeanwhile == nil {
                arrivedMeanwhile = buffer
            } else {
                arrivedMeanwhile!.writeBuffer(&buffer)
            }
            return
        }
        if upgraded {
            keep(&buffer)
            return
        }
        reading = true
        defer { reading = false }
        while context.channel.isActive, !steppedAside {
            if var later = arrivedMeanwhile {
                arrivedMeanwhile = nil
                buffer.writeBuffer(&later)
            }
            if upgraded {
                keep(&buffer)
                return
            }
            guard buffer.readableBytes > 0 else { return }
            if bodyRemaining > 0 {
                let part = buffer.readSlice(length: min(bodyRemaining, buffer.readableBytes))!
                bodyRemaining -= part.readableBytes
                hand(.body(part), context: context)
                if bodyRemaining == 0 { hand(.end(nil), context: context) }
                continue
            }
            guard case .request(let head, let length, let vetted) = buffer.withUnsafeReadableBytes({ SimpleRequestHead.parse($0) }) else {
                stepAside(context: context, handing: buffer)
                return
            }
            buffer.moveReaderIndex(forwardBy: length)
            if vetted.offersUpgrade {
                upgraded = true
                gateway?.upgradeBytes = self
            }
            hand(.head(head), vetted: vetted, context: context)
            bodyRemaining = vetted.framing.contentLength ?? 0
            if bodyRemaining == 0 { hand(.end(nil), context: context) }
        }
    }

    /// A client that half-closes inside a body it announced sent a truncated request: the
    /// gateway hears of it as from NIO's decoder (a parser error, then the event).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if bodyRemaining > 0, !steppedAside, let event = event as? ChannelEvent, event == .inputClosed {
            bodyRemaining = 0
            context.fireErrorCaught(HTTPParserError.invalidEOFState)
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func keep(_ buffer: inout ByteBuffer) {
        guard buffer.readableBytes > 0 else { return }
        if keptForRelay == nil {
            keptForRelay = buffer
        } else {
            keptForRelay!.writeBuffer(&buffer)
        }
    }

    /// The upgrade was admitted and the relay's handler is behind this one: it gets what the
    /// client sent behind its head, and this handler leaves the pipeline.
    func handOverToRelay() {
        guard let context, upgraded else { return }
        steppedAside = true
        if let kept = keptForRelay {
            keptForRelay = nil
            context.fireChannelRead(NIOAny(kept))
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// Gives the gateway a part directly, or sends it down the pipeline without one.
    private func hand(_ part: HTTPServerRequestPart, vetted: SimpleRequestHead.Vetted? = nil, context: ChannelHandlerContext) {
        if let gateway, let next = gateway.context {
            gateway.receive(part, vetted: vetted, context: next)
        } else {
            context.fireChannelRead(wrapInboundOut(part))
        }
    }

    /// Puts NIO's decoder behind this handler, gives it `buffer`, and leaves.
    private func stepAside(context: ChannelHandlerContext, handing buffer: ByteBuffer) {
        steppedAside = true
        let pipeline = context.pipeline.syncOperations
        let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
        gateway?.decoder = decoder
        do {
            try pipeline.addHandler(decoder, position: .after(self))
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(NIOAny(buffer))
        pipeline.removeHandler(context: context, promise: nil)
    }
}
