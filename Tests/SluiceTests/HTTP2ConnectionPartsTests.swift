import NIOCore
import NIOEmbedded
import Testing
@testable import Sluice

/// The parts an HTTP/2 connection keeps for all its streams: one timer for their deadlines, and
/// one flush per wake-up for their answers.
@Suite("HTTP/2 connection parts")
struct HTTP2ConnectionPartsTests {
    /// A stream whose checks are recorded; each check answers the next deadline it is given.
    final class Stream: HTTP2StreamWatchdog.Watched {
        var watchDeadline: NIODeadline?
        var watchIndex = 0
        var checks: [NIODeadline] = []
        var nextDeadlines: [NIODeadline?] = []

        func watchdogFired(now: NIODeadline) -> NIODeadline? {
            checks.append(now)
            return nextDeadlines.isEmpty ? nil : nextDeadlines.removeFirst()
        }
    }

    @Test("each stream is checked at its own deadline, on one timer; a stream that left is not checked; a next deadline is kept")
    func watchdogChecksDueStreams() {
        let loop = EmbeddedEventLoop()
        let watchdog = HTTP2StreamWatchdog(eventLoop: loop)
        let start = loop.now
        let (early, late, gone) = (Stream(), Stream(), Stream())
        watchdog.watch(late, until: start + .seconds(10))
        watchdog.watch(early, until: start + .seconds(5))
        watchdog.watch(gone, until: start + .seconds(3))
        // A later deadline for a stream already watched changes nothing.
        watchdog.watch(early, until: start + .seconds(8))
        early.nextDeadlines = [start + .seconds(12)]
        watchdog.unwatch(gone)

        loop.advanceTime(by: .seconds(4))
        #expect(early.checks.isEmpty && late.checks.isEmpty && gone.checks.isEmpty)
        loop.advanceTime(by: .seconds(1))
        #expect(early.checks == [start + .seconds(5)])
        #expect(late.checks.isEmpty)
        loop.advanceTime(by: .seconds(5))
        #expect(late.checks == [start + .seconds(10)])
        #expect(late.watchDeadline == nil, "a stream with no next deadline leaves")
        loop.advanceTime(by: .seconds(2))
        #expect(early.checks == [start + .seconds(5), start + .seconds(12)])
        #expect(gone.checks.isEmpty)
        loop.advanceTime(by: .seconds(60))
        #expect(early.checks.count == 2 && late.checks.count == 1, "nothing left to check")
    }

    @Test("an earlier deadline moves the timer forward; closing the connection stops every check")
    func watchdogEarlierDeadlineAndClose() {
        let loop = EmbeddedEventLoop()
        let watchdog = HTTP2StreamWatchdog(eventLoop: loop)
        let start = loop.now
        let (first, second) = (Stream(), Stream())
        watchdog.watch(first, until: start + .seconds(30))
        watchdog.watch(second, until: start + .seconds(2))
        loop.advanceTime(by: .seconds(2))
        #expect(second.checks == [start + .seconds(2)])
        watchdog.watch(second, until: start + .seconds(4))
        watchdog.close()
        loop.advanceTime(by: .seconds(60))
        #expect(first.checks.isEmpty && second.checks.count == 1)
        watchdog.watch(first, until: start + .seconds(70))
        loop.advanceTime(by: .seconds(60))
        #expect(first.checks.isEmpty, "a closed connection's watchdog takes no more streams")
    }

    @Test("many streams joining and leaving keep the list consistent")
    func watchdogSwapRemoval() {
        let loop = EmbeddedEventLoop()
        let watchdog = HTTP2StreamWatchdog(eventLoop: loop)
        let start = loop.now
        let streams = (0..<50).map { _ in Stream() }
        for (index, stream) in streams.enumerated() { watchdog.watch(stream, until: start + .seconds(Int64(index + 1))) }
        for stream in streams.enumerated().filter({ $0.offset % 3 == 0 }).map(\.element) { watchdog.unwatch(stream) }
        loop.advanceTime(by: .seconds(100))
        for (index, stream) in streams.enumerated() {
            #expect(stream.checks == (index % 3 == 0 ? [] : [start + .seconds(Int64(index + 1))]), "stream \(index)")
        }
    }

    /// Counts the flushes that reach it, and keeps what was written.
    final class FlushCounter: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        var flushes = 0
        func flush(context: ChannelHandlerContext) {
            flushes += 1
            context.flush()
        }
    }

    @Test("the flushes of one wake-up reach TLS as one, after the loop's events; a close flushes what is held first")
    func coalescedFlushes() throws {
        let counter = FlushCounter()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(counter)
        try channel.pipeline.syncOperations.addHandler(HTTP2FlushCoalescer())
        for text in ["one", "two", "three"] {
            channel.pipeline.write(ByteBuffer(string: text), promise: nil)
            channel.pipeline.flush()
        }
        #expect(counter.flushes == 0)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        channel.embeddedEventLoop.run()
        #expect(counter.flushes == 1)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "one"))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "two"))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "three"))

        channel.pipeline.write(ByteBuffer(string: "last"), promise: nil)
        channel.pipeline.flush()
        let written = channel.embeddedEventLoop.makePromise(of: Void.self)
        channel.pipeline.close(promise: written)
        #expect(counter.flushes == 2, "the close flushed what was held")
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "last"))
        channel.embeddedEventLoop.run()
        #expect(counter.flushes == 2, "nothing is flushed twice")
    }
}
