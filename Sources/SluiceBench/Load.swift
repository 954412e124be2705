import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import Histogram
import Sluice

/// Message load: closed loop (each connection keeps `window` messages in flight) or open loop
/// (`--rate` messages a second in all, each timed from when it was *due*, so a stall is charged
/// to every message it delayed — no coordinated omission). Every message carries its time;
/// latencies go into HdrHistograms. With `--deflate` every message is compressed
/// (permessage-deflate, which the server must accept).
struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Message load against a WebSocket echo (through a proxy or not).")

    @Option(help: "ws:// or wss://127.0.0.1:PORT/path (loopback only).")
    var url: String

    @Option(help: "Open loop: total messages per second across all connections (omit for closed loop).")
    var rate: Int?

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

    @Flag(help: "Offer permessage-deflate and compress every message (the server must accept it).")
    var deflate = false

    @Flag(help: "WebSockets over HTTP/2 (RFC 8441): one HTTP/2 connection per WebSocket, ALPN h2 over wss://, prior knowledge over ws://.")
    var http2 = false

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        guard (1...20_000).contains(connections) else { throw ValidationError("--connections must be 1...20000") }
        guard (16...(64 << 20)).contains(size) else { throw ValidationError("--size must be 16 bytes to 64 MiB") }
        guard (1...1024).contains(window) else { throw ValidationError("--window must be 1...1024") }
        guard (1...600).contains(duration) else { throw ValidationError("--duration must be 1...600 seconds") }
    }

    func run() async throws {
        let target = try BenchTarget(url: url)
        if let rate, !(1...2_000_000).contains(rate) { throw ValidationError("--rate must be 1...2000000") }
        let collector = LoadCollector()
        let group = MultiThreadedEventLoopGroup.singleton
        var channels: [any Channel] = []
        for _ in 0..<connections {
            let settings = LoadHandler.Settings(
                size: size, window: window, text: text,
                interval: rate.map { TimeAmount.nanoseconds(Int64(1e9 * Double(connections) / Double($0))) }
            )
            let offer = deflate ? PerMessageDeflate.clientOffer : nil
            let makeHandler: @Sendable (HTTPResponseHead) throws -> any ChannelHandler = { [deflate] response in
                LoadHandler(settings: settings, collector: collector, compression: try Self.compression(wanted: deflate, response: response))
            }
            channels.append(
                http2
                    ? try await target.openHTTP2(group: group, extensions: offer, handler: makeHandler)
                    : try await target.open(group: group, extensions: offer, handler: makeHandler)
            )
        }
        // The measurement starts once every connection is open, however long opening took.
        let start = NIODeadline.now() + .milliseconds(200)
        let measured = LoadWindow(start: start, deadline: start + .seconds(Int64(duration)))
        for channel in channels { channel.pipeline.fireUserInboundEventTriggered(measured) }
        try await Task.sleep(for: .milliseconds(200) + .seconds(duration) + .milliseconds(500))
        for channel in channels { try? await channel.close() }
        try await Task.sleep(for: .milliseconds(200))
        collector.report(seconds: Double(duration), size: size, connections: connections, window: window, deflate: deflate, json: json)
    }

    /// The codec for a connection whose 101 is `response`, when compression was asked for.
    static func compression(wanted: Bool, response: HTTPResponseHead) throws -> (MessageCompressor, MessageDecompressor)? {
        guard wanted else { return nil }
        guard let settings = try PerMessageDeflate.accepted(response: response.headers) else {
            throw ValidationError("--deflate: the server did not accept permessage-deflate")
        }
        return try settings.codec(isServer: false, maxMessageSize: 1 << 26)
    }

}

/// Collects per-connection results once each connection ends (no lock per message).
final class LoadCollector: Sendable {
    private struct State {
        var messages = 0
        var sent = 0
        var errors = 0
        var latencies = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    }
    private let state = NIOLockedValueBox(State())

    func add(messages: Int, sent: Int, latencies: Histogram<UInt64>, errors: Int) {
        state.withLockedValue {
            $0.messages += messages
            $0.sent += sent
            $0.errors += errors
            $0.latencies.add(latencies)
        }
    }

