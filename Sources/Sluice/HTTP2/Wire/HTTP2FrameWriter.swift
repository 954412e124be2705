import NIOCore

/// Writes HTTP/2 frames into the buffer that goes out next, so that a wake-up's frames for
/// every stream leave in one write: the other half of `HTTP2FrameReader`. Frames are split
/// where the peer's SETTINGS_MAX_FRAME_SIZE requires (DATA into several frames, a header block
/// into HEADERS and CONTINUATION frames); flow control and stream states are the caller's.
package enum HTTP2FrameWriter {
    package static func settings(_ settings: [HTTP2WireSetting], to out: inout ByteBuffer) {
        header(length: settings.count * 6, kind: .settings, flags: 0, stream: 0, to: &out)
        for setting in settings {
            out.writeInteger(setting.identifier)
            out.writeInteger(setting.value)
        }
    }

    package static func settingsAck(to out: inout ByteBuffer) {
        header(length: 0, kind: .settings, flags: HTTP2WireFrame.Flag.ack, stream: 0, to: &out)
    }

    package static func ping(opaque: UInt64, ack: Bool, to out: inout ByteBuffer) {
        header(length: 8, kind: .ping, flags: ack ? HTTP2WireFrame.Flag.ack : 0, stream: 0, to: &out)
        out.writeInteger(opaque)
    }

    package static func goAway(lastStream: UInt32, code: HTTP2WireError.Code, debug: String = "", to out: inout ByteBuffer) {
        let debug = debug.utf8.prefix(256)
        header(length: 8 + debug.count, kind: .goAway, flags: 0, stream: 0, to: &out)
        out.writeInteger(lastStream & 0x7fff_ffff)
        out.writeInteger(code.rawValue)
        out.writeBytes(debug)
    }

    package static func windowUpdate(stream: UInt32, increment: UInt32, to out: inout ByteBuffer) {
        precondition(increment > 0 && increment <= 0x7fff_ffff, "a WINDOW_UPDATE increment must be 1...2^31-1")
        header(length: 4, kind: .windowUpdate, flags: 0, stream: stream, to: &out)
        out.writeInteger(increment)
    }

    package static func resetStream(stream: UInt32, code: HTTP2WireError.Code, to out: inout ByteBuffer) {
        header(length: 4, kind: .resetStream, flags: 0, stream: stream, to: &out)
        out.writeInteger(code.rawValue)
    }

    /// `payload` in DATA frames of at most `maxFrameSize` bytes; END_STREAM on the last. An
    /// empty payload is one empty frame (how a stream ends with no more data).
    package static func data(stream: UInt32, payload: ByteBuffer, endStream: Bool, maxFrameSize: Int, to out: inout ByteBuffer) {
        var rest = payload
        repeat {
            let length = min(rest.readableBytes, maxFrameSize)
            let last = length == rest.readableBytes
            header(length: length, kind: .data, flags: last && endStream ? HTTP2WireFrame.Flag.endStream : 0, stream: stream, to: &out)
            var piece = rest.readSlice(length: length)!
            out.writeBuffer(&piece)
        } while rest.readableBytes > 0
    }

    /// A header block that `encode` writes (with NIOHPACK) straight after a HEADERS frame
    /// header; when it comes out longer than `maxFrameSize`, its tail moves into CONTINUATION
    /// frames. If `encode` throws, `out` is left as it was.
    package static func headers<Failure: Error>(
        stream: UInt32, endStream: Bool, maxFrameSize: Int, to out: inout ByteBuffer,
        encode: (inout ByteBuffer) throws(Failure) -> Void
    ) throws(Failure) {
        let start = out.writerIndex
        header(length: 0, kind: .headers, flags: 0, stream: stream, to: &out)
        let blockStart = out.writerIndex
        do {
            try encode(&out)
        } catch {
            out.moveWriterIndex(to: start)
            throw error
        }
        let length = out.writerIndex - blockStart
        let endFlag = endStream ? HTTP2WireFrame.Flag.endStream : 0
        guard length > maxFrameSize else {
            setLength(length, at: start, in: &out)
            out.setInteger(endFlag | HTTP2WireFrame.Flag.endHeaders, at: start + 4)
            return
        }
        var block = out.getSlice(at: blockStart + maxFrameSize, length: length - maxFrameSize)!
        out.moveWriterIndex(to: blockStart + maxFrameSize)
        setLength(maxFrameSize, at: start, in: &out)
        out.setInteger(endFlag, at: start + 4)
        while block.readableBytes > 0 {
            let piece = min(block.readableBytes, maxFrameSize)
            let last = piece == block.readableBytes
            header(length: piece, kind: .continuation, flags: last ? HTTP2WireFrame.Flag.endHeaders : 0, stream: stream, to: &out)
            var slice = block.readSlice(length: piece)!
            out.writeBuffer(&slice)
        }
    }

    /// The 9 bytes in one write (each of a buffer's writes costs more than its bytes).
    private static func header(length: Int, kind: HTTP2WireFrame.Kind, flags: UInt8, stream: UInt32, to out: inout ByteBuffer) {
        let stream = stream & 0x7fff_ffff
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: 9) { bytes in
            bytes[0] = UInt8(truncatingIfNeeded: length >> 16)
            bytes[1] = UInt8(truncatingIfNeeded: length >> 8)
            bytes[2] = UInt8(truncatingIfNeeded: length)
            bytes[3] = kind.rawValue
            bytes[4] = flags
            bytes[5] = UInt8(truncatingIfNeeded: stream >> 24)
            bytes[6] = UInt8(truncatingIfNeeded: stream >> 16)
            bytes[7] = UInt8(truncatingIfNeeded: stream >> 8)
            bytes[8] = UInt8(truncatingIfNeeded: stream)
            return 9
        }
    }

    private static func setLength(_ length: Int, at index: Int, in out: inout ByteBuffer) {
        out.setMultipleIntegers(UInt16(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length), at: index)
    }
}
