import NIOCore

/// Builds the control frames the gateway sends on its own (close, ping), and re-masks
/// forwarded ones.
///
/// Frames to the backend are masked with a fresh key (the gateway is its client); frames to the
/// client are not.
enum ControlFrameEncoder {
    static func close(code: UInt16, reason: String, masked: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        var payload: [UInt8] = [UInt8(code >> 8), UInt8(code & 0xFF)]
        payload += utf8Prefix(reason, maxBytes: 123)
        return frame(opcode: FrameHeader.Opcode.close, payload: payload, masked: masked, allocator: allocator)
    }

    static func frame(opcode: UInt8, payload: [UInt8], masked: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        precondition(payload.count <= 125, "control frame payloads are at most 125 bytes")
        let key = masked ? MaskKey.random() : nil
        let header = FrameHeader(fin: true, opcode: opcode, maskKey: key, payloadLength: UInt64(payload.count))
        var buffer = allocator.buffer(capacity: header.headerLength + payload.count)
        header.write(to: &buffer)
        if let key {
            buffer.writeBytes(payload.enumerated().map { $0.element ^ key[$0.offset] })
        } else {
            buffer.writeBytes(payload)
        }
        return buffer
    }

    /// The longest prefix of `text` of at most `maxBytes` UTF-8 bytes that ends on a character.
    static func utf8Prefix(_ text: String, maxBytes: Int) -> [UInt8] {
        var result: [UInt8] = []
        for character in text {
            let bytes = Array(String(character).utf8)
            if result.count + bytes.count > maxBytes { break }
            result += bytes
        }
        return result
    }
}
