import NIOCore

/// HTTP/2 as a client writes it, by hand, for `GatewayProbe.http2Request()`: the connection
/// preface and one GET's HEADERS frame per stream, its header block encoded without the dynamic
/// table, so every request is the same bytes but for the stream id; and a reader of the frames
/// Sluice answers with, to check that the stream got its answer.
enum ProbeHTTP2Frames {
    /// A frame's type, as RFC 9113 numbers it.
    enum FrameType: UInt8 {
        case data = 0, headers = 1, settings = 4, windowUpdate = 8
    }

    static let endStream: UInt8 = 0x1
    static let endHeaders: UInt8 = 0x4
    static let ack: UInt8 = 0x1

    /// The client's preface, an empty SETTINGS, the ACK of the server's SETTINGS (already sent
    /// when the connection became active) and a connection window raised to its maximum, so no
    /// number of answers runs it out.
    static func preface() -> ByteBuffer {
        var buffer = ByteBuffer(string: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        writeHeader(length: 0, type: .settings, flags: 0, stream: 0, to: &buffer)
        writeHeader(length: 0, type: .settings, flags: ack, stream: 0, to: &buffer)
        writeHeader(length: 4, type: .windowUpdate, flags: 0, stream: 0, to: &buffer)
        buffer.writeInteger(UInt32(Int32.max) - 65_535)
        return buffer
    }

    /// `GET path` on `stream` to `authority`, ending the stream: the header block's fields are
    /// static-table entries or literals that are never indexed (RFC 7541 §6.2.2).
    static func get(_ path: String, authority: String, stream: UInt32) -> ByteBuffer {
        var block = ByteBuffer()
        block.writeInteger(UInt8(0x82))  // :method GET
        block.writeInteger(UInt8(0x86))  // :scheme http
        writeLiteral(nameIndex: 4, path, to: &block)  // :path
        writeLiteral(nameIndex: 1, authority, to: &block)  // :authority
        writeLiteral(nameIndex: 58, "probe", to: &block)  // user-agent
        writeLiteral(nameIndex: 19, "*/*", to: &block)  // accept
        var buffer = ByteBuffer()
        writeHeader(length: block.readableBytes, type: .headers, flags: endHeaders | endStream, stream: stream, to: &buffer)
        buffer.writeBuffer(&block)
        return buffer
    }

    /// Puts `stream` in the frame header at the start of `frame`.
    static func setStream(_ stream: UInt32, of frame: inout ByteBuffer) {
        frame.setInteger(stream, at: frame.readerIndex + 5)
    }

    /// Whether `bytes`, whole frames as the server wrote them, answer `stream`: a HEADERS frame
    /// on it and a frame ending it.
    static func answers(_ stream: UInt32, in bytes: ByteBuffer) -> Bool {
        var bytes = bytes
        var headers = false, ended = false
        while let length = bytes.readInteger(as: UInt16.self).flatMap({ high in bytes.readInteger(as: UInt8.self).map { Int(high) << 8 | Int($0) } }),
            let type = bytes.readInteger(as: UInt8.self), let flags = bytes.readInteger(as: UInt8.self),
            let id = bytes.readInteger(as: UInt32.self), bytes.readSlice(length: length) != nil
        {
            guard id & 0x7fff_ffff == stream else { continue }
            if type == FrameType.headers.rawValue { headers = true }
            if (type == FrameType.headers.rawValue || type == FrameType.data.rawValue), flags & endStream != 0 { ended = true }
        }
        return headers && ended
    }

    private static func writeHeader(length: Int, type: FrameType, flags: UInt8, stream: UInt32, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt16(length >> 8))
        buffer.writeInteger(UInt8(length & 0xff))
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(flags)
        buffer.writeInteger(stream)
    }

    /// A literal field never indexed, its name a static-table entry; values under 127 bytes.
    private static func writeLiteral(nameIndex: Int, _ value: String, to buffer: inout ByteBuffer) {
        // 0001xxxx with a 4-bit prefix for the index.
        if nameIndex < 15 {
            buffer.writeInteger(UInt8(0x10 | nameIndex))
        } else {
            buffer.writeInteger(UInt8(0x1f))
            buffer.writeInteger(UInt8(nameIndex - 15))
        }
        precondition(value.utf8.count < 127)
        buffer.writeInteger(UInt8(value.utf8.count))
        buffer.writeString(value)
    }
}
