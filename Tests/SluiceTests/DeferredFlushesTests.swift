import NIOCore
import NIOEmbedded
import Testing
@testable import Sluice

/// Flushes wait for the end of the loop's wake-up, then go out in the order asked for.
@Suite("Deferred flushes")
struct DeferredFlushesTests {
    /// Keeps its context, so the test can write and flush through it as the proxy does.
    final class Writer: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        var context: ChannelHandlerContext?
        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    }

    static func channel(on loop: EmbeddedEventLoop = EmbeddedEventLoop()) throws -> (EmbeddedChannel, ChannelHandlerContext) {
        let writer = Writer()
        let channel = EmbeddedChannel(handler: writer, loop: loop)
        return (channel, try #require(writer.context))
    }

    @Test("a flush asked for during a wake-up happens when the loop runs its tasks, for every channel of the loop")
    func flushedAfterTheWakeUp() throws {
        let loop = EmbeddedEventLoop()
        let (first, firstContext) = try Self.channel(on: loop)
        let (second, secondContext) = try Self.channel(on: loop)
        firstContext.write(NIOAny(ByteBuffer(string: "one")), promise: nil)
        DeferredFlushes.flushSoon(firstContext)
        secondContext.write(NIOAny(ByteBuffer(string: "two")), promise: nil)
        DeferredFlushes.flushSoon(secondContext)
        #expect(try first.readOutbound(as: ByteBuffer.self) == nil, "not flushed before the loop's tasks")
        #expect(try second.readOutbound(as: ByteBuffer.self) == nil)
        loop.run()
        #expect(try first.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "one"))
        #expect(try second.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "two"))
        // The next wake-up batches again.
        firstContext.write(NIOAny(ByteBuffer(string: "three")), promise: nil)
        DeferredFlushes.flushSoon(firstContext)
        #expect(try first.readOutbound(as: ByteBuffer.self) == nil)
        loop.run()
        #expect(try first.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "three"))
        _ = try first.finish()
        _ = try second.finish()
    }

    @Test("a flush for another loop on the same thread goes out at once")
    func otherLoopFlushesAtOnce() throws {
        let (first, firstContext) = try Self.channel()
        let (other, otherContext) = try Self.channel()
        firstContext.write(NIOAny(ByteBuffer(string: "held")), promise: nil)
        DeferredFlushes.flushSoon(firstContext)
        otherContext.write(NIOAny(ByteBuffer(string: "now")), promise: nil)
        DeferredFlushes.flushSoon(otherContext)
        #expect(try other.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "now"))
        #expect(try first.readOutbound(as: ByteBuffer.self) == nil)
        first.embeddedEventLoop.run()
        #expect(try first.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "held"))
        _ = try first.finish()
        _ = try other.finish()
    }
}
