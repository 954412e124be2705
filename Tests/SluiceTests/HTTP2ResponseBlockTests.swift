import NIOCore
import NIOHPACK
import NIOHTTP1
import Testing
@testable import Sluice

/// Sluice's own encoding of an answer's header block, read back by NIOHPACK's decoder (an
/// implementation no one here wrote) and by hand where the bytes themselves are the point.
@Suite("HTTP/2 answer header blocks")
struct HTTP2ResponseBlockTests {
    static func decode(_ head: HTTPResponseHead) throws -> [(String, String)] {
        var block = ByteBuffer()
        HTTP2ResponseBlock.write(head, to: &block)
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
        return try decoder.decodeHeaders(from: &block).map { ($0.name, $0.value) }
    }

    @Test("a backend's answer: :status first, names lower-cased, values as they were, connection-specific fields and those Connection names left out")
    func proxiedAnswer() throws {
        let long = String(repeating: "v", count: 300)
        let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: [
            "Server": "nginx", "Date": "Sun, 06 Dec 2026 13:00:00 GMT", "Content-Type": "text/plain", "Content-Length": "64",
            "X-Custom-Thing": "Mixed Case Value", "Connection": "keep-alive, X-Hop", "Keep-Alive": "timeout=5", "x-hop": "dropped",
            "Transfer-Encoding": "chunked", "Upgrade": "h2c", "Proxy-Connection": "close", "ETag": "\"abc\"", "set-cookie": "a=1",
            "Set-Cookie": "b=2", "x-long": long, "Strict-Transport-Security": "max-age=60", "Via": "1.1 sluice",
        ])
        let fields = try Self.decode(head)
        #expect(fields.map(\.0) == [
            ":status", "server", "date", "content-type", "content-length", "x-custom-thing", "etag", "set-cookie", "set-cookie", "x-long",
            "strict-transport-security", "via",
        ])
        #expect(fields.first { $0.0 == "x-custom-thing" }?.1 == "Mixed Case Value")
        #expect(fields.first { $0.0 == "x-long" }?.1 == long, "a value of more than 127 bytes has a multi-byte length")
        #expect(fields.filter { $0.0 == "set-cookie" }.map(\.1) == ["a=1", "b=2"])
        #expect(fields.first?.1 == "200")
    }

    @Test("a backend's head as read: its end-to-end fields from their bytes, then via and the sticky cookie; hop-by-hop fields and those Connection names left out")
    func backendHead() throws {
        var parser = UpstreamResponseParser(maxHeadBytes: 64 * 1024)
        parser.expectResponse(toHEAD: false)
        var buffer = ByteBuffer(string: "HTTP/1.1 503 Busy\r\nServer: app\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
            + "Content-Length: 0\r\nX-Trace-ID: Ab\r\nRetry-After: 3\r\n\r\n")
        guard case .head(let head) = try parser.next(&buffer) else {
            Issue.record("no head")
            return
        }
        var block = ByteBuffer()
        HTTP2ResponseBlock.write(.backend(head, setCookie: "pin=2; Path=/"), to: &block)
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
        let fields = try decoder.decodeHeaders(from: &block).map { "\($0.name): \($0.value)" }
        #expect(fields == [
            ":status: 503", "server: app", "content-length: 0", "x-trace-id: Ab", "retry-after: 3", "via: 1.1 sluice", "set-cookie: pin=2; Path=/",
        ])
    }

    @Test("every status: the static table's seven indexed, the rest as literals", arguments: [100, 101, 200, 201, 204, 206, 301, 304, 400, 404, 429, 500, 502, 504, 599])
    func status(code: Int) throws {
        let fields = try Self.decode(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: code)))
        #expect(fields.count == 1)
        #expect(fields.first?.0 == ":status" && fields.first?.1 == String(code))
    }

    @Test("the bytes: an indexed :status, static names past the 4-bit prefix, a new name; all literals without indexing")
    func bytes() throws {
        var block = ByteBuffer()
        HTTP2ResponseBlock.write(HTTPResponseHead(version: .http1_1, status: .notFound, headers: ["via": "x", "content-type": "t", "X-A": "b"]), to: &block)
        #expect(Array(block.readableBytesView) == [
            0x8d,  // :status 404, index 13
            0x0f, 0x2d, 0x01, UInt8(ascii: "x"),  // via: index 60 = 15 + 45, literal without indexing
            0x0f, 0x10, 0x01, UInt8(ascii: "t"),  // content-type: index 31 = 15 + 16
            0x00, 0x03, UInt8(ascii: "x"), UInt8(ascii: "-"), UInt8(ascii: "a"), 0x01, UInt8(ascii: "b"),  // a new name, lower-cased
        ])
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
        #expect(try decoder.decodeHeaders(from: &block).map(\.name) == [":status", "via", "content-type", "x-a"])
    }

    @Test("the static table's names are matched whatever their case, and only whole names; connection-specific names are dropped")
    func staticNames() {
        func name(_ text: String) -> HTTP2ResponseBlock.Name { HTTPSyntax.withBytes(of: text, HTTP2ResponseBlock.classify) }
        #expect(name("Content-Length") == .indexed(28))
        #expect(name("WWW-Authenticate") == .indexed(61))
        #expect(name("content-location") == .indexed(29) && name("content-language") == .indexed(27))
        #expect(name("access-control-allow-origin") == .indexed(20))
        #expect(name("content-lengths") == .literal)
        #expect(name("x-date") == .literal)
        #expect(name("d@te") == .literal)
        #expect(name("Transfer-Encoding") == .dropped && name("KEEP-ALIVE") == .dropped && name("upgrade") == .dropped)
    }
}
