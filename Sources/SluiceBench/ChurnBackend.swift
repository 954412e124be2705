import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Sluice

/// What each churned connection's watcher saw, by connection id, checked against its cell.
final class ChurnTally: Sendable {
    private struct State {
        var outcomes: [Int: (ChurnCell, ChurnCell.Outcome)] = [:]
    }

    private let state = NIOLockedValueBox(State())

    /// Records the first outcome for `id` (a watcher may see more than one thing).
    func record(_ id: Int, _ cell: ChurnCell, _ outcome: ChurnCell.Outcome) {
        state.withLockedValue { state in
            if state.outcomes[id] == nil { state.outcomes[id] = (cell, outcome) }
        }
    }

    /// Per cell: how many saw the expected outcome, and what the others saw.
    func summary(excluding excluded: Set<Int> = []) -> [ChurnCell: (ok: Int, unexpected: [ChurnCell.Outcome: Int])] {
        state.withLockedValue { state in
            var result: [ChurnCell: (ok: Int, unexpected: [ChurnCell.Outcome: Int])] = [:]
            for (id, (cell, outcome)) in state.outcomes where !excluded.contains(id) {
                var entry = result[cell] ?? (0, [:])
                if outcome == cell.expected { entry.ok += 1 } else { entry.unexpected[outcome, default: 0] += 1 }
                result[cell] = entry
            }
            return result
        }
    }

    var count: Int { state.withLockedValue { $0.outcomes.count } }
}

/// The backend `churn` points Sluice at. Each upgrade's path (`/ws/SIDE/FAULT/ID`) says whether
/// this backend fails (the backend's cells) or watches the client fail (the client's cells); what
/// it watched goes to the tally.
enum ChurnBackend {
    static func start(group: any EventLoopGroup, tally: ChurnTally) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ChurnBackendHandler(tally: tally))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }
}

/// One backend connection of the churn: reads the upgrade, then fails or watches.
final class ChurnBackendHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let tally: ChurnTally
    private var head = ByteBuffer()
    private var cell: ChurnCell?
    private var id = 0
    private var upgraded = false
    private var reader = ChurnWire.Reader()
    /// The big frame a slow reader is sent.
    private let big = ChurnWire.BigFrame()

    init(tally: ChurnTally) { self.tally = tally }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard upgraded || cell != nil else {
            head.writeImmutableBuffer(bytes)
            readHead(context)
            return
        }
        guard let cell else { return }
        if cell.side == .backend && (cell.fault == .ignoreClose || cell.fault == .slowReader) { return }
        for frame in reader.feed(bytes) where frame.opcode == FrameHeader.Opcode.close {
            if cell.side == .client {
                tally.record(id, cell, .close(frame.code ?? 1005))
                context.writeAndFlush(wrapOutboundOut(ChurnWire.close(frame.code ?? 1000, masked: false, allocator: context.channel.allocator)))
                    .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            } else {
                context.close(promise: nil)  // the clean close's answer
            }
            return
        }
    }

    private func readHead(_ context: ChannelHandlerContext) {
        guard let text = head.getString(at: head.readerIndex, length: head.readableBytes), let end = text.range(of: "\r\n\r\n") else {
            if head.readableBytes > 16_384 { context.close(promise: nil) }
            return
        }
        let lines = text[..<end.lowerBound].split(separator: "\r\n")
        let target = lines.first?.split(separator: " ").dropFirst().first ?? ""
        guard let (cell, id) = ChurnCell.parse(path: target) else {
            context.close(promise: nil)
            return
        }
        self.cell = cell
        self.id = id
        if cell.side == .backend && cell.fault == .handshake {
            context.channel.reset()
            return
        }
        if cell.side == .client && cell.fault == .handshake {
            // The 101 is held back: the client vanishes meanwhile, and Sluice must let go.
            watch(context, patience: .seconds(8))
            return
        }
        let key = lines.first { $0.lowercased().hasPrefix("sec-websocket-key:") }.map { $0.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces) } ?? ""
        var response = context.channel.allocator.buffer(capacity: 160)
        response.writeString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(WebSocketKey.accept(for: key))\r\n\r\n")
        context.writeAndFlush(wrapOutboundOut(response), promise: nil)
        upgraded = true
        if cell.side == .client {
            if cell.fault == .ignoreClose {
                context.writeAndFlush(wrapOutboundOut(ChurnWire.close(1000, masked: false, allocator: context.channel.allocator)), promise: nil)
            }
            if cell.fault == .slowReader { big.start(context, masked: false) }
            watch(context, patience: .seconds(12))
        } else {
            // Fails once the upgrade has gone through (dying before that is the handshake cell).
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(200)) { ChurnWire.fail(cell.fault, context: context, masked: false) }
        }
    }

    /// Records `.tcp` if the connection ends before a close comes, `.timeout` if neither comes.
    private func watch(_ context: ChannelHandlerContext, patience: TimeAmount) {
        guard let cell else { return }
        let id = self.id, tally = self.tally
        let timer = context.eventLoop.assumeIsolated().scheduleTask(in: patience) {
            tally.record(id, cell, .timeout)
            context.close(promise: nil)
        }
        context.channel.closeFuture.whenComplete { _ in
            timer.cancel()
            tally.record(id, cell, .tcp)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        big.pump(context)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

