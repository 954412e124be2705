import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Closed-loop load: each connection keeps `window` messages in flight, each carrying its send
/// time, and records the round-trip latency of every echo.
struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Closed-loop message load against a WebSocket echo (through a proxy or not).")

    @Option(help: "ws://127.0.0.1:PORT/path (loopback only).")
    var url: String

    @Option(help: "Concurrent connections.")
    var connections: Int = 10

    @Option(help: "Message size in bytes (at least 16).")
    var size: Int = 64

    @Option(help: "Messages in flight per connection.")
    var window: Int = 1

    @Option(help: "Seconds of measurement (at most 600).")
    var duration: Int = 10

    @Flag(help: "Send text frames instead of binary.")
    var text = false

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        guard (1...20_000).contains(connections) else { throw ValidationError("--connections must be 1...20000") }
        guard (16...(64 << 20)).contains(size) else { throw ValidationError("--size must be 16 bytes to 64 MiB") }
        guard (1...1024).contains(window) else { throw ValidationError("--window must be 1...1024") }
        guard (1...600).contains(duration) else { throw ValidationError("--duration must be 1...600 seconds") }
    }

    func run() async throws {
        guard url.hasPrefix("ws://") else { throw ValidationError("only ws:// URLs are supported so far") }
        let rest = url.dropFirst("ws://".count)
        let authority = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(authority.count)
        let target = try LoopbackTarget(hostPort: String(authority))
        let collector = LoadCollector()
        let deadline = NIODeadline.now() + .seconds(Int64(duration))
        let group = MultiThreadedEventLoopGroup.singleton
        var channels: [any Channel] = []
        for _ in 0..<connections {
            let settings = LoadHandler.Settings(size: size, window: window, text: text, deadline: deadline)
            let channel = try await connect(group: group, target: target, path: path.isEmpty ? "/" : String(path), settings: settings, collector: collector)
            channels.append(channel)
        }
        let started = ContinuousClock.now
        try await Task.sleep(until: started + .seconds(duration) + .milliseconds(500))
        for channel in channels { try? await channel.close() }
        try await Task.sleep(for: .milliseconds(200))
        collector.report(seconds: Double(duration), size: size, connections: connections, window: window, json: json)
    }

    private func connect(group: any EventLoopGroup, target: LoopbackTarget, path: String, settings: LoadHandler.Settings, collector: LoadCollector) async throws -> any Channel {
        let opened = group.next().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
                let sender = UpgradeRequestSender(host: "\(target.host):\(target.port)", path: path, failed: opened)
                let upgrader = NIOWebSocketClientUpgrader(requestKey: key, maxFrameSize: 1 << 26, automaticErrorHandling: true) { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        _ = channel.pipeline.syncOperations.removeHandler(sender)
                        try channel.pipeline.syncOperations.addHandler(LoadHandler(settings: settings, collector: collector))
                        opened.succeed(())
                    }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(
                        withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
                    )
                    try channel.pipeline.syncOperations.addHandler(sender)
                }
            }
            .connect(host: target.host, port: target.port).get()
        try await opened.futureResult.get()
        return channel
    }
}

/// Sends the GET that the upgrade handler turns into a WebSocket upgrade.
private final class UpgradeRequestSender: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let host: String
    let path: String
    let failed: EventLoopPromise<Void>

    init(host: String, path: String, failed: EventLoopPromise<Void>) {
        self.host = host
        self.path = path
        self.failed = failed
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        headers.add(name: "Content-Length", value: "0")
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            failed.fail(ValidationError("upgrade refused: \(head.status.code)"))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failed.fail(error)
        context.close(promise: nil)
    }
}

/// Collects per-connection results once each connection ends (no lock per message).
final class LoadCollector: Sendable {
    private struct State {
        var messages = 0
        var errors = 0
        var latencies: [UInt64] = []
    }
    private let state = NIOLockedValueBox(State())

    func add(messages: Int, latencies: [UInt64], errors: Int) {
        state.withLockedValue {
            $0.messages += messages
            $0.errors += errors
            $0.latencies += latencies
        }
    }

    func report(seconds: Double, size: Int, connections: Int, window: Int, json: Bool) {
        let snapshot = state.withLockedValue { $0 }
        let sorted = snapshot.latencies.sorted()
        func percentile(_ p: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
        }
        let rate = Double(snapshot.messages) / seconds
        let values: [String: Double] = [
            "messages_per_second": rate, "megabytes_per_second": rate * Double(size) / 1_000_000,
            "p50_us": percentile(0.50), "p90_us": percentile(0.90), "p99_us": percentile(0.99),
            "p999_us": percentile(0.999), "max_us": Double(sorted.last ?? 0) / 1000,
            "errors": Double(snapshot.errors), "connections": Double(connections), "window": Double(window), "size": Double(size),
        ]
        if json {
            let data = try! JSONSerialization.data(withJSONObject: values, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(String(format: "%.0f msgs/s  %.1f MB/s  p50 %.0fµs  p90 %.0fµs  p99 %.0fµs  p99.9 %.0fµs  max %.0fµs  errors %d",
                         rate, values["megabytes_per_second"]!, values["p50_us"]!, values["p90_us"]!, values["p99_us"]!,
                         values["p999_us"]!, values["max_us"]!, snapshot.errors))
        }
    }
}

/// One connection's closed loop.
private final class LoadHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    struct Settings: Sendable {
        var size: Int
        var window: Int
        var text: Bool
        var deadline: NIODeadline
    }

    private let settings: Settings
    private let collector: LoadCollector
    private var messages = 0
    private var errors = 0
    private var latencies: [UInt64] = []
    private var reported = false
    private var pending = ByteBuffer()

    init(settings: Settings, collector: LoadCollector) {
        self.settings = settings
        self.collector = collector
        latencies.reserveCapacity(1 << 16)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // The HTTP handlers leave the pipeline after this; start on the next tick.
        context.eventLoop.assumeIsolated().execute { [self] in
            for _ in 0..<settings.window { send(context) }
            context.flush()
        }
    }

    private func send(_ context: ChannelHandlerContext) {
        var payload = context.channel.allocator.buffer(capacity: settings.size)
        payload.writeInteger(DispatchTime.now().uptimeNanoseconds)
        payload.writeRepeatingByte(UInt8(ascii: "x"), count: settings.size - 8)
        let frame = WebSocketFrame(fin: true, opcode: settings.text ? .text : .binary, maskKey: .random(), data: payload)
        context.write(wrapOutboundOut(frame), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard frame.opcode == .binary || frame.opcode == .text || frame.opcode == .continuation else { return }
        // Frames may arrive fragmented by a proxy; a message ends at FIN.
        var data = frame.unmaskedData
        pending.writeBuffer(&data)
        guard frame.fin else { return }
        let sent = pending.getInteger(at: pending.readerIndex, as: UInt64.self) ?? 0
        pending.clear()
        let now = DispatchTime.now().uptimeNanoseconds
        if NIODeadline.now() < settings.deadline {
            messages += 1
            if latencies.count < 1 << 22 { latencies.append(now &- sent) }
            send(context)
            context.flush()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        errors += 1
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        report()
        context.fireChannelInactive()
    }

    private func report() {
        guard !reported else { return }
        reported = true
        collector.add(messages: messages, latencies: latencies, errors: errors)
    }
}
