import NIOCore
import NIOHTTP1

/// What a client is told when its upgrade went through: the backend's 101 as it came, with the
/// `Sec-WebSocket-Accept` for the client's own key (the backend answered Sluice's) and perhaps
/// the sticky cookie. An HTTP/1.1 client gets it as bytes copied from the backend's head, with
/// no `HTTPHeaders` and no response encoder in between; an RFC 8441 stream gets a 200 carrying
/// the same end-to-end fields.
struct SwitchingAnswer {
    /// The backend's 101, as read.
    var backendHead: UpstreamResponseParser.Head
    /// The accept value for the client's key.
    var accept: String
    var setCookie: String?

    /// The 101 for an HTTP/1.1 client: the backend's end-to-end fields (its accept left out),
    /// then `Upgrade`, `Connection`, the client's accept and the cookie.
    func http1Bytes(allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: backendHead.bytes.readableBytes + 128 + (setCookie?.utf8.count ?? 0))
        out.writeStaticString("HTTP/1.1 101 Switching Protocols\r\n")
        HTTPWireFormat.writeEndToEndFields(of: backendHead, omitting: "sec-websocket-accept", into: &out)
        out.writeStaticString("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
        out.writeString(accept)
        out.writeStaticString("\r\n")
        if let setCookie {
            out.writeStaticString("Set-Cookie: ")
            out.writeString(setCookie)
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("\r\n")
        return out
    }

    /// The fields of the 200 an RFC 8441 stream gets: the backend's end-to-end fields without
    /// its accept (RFC 8441 §5 has no `Upgrade`, `Connection` or accept), and the cookie.
    var http2Fields: HTTPHeaders {
        var headers = HTTPWireFormat.endToEndFields(of: backendHead)
        headers.remove(name: "sec-websocket-accept")
        if let setCookie { headers.add(name: "Set-Cookie", value: setCookie) }
        return headers
    }
}
