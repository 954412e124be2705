import Logging
import NIOCore
import NIOEmbedded
import NIOTLS
import Testing
@testable import Sluice

/// The relay driven end to end on two `EmbeddedChannel`s sharing one virtual clock: its
/// handlers, its state machine and its one timer, with no sockets and no real sleeps.
@Suite("Relay on embedded channels")
struct RelayHandlerTests {
    /// A relayed pair: the client's channel, the backend's, and how the relay ended.
    final class Pair {
        final class Ending { var summary: WebSocketRelay.Summary? }
        let loop = EmbeddedEventLoop()
        let client: EmbeddedChannel
        let backend: EmbeddedChannel
        let relay: WebSocketRelay
        private let ending = Ending()
        /// The relay's report, once both connections are closed.
        var ended: WebSocketRelay.Summary? { ending.summary }

        /// `clientAttached: false`: the relay starts with no client side, as when the client's
        /// pipeline could not be switched to it.
        init(closeTimeout: TimeAmount = .seconds(5), idle: TimeAmount? = nil, lifetime: TimeAmount? = nil, clientAttached: Bool = true) throws {
            client = EmbeddedChannel(loop: loop)
            backend = EmbeddedChannel(loop: loop)
            let configuration = WebSocketRelay.Configuration(
                route: "r", perMessageDeflate: false, remask: false, maxFrameSize: 1 << 20, maxMessageSize: 1 << 20, bufferSize: 1 << 16,
                timing: .init(closeTimeout: closeTimeout, idleTimeout: idle, pingInterval: nil, pongTimeout: .seconds(10), maxLifetime: lifetime)
            )
            relay = WebSocketRelay(configuration: configuration, eventLoop: loop, logger: Logger(label: "test")) { [ending] in ending.summary = $0 }
            if clientAttached { try client.pipeline.syncOperations.addHandler(RelayHandler(relay: relay, side: .downstream)) }
            try backend.pipeline.syncOperations.addHandler(RelayHandler(relay: relay, side: .upstream))
            try client.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
            try backend.connect(to: .init(ipAddress: "127.0.0.1", port: 2)).wait()
            relay.start()
        }

