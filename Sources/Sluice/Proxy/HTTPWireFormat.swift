import NIOCore
import NIOHTTP1

/// The bytes the proxy writes itself on both sides of a plain request: the request head and
/// chunk framing a backend receives, and the response head a client receives, copied from the
/// backend's head field by field. Writing them here, rather than through NIO's encoders, is
/// what lets a response pass without ever becoming `HTTPHeaders`.
enum HTTPWireFormat {
    /// `0 CRLF CRLF`: the end of a chunked body (no trailers).
    static let lastChunk = ByteBuffer(string: "0\r\n\r\n")
    static let crlf = ByteBuffer(string: "\r\n")

    /// The size line that goes before a chunk of `size` bytes.
    static func chunkPrefix(size: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        var prefix = allocator.buffer(capacity: 18)
        prefix.writeString(String(size, radix: 16))
        prefix.writeStaticString("\r\n")
        return prefix
    }

    /// The forwarding fields and `Via` a connection's requests carry, rendered once.
    static func forwardingBlock(_ client: ForwardedHeaders.Client, allocator: ByteBufferAllocator) -> ByteBuffer {
        var block = allocator.buffer(capacity: 256)
        for (name, value) in ForwardedHeaders.fields(for: client) { block.writeField(name, value) }
        block.writeStaticString("Via: 1.1 sluice\r\n")
        return block
    }

    /// What the proxy adds to a response head on its way to the client.
    struct ResponseAdditions {
        var setCookie: String?
        /// The proxy frames the body in chunks (the backend's was chunked or ran until close).
        var chunked = false
        /// The client connection closes after this response.
        var close = false
        /// An HTTP/1.0 client asked to keep the connection and may: it must be told.
        var keepAliveForHTTP10 = false
    }

    /// The client's response head: HTTP/1.1 with the backend's status and reason, its
    /// end-to-end fields as they came, `Via`, and `additions`.
    static func responseHead(_ head: UpstreamResponseParser.Head, adding additions: ResponseAdditions, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: head.bytes.readableBytes + 64 + (additions.setCookie?.utf8.count ?? 0))
        out.writeStaticString("HTTP/1.1 ")
        out.writeInteger(UInt8(ascii: "0") + UInt8(head.status / 100))
        out.writeInteger(UInt8(ascii: "0") + UInt8(head.status / 10 % 10))
        out.writeInteger(UInt8(ascii: "0") + UInt8(head.status % 10))
        out.writeStaticString(" ")
        head.bytes.withUnsafeReadableBytes { raw in
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.reason]))
            out.writeStaticString("\r\n")
            for field in head.fields where field.endToEnd {
                out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[field.name]))
                out.writeStaticString(": ")
                out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[field.value]))
                out.writeStaticString("\r\n")
            }
        }
        out.writeStaticString("Via: 1.1 sluice\r\n")
        if let cookie = additions.setCookie {
            out.writeStaticString("Set-Cookie: ")
            out.writeString(cookie)
            out.writeStaticString("\r\n")
        }
        if additions.chunked { out.writeStaticString("Transfer-Encoding: chunked\r\n") }
        if additions.close {
            out.writeStaticString("Connection: close\r\n")
        } else if additions.keepAliveForHTTP10 {
            out.writeStaticString("Connection: keep-alive\r\n")
        }
        out.writeStaticString("\r\n")
        return out
    }
}

extension ByteBuffer {
    /// `METHOD SP target SP HTTP/1.1 CRLF`.
    mutating func writeRequestLine(_ method: HTTPMethod, _ target: String) {
        writeString(method.rawValue)
        writeStaticString(" ")
        writeString(target)
        writeStaticString(" HTTP/1.1\r\n")
    }

    /// `name: value CRLF`.
    mutating func writeField(_ name: String, _ value: String) {
        writeString(name)
        writeStaticString(": ")
        writeString(value)
        writeStaticString("\r\n")
    }
}
