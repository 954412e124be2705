import NIOCore
import NIOHPACK
import Testing

@testable import Sluice

/// RFC 9113 §8's checks of a request's decoded fields and RFC 8441's of extended CONNECT, and
/// the rate guard behind the rapid-reset and control-frame defences, with no sockets.
@Suite("HTTP/2 field checks and rate guard")
struct HTTP2FieldCheckTests {
    static let get: [(String, String)] = [(":method", "GET"), (":scheme", "https"), (":authority", "example"), (":path", "/a?b")]

    static func problem(_ fields: [(String, String)], extendedConnect: Bool = true) -> String? {
        HTTP2FieldCheck.request(fields, stream: 3, extendedConnect: extendedConnect).map {
            #expect($0.stream == 3 && $0.code == .protocolError)
            return $0.reason
        }
    }

    @Test("well-formed requests pass: GET, OPTIONS *, CONNECT to an authority, RFC 8441's extended CONNECT, fields with inner spaces and TE: trailers")
    func wellFormed() {
        #expect(Self.problem(Self.get + [("accept", "text/html, */*"), ("te", "trailers"), ("cookie", "a=1")]) == nil)
        #expect(Self.problem([(":method", "OPTIONS"), (":scheme", "https"), (":authority", "example"), (":path", "*")]) == nil)
        #expect(Self.problem([(":method", "CONNECT"), (":authority", "example:443")]) == nil)
        #expect(Self.problem([(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":authority", "example"), (":path", "/chat"),
                              ("sec-websocket-version", "13")]) == nil)
        #expect(HTTP2FieldCheck.trailers([("grpc-status", "0")], stream: 1) == nil)
    }

    @Test("each rule refuses what it names, as a stream error")
    func malformed() {
        let cases: [(String, [(String, String)], Bool)] = [
            ("no :method", [(":scheme", "https"), (":authority", "e"), (":path", "/")], true),
            ("no :scheme", [(":method", "GET"), (":authority", "e"), (":path", "/")], true),
            ("no :path", [(":method", "GET"), (":scheme", "https"), (":authority", "e")], true),
            ("empty :path", [(":method", "GET"), (":scheme", "https"), (":path", "")], true),
            ("relative :path", [(":method", "GET"), (":scheme", "https"), (":path", "a/b")], true),
            ("* for GET", [(":method", "GET"), (":scheme", "https"), (":path", "*")], true),
            ("two :method", Self.get + [(":method", "POST")], true),
            ("two :path", [(":path", "/x")] + Self.get, true),
            ("pseudo after regular", [(":method", "GET"), ("accept", "*/*"), (":scheme", "https"), (":path", "/")], true),
            (":status in a request", Self.get + [(":status", "200")], true),
            ("unknown pseudo", Self.get + [(":foo", "1")], true),
            // Names read as bytes: a known one's length, not its bytes; its letters in capitals.
            ("near :method", [(":methox", "GET"), (":scheme", "https"), (":authority", "e"), (":path", "/")], true),
            (":Path", [(":method", "GET"), (":scheme", "https"), (":authority", "e"), (":Path", "/")], true),
            ("uppercase name", Self.get + [("Accept", "*/*")], true),
            ("space in name", Self.get + [("x y", "1")], true),
            ("colon in name", Self.get + [("x:y", "1")], true),
            ("non-ASCII name", Self.get + [("é", "1")], true),
            ("non-token name", Self.get + [("x(y)", "1")], true),
            ("empty name", Self.get + [("", "1")], true),
            ("LF in value", Self.get + [("x", "a\nb")], true),
            ("CR in value", Self.get + [("x", "a\rb")], true),
            ("NUL in value", Self.get + [("x", "a\u{0}b")], true),
            ("leading space", Self.get + [("x", " a")], true),
            ("trailing tab", Self.get + [("x", "a\t")], true),
            ("CR in :path", [(":method", "GET"), (":scheme", "https"), (":path", "/a\r\nb")], true),
            ("connection", Self.get + [("connection", "close")], true),
            ("transfer-encoding", Self.get + [("transfer-encoding", "chunked")], true),
            ("upgrade", Self.get + [("upgrade", "websocket")], true),
            ("keep-alive", Self.get + [("keep-alive", "1")], true),
            ("proxy-connection", Self.get + [("proxy-connection", "x")], true),
            ("TE gzip", Self.get + [("te", "gzip")], true),
            ("CONNECT with :path", [(":method", "CONNECT"), (":authority", "e:443"), (":path", "/")], true),
            ("CONNECT without :authority", [(":method", "CONNECT")], true),
            (":protocol on GET", [(":method", "GET"), (":protocol", "websocket"), (":scheme", "https"), (":authority", "e"), (":path", "/")], true),
            (":protocol without :path", [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":authority", "e")], true),
            (":protocol without :authority", [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":path", "/")], true),
            (":protocol not enabled", [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":authority", "e"), (":path", "/")], false),
        ]
        for (name, fields, extended) in cases {
            #expect(Self.problem(fields, extendedConnect: extended) != nil, "\(name) passed")
        }
        #expect(HTTP2FieldCheck.trailers([(":status", "200")], stream: 1)?.code == .protocolError)
        #expect(HTTP2FieldCheck.trailers([("connection", "close")], stream: 1)?.code == .protocolError)
    }

    @Test("the rate guard: up to its limit at once, then ENHANCE_YOUR_CALM; it drains at limit per window")
    func rateGuard() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var guardian = HTTP2RateGuard(limit: 10, window: .seconds(10))
        for _ in 0..<10 { #expect(guardian.count(at: start, "stream resets") == nil) }
        let refused = guardian.count(at: start, "stream resets")
        #expect(refused?.code == .enhanceYourCalm && refused?.stream == nil)
        // One event a second is the rate it drains at: that goes on for ever.
        var steady = HTTP2RateGuard(limit: 10, window: .seconds(10))
        for second in 0..<1_000 { #expect(steady.count(at: start + .seconds(Int64(second)), "pings") == nil) }
        // Twice that rate fills it in about twenty seconds.
        var fast = HTTP2RateGuard(limit: 10, window: .seconds(10))
        var refusedAt: Int?
        for tick in 0..<100 where refusedAt == nil {
            if fast.count(at: start + .milliseconds(Int64(tick) * 500), "pings") != nil { refusedAt = tick }
        }
        #expect(refusedAt.map { (18...22).contains($0) } == true, "\(String(describing: refusedAt))")
        // A clock that does not move forward drains nothing.
        var still = HTTP2RateGuard(limit: 2, window: .seconds(1))
        _ = still.count(at: start + .seconds(5), "x")
        _ = still.count(at: start, "x")
        #expect(still.count(at: start, "x") != nil)
    }
}