    func report(seconds: Double, size: Int, connections: Int, window: Int, deflate: Bool, json: Bool) {
        let snapshot = state.withLockedValue { $0 }
        func percentile(_ p: Double) -> Double {
            snapshot.latencies.totalCount == 0 ? 0 : Double(snapshot.latencies.valueAtPercentile(p * 100)) / 1000
        }
        let rate = Double(snapshot.messages) / seconds
        let values: [String: Double] = [
            "messages_per_second": rate, "megabytes_per_second": rate * Double(size) / 1_000_000,
            "p50_us": percentile(0.50), "p90_us": percentile(0.90), "p99_us": percentile(0.99),
            "p999_us": percentile(0.999), "max_us": Double(snapshot.latencies.totalCount == 0 ? 0 : snapshot.latencies.max) / 1000,
            "errors": Double(snapshot.errors), "messages_sent": Double(snapshot.sent), "connections": Double(connections), "window": Double(window), "size": Double(size),
            "deflate": deflate ? 1 : 0,
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

/// When the measurement runs, sent to every connection's handler once all are open.
private struct LoadWindow: Sendable {
    var start: NIODeadline
    var deadline: NIODeadline
}

/// One connection's loop: closed (`window` in flight) or open (one message per `interval`).
private final class LoadHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    struct Settings: Sendable {
        var size: Int
        var window: Int
        var text: Bool
        /// Open loop: one message per interval, on a fixed schedule from the window's start.
        var interval: TimeAmount?
    }

    private let settings: Settings
    private let collector: LoadCollector
    private var messages = 0
    /// Messages sent during the measurement (open loop: exactly the schedule's).
    private var sent = 0
    private var errors = 0
    private var latencies = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    private var reported = false
    private var pending = ByteBuffer()
    private var pendingCompressed = false
    private let compression: (MessageCompressor, MessageDecompressor)?
    private var scheduled = 0
    private var ticker: RepeatedTask?
    /// The measurement window; nothing is sent or counted before it arrives.
    private var measured: LoadWindow?

    init(settings: Settings, collector: LoadCollector, compression: (MessageCompressor, MessageDecompressor)?) {
        self.settings = settings
        self.collector = collector
        self.compression = compression
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let window = event as? LoadWindow else { return context.fireUserInboundEventTriggered(event) }
        measured = window
        let start = window.start
        context.eventLoop.assumeIsolated().scheduleTask(deadline: start) { [self] in
            if let interval = settings.interval {
                // Send whatever is due every millisecond; each message carries the time it was
                // due, not the time it went out.
                let offset = TimeAmount.nanoseconds(Int64.random(in: 0..<max(1, interval.nanoseconds)))
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                ticker = context.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(1)) { _ in
                    let (handler, context) = bound.value
                    handler.sendDue(context, start: start + offset, interval: interval)
                }
            } else {
                for _ in 0..<settings.window { send(context) }
                context.flush()
            }
        }
    }

    private func sendDue(_ context: ChannelHandlerContext, start: NIODeadline, interval: TimeAmount) {
        let now = NIODeadline.now()
        guard let measured, now < measured.deadline, now >= start else { return }
        let due = Int((now - start).nanoseconds / interval.nanoseconds) + 1
        guard due > scheduled else { return }
        while scheduled < due {
            let intended = start + interval * Int64(scheduled)
            send(context, stamp: UInt64(intended.uptimeNanoseconds))
            scheduled += 1
        }
        context.flush()
    }

    private func send(_ context: ChannelHandlerContext, stamp: UInt64? = nil) {
        sent += 1
        var payload = context.channel.allocator.buffer(capacity: settings.size)
        payload.writeInteger(stamp ?? NIODeadline.now().uptimeNanoseconds)
        payload.writeRepeatingByte(UInt8(ascii: "x"), count: settings.size - 8)
        if let (compressor, _) = compression {
            do {
                payload = try compressor.compress(payload, allocator: context.channel.allocator)
            } catch {
                errors += 1
                context.close(promise: nil)
                return
            }
        }
        let frame = WebSocketFrame(fin: true, rsv1: compression != nil, opcode: settings.text ? .text : .binary, maskKey: .random(), data: payload)
        context.write(wrapOutboundOut(frame), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard frame.opcode == .binary || frame.opcode == .text || frame.opcode == .continuation else { return }
        // Frames may arrive fragmented by a proxy; a message ends at FIN.
        var data = frame.unmaskedData
        if frame.opcode != .continuation { pendingCompressed = frame.rsv1 }
        pending.writeBuffer(&data)
        guard frame.fin else { return }
        var message = pending
        pending.clear()
        if pendingCompressed {
            guard let (_, decompressor) = compression, let plain = try? decompressor.decompress(message, allocator: context.channel.allocator) else {
                errors += 1
                context.close(promise: nil)
                return
            }
            message = plain
        }
        let stamp = message.getInteger(at: message.readerIndex, as: UInt64.self) ?? 0
        let now = NIODeadline.now()
        if let measured, now < measured.deadline {
            messages += 1
            _ = latencies.record(now.uptimeNanoseconds &- stamp)
            if settings.interval == nil {
                send(context)
                context.flush()
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // After the window the load closes its connections mid-message: a stream's decoder
        // left with part of a frame reports it then, and that is not the server's failure.
        if measured.map({ NIODeadline.now() < $0.deadline }) ?? true { errors += 1 }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        ticker?.cancel()
        report()
        context.fireChannelInactive()
    }

    private func report() {
        guard !reported else { return }
        reported = true
        collector.add(messages: messages, sent: sent, latencies: latencies, errors: errors)
    }
}
