import Logging
import NIOCore
import NIOEmbedded

/// A relayed WebSocket on two embedded channels sharing one virtual clock, one message each way
/// per call: the relay in steady state (its handlers, state machine, counters and timer) with no
/// socket, so the cost benchmarks can count what a relayed message allocates.
package final class RelayProbe {
    private let loop = EmbeddedEventLoop()
    private let client: EmbeddedChannel
    private let backend: EmbeddedChannel
    private let relay: WebSocketRelay
    private let clientFrame: ByteBuffer
    private let backendFrame: ByteBuffer

    /// A relay between a client and a backend exchanging `payloadSize`-byte binary messages.
    package init(payloadSize: Int = 64) throws {
        client = EmbeddedChannel(loop: loop)
        backend = EmbeddedChannel(loop: loop)
        let configuration = WebSocketRelay.Configuration(
            route: "probe", perMessageDeflate: false, remask: false, maxFrameSize: 1 << 20, maxMessageSize: 1 << 20, bufferSize: 1 << 16,
            timing: .init(closeTimeout: .seconds(5), idleTimeout: .seconds(300), pingInterval: nil, pongTimeout: .seconds(10), maxLifetime: nil)
        )
        relay = WebSocketRelay(
            configuration: configuration, eventLoop: loop, logger: Logger(label: "probe"), metrics: GatewayMetrics().route("probe")
        ) { _ in }
        try client.pipeline.syncOperations.addHandler(RelayHandler(relay: relay, side: .downstream))
        try backend.pipeline.syncOperations.addHandler(RelayHandler(relay: relay, side: .upstream))
        client.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1), promise: nil)
        backend.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 2), promise: nil)
        relay.start()
        let payload = [UInt8](repeating: 0x2a, count: payloadSize)
        clientFrame = ProbeFrames.client(opcode: FrameHeader.Opcode.binary, payload)
        backendFrame = ProbeFrames.backend(opcode: FrameHeader.Opcode.binary, payload)
    }

    /// One message from the client to the backend and one back; the bytes that came out.
    @discardableResult
    package func exchange() throws -> Int {
        try client.writeInbound(clientFrame)
        let up = try backend.drainOutbound()
        try backend.writeInbound(backendFrame)
        let down = try client.drainOutbound()
        guard up == clientFrame.readableBytes, down == backendFrame.readableBytes else {
            throw ProbeFailure("relayed \(up) and \(down) bytes, not \(clientFrame.readableBytes) and \(backendFrame.readableBytes)")
        }
        return up + down
    }
}

/// WebSocket frames as a client (masked) and a backend (unmasked) send them.
enum ProbeFrames {
    static func client(opcode: UInt8, _ payload: [UInt8]) -> ByteBuffer {
        let key: [UInt8] = [0x11, 0x22, 0x33, 0x44]
        var buffer = ByteBuffer()
        FrameHeader(fin: true, opcode: opcode, maskKey: MaskKey(key[0], key[1], key[2], key[3]), payloadLength: UInt64(payload.count))
            .write(to: &buffer)
        buffer.writeBytes(payload.enumerated().map { $0.element ^ key[$0.offset & 3] })
        return buffer
    }

    static func backend(opcode: UInt8, _ payload: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        FrameHeader(fin: true, opcode: opcode, maskKey: nil, payloadLength: UInt64(payload.count)).write(to: &buffer)
        buffer.writeBytes(payload)
        return buffer
    }

    /// A close frame's payload: the code, big-endian.
    static func closePayload(_ code: UInt16) -> [UInt8] { [UInt8(code >> 8), UInt8(code & 0xff)] }
}
