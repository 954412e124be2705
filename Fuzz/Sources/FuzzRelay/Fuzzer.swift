import Logging
import NIOCore
import NIOEmbedded
@testable import Sluice

/// The whole relay — its handlers, state machine and timer — on two embedded channels, driven
/// by a script of events: bytes from either side, either side vanishing, a kick, a side going
/// unwritable, time passing. Whatever the script, once both peers are gone and the close
/// timeout has passed, the relay must have ended: no state waits forever.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRelay(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    let loop = EmbeddedEventLoop()
    let client = EmbeddedChannel(loop: loop)
    let backend = EmbeddedChannel(loop: loop)
    final class Ended { var count = 0 }
    let ended = Ended()
    let relay = WebSocketRelay(
        configuration: .init(
            route: "fuzz", perMessageDeflate: count > 0 && input[0] & 1 != 0, remask: count > 0 && input[0] & 2 != 0,
            maxFrameSize: 4096, maxMessageSize: 16384, bufferSize: 1024,
            timing: .init(closeTimeout: .seconds(5), idleTimeout: .seconds(60), pingInterval: .seconds(20), pongTimeout: .seconds(5), maxLifetime: .seconds(600))
        ),
        eventLoop: loop, logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
    ) { _ in ended.count += 1 }
    do {
        try client.pipeline.syncOperations.addHandler(RelayHandler(relay: relay, side: .downstream))
        try backend.pipeline.syncOperations.addHandler(RelayHandler(relay: relay, side: .upstream))
        try client.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        try backend.connect(to: .init(ipAddress: "127.0.0.1", port: 2)).wait()
    } catch {
        return 0
    }
    relay.start()
    var offset = 1
    while offset < count {
        let op = input[offset]
        offset += 1
        switch op % 8 {
        case 0, 1:
            let length = offset < count ? Int(input[offset]) : 0
            offset += 1
            let end = min(count, offset + length)
            guard end > offset else { break }
            let bytes = ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: input[offset..<end]))
            offset = end
            let channel = op % 8 == 0 ? client : backend
            if channel.isActive { try? channel.writeInbound(bytes) }
        case 2: if client.isActive { client.close(promise: nil) }
        case 3: if backend.isActive { backend.close(promise: nil) }
        case 4: relay.close(downstreamCode: 1008, upstreamCode: 1001, reason: "kick", ending: .kicked)
        case 5: loop.advanceTime(by: .milliseconds(Int64(op) * 40))
        case 6:
            let channel = op & 8 != 0 ? client : backend
            channel.isWritable.toggle()
            channel.pipeline.fireChannelWritabilityChanged()
        default:
            // What was written is taken away, as a reading peer would.
            while (try? client.readOutbound(as: ByteBuffer.self)) != nil {}
            while (try? backend.readOutbound(as: ByteBuffer.self)) != nil {}
        }
        loop.run()
    }
    // Both peers go; within the close timeout the relay must have reported its end, once.
    client.isWritable = true
    backend.isWritable = true
    if client.isActive { client.close(promise: nil) }
    if backend.isActive { backend.close(promise: nil) }
    loop.advanceTime(by: .seconds(6))
    precondition(ended.count == 1, "the relay ended \(ended.count) times")
    _ = try? client.finish()
    _ = try? backend.finish()
    return 0
}
