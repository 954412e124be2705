import NIOCore
import SluiceConfig
import Testing
@testable import Sluice

/// The scenarios the allocation benchmarks count (Benchmarks/SluiceCost) do what they say, every
/// time: a count taken of a path that failed half-way would describe nothing.
@Suite("Cost probes")
struct CostProbeTests {
    @Test("a relayed message each way, repeatedly")
    func relay() throws {
        let probe = try RelayProbe(payloadSize: 64)
        for _ in 0..<100 { #expect(try probe.exchange() == (2 + 4 + 64) + (2 + 64)) }
    }

    @Test("an upgrade admitted and its lease returned, repeatedly (the per-address cap is never reached)")
    func admission() throws {
        let probe = try AdmissionProbe()
        for _ in 0..<200 { try probe.admitAndRelease() }
    }

    @Test("whole WebSocket lifetimes through the gateway, each leaving nothing registered", arguments: [false, true])
    func webSocketLifetime(accessLog: Bool) throws {
        let probe = try GatewayProbe(accessLog: accessLog ? .file("/dev/null") : .off)
        for _ in 0..<20 { try probe.webSocketLifetime() }
    }

    @Test("proxied requests on one kept-alive connection and one pooled backend connection", arguments: [false, true])
    func proxyRequest(accessLog: Bool) throws {
        let probe = try GatewayProbe(accessLog: accessLog ? .file("/dev/null") : .off)
        for _ in 0..<20 { try probe.proxyRequest() }
    }

    @Test("proxied requests each on a client connection of its own, closed after its answer, one pooled backend connection")
    func proxyRequestOnNewConnection() throws {
        let probe = try GatewayProbe()
        for _ in 0..<20 { try probe.proxyRequestOnNewConnection() }
    }

    @Test(
        "proxied requests on streams of one HTTP/2 connection (NIOHTTP2, and Sluice's own layer) and one pooled backend connection; the frames' reader sees the answer",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func http2Request(engine: HTTP2Limits.HTTP2Engine) throws {
        let probe = try GatewayProbe()
        for _ in 0..<50 { try probe.http2Request(engine: engine) }
        // The reader says no for a stream that was not answered, and for one answered without an end.
        var headersOnly = ByteBuffer(bytes: [0, 0, 1, 1, 0x4, 0, 0, 0, 3, 0x88])
        #expect(!ProbeHTTP2Frames.answers(3, in: headersOnly))
        headersOnly.setInteger(UInt8(0x5), at: 4)
        #expect(ProbeHTTP2Frames.answers(3, in: headersOnly))
        #expect(!ProbeHTTP2Frames.answers(5, in: headersOnly))
    }
}
