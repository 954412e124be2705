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

    static let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    /// A backend's 101 as the handshake handler reads it.
    static func response(_ fields: [(String, String)], base: [(String, String)] = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)]) throws -> UpstreamResponseParser.Head {
        var text = "HTTP/1.1 101 Switching Protocols\r\n"
        for (name, value) in base + fields { text += "\(name): \(value)\r\n" }
        return try SwitchingAnswerTests.backendHead(text + "\r\n")
    }

    static func validate(_ head: UpstreamResponseParser.Head, for request: UpgradeRequest) throws(UpgradeResponse.Invalid) -> UpgradeResponse {
        try UpgradeResponse.validate(head, for: request, expectedAccept: request.expectedAccept)
    }

    @Test("the backend's 101 is checked against the client's offer")
    func backendResponse() throws {
        let request = try UpgradeRequest.validate(
            Self.head([("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]),
            allowedProtocols: nil
        )
        let ok = try Self.validate(Self.response([("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Extensions", "permessage-deflate")]), for: request)
        #expect(ok.protocol == "chat")
        #expect(ok.usesExtensions)
        #expect(ok.extensions == ["permessage-deflate"])
        #expect(throws: UpgradeResponse.Invalid(message: "backend chose subprotocol 'other', which the client did not offer")) {
            try Self.validate(Self.response([("Sec-WebSocket-Protocol", "other")]), for: request)
        }
        #expect(throws: UpgradeResponse.Invalid(message: "backend chose extension 'x-unknown', which the client did not offer")) {
            try Self.validate(Self.response([("Sec-WebSocket-Extensions", "x-unknown")]), for: request)
        }
        let wrongAccept = try Self.response([("Sec-WebSocket-Accept", "AAAA")], base: [("Upgrade", "websocket"), ("Connection", "Upgrade")])
        #expect(throws: UpgradeResponse.Invalid(message: "backend's Sec-WebSocket-Accept does not match the key")) { try Self.validate(wrongAccept, for: request) }
    }

    /// The checks as they were made on `HTTPHeaders` before the 101 was read in place: the
    /// reference the in-place reading is compared with.
    static func validateOnHTTPHeaders(_ headers: HTTPHeaders, for request: UpgradeRequest) -> Result<UpgradeResponse, UpgradeResponse.Invalid> {
        guard HeaderTokens.contains(headers, "upgrade", token: "websocket") else { return .failure(.init(message: "backend's 101 lacks 'Upgrade: websocket'")) }
        guard HeaderTokens.contains(headers, "connection", token: "upgrade") else { return .failure(.init(message: "backend's 101 lacks 'Connection: upgrade'")) }
        let accepts = headers["sec-websocket-accept"]
        guard accepts.count == 1, accepts[0].trimmingSpacesAndTabs() == request.expectedAccept else {
            return .failure(.init(message: "backend's Sec-WebSocket-Accept does not match the key"))
        }
        let chosen = HeaderTokens.list(headers, "sec-websocket-protocol")
        guard chosen.count <= 1 else { return .failure(.init(message: "backend chose more than one subprotocol")) }
        if let name = chosen.first, !request.protocols.contains(name) {
            return .failure(.init(message: "backend chose subprotocol '\(name)', which the client did not offer"))
        }
        let names = HeaderTokens.extensionNames(headers)
        for name in names where !request.offeredExtensionNames.contains(name) {
            return .failure(.init(message: "backend chose extension '\(name)', which the client did not offer"))
        }
        return .success(UpgradeResponse(protocol: chosen.first, extensions: headers["sec-websocket-extensions"], usesExtensions: !names.isEmpty))
    }

    @Test("the 101 read in place gets the verdict the HTTPHeaders reading gave, over 5,000 generated answers")
    func backendResponseDifferential() throws {
        let request = try UpgradeRequest.validate(
            Self.head([("Sec-WebSocket-Protocol", "chat, superchat"), ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits, x-webkit")]),
            allowedProtocols: nil
        )
        let names = ["Upgrade", "upgrade", "CONNECTION", "Connection", "Sec-WebSocket-Accept", "sec-websocket-accept", "Sec-WebSocket-Protocol",
                     "sec-websocket-PROTOCOL", "Sec-WebSocket-Extensions", "sec-websocket-extensions", "Server", "X-Other"]
        let values = ["websocket", "WebSocket, h2c", "Upgrade", "keep-alive, upgrade", "close", Self.accept, " \(Self.accept)", "AAAA", "chat",
                      "chat, superchat", "other", "", ",", " , chat ,", "permessage-deflate", "PerMessage-Deflate ; server_no_context_takeover",
                      "x-webkit, permessage-deflate", "; ;x-webkit", ";", "x-unknown", "a;b", "\tchat\t"]
        var generator = SimpleRequestHeadTests.SeededGenerator(state: 0x5151CE)
        for round in 0..<5_000 {
            var fields: [(String, String)] = round % 3 == 0 ? [] : [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", Self.accept)]
            for _ in 0..<Int(generator.next() % 5) {
                fields.append((names[Int(generator.next() % UInt64(names.count))], values[Int(generator.next() % UInt64(values.count))]))
            }
            let head = try Self.response(fields, base: [])
            let inPlace: Result<UpgradeResponse, UpgradeResponse.Invalid> = Result { () throws(UpgradeResponse.Invalid) in try Self.validate(head, for: request) }
            let reference = Self.validateOnHTTPHeaders(head.responseHead.headers, for: request)
            #expect(inPlace == reference, "fields \(fields)")
            if inPlace != reference { return }
        }
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
