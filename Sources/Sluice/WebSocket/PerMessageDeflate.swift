import CZlib
import NIOCore
import NIOHTTP1

/// The permessage-deflate extension (RFC 7692): its negotiated parameters and the codec that
/// compresses and decompresses whole messages.
///
/// The relay never needs it (compressed frames pass through with RSV1 untouched); the built-in
/// echo backend and `sluice-bench load --deflate` use it, so compressed traffic can be
/// generated and answered on a machine with nothing else installed.
public struct PerMessageDeflate: Sendable, Equatable {
    /// The server resets its compressor after every message.
    public var serverNoContextTakeover = false
    /// The client resets its compressor after every message.
    public var clientNoContextTakeover = false
    /// The server's LZ77 window (8...15; zlib's raw DEFLATE needs at least 9 to compress).
    public var serverMaxWindowBits = 15
    /// The client's LZ77 window.
    public var clientMaxWindowBits = 15

    public init() {}

    /// The extension's name in `Sec-WebSocket-Extensions`.
    public static let name = "permessage-deflate"

    /// What a client offers: context takeover both ways, and the server may narrow the
    /// client's window.
    public static let clientOffer = "permessage-deflate; client_max_window_bits"

    /// Why an offer or a response cannot be used.
    public struct NegotiationError: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// The server's choice among a client's offers (its `Sec-WebSocket-Extensions`): the first
    /// permessage-deflate offer it can honour, and the response header value; nil when none was
    /// offered or none is valid (the connection then goes uncompressed).
    public static func accept(offers request: HTTPHeaders) -> (PerMessageDeflate, response: String)? {
        for offer in HeaderTokens.list(request, "sec-websocket-extensions") {
            guard let (name, parameters) = parseElement(offer), name == Self.name else { continue }
            guard let settings = try? PerMessageDeflate(parameters: parameters, fromServer: false) else { continue }
            var response = [Self.name]
            if settings.serverNoContextTakeover { response.append("server_no_context_takeover") }
            if settings.clientNoContextTakeover { response.append("client_no_context_takeover") }
            if settings.serverMaxWindowBits < 15 { response.append("server_max_window_bits=\(settings.serverMaxWindowBits)") }
            return (settings, response.joined(separator: "; "))
        }
        return nil
    }

    /// The client's reading of the server's response to `clientOffer` (its 101's headers); nil
    /// when the server did not accept the extension.
    public static func accepted(response: HTTPHeaders) throws(NegotiationError) -> PerMessageDeflate? {
        let answer = HeaderTokens.list(response, "sec-websocket-extensions")
        let elements = answer.compactMap { parseElement($0) }
        guard let element = elements.first(where: { $0.name == Self.name }) else { return nil }
        guard elements.count == 1 else { throw NegotiationError(description: "the server accepted more than one extension: \(answer)") }
        return try PerMessageDeflate(parameters: element.parameters, fromServer: true)
    }

    /// Parameters of one offer (client to server) or one response (server to client).
    init(parameters: [(String, String?)], fromServer: Bool) throws(NegotiationError) {
        var seen = Set<String>()
        for (key, value) in parameters {
            guard seen.insert(key).inserted else { throw NegotiationError(description: "parameter \(key) appears twice") }
            switch key {
            case "server_no_context_takeover", "client_no_context_takeover":
                guard value == nil else { throw NegotiationError(description: "\(key) takes no value") }
                if key == "server_no_context_takeover" { serverNoContextTakeover = true } else { clientNoContextTakeover = true }
            case "server_max_window_bits":
                serverMaxWindowBits = try Self.windowBits(key, value)
            case "client_max_window_bits":
                // A client may offer it without a value (it accepts any window the server names).
                if value == nil && !fromServer { continue }
                clientMaxWindowBits = try Self.windowBits(key, value)
            default:
                throw NegotiationError(description: "unknown parameter \(key)")
            }
        }
        // zlib cannot produce a raw stream with a 256-byte window.
        if serverMaxWindowBits == 8 { serverMaxWindowBits = 9 }
        if fromServer, clientMaxWindowBits == 8 {
            throw NegotiationError(description: "client_max_window_bits=8 cannot be honoured by zlib")
        }
    }

    private static func windowBits(_ key: String, _ value: String?) throws(NegotiationError) -> Int {
        guard let value, let bits = Int(value), (8...15).contains(bits) else {
            throw NegotiationError(description: "\(key) must be 8...15, got \(value ?? "no value")")
        }
        return bits
    }

    /// `name; key; key=value; key="value"` → lower-cased name and parameters.
    private static func parseElement(_ element: String) -> (name: String, parameters: [(String, String?)])? {
        let parts = element.split(separator: ";").map { $0.trimmingSpacesAndTabs() }
        guard let name = parts.first, !name.isEmpty else { return nil }
        let parameters = parts.dropFirst().map { part -> (String, String?) in
            guard let equals = part.firstIndex(of: "=") else { return (part.lowercased(), nil) }
            var value = part[part.index(after: equals)...].trimmingSpacesAndTabs()
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            return (part[..<equals].trimmingSpacesAndTabs().lowercased(), value)
        }
        return (name.lowercased(), parameters)
    }

