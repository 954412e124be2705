import NIOCore

/// One side of a relayed WebSocket as the relay reaches it: the end of a channel's pipeline
/// (a TCP or TLS connection, or a NIOHTTP2 stream channel behind `HTTP2TunnelCodec`, with a
/// `RelayHandler` there), or a stream of Sluice's own HTTP/2 layer carrying an RFC 8441
/// WebSocket, which has no channel (`HTTP2WireStream` in its tunnel mode).
///
/// An enum rather than a protocol: the relay's per-message writes stay direct calls.
enum RelayPeer {
    case channel(ChannelHandlerContext)
    case stream(HTTP2WireStream)

    var isWritable: Bool {
        switch self {
        case .channel(let context): context.channel.isWritable
        case .stream(let stream): stream.tunnelWritable
        }
    }

    var allocator: ByteBufferAllocator {
        switch self {
        case .channel(let context): context.channel.allocator
        case .stream(let stream): stream.responseAllocator
        }
    }

    func write(_ buffer: ByteBuffer) {
        switch self {
        case .channel(let context): context.write(NIOAny(buffer), promise: nil)
        case .stream(let stream): stream.tunnelWrite(buffer)
        }
    }

    func flush() {
        switch self {
        case .channel(let context): context.flush()
        case .stream(let stream): stream.tunnelFlush()
        }
    }

    /// Reads may go on (they were held while the other side could not take more).
    func read() {
        switch self {
        case .channel(let context): context.read()
        case .stream(let stream): stream.tunnelRead()
        }
    }
}
