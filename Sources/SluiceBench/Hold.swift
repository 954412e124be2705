import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOWebSocket

/// Opens many WebSockets at a bounded rate, holds them with a periodic small message each, and
/// at the end proves each alive by its echo: the memory-per-connection and concurrency scenarios.
struct Hold: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Open and hold N WebSockets, each proven alive by a periodic echo.")

    @Option(help: "ws:// or wss://127.0.0.1:PORT/path (loopback only).")
    var url: String

    @Option(help: "Connections to open and hold.")
    var connections: Int = 1000

    @Option(help: "Seconds to hold them once all are open (at most 600).")
    var duration: Int = 20

    @Option(help: "New connections per second while opening.")
    var openRate: Int = 2000

    @Option(help: "Seconds between each connection's liveness messages (0 = none while holding).")
    var interval: Int = 5

    @Option(help: "Source addresses to spread over, 127.0.0.2 onwards (ephemeral ports are per address).")
    var sourceAddresses: Int = 16

    @Flag(help: "Print one JSON object instead of a line.")
    var json = false

    @Flag(help: "With --json: every handshake's duration too (ms), so runs can be pooled.")
    var samples = false

    func validate() throws {
        guard (1...60_000).contains(connections) else { throw ValidationError("--connections must be 1...60000") }
        guard (1...600).contains(duration) else { throw ValidationError("--duration must be 1...600 seconds") }
        guard (1...100_000).contains(openRate) else { throw ValidationError("--open-rate must be 1...100000") }
        guard (0...600).contains(interval) else { throw ValidationError("--interval must be 0...600") }
        guard (1...250).contains(sourceAddresses) else { throw ValidationError("--source-addresses must be 1...250") }
    }

    func run() async throws {
        let target = try BenchTarget(url: url)
        let group = MultiThreadedEventLoopGroup.singleton
        let tally = HoldTally()
        let sources = target.host.hasPrefix("127.") ? try (0..<sourceAddresses).map { try SocketAddress(ipAddress: "127.0.0.\(2 + $0)", port: 0) } : [nil]
        let interval = interval
        let opening = ContinuousClock.now
        let opens = PacedOpens(loop: group.next(), total: connections, rate: openRate) { index in
            target.dial(group: group, localAddress: sources[index % sources.count]) { _ in HoldHandler(interval: interval, tally: tally) }
        }
        let outcome = try await opens.run().get()
        let channels = outcome.channels, failures = outcome.failures, firstError = outcome.firstError, handshakes = outcome.handshakes
        let openSeconds = Double((ContinuousClock.now - opening).components.attoseconds) / 1e18 + Double((ContinuousClock.now - opening).components.seconds)
        try await Task.sleep(for: .seconds(duration))
        // Proof of life at the end: every connection still open is sent one more message, and
        // counts as alive once its echo is back (waited for, not timed: a loaded machine is slow,
        // a dead connection never answers).
        let probedAt = NIODeadline.now()
        let open = channels.filter(\.isActive)
        for channel in open {
            var payload = channel.allocator.buffer(capacity: 8)
            payload.writeString("alive?")
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: payload), promise: nil)
        }
        let proofDeadline = ContinuousClock.now + .seconds(15)
        var alive = tally.heardSince(probedAt)
        while alive < open.count && ContinuousClock.now < proofDeadline {
            try await Task.sleep(for: .milliseconds(50))
            alive = tally.heardSince(probedAt)
        }
        let stillOpen = channels.filter(\.isActive).count
        for channel in channels { channel.close(promise: nil) }
        try await Task.sleep(for: .milliseconds(300))
        var values: [String: Any] = [
            "requested": connections, "opened": channels.count, "failed": failures, "open_now": stillOpen, "alive": alive,
            "handshakes_per_second": Double(channels.count) / max(openSeconds, 0.001), "open_seconds": openSeconds,
            "first_error": firstError ?? "",
            "handshake_p50_ms": Self.percentile(handshakes, 0.50) * 1000, "handshake_p99_ms": Self.percentile(handshakes, 0.99) * 1000,
        ]
        if samples { values["handshakes_ms"] = handshakes.map { ($0 * 1_000_000).rounded() / 1000 } }
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: values, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print(String(format: "opened %d/%d (failed %d) in %.1fs = %.0f handshakes/s; after %ds: open %d, alive %d%@",
                         channels.count, connections, failures, openSeconds, Double(channels.count) / max(openSeconds, 0.001), duration,
                         stillOpen, alive, firstError.map { "; first error: \($0)" } ?? ""))
        }
    }
}

extension Hold {
    /// The `fraction` percentile of `values` (nearest rank); 0 for none.
    static func percentile(_ values: [Double], _ fraction: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, max(0, Int((fraction * Double(sorted.count)).rounded(.up)) - 1))]
    }
}

/// When each held connection last heard its echo.
final class HoldTally: Sendable {
    private let lastEcho = NIOLockedValueBox<[ObjectIdentifier: NIODeadline]>([:])

    func heard(_ handler: ObjectIdentifier) {
        let now = NIODeadline.now()
        lastEcho.withLockedValue { $0[handler] = now }
    }

    /// Connections that echoed since `since`.
    func heardSince(_ since: NIODeadline) -> Int {
        lastEcho.withLockedValue { $0.values.filter { $0 >= since }.count }
    }
}

/// Sends a small message every `interval` seconds and records each echo.
private final class HoldHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let interval: Int
    private let tally: HoldTally
    private var ticker: RepeatedTask?

    init(interval: Int, tally: HoldTally) {
        self.interval = interval
        self.tally = tally
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.assumeIsolated().execute { bound.value.0.ping(bound.value.1) }
        guard interval > 0 else { return }
        let jitter = TimeAmount.milliseconds(Int64.random(in: 0..<Int64(interval * 1000)))
        ticker = context.eventLoop.scheduleRepeatedTask(initialDelay: jitter, delay: .seconds(Int64(interval))) { _ in
            let (handler, context) = bound.value
            handler.ping(context)
        }
    }

    private func ping(_ context: ChannelHandlerContext) {
        var payload = context.channel.allocator.buffer(capacity: 8)
        payload.writeString("alive?")
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: payload)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if frame.opcode == .text || frame.opcode == .binary { tally.heard(ObjectIdentifier(self)) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        ticker?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
