import NIOCore
import NIOHTTP1
import Testing
@testable import Sluice

/// The answer a client gets when its upgrade went through, written from the backend's 101 as
/// it was read: compared with the same answer built the way it was before, through
/// `HTTPHeaders` and NIO's response encoder.
@Suite("Switching answer")
struct SwitchingAnswerTests {
    static let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    static func backendHead(_ text: String) throws -> UpstreamResponseParser.Head {
        var parser = UpstreamResponseParser()
        parser.expectResponse(toHEAD: false, upgrading: true)
        var buffer = ByteBuffer(string: text)
        guard case .head(let head) = try parser.next(&buffer) else {
            Issue.record("no head in \(text.debugDescription)")
            throw UpstreamResponseParser.Malformed(reason: "no head")
        }
        return head
    }

    /// The fields as the answer used to be built: the backend's end-to-end fields without its
    /// accept, then `Upgrade`, `Connection`, the client's accept and the cookie.
    static func fieldsBuiltThroughHTTPHeaders(_ head: UpstreamResponseParser.Head, cookie: String?) -> [String] {
        var headers = ForwardedHeaders.endToEnd(head.responseHead.headers)
        headers.remove(name: "sec-websocket-accept")
        headers.add(name: "Upgrade", value: "websocket")
        headers.add(name: "Connection", value: "Upgrade")
        headers.add(name: "Sec-WebSocket-Accept", value: accept)
        if let cookie { headers.add(name: "Set-Cookie", value: cookie) }
        return headers.map { "\($0.name.lowercased()): \($0.value)" }
    }

    static let backendAnswers = [
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n",
        "HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: upgrade\r\nsec-websocket-ACCEPT: x\r\nSec-WebSocket-Protocol: chat\r\n"
            + "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nDate: Fri, 04 Dec 2026 10:00:00 GMT\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nServer: echo\r\nConnection: Upgrade, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\n"
            + "Upgrade: websocket\r\nSec-WebSocket-Accept: y\r\nX-Request-Id:   abc \r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: z\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ]

    @Test("an HTTP/1.1 client's 101 carries the fields the HTTPHeaders path gave it, in the same order", arguments: backendAnswers)
    func http1(backend: String) throws {
        let head = try Self.backendHead(backend)
        for cookie in [nil, "sluice_backend=1; Path=/; HttpOnly"] as [String?] {
            var answer = SwitchingAnswer(backendHead: head, accept: Self.accept)
            answer.setCookie = cookie
            let written = try Self.backendHead(String(buffer: answer.http1Bytes(allocator: ByteBufferAllocator())))
            #expect(written.status == 101)
            let fields = written.responseHead.headers.map { "\($0.name.lowercased()): \($0.value)" }
            #expect(fields == Self.fieldsBuiltThroughHTTPHeaders(head, cookie: cookie))
            #expect(String(buffer: answer.http1Bytes(allocator: ByteBufferAllocator())).hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        }
    }

    @Test("the third answer: hop-by-hop fields and those named in Connection stay behind, the rest byte for byte")
    func leftBehind() throws {
        let head = try Self.backendHead(Self.backendAnswers[2])
        let text = String(buffer: SwitchingAnswer(backendHead: head, accept: Self.accept).http1Bytes(allocator: ByteBufferAllocator()))
        #expect(
            text == "HTTP/1.1 101 Switching Protocols\r\nServer: echo\r\nX-Request-Id:   abc \r\n"
                + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(Self.accept)\r\n\r\n"
        )
    }

    @Test("an RFC 8441 stream's 200 has the end-to-end fields without Upgrade, Connection or either accept", arguments: backendAnswers)
    func http2(backend: String) throws {
        let head = try Self.backendHead(backend)
        var answer = SwitchingAnswer(backendHead: head, accept: Self.accept)
        answer.setCookie = "sluice_backend=0"
        let expected = Self.fieldsBuiltThroughHTTPHeaders(head, cookie: "sluice_backend=0").filter {
            !$0.hasPrefix("upgrade:") && !$0.hasPrefix("connection:") && !$0.hasPrefix("sec-websocket-accept:")
        }
        #expect(answer.http2Fields.map { "\($0.name.lowercased()): \($0.value)" } == expected)
    }
}