        /// Everything written to `channel` so far, as one buffer.
        func written(to channel: EmbeddedChannel) throws -> [UInt8] {
            var bytes: [UInt8] = []
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes += Array(buffer.readableBytesView) }
            return bytes
        }
    }

    static let mask: [UInt8] = [1, 2, 3, 4]

    /// A client frame (masked).
    static func clientFrame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true) -> ByteBuffer {
        var buffer = ByteBuffer()
        FrameHeader(fin: fin, opcode: opcode, maskKey: MaskKey(1, 2, 3, 4), payloadLength: UInt64(payload.count)).write(to: &buffer)
        buffer.writeBytes(payload.enumerated().map { $0.element ^ mask[$0.offset & 3] })
        return buffer
    }

    /// A backend frame (unmasked).
    static func backendFrame(_ opcode: UInt8, _ payload: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        FrameHeader(fin: true, opcode: opcode, maskKey: nil, payloadLength: UInt64(payload.count)).write(to: &buffer)
        buffer.writeBytes(payload)
        return buffer
    }

    /// The close code of the last frame in `bytes`, if it is a close (masked or not).
    static func closeCode(in bytes: [UInt8]) -> UInt16? {
        var offset = 0
        var code: UInt16?
        while offset + 2 <= bytes.count {
            let parsed = bytes[offset...].withUnsafeBytes { FrameHeader.parse($0) }
            guard case .complete(let header) = parsed else { break }
            let payload = offset + header.headerLength
            if header.opcode == FrameHeader.Opcode.close, header.payloadLength >= 2, payload + 2 <= bytes.count {
                let key: [UInt8] = header.maskKey.map { [$0.bytes.0, $0.bytes.1] } ?? [0, 0]
                let high = UInt16(bytes[payload] ^ key[0])
                let low = UInt16(bytes[payload + 1] ^ key[1])
                code = high << 8 | low
            } else {
                code = nil
            }
            offset = payload + Int(header.payloadLength)
        }
        return code
    }

    @Test("max_lifetime closes both sides with 1001 at its deadline, not before")
    func maxLifetime() throws {
        let pair = try Pair(lifetime: .seconds(30))
        try pair.client.writeInbound(Self.clientFrame(1, Array("hi".utf8)))
        #expect(try pair.written(to: pair.backend).count == 8)
        pair.loop.advanceTime(by: .seconds(29))
        #expect(try pair.written(to: pair.client).isEmpty)
        pair.loop.advanceTime(by: .seconds(1))
        #expect(Self.closeCode(in: try pair.written(to: pair.client)) == 1001)
        #expect(Self.closeCode(in: try pair.written(to: pair.backend)) == 1001)
        // Neither answers: the close timeout drops both, and the relay reports its end.
        pair.loop.advanceTime(by: .seconds(5))
        #expect(!pair.client.isActive && !pair.backend.isActive)
        #expect(pair.ended?.outcome?.ending == .maxLifetime)
    }

    @Test("a client that vanishes inside a frame gets the backend closed at once, with no close frame after the partial one")
    func vanishMidFrame() throws {
        let pair = try Pair()
        let frame = Self.clientFrame(2, Array(repeating: 7, count: 208))
        try pair.client.writeInbound(frame.getSlice(at: 0, length: 60)!)
        let partial = try pair.written(to: pair.backend)
        #expect(partial.count == 60)
        try pair.client.close().wait()
        pair.loop.run()
        #expect(!pair.backend.isActive)
        #expect(try pair.written(to: pair.backend).isEmpty)
        #expect(pair.ended?.outcome?.ending == .vanishedMidFrame)
    }

    @Test("a kick while a frame is being forwarded waits for its end; a frame that never ends is aborted at the close timeout")
    func kickWaitsForTheBoundary() throws {
        let pair = try Pair(closeTimeout: .seconds(5))
        try pair.backend.writeInbound(Self.backendFrame(2, Array(repeating: 1, count: 100)).getSlice(at: 0, length: 40)!)
        _ = try pair.written(to: pair.client)
        pair.relay.close(downstreamCode: 1008, upstreamCode: 1001, reason: "kick", ending: .kicked)
        // The backend gets its close at once; the client's waits behind the frame.
        #expect(Self.closeCode(in: try pair.written(to: pair.backend)) == 1001)
        #expect(try pair.written(to: pair.client).isEmpty)
        pair.loop.advanceTime(by: .seconds(4))
        #expect(pair.client.isActive)
        pair.loop.advanceTime(by: .seconds(1))
        #expect(!pair.client.isActive && !pair.backend.isActive)
        #expect(pair.ended?.outcome?.ending == .kicked)
    }

    @Test(
        "a side that was never attached counts as gone once the relay closes or aborts it: the relay ends, by a kick's close timeout or a drain's deadline",
        arguments: ["kick", "drain deadline"]
    )
    func neverAttachedSide(ending: String) throws {
        let pair = try Pair(closeTimeout: .seconds(5), clientAttached: false)
        if ending == "kick" {
            pair.relay.close(downstreamCode: 1008, upstreamCode: 1001, reason: "kick", ending: .kicked)
            #expect(Self.closeCode(in: try pair.written(to: pair.backend)) == 1001)
            // The backend answers; the client, never there, cannot: its close timeout ends it.
            try pair.backend.writeInbound(Self.backendFrame(8, [0x03, 0xE9]))
            pair.loop.advanceTime(by: .seconds(5))
        } else {
            pair.relay.abort()
            pair.loop.run()
        }
        #expect(!pair.backend.isActive)
        #expect(pair.ended != nil, "the relay waited for a client side that was never attached")
    }

    @Test("after a client's protocol violation it still gets what the backend sent, then its 1002")
    func violationDeliversTheEcho() throws {
        let pair = try Pair()
        var bytes = Self.clientFrame(1, Array("hello".utf8))
        var bad = Self.clientFrame(1, Array("x".utf8))
        bad.setInteger(bad.getInteger(at: 0, as: UInt8.self)! | 0x30, at: 0)  // RSV2, RSV3
        bytes.writeBuffer(&bad)
        try pair.client.writeInbound(bytes)
        // The valid message went through; no close yet either way.
        #expect(try pair.written(to: pair.backend).count == 11)
        #expect(try pair.written(to: pair.client).isEmpty)
        // The backend's echo, already on its way, still reaches the client.
        try pair.backend.writeInbound(Self.backendFrame(1, Array("hello".utf8)))
        #expect(try pair.written(to: pair.client) == [0x81, 5] + Array("hello".utf8))
        pair.loop.advanceTime(by: .milliseconds(250))
        #expect(Self.closeCode(in: try pair.written(to: pair.client)) == 1002)
        #expect(!pair.client.isActive)
        #expect(Self.closeCode(in: try pair.written(to: pair.backend)) == 1001)
        try pair.backend.writeInbound(Self.backendFrame(8, [0x03, 0xE9]))
        pair.loop.run()
        #expect(!pair.backend.isActive)
        #expect(pair.ended?.outcome?.ending == .violation)
    }

    @Test("idle_timeout counts from the last frame either way")
    func idle() throws {
        let pair = try Pair(idle: .seconds(10))
        pair.loop.advanceTime(by: .seconds(8))
        try pair.client.writeInbound(Self.clientFrame(1, Array("hi".utf8)))
        pair.loop.advanceTime(by: .seconds(8))
        #expect(try pair.written(to: pair.client).isEmpty)
        pair.loop.advanceTime(by: .seconds(2))
        #expect(Self.closeCode(in: try pair.written(to: pair.client)) == 1001)
        #expect(pair.ended == nil)
    }

    @Test("the TLS handshake timeout closes a connection that never finishes its handshake, and counts it")
    func tlsHandshakeTimeout() throws {
        let channel = EmbeddedChannel()
        var failures = 0
        try channel.pipeline.syncOperations.addHandler(TLSHandshakeTimeoutHandler(timeout: .seconds(10)) { failures += 1 })
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
        #expect(failures == 1)

        // A handshake that completes in time disarms it, and the handler steps aside.
        let finished = EmbeddedChannel()
        var late = 0
        let handler = TLSHandshakeTimeoutHandler(timeout: .seconds(10)) { late += 1 }
        try finished.pipeline.syncOperations.addHandler(handler)
        try finished.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        finished.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        finished.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(finished.isActive)
        #expect(late == 0)
        #expect((try? finished.pipeline.syncOperations.handler(type: TLSHandshakeTimeoutHandler.self)) == nil)
    }
}
