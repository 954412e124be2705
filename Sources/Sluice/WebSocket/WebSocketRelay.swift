import Logging
import NIOCore

/// Relays WebSocket frames between a client channel and a backend channel.
///
/// Both channels live on one event loop (the backend connection is made on the client's loop),
/// so the relay needs no locks. Each direction streams: frame headers are parsed and checked,
/// payload bytes are forwarded as they arrive, in the slices they arrived in. A direction stops
/// reading its source while its destination is not writable, so memory per connection stays
/// bounded by the write buffer water marks whatever the peers do. Frames the gateway sends on
/// its own (pings, closes) wait for a frame boundary, never splitting a forwarded frame.
final class WebSocketRelay {
    /// Settings fixed when the relay starts, from the route and the handshake.
    struct Configuration {
        var route: String
        var perMessageDeflate: Bool
        var remask: Bool
        var maxFrameSize: Int
        var maxMessageSize: Int
        var bufferSize: Int
        var idleTimeout: TimeAmount?
        var closeTimeout: TimeAmount
        var pingInterval: TimeAmount?
        var pongTimeout: TimeAmount
        var maxLifetime: TimeAmount?
    }

    /// Totals at the end, for the access log and metrics.
    struct Summary {
        var route: String
        var duration: TimeAmount
        var outcome: StateMachine.Outcome?
        var fromClient: TrafficCounters
        var fromBackend: TrafficCounters
        /// The gateway closed the connection because no frame passed for `idleTimeout`.
        var idleTimedOut: Bool
    }

    let configuration: Configuration
    let eventLoop: any EventLoop
    private let logger: Logger
    private let onFinish: (Summary) -> Void
    private let startedAt: NIODeadline
    private let metrics: RouteMetrics?
    /// Totals already added to the route's counters, per source side (`RelaySide.index`).
    private var reported = [TrafficCounters(), TrafficCounters()]
    /// Control frames read, per source side.
    private var pings: [UInt64] = [0, 0]
    private var pongs: [UInt64] = [0, 0]
    private var idleTimedOut = false
    private var expiryDelay: TimeAmount?

    private var downstreamContext: ChannelHandlerContext?
    private var upstreamContext: ChannelHandlerContext?
    private var machine = StateMachine()
    /// Frames read from the client, going to the backend.
    private var fromDownstream: RelayDirection
    /// Frames read from the backend, going to the client.
    private var fromUpstream: RelayDirection
    private var outputs: [RelayDirection.Output] = []
    /// Gateway frames waiting for a frame boundary, per destination.
    private var pendingToDownstream: [ByteBuffer] = []
    private var pendingToUpstream: [ByteBuffer] = []
    private var disconnectAfterPending: Set<RelaySide> = []
    /// A gateway close waits among the pending frames for this side.
    private var closeQueued: Set<RelaySide> = []
    /// Per side, indexed by `RelaySide.index`: plain flags, so the per-write path hashes nothing.
    private var needsFlush = [false, false]
    /// A `read()` from this source was held back because its destination was not writable.
    private var readHeld = [false, false]
    private var lastActivity: NIODeadline
    private var lastHeardDownstream: NIODeadline
    private var lastHeardUpstream: NIODeadline
    private var timers: [Scheduled<Void>] = []
    private var closeTimer: Scheduled<Void>?
    private var pingTask: RepeatedTask?
    /// Events that arrived while the pipelines were being switched, replayed by `start()`.
    private enum EarlyEvent {
        case read(ByteBuffer, RelaySide)
        case inactive(RelaySide)
        case close(downstreamCode: UInt16, upstreamCode: UInt16, reason: String)
    }
    private var earlyEvents: [EarlyEvent] = []
    private var started = false

