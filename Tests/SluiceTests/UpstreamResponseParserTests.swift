import NIOCore
import Testing
@testable import Sluice

/// The backend response reader: heads as byte ranges, bodies by their framing, strictness
/// where readers could disagree — every valid case also fed split at every byte.
@Suite("Upstream response parser")
struct UpstreamResponseParserTests {
    /// What a parse produced, in a comparable form.
    struct Outcome: Equatable {
        var status: Int?
        var framing: UpstreamResponseParser.Framing?
        var keepAlive: Bool?
        var keepAliveTimeout: Int?
        /// End-to-end fields as `name: value`.
        var fields: [String] = []
        var body = ""
        var ended = false
        var reusable = false
    }

    static func parse(_ pieces: [String], toHEAD: Bool = false, close: Bool = false, maxHeadBytes: Int = 64 * 1024) throws -> Outcome {
        var parser = UpstreamResponseParser(maxHeadBytes: maxHeadBytes)
        parser.expectResponse(toHEAD: toHEAD)
        var outcome = Outcome()
        let record: (UpstreamResponseParser.Event) -> Void = { event in
            switch event {
            case .head(let head):
                outcome.status = head.status
                outcome.framing = head.framing
                outcome.keepAlive = head.keepAlive
                outcome.keepAliveTimeout = head.keepAliveTimeout
                let bytes = Array(head.bytes.readableBytesView)
                outcome.fields = head.fields.filter(\.endToEnd).map { field in
                    String(decoding: bytes[field.name], as: UTF8.self) + ": " + String(decoding: bytes[field.value], as: UTF8.self)
                }
            case .body(let bytes): outcome.body += String(buffer: bytes)
            case .end: outcome.ended = true
            }
        }
        for piece in pieces {
            var buffer = ByteBuffer(string: piece)
            while let event = try parser.next(&buffer) { record(event) }
            #expect(buffer.readableBytes == 0)
        }
        if close, let event = try parser.inputClosed() { record(event) }
        outcome.reusable = parser.isReusable
        return outcome
    }

