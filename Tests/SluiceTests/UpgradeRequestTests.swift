import Crypto
import Foundation
import NIOHTTP1
import Testing
@testable import Sluice

@Suite("WebSocket handshake validation")
struct UpgradeRequestTests {
    static func head(removing: [String] = [], _ extra: [(String, String)] = [], method: HTTPMethod = .GET, version: HTTPVersion = .http1_1) -> HTTPRequestHead {
        var headers = HTTPHeaders([
            ("Host", "example.com"), ("Upgrade", "websocket"), ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        ])
        for name in removing { headers.remove(name: name) }
        for (name, value) in extra { headers.add(name: name, value: value) }
        return HTTPRequestHead(version: version, method: method, uri: "/ws", headers: headers)
    }

    static func rejection(_ head: HTTPRequestHead, allowed: [String]? = nil) -> UpgradeRequest.Rejection? {
        do {
            _ = try UpgradeRequest.validate(head, allowedProtocols: allowed)
            return nil
        } catch {
            return error
        }
    }

    @Test("a valid request passes, and the accept value is RFC 6455's example")
    func valid() throws {
        let request = try UpgradeRequest.validate(Self.head(), allowedProtocols: nil)
        #expect(request.expectedAccept == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test("keys are accepted as Foundation's base64 decoder would for 16 bytes, and the accept value matches its encoding")
    func keysOnBytes() {
        let shapes = [
            "dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAB==", "AAAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAAAA=", "AAAAAAAAAAAAAAAA AAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAA-_==", "AAAAAAAAAAAAAAAAAAAAAA=A", "", "c2hvcnQ=", "+/+/+/+/+/+/+/+/+/+/+/==", "AAAAAAAAAAAAAAAAAAAAAé=",
        ]
        for key in shapes {
            #expect(WebSocketKey.isValid(key) == (Data(base64Encoded: key)?.count == 16), "\(key)")
        }
        var generator = SystemRandomNumberGenerator()
        for length in 0..<40 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(bytes.withUnsafeBytes { WebSocketKey.base64($0) } == Data(bytes).base64EncodedString())
            let key = Data(bytes.prefix(16) + [UInt8](repeating: 7, count: max(0, 16 - bytes.count))).base64EncodedString()
            let expected = Data(Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
            #expect(WebSocketKey.isValid(key) && WebSocketKey.accept(for: key) == expected)
        }
    }

    @Test("tokens are case-insensitive and may come in lists or repeated headers")
    func tokens() throws {
        var head = Self.head(removing: ["connection", "upgrade"])
        head.headers.add(name: "connection", value: "keep-alive")
        head.headers.add(name: "CONNECTION", value: "UPGRADE")
        head.headers.add(name: "upgrade", value: "h2c, WebSocket")
        #expect(Self.rejection(head) == nil)
    }

    @Test("each malformed request gets its status", arguments: [
        (head(method: .POST), 400), (head(version: .http1_0), 400),
        (head(removing: ["connection"]), 400), (head(removing: ["upgrade"]), 400),
        (head(removing: ["sec-websocket-version"]), 426), (head(removing: ["sec-websocket-version"], [("Sec-WebSocket-Version", "8")]), 426),
        (head(removing: ["sec-websocket-key"]), 400), (head(removing: ["sec-websocket-key"], [("Sec-WebSocket-Key", "c2hvcnQ=")]), 400),
        (head([("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]), 400),
        (head([("Content-Length", "5")]), 400), (head([("Transfer-Encoding", "chunked")]), 400),
        (head(removing: ["host"]), 400), (head([("Sec-WebSocket-Protocol", "bad proto")]), 400),
    ])
    func malformed(head: HTTPRequestHead, status: Int) {
        #expect(Self.rejection(head)?.status.code == UInt(status))
    }

    @Test("426 for a wrong version tells the client which one to use")
    func versionHeader() {
        let rejection = Self.rejection(Self.head(removing: ["sec-websocket-version"], [("Sec-WebSocket-Version", "8")]))
        #expect(rejection?.headers.contains { $0.0 == "Sec-WebSocket-Version" && $0.1 == "13" } == true)
    }

    @Test("the route's list narrows the offer, in the client's order")
    func narrowing() throws {
        let head = Self.head([("Sec-WebSocket-Protocol", "c, b"), ("Sec-WebSocket-Protocol", "a")])
        #expect(try UpgradeRequest.validate(head, allowedProtocols: ["a", "b"]).protocols == ["b", "a"])
        #expect(try UpgradeRequest.validate(head, allowedProtocols: nil).protocols == ["c", "b", "a"])
        #expect(Self.rejection(head, allowed: ["z"])?.message.contains("allowed: z") == true)
    }

    static func response(_ headers: [(String, String)]) -> HTTPResponseHead {
        HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: HTTPHeaders(
            [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")] + headers
        ))
    }

    @Test("the backend's 101 is checked against the client's offer")
    func backendResponse() throws {
        let request = try UpgradeRequest.validate(
            Self.head([("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]),
            allowedProtocols: nil
        )
        let ok = try UpgradeResponse.validate(Self.response([("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Extensions", "permessage-deflate")]), for: request)
        #expect(ok.protocol == "chat")
        #expect(ok.usesExtensions)
        #expect(throws: UpgradeResponse.Invalid.self) {
            try UpgradeResponse.validate(Self.response([("Sec-WebSocket-Protocol", "other")]), for: request)
        }
        #expect(throws: UpgradeResponse.Invalid.self) {
            try UpgradeResponse.validate(Self.response([("Sec-WebSocket-Extensions", "x-unknown")]), for: request)
        }
        var wrongAccept = Self.response([])
        wrongAccept.headers.replaceOrAdd(name: "Sec-WebSocket-Accept", value: "AAAA")
        #expect(throws: UpgradeResponse.Invalid.self) { try UpgradeResponse.validate(wrongAccept, for: request) }
    }

    @Test("hop-by-hop headers and those named in Connection are dropped")
    func hopByHop() {
        let headers = HTTPHeaders([
            ("Connection", "keep-alive, X-Secret"), ("Keep-Alive", "5"), ("X-Secret", "1"), ("Upgrade", "websocket"),
            ("TE", "trailers"), ("Cookie", "a=b"), ("Sec-WebSocket-Key", "k"),
        ])
        let kept = ForwardedHeaders.endToEnd(headers)
        #expect(kept.map(\.name) == ["Cookie", "Sec-WebSocket-Key"])
    }
}
