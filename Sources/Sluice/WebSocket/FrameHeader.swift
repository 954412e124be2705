import NIOCore

/// The fixed part of one WebSocket frame (RFC 6455 §5.2), as read off the wire.
///
/// The relay parses headers only; payloads stream through untouched. `headerLength` is the
/// number of bytes the header took on the wire (2 to 14), so the relay can forward it verbatim.
public struct FrameHeader: Sendable, Equatable {
    public var fin: Bool
    /// The three RSV bits, in their wire position (`0x70` mask of the first byte).
    public var rsv: UInt8
    public var opcode: UInt8
    /// The masking key in wire order, when the MASK bit is set.
    public var maskKey: MaskKey?
    public var payloadLength: UInt64
    public var headerLength: Int

    public init(fin: Bool, rsv: UInt8 = 0, opcode: UInt8, maskKey: MaskKey?, payloadLength: UInt64, headerLength: Int = 0) {
        self.fin = fin
        self.rsv = rsv
        self.opcode = opcode
        self.maskKey = maskKey
        self.payloadLength = payloadLength
        self.headerLength = headerLength == 0 ? FrameHeader.encodedLength(payloadLength: payloadLength, masked: maskKey != nil) : headerLength
    }

    public var isControl: Bool { opcode & 0x08 != 0 }

    /// Opcodes RFC 6455 defines.
    public enum Opcode {
        public static let continuation: UInt8 = 0x0
        public static let text: UInt8 = 0x1
        public static let binary: UInt8 = 0x2
        public static let close: UInt8 = 0x8
        public static let ping: UInt8 = 0x9
        public static let pong: UInt8 = 0xA
        static func isKnown(_ opcode: UInt8) -> Bool {
            opcode <= 0x2 || (opcode >= 0x8 && opcode <= 0xA)
        }
    }

    /// What parsing the first bytes of a frame gave.
    public enum ParseResult: Equatable {
        case complete(FrameHeader)
        /// At least this many bytes are needed in total.
        case needMore(Int)
        /// The 64-bit length has its most significant bit set (RFC 6455 §5.2).
        case invalidLength
    }

    /// Parses a header from the start of `bytes`.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> ParseResult {
        guard bytes.count >= 2 else { return .needMore(2) }
        let first = bytes[0]
        let second = bytes[1]
        let masked = second & 0x80 != 0
        let shortLength = second & 0x7F
        var length = 2
        var payloadLength: UInt64
        switch shortLength {
        case 126:
            guard bytes.count >= 4 else { return .needMore(4 + (masked ? 4 : 0)) }
            payloadLength = UInt64(bytes[2]) << 8 | UInt64(bytes[3])
            length = 4
        case 127:
            guard bytes.count >= 10 else { return .needMore(10 + (masked ? 4 : 0)) }
            payloadLength = 0
            for index in 2..<10 { payloadLength = payloadLength << 8 | UInt64(bytes[index]) }
            guard payloadLength & (1 << 63) == 0 else { return .invalidLength }
            length = 10
        default:
            payloadLength = UInt64(shortLength)
        }
        var maskKey: MaskKey?
        if masked {
            guard bytes.count >= length + 4 else { return .needMore(length + 4) }
            maskKey = MaskKey(bytes[length], bytes[length + 1], bytes[length + 2], bytes[length + 3])
            length += 4
        }
        return .complete(
            FrameHeader(
                fin: first & 0x80 != 0, rsv: first & 0x70, opcode: first & 0x0F,
                maskKey: maskKey, payloadLength: payloadLength, headerLength: length
            )
        )
    }

    /// Wire length of a header with this payload length, using the minimal length encoding.
    public static func encodedLength(payloadLength: UInt64, masked: Bool) -> Int {
        let base = payloadLength < 126 ? 2 : (payloadLength <= 0xFFFF ? 4 : 10)
        return base + (masked ? 4 : 0)
    }

    /// Appends this header's wire form (minimal length encoding) to `buffer`.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger((fin ? 0x80 : 0) | rsv | opcode)
        let maskBit: UInt8 = maskKey == nil ? 0 : 0x80
        if payloadLength < 126 {
            buffer.writeInteger(maskBit | UInt8(payloadLength))
        } else if payloadLength <= 0xFFFF {
            buffer.writeInteger(maskBit | 126)
            buffer.writeInteger(UInt16(payloadLength))
        } else {
            buffer.writeInteger(maskBit | 127)
            buffer.writeInteger(payloadLength)
        }
        if let maskKey { buffer.writeBytes([maskKey.bytes.0, maskKey.bytes.1, maskKey.bytes.2, maskKey.bytes.3]) }
    }
}


/// A frame's 4-byte masking key, in wire order.
public struct MaskKey: Sendable, Equatable {
    public var bytes: (UInt8, UInt8, UInt8, UInt8)

    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8) {
        bytes = (b0, b1, b2, b3)
    }

    /// A key no peer can predict (RFC 6455 §5.3), from this thread's `MaskKeyPool`.
    public static func random() -> MaskKey {
        let value = MaskKeyPool.take()
        return MaskKey(UInt8(truncatingIfNeeded: value), UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 24))
    }

    public static func == (lhs: MaskKey, rhs: MaskKey) -> Bool {
        lhs.bytes == rhs.bytes
    }

    subscript(index: Int) -> UInt8 {
        switch index & 3 {
        case 0: return bytes.0
        case 1: return bytes.1
        case 2: return bytes.2
        default: return bytes.3
        }
    }

    /// The key that turns bytes masked with `self` into bytes masked with `other` in one pass.
    func combined(with other: MaskKey) -> MaskKey {
        MaskKey(bytes.0 ^ other.bytes.0, bytes.1 ^ other.bytes.1, bytes.2 ^ other.bytes.2, bytes.3 ^ other.bytes.3)
    }

    /// XORs `bytes` with this key, starting at key position `offset` (the payload offset of the
    /// first byte), eight bytes at a time.
    func apply(to bytes: UnsafeMutableRawBufferPointer, offset: UInt64) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        let shift = Int(offset & 3)
        let rotated = [self[shift], self[shift + 1], self[shift + 2], self[shift + 3]]
        var word: UInt64 = 0
        withUnsafeMutableBytes(of: &word) { wordBytes in
            for index in 0..<8 { wordBytes[index] = rotated[index & 3] }
        }
        let count = bytes.count
        var index = 0
        while index + 8 <= count {
            let value = base.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            base.storeBytes(of: value ^ word, toByteOffset: index, as: UInt64.self)
            index += 8
        }
        while index < count {
            bytes[index] ^= rotated[index & 3]
            index += 1
        }
    }
}