    /// Parses `text` whole and split in two at every byte; all must agree.
    static func parseEverySplit(_ text: String, toHEAD: Bool = false, close: Bool = false) throws -> Outcome {
        let whole = try parse([text], toHEAD: toHEAD, close: close)
        let bytes = Array(text.utf8)
        for cut in 1..<bytes.count {
            let split = try parse([String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self)], toHEAD: toHEAD, close: close)
            #expect(split == whole, "split at \(cut)")
        }
        return whole
    }

    @Test("the other hop-by-hop fields of an answer are marked, in any case; names of their lengths are not")
    func otherHopByHop() throws {
        let outcome = try Self.parseEverySplit(
            "HTTP/1.1 200 OK\r\nTrailer: x\r\nPROXY-CONNECTION: y\r\nUpgrade: h2c\r\nte: trailers\r\nX-Ab: 1\r\nTrailed: 2\r\nContent-Length: 0\r\n\r\n"
        )
        #expect(outcome.fields == ["X-Ab: 1", "Trailed: 2", "Content-Length: 0"])
    }

    @Test("a Content-Length response: hop-by-hop fields marked, body sliced to its length, connection reusable")
    func fixedLength() throws {
        let outcome = try Self.parseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A:1\r\n\r\nhello")
        #expect(outcome == Outcome(status: 200, framing: .length(5), keepAlive: true, keepAliveTimeout: 5, fields: ["Content-Length: 5", "X-A: 1"], body: "hello", ended: true, reusable: true))
    }

    @Test("chunked: extensions ignored, trailers read and dropped, chunks delivered as data")
    func chunked() throws {
        let outcome = try Self.parseEverySplit("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n")
        #expect(outcome == Outcome(status: 200, framing: .chunked, keepAlive: true, fields: [], body: "hello0123456789", ended: true, reusable: true))
    }

    @Test("no length: the body runs until the backend closes, and the connection is not reused")
    func untilClose() throws {
        let outcome = try Self.parseEverySplit("HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nabc", close: true)
        #expect(outcome == Outcome(status: 200, framing: .untilClose, keepAlive: false, fields: ["X-A: 1"], body: "abc", ended: true, reusable: true))
        let unfinished = try Self.parse(["HTTP/1.1 200 OK\r\n\r\nabc"])
        #expect(!unfinished.ended && !unfinished.reusable)
    }

    @Test("no body for HEAD, 204 and 304, whatever Content-Length says; interim 1xx answers are skipped")
    func bodiless() throws {
        #expect(try Self.parseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", toHEAD: true).framing == UpstreamResponseParser.Framing.none)
        #expect(try Self.parseEverySplit("HTTP/1.1 204 No Content\r\n\r\n").ended)
        #expect(try Self.parseEverySplit("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").reusable)
        let interim = try Self.parseEverySplit("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        #expect(interim.status == 201 && interim.body == "ok" && interim.ended)
    }

    @Test("keep-alive: HTTP/1.1 unless close; HTTP/1.0 only if asked; fields named in Connection are hop-by-hop")
    func keepAlive() throws {
        #expect(try Self.parse(["HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"]).keepAlive == false)
        #expect(try Self.parse(["HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"]).keepAlive == false)
        #expect(try Self.parse(["HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"]).keepAlive == true)
        let named = try Self.parse(["HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: 1\r\nX-Public: 2\r\nContent-Length: 0\r\n\r\n"])
        #expect(named.fields == ["X-Public: 2", "Content-Length: 0"])
    }

    @Test("Keep-Alive's timeout is read (quoted or not, the smallest if several, at most a day); other parameters and junk give none")
    func keepAliveTimeout() throws {
        func timeout(_ fields: String) throws -> Int? {
            let outcome = try Self.parseEverySplit("HTTP/1.1 200 OK\r\n\(fields)Content-Length: 0\r\n\r\n")
            #expect(outcome.fields == ["Content-Length: 0"], "Keep-Alive is hop-by-hop")
            return outcome.keepAliveTimeout
        }
        #expect(try timeout("Keep-Alive: timeout=5\r\n") == 5)
        #expect(try timeout("keep-alive: max=100, Timeout = \"7\"\r\n") == 7)
        #expect(try timeout("Keep-Alive: timeout=9\r\nKeep-Alive: timeout=3, max=2\r\n") == 3)
        #expect(try timeout("Keep-Alive: timeout=0\r\n") == 0)
        #expect(try timeout("Keep-Alive: timeout=99999999\r\n") == 86_400)
        for junk in ["max=5", "timeout=", "timeout=5s", "timeout=-1", "timeouts=5", "timeout=1234567890", "timeout=\"5"] {
            #expect(try timeout("Keep-Alive: \(junk)\r\n") == nil, "\(junk)")
        }
        #expect(try timeout("") == nil)
    }

    @Test("malformed responses are refused", arguments: [
        "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5a\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
        // Codings Sluice would drop when it re-frames the body: the client would get coded bytes unlabelled.
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nuntil close",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nuntil close",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\n: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: a\u{1}b\r\n\r\n",
        // Line ends the one pass over a field line meets: a CR alone, a bare LF in a value or
        // a name, a line with no colon, a CR opening a line that is not the blank one.
        "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\rX-A: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: 1\n\r\n",
        "garbage\r\n\r\n",
    ])
    func malformed(response: String) {
        #expect(throws: UpstreamResponseParser.Malformed.self) { try Self.parse([response], close: true) }
    }

    @Test("limits: a head larger than the limit, a chunk-size line without end")
    func limits() {
        let big = "HTTP/1.1 200 OK\r\nX-Big: " + String(repeating: "a", count: 2000) + "\r\n\r\n"
        #expect(throws: UpstreamResponseParser.Malformed.self) { try Self.parse([big], maxHeadBytes: 1024) }
        #expect(throws: UpstreamResponseParser.Malformed.self) { try Self.parse([String(repeating: "a", count: 2000)], maxHeadBytes: 1024) }
        let endless = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5" + String(repeating: ";", count: 5000)
        #expect(throws: UpstreamResponseParser.Malformed.self) { try Self.parse([endless]) }
    }

    @Test("cut short: closing inside a head or body is an error; bytes after a response spoil the connection")
    func cutShort() throws {
        #expect(throws: UpstreamResponseParser.Malformed.self) { try Self.parse(["HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhal"], close: true) }
        #expect(throws: UpstreamResponseParser.Malformed.self) { try Self.parse(["HTTP/1.1 200 OK\r\nContent-"], close: true) }
        let stray = try Self.parse(["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"])
        #expect(stray.ended && stray.body == "ok" && !stray.reusable)
    }

    @Test("an upgrade's 101 is final: its head comes whole, every byte behind it stays for the relay, split anywhere")
    func upgradeSwitches() throws {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        let bytes = Array(text.utf8) + [0x81, 0x02, UInt8(ascii: "h"), UInt8(ascii: "i")]
        for cut in 1..<bytes.count {
            var parser = UpstreamResponseParser()
            parser.expectResponse(toHEAD: false, upgrading: true)
            var heads: [Int] = []
            var rest: [UInt8] = []
            for piece in [bytes[..<cut], bytes[cut...]] {
                var buffer = ByteBuffer(bytes: piece)
                while let event = try parser.next(&buffer) {
                    if case .head(let head) = event { heads.append(head.status) } else { Issue.record("\(event) after a 101") }
                }
                if !heads.isEmpty { rest += buffer.readableBytesView }
            }
            #expect(heads == [101], "split at \(cut)")
            #expect(rest == [0x81, 0x02, UInt8(ascii: "h"), UInt8(ascii: "i")], "split at \(cut)")
            #expect(try parser.inputClosed() == nil && !parser.isReusable)
        }
    }

    @Test("an upgrade refused is an ordinary response (its body framed as any other); a 101 to a plain request is malformed")
    func upgradeRefused() throws {
        var parser = UpstreamResponseParser()
        parser.expectResponse(toHEAD: false, upgrading: true)
        var buffer = ByteBuffer(string: "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
        var events: [String] = []
        while let event = try parser.next(&buffer) {
            switch event {
            case .head(let head): events.append("head \(head.status)")
            case .body(let body): events.append("body \(String(buffer: body))")
            case .end: events.append("end")
            }
        }
        #expect(events == ["head 503", "body busy", "end"])
        #expect(throws: UpstreamResponseParser.Malformed.self) { try Self.parse(["HTTP/1.1 101 Switching Protocols\r\n\r\n"]) }
    }
}