    /// The compressor for messages this side sends, and the decompressor for those it receives.
    public func codec(isServer: Bool, maxMessageSize: Int) throws(DeflateError) -> (MessageCompressor, MessageDecompressor) {
        let sendBits = isServer ? serverMaxWindowBits : clientMaxWindowBits
        let sendReset = isServer ? serverNoContextTakeover : clientNoContextTakeover
        return (
            try MessageCompressor(windowBits: sendBits, resetPerMessage: sendReset),
            try MessageDecompressor(maxMessageSize: maxMessageSize)
        )
    }
}

/// A failure in zlib, or a message that inflates past its limit.
public struct DeflateError: Error, Equatable, CustomStringConvertible {
    public var description: String
}

/// The four bytes a sync flush ends with; RFC 7692 §7.2.1 drops them from each message.
private let syncFlushTail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

/// Compresses one message at a time into a raw DEFLATE stream (RFC 7692 §7.2.1).
public final class MessageCompressor {
    private let stream: UnsafeMutablePointer<z_stream>
    private let resetPerMessage: Bool

    init(windowBits: Int, resetPerMessage: Bool) throws(DeflateError) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        self.resetPerMessage = resetPerMessage
        let status = deflateInit2_(
            stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -Int32(windowBits), 8, Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size)
        )
        guard status == Z_OK else {
            stream.deallocate()
            throw DeflateError(description: "deflateInit2 failed (\(status))")
        }
    }

    deinit {
        deflateEnd(stream)
        stream.deallocate()
    }

    /// The compressed payload of a message whose uncompressed bytes are `message`.
    public func compress(_ message: ByteBuffer, allocator: ByteBufferAllocator) throws(DeflateError) -> ByteBuffer {
        var output = allocator.buffer(capacity: max(64, message.readableBytes / 2 + 16))
        let (result, _) = pump(stream, input: message, into: &output, limit: nil) { deflate($0, Z_SYNC_FLUSH) }
        guard result == Z_OK || result == Z_BUF_ERROR else { throw DeflateError(description: "deflate failed (\(result))") }
        if output.readableBytes >= 4, output.getBytes(at: output.writerIndex - 4, length: 4) == syncFlushTail {
            output.moveWriterIndex(to: output.writerIndex - 4)
        }
        if resetPerMessage { deflateReset(stream) }
        return output
    }
}

/// Decompresses the payloads of compressed messages, refusing any that inflates past
/// `maxMessageSize` (a small message may expand a thousandfold).
public final class MessageDecompressor {
    private let stream: UnsafeMutablePointer<z_stream>
    private let maxMessageSize: Int

    init(maxMessageSize: Int) throws(DeflateError) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        self.maxMessageSize = maxMessageSize
        // A 15-bit window inflates streams made with any smaller one.
        let status = inflateInit2_(stream, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else {
            stream.deallocate()
            throw DeflateError(description: "inflateInit2 failed (\(status))")
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
    }

    /// The uncompressed bytes of a message whose compressed payload is `payload`.
    public func decompress(_ payload: ByteBuffer, allocator: ByteBufferAllocator) throws(DeflateError) -> ByteBuffer {
        var input = payload
        input.writeBytes(syncFlushTail)
        var output = allocator.buffer(capacity: max(256, min(maxMessageSize, payload.readableBytes * 4)))
        let (result, tooLarge) = pump(stream, input: input, into: &output, limit: maxMessageSize) { inflate($0, Z_SYNC_FLUSH) }
        if tooLarge {
            inflateReset(stream)
            throw DeflateError(description: "message inflates past \(maxMessageSize) bytes")
        }
        switch result {
        case Z_OK, Z_BUF_ERROR:
            return output
        case Z_STREAM_END:
            // The sender ended its stream (a final block): the next message starts a new one.
            inflateReset(stream)
            return output
        default:
            let reason = stream.pointee.msg.map { String(cString: $0) } ?? "zlib status \(result)"
            inflateReset(stream)
            throw DeflateError(description: "invalid compressed data: \(reason)")
        }
    }
}

/// Feeds all of `input` to `step` (one `deflate` or `inflate` call) and appends what it makes to
/// `output`, until the input is used up and nothing more is pending, zlib stops, or the output
/// passes `limit`. Returns zlib's last status and whether the limit was passed.
private func pump(
    _ stream: UnsafeMutablePointer<z_stream>, input: ByteBuffer, into output: inout ByteBuffer, limit: Int?,
    _ step: (UnsafeMutablePointer<z_stream>) -> Int32
) -> (Int32, overLimit: Bool) {
    var result: Int32 = Z_OK
    var overLimit = false
    input.withUnsafeReadableBytes { input in
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress)
        stream.pointee.avail_in = uInt(input.count)
        repeat {
            if let limit, output.readableBytes > limit {
                overLimit = true
                break
            }
            if output.writableBytes < 256 { output.reserveCapacity(minimumWritableBytes: max(4096, output.capacity)) }
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { space in
                stream.pointee.next_out = space.bindMemory(to: Bytef.self).baseAddress
                stream.pointee.avail_out = uInt(space.count)
                result = step(stream)
                return space.count - Int(stream.pointee.avail_out)
            }
        } while result == Z_OK && (stream.pointee.avail_in > 0 || stream.pointee.avail_out == 0)
        stream.pointee.next_in = nil
        stream.pointee.next_out = nil
    }
    return (result, overLimit || (limit.map { output.readableBytes > $0 } ?? false))
}
