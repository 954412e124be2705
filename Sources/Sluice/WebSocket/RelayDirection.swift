import NIOCore

/// One direction of a relayed WebSocket (client→backend or backend→client), frame by frame.
///
/// A value type with no I/O. It reads frame headers, checks them (RFC 6455 §5), counts frames,
/// messages and bytes, enforces the route's size limits, and tells the relay which bytes to
/// forward. Data payloads are never copied: they come out as index ranges of the buffer that was
/// read, merged when contiguous, so a read full of small frames is forwarded as one slice. Only
/// control frames (≤ 125 bytes) are gathered whole, because the relay must read them (close
/// codes, its own pongs).
struct RelayDirection {
    /// What this direction accepts.
    struct Configuration {
        /// Frames from the client must be masked; frames from the backend must not be.
        var sourceIsClient: Bool
        /// RSV1 is legal only when permessage-deflate was negotiated.
        var allowsCompressedBit: Bool
        var maxFrameSize: UInt64
        var maxMessageSize: UInt64
        /// Re-mask data frames with fresh keys (client→backend only).
        var remask: Bool
    }

    /// A piece of what to send to the destination, in order.
    enum Output: Equatable {
        /// Bytes `lower..<upper` (absolute indices) of the buffer passed to `process`.
        case range(Int, Int)
        /// Bytes that did not arrive in one read (a header split across reads).
        case bytes(ByteBuffer)
        /// A complete control frame; the relay decides whether it is forwarded.
        case control(ControlFrame)
    }

    /// A control frame gathered whole.
    struct ControlFrame: Equatable {
        var opcode: UInt8
        /// Unmasked payload.
        var payload: [UInt8]
        /// The frame exactly as received (header and masked payload).
        var wire: [UInt8]

        /// For close frames: the status code, when present.
        var closeCode: UInt16? {
            guard opcode == FrameHeader.Opcode.close, payload.count >= 2 else { return nil }
            return UInt16(payload[0]) << 8 | UInt16(payload[1])
        }
    }

    /// A check that failed; the source is closed with `code`.
    struct Violation: Error, Equatable {
        var code: UInt16
        var reason: String
    }

    /// Why `process` returned.
    enum Stop: Equatable {
        /// Every byte was consumed.
        case consumedAll
        /// A frame ended and the caller asked to stop there (it has frames of its own to send).
        case frameBoundary
        /// The source sent a close frame (the last output); later bytes are discarded.
        case closeReceived
        case violation(Violation)
    }

    private enum State {
        /// Waiting for a header; `carried` holds its first bytes when it straddles reads.
        case header(carried: [UInt8])
        case dataPayload(remaining: UInt64, offset: UInt64, rekey: MaskKey?)
        case controlPayload(header: FrameHeader, remaining: Int, frame: ControlFrame)
        /// After a close frame or a violation: nothing more is read from this source.
        case finished
    }

    let configuration: Configuration
    private var state: State = .header(carried: [])
    /// A fragmented data message is open (its last frame had FIN clear).
    private(set) var inMessage = false
    private var messageBytes: UInt64 = 0

    /// Counters since the relay began, read by the connection registry.
    private(set) var frames: UInt64 = 0
    private(set) var messages: UInt64 = 0
    /// Wire bytes of all frames seen (headers included).
    private(set) var bytes: UInt64 = 0

    /// Data frames are parsed and checked but no longer forwarded: the gateway has sent its own
    /// close to the destination, after which no data may follow (control frames still come out,
    /// so the source's answering close is seen).
    private(set) var dropsData = false

    init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Stops forwarding data frames (see `dropsData`); call only between frames.
    mutating func dropData() {
        dropsData = true
    }

    /// A data frame's header went out and its payload has not all followed: the relay must not
    /// insert frames of its own until it has. (Partial headers and control frames are held back,
    /// not forwarded, and frames dropped after a close never went out, so they do not count.)
    var isInsideFrame: Bool {
        if case .dataPayload = state { return !dropsData }
        return false
    }

    var isFinished: Bool {
        if case .finished = state { return true }
        return false
    }

