import NIOCore
import Sluice

/// The faults `churn` mixes, one per connection: which side fails, how, and what the other side
/// must see (the same table as the integration tests' fault matrix).
struct ChurnCell: Hashable, Sendable, CustomStringConvertible {
    enum Side: String, Sendable, CaseIterable { case client, backend }

    enum Fault: String, Sendable, CaseIterable {
        case clean, ignoreClose = "ignore-close", fin, rst
        case midHeader = "mid-header", midPayload = "mid-payload", midFragment = "mid-fragment"
        case handshake, head, slowReader = "slow-reader"
    }

    /// What the watching side saw.
    enum Outcome: Hashable, Sendable, CustomStringConvertible {
        case close(UInt16)
        /// The connection ended without a close frame.
        case tcp
        case status(Int)
        /// Nothing came within the watcher's patience.
        case timeout
        /// The cell needs no watcher (the client vanished before any backend connection).
        case none

        var description: String {
            switch self {
            case .close(let code): "close \(code)"
            case .tcp: "tcp"
            case .status(let status): "status \(status)"
            case .timeout: "timeout"
            case .none: "none"
            }
        }
    }

    var side: Side
    var fault: Fault

    var description: String { "\(side.rawValue)/\(fault.rawValue)" }

    /// Every cell that makes sense over plain TCP: `head` (a partial request head) is a client's
    /// fault only.
    static let all: [ChurnCell] = Side.allCases.flatMap { side in
        Fault.allCases.filter { side == .client || $0 != .head }.map { ChurnCell(side: side, fault: $0) }
    }

    /// The outcome the watching side must see.
    var expected: Outcome {
        switch (side, fault) {
        case (_, .clean): .close(1000)
        case (_, .ignoreClose): .tcp
        case (.client, .fin), (.client, .rst), (.client, .midHeader), (.client, .midFragment), (.client, .slowReader): .close(1001)
        case (.backend, .fin), (.backend, .rst), (.backend, .midHeader), (.backend, .midFragment), (.backend, .slowReader): .close(1014)
        case (_, .midPayload): .tcp
        case (.client, .handshake): .tcp
        case (.backend, .handshake): .status(502)
        case (_, .head): .none
        }
    }

    /// A client that vanishes during the upstream handshake may be gone before Sluice's
    /// connect to the backend completes; Sluice then closes that connection before sending the
    /// request, and the backend has nothing to watch.
    var mayGoUnwatched: Bool { side == .client && fault == .handshake }

    /// The request path that tells the backend its part: `/ws/SIDE/FAULT/ID`.
    func path(id: Int) -> String { "/ws/\(side.rawValue)/\(fault.rawValue)/\(id)" }

    static func parse(path: Substring) -> (cell: ChurnCell, id: Int)? {
        let parts = path.split(separator: "/")
        guard parts.count >= 4, let side = Side(rawValue: String(parts[1])), let fault = Fault(rawValue: String(parts[2])), let id = Int(parts[3]) else {
            return nil
        }
        return (ChurnCell(side: side, fault: fault), id)
    }
}

/// Frames and bits of HTTP the churn peers write by hand: faults are byte-level, which no
/// WebSocket library produces.
enum ChurnWire {
    static let clientMask: (UInt8, UInt8, UInt8, UInt8) = (0x11, 0x22, 0x33, 0x44)
    /// What a slow reader is sent: more than socket buffers hold.
    static let bigPayload = 4 << 20

    static func frame(opcode: UInt8, payload: [UInt8], fin: Bool = true, masked: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        let key = masked ? MaskKey(clientMask.0, clientMask.1, clientMask.2, clientMask.3) : nil
        let header = FrameHeader(fin: fin, opcode: opcode, maskKey: key, payloadLength: UInt64(payload.count))
        var buffer = allocator.buffer(capacity: header.headerLength + payload.count)
        header.write(to: &buffer)
        if masked {
            let mask = [clientMask.0, clientMask.1, clientMask.2, clientMask.3]
            buffer.writeBytes(payload.enumerated().map { $0.element ^ mask[$0.offset & 3] })
        } else {
            buffer.writeBytes(payload)
        }
        return buffer
    }

    static func close(_ code: UInt16, masked: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        frame(opcode: FrameHeader.Opcode.close, payload: [UInt8(code >> 8), UInt8(code & 0xFF)], masked: masked, allocator: allocator)
    }

    /// A big binary frame's header alone (its payload follows in zero-filled pieces).
    static func bigFrameHeader(masked: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        let key = masked ? MaskKey(clientMask.0, clientMask.1, clientMask.2, clientMask.3) : nil
        var buffer = allocator.buffer(capacity: 14)
        FrameHeader(fin: true, opcode: FrameHeader.Opcode.binary, maskKey: key, payloadLength: UInt64(bigPayload)).write(to: &buffer)
        return buffer
    }

    /// Frames read off a stream: only what the peers need, the opcode and, for a close, its
    /// code. Data payloads are passed over as they come, never gathered.
    struct Reader {
        private var pending = ByteBuffer()
        /// Payload bytes of a data frame still to pass over.
        private var skipping = 0

