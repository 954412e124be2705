import NIOCore

/// Closes an HTTP/2 connection once Sluice has told the client GOAWAY with an error (a
/// connection error: rapid resets, a CONTINUATION or control-frame flood, a header list too
/// large to decode, a protocol violation). NIOHTTP2 writes that GOAWAY but leaves the socket
/// open, so a misbehaving client could hold it; this handler reads the frame headers of what
/// goes out (beneath NIOHTTP2, above TLS), counts the error, and closes after the GOAWAY is
/// written. A graceful GOAWAY (NO_ERROR, a drain or a reload) is left to the connection
/// manager, which closes once the open streams are done.
final class HTTP2GoAwayWatcher: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Where the outbound frame stream is.
    private enum Position {
        /// Reading a frame header (9 bytes).
        case header
        /// Skipping a frame's payload.
        case payload(remaining: Int)
        /// Reading a GOAWAY's last stream ID and error code (8 bytes), then skipping the rest.
        case goAway(remaining: Int)
    }

    private var position = Position.header
    private var pending: [UInt8] = []
    private var closing = false
    private let onError: (UInt32) -> Void

    /// - Parameter onError: told the error code of a GOAWAY that ends the connection.
    init(onError: @escaping (UInt32) -> Void) {
        self.onError = onError
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        if !closing, let code = scan(buffer) {
            closing = true
            onError(code)
            let written = promise ?? context.eventLoop.makePromise()
            context.write(data, promise: written)
            written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.write(data, promise: promise)
    }

    /// Follows the frames in `buffer`; the error code of a GOAWAY with one, if one ends here.
    /// Works on local copies of the position and the partial header (stored back at the end),
    /// and reads a header that lies whole in the buffer in place: every answer passes here.
    private func scan(_ buffer: ByteBuffer) -> UInt32? {
        var found: UInt32?
        var position = self.position
        var pending = self.pending
        self.pending = []
        defer {
            self.position = position
            self.pending = pending
        }
        buffer.withUnsafeReadableBytes { bytes in
            var index = 0
            while index < bytes.count {
                switch position {
                case .payload(let remaining):
                    let skipped = min(remaining, bytes.count - index)
                    index += skipped
                    position = remaining == skipped ? .header : .payload(remaining: remaining - skipped)
                case .header:
                    let length: Int
                    let type: UInt8
                    if pending.isEmpty, bytes.count - index >= 9 {
                        length = Int(bytes[index]) << 16 | Int(bytes[index + 1]) << 8 | Int(bytes[index + 2])
                        type = bytes[index + 3]
                        index += 9
                    } else {
                        pending.append(bytes[index])
                        index += 1
                        guard pending.count == 9 else { continue }
                        length = Int(pending[0]) << 16 | Int(pending[1]) << 8 | Int(pending[2])
                        type = pending[3]
                        pending.removeAll(keepingCapacity: true)
                    }
                    if type == 0x7 && length >= 8 {
                        position = .goAway(remaining: length)
                    } else {
                        position = length == 0 ? .header : .payload(remaining: length)
                    }
                case .goAway(let remaining):
                    pending.append(bytes[index])
                    index += 1
                    let left = remaining - 1
                    if pending.count == 8 {
                        let code = pending[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                        pending.removeAll(keepingCapacity: true)
                        if code != 0 { found = code }
                        position = left == 0 ? .header : .payload(remaining: left)
                    } else {
                        position = .goAway(remaining: left)
                    }
                }
            }
        }
        return found
    }
}