    /// Stops reading this source (after the relay failed it).
    mutating func finish() {
        state = .finished
    }

    /// Consumes `buffer` from its reader index, appending what to forward to `outputs`.
    ///
    /// Remasking rewrites bytes of `buffer` in place, so slices of it must be taken only after
    /// this returns.
    mutating func process(_ buffer: inout ByteBuffer, into outputs: inout [Output], stopAtFrameBoundary: Bool = false) -> Stop {
        bytes &+= UInt64(buffer.readableBytes)
        while buffer.readableBytes > 0 {
            switch state {
            case .finished:
                buffer.moveReaderIndex(to: buffer.writerIndex)
                return .consumedAll

            case .header(let carried):
                let start = buffer.readerIndex
                var header: FrameHeader
                var carriedWire: [UInt8]?
                if carried.isEmpty {
                    let parsed = buffer.withUnsafeReadableBytes { FrameHeader.parse($0) }
                    switch parsed {
                    case .complete(let complete):
                        header = complete
                        if header.isControl { carriedWire = Array(buffer.readableBytesView.prefix(header.headerLength)) }
                        buffer.moveReaderIndex(forwardBy: header.headerLength)
                    case .needMore:
                        state = .header(carried: Array(buffer.readableBytesView))
                        buffer.moveReaderIndex(to: buffer.writerIndex)
                        return .consumedAll
                    case .invalidLength:
                        return fail(1002, "frame length has its most significant bit set")
                    }
                } else {
                    let take = min(14 - carried.count, buffer.readableBytes)
                    let candidate = carried + buffer.readableBytesView.prefix(take)
                    let parsed = candidate.withUnsafeBytes { FrameHeader.parse($0) }
                    switch parsed {
                    case .complete(let complete):
                        header = complete
                        buffer.moveReaderIndex(forwardBy: header.headerLength - carried.count)
                        carriedWire = Array(candidate.prefix(header.headerLength))
                    case .needMore:
                        state = .header(carried: candidate)
                        buffer.moveReaderIndex(forwardBy: take)
                        return .consumedAll
                    case .invalidLength:
                        return fail(1002, "frame length has its most significant bit set")
                    }
                }
                if let violation = check(header) {
                    state = .finished
                    return .violation(violation)
                }
                frames &+= 1
                if header.isControl {
                    let frame = ControlFrame(opcode: header.opcode, payload: [], wire: carriedWire ?? [])
                    state = .controlPayload(header: header, remaining: Int(header.payloadLength), frame: frame)
                    if header.payloadLength == 0, let stop = completeControl(into: &outputs) { return stop }
                    continue
                }
                trackMessage(header)
                var rekey: MaskKey?
                if dropsData {
                    carriedWire = nil
                } else if configuration.remask, let key = header.maskKey {
                    let fresh = MaskKey.random()
                    rekey = key.combined(with: fresh)
                    if var wire = carriedWire {
                        let at = header.headerLength - 4
                        (wire[at], wire[at + 1], wire[at + 2], wire[at + 3]) = fresh.bytes
                        carriedWire = wire
                    } else {
                        let at = start + header.headerLength - 4
                        buffer.setBytes([fresh.bytes.0, fresh.bytes.1, fresh.bytes.2, fresh.bytes.3], at: at)
                    }
                }
                if dropsData {
                    // parsed and counted, not forwarded
                } else if let wire = carriedWire {
                    outputs.append(.bytes(ByteBuffer(bytes: wire)))
                } else {
                    appendRange(start, start + header.headerLength, to: &outputs)
                }
                if header.payloadLength == 0 {
                    state = .header(carried: [])
                    if stopAtFrameBoundary { return .frameBoundary }
                } else {
                    state = .dataPayload(remaining: header.payloadLength, offset: 0, rekey: rekey)
                }

            case .dataPayload(let remaining, let offset, let rekey):
                let count = Int(min(remaining, UInt64(buffer.readableBytes)))
                let start = buffer.readerIndex
                if let rekey {
                    buffer.withUnsafeMutableReadableBytes { raw in
                        rekey.apply(to: UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]), offset: offset)
                    }
                }
                buffer.moveReaderIndex(forwardBy: count)
                if !dropsData { appendRange(start, start + count, to: &outputs) }
                let left = remaining - UInt64(count)
                if left == 0 {
                    state = .header(carried: [])
                    if stopAtFrameBoundary { return .frameBoundary }
                } else {
                    state = .dataPayload(remaining: left, offset: offset + UInt64(count), rekey: rekey)
                }

            case .controlPayload(let header, let remaining, var frame):
                let count = min(remaining, buffer.readableBytes)
                let chunk = buffer.readBytes(length: count)!
                frame.wire += chunk
                if let key = header.maskKey {
                    let base = frame.payload.count
                    frame.payload += chunk.enumerated().map { $0.element ^ key[base + $0.offset] }
                } else {
                    frame.payload += chunk
                }
                state = .controlPayload(header: header, remaining: remaining - count, frame: frame)
                if remaining - count == 0, let stop = completeControl(into: &outputs) { return stop }
            }
        }
        return .consumedAll
    }

    private mutating func fail(_ code: UInt16, _ reason: String) -> Stop {
        state = .finished
        return .violation(Violation(code: code, reason: reason))
    }

    /// Emits the gathered control frame; returns a stop when processing must end here.
    private mutating func completeControl(into outputs: inout [Output]) -> Stop? {
        guard case .controlPayload(_, _, let frame) = state else { return nil }
        outputs.append(.control(frame))
        if frame.opcode == FrameHeader.Opcode.close {
            state = .finished
            return .closeReceived
        }
        state = .header(carried: [])
        return nil
    }

    private mutating func trackMessage(_ header: FrameHeader) {
        if header.opcode != FrameHeader.Opcode.continuation { messageBytes = 0 }
        messageBytes &+= header.payloadLength
        inMessage = !header.fin
        if header.fin { messages &+= 1 }
    }

    /// RFC 6455 §5.2–5.5 and the route's limits, on one header.
    func check(_ header: FrameHeader) -> Violation? {
        let opcode = header.opcode
        guard FrameHeader.Opcode.isKnown(opcode) else {
            return Violation(code: 1002, reason: "unknown opcode \(opcode)")
        }
        let compressedBitAllowed = configuration.allowsCompressedBit && !header.isControl && opcode != FrameHeader.Opcode.continuation
        if header.rsv & ~(compressedBitAllowed ? 0x40 : 0) != 0 {
            return Violation(code: 1002, reason: "reserved bits set without a negotiated extension")
        }
        if configuration.sourceIsClient && header.maskKey == nil {
            return Violation(code: 1002, reason: "client frame not masked")
        }
        if !configuration.sourceIsClient && header.maskKey != nil {
            return Violation(code: 1002, reason: "server frame masked")
        }
        if header.isControl {
            if header.payloadLength > 125 { return Violation(code: 1002, reason: "control frame longer than 125 bytes") }
            if !header.fin { return Violation(code: 1002, reason: "fragmented control frame") }
            return nil
        }
        if opcode == FrameHeader.Opcode.continuation && !inMessage {
            return Violation(code: 1002, reason: "continuation frame outside a fragmented message")
        }
        if opcode != FrameHeader.Opcode.continuation && inMessage {
            return Violation(code: 1002, reason: "new message inside a fragmented message")
        }
        if header.payloadLength > configuration.maxFrameSize {
            return Violation(code: 1009, reason: "frame of \(header.payloadLength) bytes exceeds max_frame_size \(configuration.maxFrameSize)")
        }
        let total = (opcode == FrameHeader.Opcode.continuation ? messageBytes : 0) &+ header.payloadLength
        if total > configuration.maxMessageSize {
            return Violation(code: 1009, reason: "message exceeds max_message_size \(configuration.maxMessageSize)")
        }
        return nil
    }

    private func appendRange(_ lower: Int, _ upper: Int, to outputs: inout [Output]) {
        guard upper > lower else { return }
        if case .range(let previousLower, let previousUpper)? = outputs.last, previousUpper == lower {
            outputs[outputs.count - 1] = .range(previousLower, upper)
        } else {
            outputs.append(.range(lower, upper))
        }
    }
}