        /// Feeds `bytes`; returns each frame whose header (and, for control frames, payload)
        /// is complete.
        mutating func feed(_ bytes: ByteBuffer) -> [(opcode: UInt8, code: UInt16?)] {
            pending.writeImmutableBuffer(bytes)
            var frames: [(UInt8, UInt16?)] = []
            while pending.readableBytes > 0 {
                if skipping > 0 {
                    let count = min(skipping, pending.readableBytes)
                    pending.moveReaderIndex(forwardBy: count)
                    skipping -= count
                    continue
                }
                let parsed = pending.withUnsafeReadableBytes { FrameHeader.parse($0) }
                guard case .complete(let header) = parsed else { break }
                if header.isControl {
                    guard pending.readableBytes >= header.headerLength + Int(header.payloadLength) else { break }
                    var code: UInt16?
                    if header.opcode == FrameHeader.Opcode.close, header.payloadLength >= 2,
                        let high = pending.getInteger(at: pending.readerIndex + header.headerLength, as: UInt8.self),
                        let low = pending.getInteger(at: pending.readerIndex + header.headerLength + 1, as: UInt8.self)
                    {
                        let key = header.maskKey
                        code = UInt16(high ^ (key?[0] ?? 0)) << 8 | UInt16(low ^ (key?[1] ?? 0))
                    }
                    pending.moveReaderIndex(forwardBy: header.headerLength + Int(header.payloadLength))
                    frames.append((header.opcode, code))
                } else {
                    pending.moveReaderIndex(forwardBy: header.headerLength)
                    skipping = Int(header.payloadLength)
                    frames.append((header.opcode, nil))
                }
            }
            pending.discardReadBytes()
            return frames
        }
    }
}

extension ChurnWire {
    /// Fails a connection after its upgrade, the way `fault` names; `masked` for a client.
    static func fail(_ fault: ChurnCell.Fault, context: ChannelHandlerContext, masked: Bool) {
        let channel = context.channel
        let allocator = channel.allocator
        let loop = context.eventLoop.assumeIsolated()
        func resetSoon() { loop.scheduleTask(in: .milliseconds(50)) { channel.reset() } }
        switch fault {
        case .clean:
            context.writeAndFlush(NIOAny(close(1000, masked: masked, allocator: allocator)), promise: nil)
            loop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
        case .ignoreClose:
            // Reads on and answers nothing, a close included; Sluice must drop this side.
            loop.scheduleTask(in: .seconds(15)) { channel.close(promise: nil) }
        case .fin:
            channel.close(promise: nil)
        case .rst, .handshake, .head:
            channel.reset()
        case .midHeader:
            context.writeAndFlush(NIOAny(ByteBuffer(bytes: [0x82])), promise: nil)
            resetSoon()
        case .midPayload:
            var bytes = allocator.buffer(capacity: 58)
            FrameHeader(fin: true, opcode: FrameHeader.Opcode.binary, maskKey: masked ? MaskKey(clientMask.0, clientMask.1, clientMask.2, clientMask.3) : nil, payloadLength: 208)
                .write(to: &bytes)
            bytes.writeRepeatingByte(0x55, count: 46)
            context.writeAndFlush(NIOAny(bytes), promise: nil)
            resetSoon()
        case .midFragment:
            context.writeAndFlush(NIOAny(frame(opcode: FrameHeader.Opcode.text, payload: Array("first part".utf8), fin: false, masked: masked, allocator: allocator)), promise: nil)
            resetSoon()
        case .slowReader:
            _ = try? channel.syncOptions?.setOption(.autoRead, value: false)
            loop.scheduleTask(in: .seconds(1)) { channel.reset() }
        }
    }

    /// Sends one big binary frame while the channel takes it: slices of one shared buffer, so a
    /// slow reader costs no memory per connection beyond what NIO queues. A class: a flush can
    /// change writability, which pumps again from inside the pump.
    final class BigFrame {
        private static let plain = ByteBuffer(repeating: 0, count: 65_536)
        /// Zeros masked with the client key: the key's bytes, repeated.
        private static let masked: ByteBuffer = {
            var buffer = ByteBufferAllocator().buffer(capacity: 65_536)
            for _ in 0..<(65_536 / 4) { buffer.writeBytes([clientMask.0, clientMask.1, clientMask.2, clientMask.3]) }
            return buffer
        }()

        private var left = 0
        private var isMasked = false

        func start(_ context: ChannelHandlerContext, masked: Bool) {
            isMasked = masked
            context.write(NIOAny(bigFrameHeader(masked: masked, allocator: context.channel.allocator)), promise: nil)
            left = bigPayload
            pump(context)
        }

        /// Writes on while the channel is writable; call again when it is.
        func pump(_ context: ChannelHandlerContext) {
            let source = isMasked ? Self.masked : Self.plain
            while left > 0 && context.channel.isWritable {
                let piece = source.getSlice(at: 0, length: min(left, source.readableBytes))!
                left -= piece.readableBytes
                context.write(NIOAny(piece), promise: nil)
            }
            context.flush()
        }
    }
}

extension ByteBuffer {
    init(repeating byte: UInt8, count: Int) {
        self = ByteBufferAllocator().buffer(capacity: count)
        writeRepeatingByte(byte, count: count)
    }
}

extension MaskKey {
    fileprivate subscript(index: Int) -> UInt8 {
        switch index & 3 {
        case 0: bytes.0
        case 1: bytes.1
        case 2: bytes.2
        default: bytes.3
        }
    }
}

extension Channel {
    /// Ends the connection with a TCP RST: no close frame, no FIN.
    func reset() {
        guard let provider = self as? any SocketOptionProvider else {
            close(promise: nil)
            return
        }
        provider.setSoLinger(NIOLinger(l_onoff: 1, l_linger: 0)).whenComplete { _ in self.close(promise: nil) }
    }
}
