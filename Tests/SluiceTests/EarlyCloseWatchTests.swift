import Logging
import NIOCore
import NIOEmbedded
import Testing
@testable import Sluice

/// The early-close window's watch on an embedded loop's virtual clock: a WebSocket still live
/// when its window ends resets its backend's failures in a row, one that ended inside it does
/// not, and each waits its own window, however many are watched.
@Suite("Early-close watch")
struct EarlyCloseWatchTests {
    /// A registry holding live WebSockets by id (their relays are never started).
    final class Live {
        let registry = ConnectionRegistry()
        let loop: EmbeddedEventLoop

        init(loop: EmbeddedEventLoop) { self.loop = loop }

        func open(_ id: UInt64) {
            let configuration = WebSocketRelay.Configuration(
                route: "r", perMessageDeflate: false, remask: false, maxFrameSize: 1 << 20, maxMessageSize: 1 << 20, bufferSize: 1 << 16,
                timing: .init(closeTimeout: .seconds(5), idleTimeout: nil, pingInterval: nil, pongTimeout: .seconds(10), maxLifetime: nil)
            )
            let relay = WebSocketRelay(configuration: configuration, eventLoop: loop, logger: Logger(label: "test")) { _ in }
            let info = ConnectionInfo(
                id: id, route: "r", listener: "l", client: "127.0.0.1", user: nil, backend: "", subprotocol: nil,
                extensions: [], startedAt: 0, clientProtocol: "h1"
            )
            registry.register(.init(info: info, relay: NIOLoopBound(relay, eventLoop: loop)))
        }
    }

    static func backends() -> BackendSet {
        BackendHealthTests.set(2) { $0.maxFails = 100 }
    }

    static func failures(_ backends: BackendSet) -> [Int] {
        backends.view().map(\.failuresInARow)
    }

    @Test("a WebSocket live at the end of its window resets its backend's failures; one that ended inside it does not")
    func liveAtTheEnd() {
        let loop = EmbeddedEventLoop()
        let live = Live(loop: loop)
        let backends = Self.backends()
        for index in 0..<2 { for _ in 0..<2 { backends.failed(index, reason: "test") } }
        live.open(1)
        live.open(2)
        EarlyCloseWatch.watch(1, in: live.registry, backends: backends, index: 0, on: loop)
        loop.advanceTime(by: .seconds(3))
        EarlyCloseWatch.watch(2, in: live.registry, backends: backends, index: 1, on: loop)
        loop.advanceTime(by: .seconds(1))
        live.registry.remove(2)  // ended 1 s after its 101
        loop.advanceTime(by: .milliseconds(5_999))
        #expect(Self.failures(backends) == [2, 2], "no window has ended yet")
        loop.advanceTime(by: .milliseconds(1))
        #expect(Self.failures(backends) == [0, 2])
        loop.advanceTime(by: .seconds(20))
        #expect(Self.failures(backends) == [0, 2], "the ended WebSocket never counts as a success")
        _ = try? loop.syncShutdownGracefully()
    }

    @Test("each watched WebSocket waits its own window, and failures counted after a reset stay counted")
    func ownWindows() {
        let loop = EmbeddedEventLoop()
        let live = Live(loop: loop)
        let backends = Self.backends()
        for id: UInt64 in 1...50 { live.open(id) }
        // One WebSocket a second for 50 s, all on backend 0, each followed by a failure.
        var seen: [Int] = []
        for id: UInt64 in 1...50 {
            EarlyCloseWatch.watch(id, in: live.registry, backends: backends, index: 0, on: loop)
            backends.failed(0, reason: "test")
            seen.append(Self.failures(backends)[0])
            loop.advanceTime(by: .seconds(1))
        }
        // Up to the tenth second no window has ended: the count grows; from then on one window
        // ends each second, just before the next failure, so the count never passes 1.
        #expect(Array(seen.prefix(10)) == Array(1...10))
        #expect(seen.dropFirst(10).allSatisfy { $0 == 1 }, "\(seen)")
        _ = try? loop.syncShutdownGracefully()
    }

    @Test("a second loop on the same thread gets its own timers and the same answers")
    func twoLoops() {
        let first = EmbeddedEventLoop()
        let second = EmbeddedEventLoop()
        let liveFirst = Live(loop: first)
        let liveSecond = Live(loop: second)
        let backends = Self.backends()
        for index in 0..<2 { backends.failed(index, reason: "test") }
        liveFirst.open(1)
        liveSecond.open(2)
        EarlyCloseWatch.watch(1, in: liveFirst.registry, backends: backends, index: 0, on: first)
        EarlyCloseWatch.watch(2, in: liveSecond.registry, backends: backends, index: 1, on: second)
        second.advanceTime(by: .seconds(10))
        #expect(Self.failures(backends) == [1, 0])
        first.advanceTime(by: .seconds(10))
        #expect(Self.failures(backends) == [0, 0])
        _ = try? first.syncShutdownGracefully()
        _ = try? second.syncShutdownGracefully()
    }
}