    init(
        configuration: Configuration, eventLoop: any EventLoop, logger: Logger, metrics: RouteMetrics? = nil,
        onFinish: @escaping (Summary) -> Void
    ) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.logger = logger
        self.metrics = metrics
        self.onFinish = onFinish
        let now = NIODeadline.now()
        startedAt = now
        lastActivity = now
        lastHeardDownstream = now
        lastHeardUpstream = now
        func direction(fromClient: Bool) -> RelayDirection {
            RelayDirection(configuration: .init(
                sourceIsClient: fromClient, allowsCompressedBit: configuration.perMessageDeflate,
                maxFrameSize: UInt64(configuration.maxFrameSize), maxMessageSize: UInt64(configuration.maxMessageSize),
                remask: fromClient && configuration.remask
            ))
        }
        fromDownstream = direction(fromClient: true)
        fromUpstream = direction(fromClient: false)
        outputs.reserveCapacity(16)
    }

    // MARK: Wiring

    func attach(_ context: ChannelHandlerContext, side: RelaySide) {
        let marks = ChannelOptions.Types.WriteBufferWaterMark(
            low: max(1, configuration.bufferSize / 2), high: configuration.bufferSize
        )
        context.channel.setOption(ChannelOptions.writeBufferWaterMark, value: marks).whenFailure { _ in }
        if side == .downstream { downstreamContext = context } else { upstreamContext = context }
    }

    /// Begins relaying once both channels are switched: replays early reads, arms the timers.
    func start() {
        started = true
        let early = earlyEvents
        earlyEvents = []
        for event in early {
            switch event {
            case .read(let buffer, let side): channelRead(buffer, from: side)
            case .inactive(let side): channelInactive(side)
            case .close(let downstreamCode, let upstreamCode, let reason):
                close(downstreamCode: downstreamCode, upstreamCode: upstreamCode, reason: reason)
            }
        }
        for side in RelaySide.allCases { flushIfNeeded(side) }
        startTimers()
    }

    private func context(_ side: RelaySide) -> ChannelHandlerContext? {
        side == .downstream ? downstreamContext : upstreamContext
    }

    private func startTimers() {
        if let idle = configuration.idleTimeout { scheduleIdleCheck(at: lastActivity + idle) }
        if let lifetime = configuration.maxLifetime {
            timers.append(eventLoop.assumeIsolated().scheduleTask(in: lifetime) { [self] in
                perform(machine.closeBoth(downstreamCode: CloseCode.goingAway, upstreamCode: CloseCode.goingAway, reason: "maximum lifetime reached"))
            })
        }
        if let expiry = expiryDelay {
            timers.append(eventLoop.assumeIsolated().scheduleTask(in: expiry) { [self] in
                perform(machine.closeBoth(downstreamCode: CloseCode.policyViolation, upstreamCode: CloseCode.goingAway, reason: "credential expired"))
            })
        }
        if let interval = configuration.pingInterval {
            // Repeated tasks take only Sendable closures; the relay is bound to its loop instead.
            let relay = NIOLoopBound(self, eventLoop: eventLoop)
            pingTask = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in relay.value.pingTick() }
        }
    }

    private func scheduleIdleCheck(at deadline: NIODeadline) {
        timers.append(eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            guard let idle = configuration.idleTimeout, !machine.isFinished else { return }
            if NIODeadline.now() - lastActivity >= idle {
                logger.debug("websocket idle timeout", metadata: ["route": "\(configuration.route)"])
                idleTimedOut = true
                perform(machine.closeBoth(downstreamCode: CloseCode.goingAway, upstreamCode: CloseCode.goingAway, reason: "idle timeout"))
            } else {
                scheduleIdleCheck(at: lastActivity + idle)
            }
        })
    }

    private func pingTick() {
        guard let interval = configuration.pingInterval, !machine.isFinished else { return }
        let now = NIODeadline.now()
        let silentAfter = interval + configuration.pongTimeout
        for side in RelaySide.allCases {
            let heard = side == .downstream ? lastHeardDownstream : lastHeardUpstream
            if now - heard > silentAfter {
                logger.debug("websocket peer silent", metadata: ["side": "\(side.rawValue)"])
                perform(machine.peerSilent(side))
            }
        }
        perform(machine.pingTick())
    }

    // MARK: Events from the handlers

    func channelRead(_ data: ByteBuffer, from side: RelaySide) {
        guard started else {
            earlyEvents.append(.read(data, side))
            return
        }
        var buffer = data
        let now = NIODeadline.now()
        if side == .downstream { lastHeardDownstream = now } else { lastHeardUpstream = now }
        let destination = side.peer
        while buffer.readableBytes > 0 {
            outputs.removeAll(keepingCapacity: true)
            let waiting = !(destination == .upstream ? pendingToUpstream : pendingToDownstream).isEmpty
            let origin = buffer.readerIndex
            let stop: RelayDirection.Stop
            if side == .downstream {
                stop = fromDownstream.process(&buffer, into: &outputs, stopAtFrameBoundary: waiting)
            } else {
                stop = fromUpstream.process(&buffer, into: &outputs, stopAtFrameBoundary: waiting)
            }
            var processed = buffer
            processed.moveReaderIndex(to: origin)
            emit(processed, from: side, at: now)
            switch stop {
            case .frameBoundary:
                flushPending(to: destination)
            case .consumedAll, .closeReceived:
                return
            case .violation(let violation):
                logger.debug("websocket protocol violation", metadata: ["side": "\(side.rawValue)", "reason": "\(violation.reason)"])
                perform(machine.violation(code: violation.code, reason: violation.reason, from: side))
                return
            }
        }
    }

    /// Writes this read's outputs to the destination, in order; `buffer`'s readable bytes are
    /// the ones just processed.
    private func emit(_ buffer: ByteBuffer, from side: RelaySide, at now: NIODeadline) {
        guard !outputs.isEmpty else { return }
        let destination = side.peer
        for output in outputs {
            switch output {
            case .range(let lower, let upper):
                lastActivity = now
                write(buffer.getSlice(at: lower, length: upper - lower)!, to: destination)
            case .bytes(let bytes):
                write(bytes, to: destination)
            case .control(let frame):
                if frame.opcode == FrameHeader.Opcode.pong {
                    pongs[side.index] += 1
                } else {
                    lastActivity = now
                    if frame.opcode == FrameHeader.Opcode.ping { pings[side.index] += 1 }
                }
                perform(machine.controlFrame(frame, from: side))
            }
        }
    }

    func channelReadComplete(from side: RelaySide) {
        guard started else { return }
        flushIfNeeded(side.peer)
        flushIfNeeded(side)
    }

    /// The source asks to read: allowed only while its destination can take more.
    func read(from side: RelaySide, context: ChannelHandlerContext) {
        let destination = self.context(side.peer)
        if let destination, !destination.channel.isWritable, !machine.isFinished {
            readHeld[side.index] = true
        } else {
            context.read()
        }
    }

    func writabilityChanged(_ side: RelaySide) {
        guard let context = self.context(side), context.channel.isWritable else { return }
        let source = side.peer
        if readHeld[source.index] {
            readHeld[source.index] = false
            self.context(source)?.read()
        }
    }

    func channelInactive(_ side: RelaySide) {
        guard started else {
            earlyEvents.append(.inactive(side))
            return
        }
        if side == .downstream { downstreamContext = nil } else { upstreamContext = nil }
        perform(machine.peerGone(side))
        if let other = self.context(side.peer), readHeld[side.peer.index] {
            readHeld[side.peer.index] = false
            other.read()
        }
    }

    /// Closes the WebSocket with 1008 to the client (1001 to the backend) when the credential
    /// that admitted it expires; armed once the relay starts.
    func closeWhenCredentialExpires(in delay: TimeAmount) {
        expiryDelay = delay
    }

    /// Closes both sides from outside (shutdown, kick).
    func close(downstreamCode: UInt16, upstreamCode: UInt16, reason: String) {
        // Nothing is written before the handshake codecs have left both pipelines.
        guard started else {
            earlyEvents.append(.close(downstreamCode: downstreamCode, upstreamCode: upstreamCode, reason: reason))
            return
        }
        perform(machine.closeBoth(downstreamCode: downstreamCode, upstreamCode: upstreamCode, reason: reason))
    }

    // MARK: Figures

    /// What was read from `side` so far.
    func traffic(from side: RelaySide) -> TrafficCounters {
        let direction = side == .downstream ? fromDownstream : fromUpstream
        return TrafficCounters(
            bytes: direction.bytes, frames: direction.frames, messages: direction.messages,
            pings: pings[side.index], pongs: pongs[side.index]
        )
    }

    /// Adds the traffic since the last report to the route's counters: called when someone
    /// reads the metrics and when the relay ends, never per frame.
    func reportTraffic() {
        guard let metrics else { return }
        for side in RelaySide.allCases {
            let now = traffic(from: side)
            let before = reported[side.index]
            if now.messages > before.messages { metrics.messages[side.index].increment(by: now.messages - before.messages) }
            if now.frames > before.frames { metrics.frames[side.index].increment(by: now.frames - before.frames) }
            if now.bytes > before.bytes { metrics.bytes[side.index].increment(by: now.bytes - before.bytes) }
            reported[side.index] = now
        }
    }

    /// The live figures for `/connections`.
    func snapshot(_ info: ConnectionInfo) -> ConnectionSnapshot {
        reportTraffic()
        let sinceActivity = NIODeadline.now() - lastActivity
        let state = machine.isFinished ? "closed" : (!machine.isOpen ? "closing" : "open")
        return ConnectionSnapshot(
            info: info, fromClient: traffic(from: .downstream), fromBackend: traffic(from: .upstream),
            lastActivity: WallClock.now() - Double(sinceActivity.nanoseconds) / 1e9, state: state
        )
    }

    // MARK: Actions

    private func perform(_ actions: [StateMachine.Action]) {
        for action in actions {
            switch action {
            case .forward(let frame, let side):
                if side == .upstream && configuration.remask {
                    write(ControlFrameEncoder.frame(opcode: frame.opcode, payload: frame.payload, masked: true, allocator: allocator), to: side)
                } else {
                    write(ByteBuffer(bytes: frame.wire), to: side)
                }
            case .sendClose(let code, let reason, let side):
                sendOwn(ControlFrameEncoder.close(code: code, reason: reason, masked: side == .upstream, allocator: allocator), to: side, isClose: true)
            case .sendCloseAndDisconnect(let code, let reason, let side):
                sendOwn(ControlFrameEncoder.close(code: code, reason: reason, masked: side == .upstream, allocator: allocator), to: side, isClose: true)
                disconnect(side)
            case .sendPing(let payload, let side):
                sendOwn(ControlFrameEncoder.frame(opcode: FrameHeader.Opcode.ping, payload: payload, masked: side == .upstream, allocator: allocator), to: side)
            case .disconnect(let side):
                disconnect(side)
            case .startCloseTimer:
                closeTimer = eventLoop.assumeIsolated().scheduleTask(in: configuration.closeTimeout) { [self] in
                    perform(machine.closeTimedOut())
                }
            case .finished:
                finish()
            }
        }
    }

    private var allocator: ByteBufferAllocator {
        (downstreamContext ?? upstreamContext)?.channel.allocator ?? ByteBufferAllocator()
    }

    private func write(_ buffer: ByteBuffer, to side: RelaySide) {
        guard let context = context(side) else { return }
        context.write(NIOAny(buffer), promise: nil)
        needsFlush[side.index] = true
    }

    /// Sends a gateway frame now, or after the frame being forwarded to `side` ends. Once a
    /// close of the gateway's own has gone to `side`, data frames bound there are dropped.
    private func sendOwn(_ frame: ByteBuffer, to side: RelaySide, isClose: Bool = false) {
        let insideFrame = side == .upstream ? fromDownstream.isInsideFrame : fromUpstream.isInsideFrame
        if insideFrame {
            if side == .upstream { pendingToUpstream.append(frame) } else { pendingToDownstream.append(frame) }
            if isClose { closeQueued.insert(side) }
        } else {
            write(frame, to: side)
            flushIfNeeded(side)
            if isClose { stopForwardingData(to: side) }
        }
    }

    private func stopForwardingData(to side: RelaySide) {
        if side == .upstream { fromDownstream.dropData() } else { fromUpstream.dropData() }
    }

    private func flushPending(to side: RelaySide) {
        let frames = side == .upstream ? pendingToUpstream : pendingToDownstream
        if side == .upstream { pendingToUpstream = [] } else { pendingToDownstream = [] }
        for frame in frames { write(frame, to: side) }
        flushIfNeeded(side)
        if closeQueued.remove(side) != nil { stopForwardingData(to: side) }
        if disconnectAfterPending.remove(side) != nil { disconnect(side) }
    }

    private func flushIfNeeded(_ side: RelaySide) {
        guard needsFlush[side.index], let context = context(side) else { return }
        needsFlush[side.index] = false
        context.flush()
    }

    /// Closes `side` once everything written to it has gone out.
    private func disconnect(_ side: RelaySide) {
        let pending = side == .upstream ? pendingToUpstream : pendingToDownstream
        guard pending.isEmpty else {
            disconnectAfterPending.insert(side)
            return
        }
        guard let context = context(side) else { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(capacity: 0)), promise: promise)
        needsFlush[side.index] = false
        let channel = context.channel
        promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }

    private func finish() {
        closeTimer?.cancel()
        for timer in timers { timer.cancel() }
        timers = []
        pingTask?.cancel()
        pingTask = nil
        let summary = Summary(
            route: configuration.route,
            duration: NIODeadline.now() - startedAt,
            outcome: machine.outcome,
            fromClient: traffic(from: .downstream), fromBackend: traffic(from: .upstream),
            idleTimedOut: idleTimedOut
        )
        reportTraffic()
        onFinish(summary)
    }
}
