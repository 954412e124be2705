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

    /// The `Via` field Sluice adds both ways: its line for HTTP/1, its value for HTTP/2.
    static let via: StaticString = "Via: 1.1 sluice\r\n"
    static let viaValue: StaticString = "1.1 sluice"

    /// `data` as one chunk of a chunked body: its size line, the data (not copied), CRLF, each
    /// handed to `write` in order.
    static func chunk(_ data: ByteBuffer, allocator: ByteBufferAllocator, _ write: (ByteBuffer) -> Void) {
        var sizeLine = allocator.buffer(capacity: 18)
        sizeLine.writeString(String(data.readableBytes, radix: 16))
        sizeLine.writeStaticString("\r\n")
        write(sizeLine)
        write(data)
        write(crlf)
    }

    /// The forwarding fields for `client` (extending a trusted proxy's `chains`) and `Via`.
    static func writeForwarding(_ client: ForwardedHeaders.Client, chains: (for: String, forwarded: String) = ("", ""), into buffer: inout ByteBuffer) {
        ForwardedHeaders.write(client, chains: chains, into: &buffer)
        buffer.writeStaticString(via)
    }

    /// The forwarding fields and `Via` a connection's requests carry, rendered once per `Host`:
    /// without a trusted proxy's chains they depend only on the client connection and the
    /// `Host`, which a connection's requests mostly share. An HTTP/1 connection and an HTTP/2
    /// connection (for all its streams) each keep one.
    struct ForwardingCache {
        private var host: String?
        private var block: ByteBuffer?

        /// The rendered fields for `client`; nil when a trusted proxy's chains make them
        /// depend on each request.
        mutating func block(for client: ForwardedHeaders.Client, allocator: ByteBufferAllocator) -> ByteBuffer? {
            guard !client.trustsIncomingChain else { return nil }
            if let block, host == client.host { return block }
            var rendered = allocator.buffer(capacity: 256)
            writeForwarding(client, into: &rendered)
            host = client.host
            block = rendered
            return rendered
        }
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
    /// end-to-end field lines as they came (byte for byte), `Via`, and `additions`.
    static func responseHead(_ head: UpstreamResponseParser.Head, adding additions: ResponseAdditions, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: head.bytes.readableBytes + 64 + (additions.setCookie?.utf8.count ?? 0))
        out.writeStaticString("HTTP/1.1 ")
        out.writeInteger(UInt8(ascii: "0") + UInt8(head.status / 100))
        out.writeInteger(UInt8(ascii: "0") + UInt8(head.status / 10 % 10))
        out.writeInteger(UInt8(ascii: "0") + UInt8(head.status % 10))
        out.writeStaticString(" ")
        _ = head.bytes.withUnsafeReadableBytes { raw in
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.reason]))
        }
        out.writeStaticString("\r\n")
        writeEndToEndFields(of: head, into: &out)
        out.writeStaticString(via)
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

extension HTTPWireFormat {
    /// Copies the end-to-end field lines of a backend's response head into `out` as they came,
    /// leaving out any named `omitted` (lower case). Lines are copied in runs: usually one copy
    /// for all of them, or a few around the fields left out.
    static func writeEndToEndFields(of head: UpstreamResponseParser.Head, omitting omitted: StaticString? = nil, into out: inout ByteBuffer) {
        head.bytes.withUnsafeReadableBytes { raw in
            var run: Range<Int>?
            for field in head.fields {
                if field.endToEnd, !(omitted.map { HTTPSyntax.equalsIgnoringCase(raw[field.name], $0) } ?? false) {
                    run = (run?.lowerBound ?? field.name.lowerBound)..<field.lineEnd
                } else if let copied = run {
                    out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[copied]))
                    run = nil
                }
            }
            if let copied = run { out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[copied])) }
        }
    }

    /// The end-to-end fields of a backend's response head, as `HTTPHeaders` (for a client that
    /// is not sent HTTP/1 bytes), with room for `extra` more that the caller adds.
    static func endToEndFields(of head: UpstreamResponseParser.Head, extra: Int = 0) -> HTTPHeaders {
        // A list made into `HTTPHeaders` at the end: `HTTPHeaders.add` scans each name for
        // non-ASCII bytes, which a name the parser read as a token cannot have.
        var list: [(String, String)] = []
        list.reserveCapacity(head.fields.count + extra)
        head.bytes.withUnsafeReadableBytes { raw in
            for field in head.fields where field.endToEnd {
                list.append((
                    String(decoding: UnsafeRawBufferPointer(rebasing: raw[field.name]), as: UTF8.self),
                    String(decoding: UnsafeRawBufferPointer(rebasing: raw[field.value]), as: UTF8.self)
                ))
            }
        }
        return HTTPHeaders(list)
    }
}

extension ByteBuffer {
    /// `METHOD SP target SP HTTP/1.1 CRLF`.
    mutating func writeRequestLine(_ method: HTTPMethod, _ target: String) {
        writeLine(method.rawValue, " ", target, " HTTP/1.1\r\n")
    }

    /// `name: value CRLF`.
    mutating func writeField(_ name: String, _ value: String) {
        writeLine(name, ": ", value, "\r\n")
    }

    /// The four pieces in one write to the buffer (each write costs more than the bytes it
    /// copies, and a head is a write per field).
    private mutating func writeLine(_ first: String, _ separator: StaticString, _ second: String, _ end: StaticString) {
        let count = first.utf8.count + separator.utf8CodeUnitCount + second.utf8.count + end.utf8CodeUnitCount
        writeWithUnsafeMutableBytes(minimumWritableBytes: count) { out in
            var at = 0
            func copy(_ bytes: UnsafeBufferPointer<UInt8>) {
                if let base = bytes.baseAddress { (out.baseAddress! + at).copyMemory(from: base, byteCount: bytes.count) }
                at += bytes.count
            }
            HTTPSyntax.withBytes(of: first, copy)
            separator.withUTF8Buffer(copy)
            HTTPSyntax.withBytes(of: second, copy)
            end.withUTF8Buffer(copy)
            return at
        }
    }
}
