import Logging
import NIOCore
import NIOSSL

/// Relays WebSocket frames between a client and a backend: a channel each, or, for an RFC 8441
/// WebSocket on Sluice's own HTTP/2 layer, a stream on the client's side (`RelayPeer`).
///
/// Both sides live on one event loop (the backend connection is made on the client's loop),
/// so the relay needs no locks. Each direction streams: frame headers are parsed and checked,
/// payload bytes are forwarded as they arrive, in the slices they arrived in. A direction stops
/// reading its source while its destination is not writable, so memory per connection stays
/// bounded by the write buffer water marks whatever the peers do. Frames the gateway sends on
/// its own (pings, closes) wait for a frame boundary, never splitting a forwarded frame; when
/// and how the connection ends is `StateMachine`'s to decide, on one timer per connection.
final class WebSocketRelay {
    /// Settings fixed when the relay starts, from the route and the handshake. A class of
    /// constants made twice per route (with and without permessage-deflate), so each relay
    /// holds a reference rather than its own copy of the fields.
    final class Configuration: Sendable {
        let route: String
        let perMessageDeflate: Bool
        let remask: Bool
        let maxFrameSize: Int
        let maxMessageSize: Int
        let bufferSize: Int
        let timing: StateMachine.Timing

        init(
            route: String, perMessageDeflate: Bool, remask: Bool, maxFrameSize: Int, maxMessageSize: Int, bufferSize: Int,
            timing: StateMachine.Timing
        ) {
            self.route = route
            self.perMessageDeflate = perMessageDeflate
            self.remask = remask
            self.maxFrameSize = maxFrameSize
            self.maxMessageSize = maxMessageSize
            self.bufferSize = bufferSize
            self.timing = timing
        }
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
    private let metrics: RouteMetrics?
    /// Totals already added to the route's counters, per source side.
    private var reported = PerSide(TrafficCounters())
    /// Control frames read, per source side.
    private var pings = PerSide<UInt64>(0)
    private var pongs = PerSide<UInt64>(0)

    /// Each side while it is there.
    private var peers = PerSide<RelayPeer?>(nil)
    private var machine: StateMachine
    /// Frames read from the client, going to the backend.
    private var fromDownstream: RelayDirection
    /// Frames read from the backend, going to the client.
    private var fromUpstream: RelayDirection
    /// Per side: plain flags, so the per-write path hashes nothing.
    private var needsFlush = PerSide(false)
    /// A `read()` from this source was held back because its destination was not writable.
    private var readHeld = PerSide(false)
    /// Sides on plain TCP (no TLS, not an HTTP/2 stream): closing one waits for no write's
    /// promise when nothing is left in its buffer.
    private var plainSocket = PerSide(false)
    private var lastActivity: NIODeadline
    private var lastHeardDownstream: NIODeadline
    private var lastHeardUpstream: NIODeadline
    /// The connection's one timer, at the machine's next deadline (or earlier: when it fires
    /// early, because activity moved the idle deadline on, it is armed again).
    private var timer = DeadlineTimer()
    /// Events that arrived while the pipelines were being switched, replayed by `start()`.
    private enum EarlyEvent {
        case read(ByteBuffer, RelaySide)
        case inactive(RelaySide)
        case close(downstreamCode: UInt16, upstreamCode: UInt16, reason: String, ending: StateMachine.Ending)
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
        let now = eventLoop.now
        machine = StateMachine(timing: configuration.timing, now: now)
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
    }

    // MARK: Wiring

    /// `isSocket`: the side's channel is a socket, whose write buffer the relay sizes (an
    /// HTTP/2 stream is not).
    func attach(_ context: ChannelHandlerContext, side: RelaySide, isSocket: Bool = true) {
        if isSocket {
            plainSocket[side] = (try? context.pipeline.syncOperations.context(handlerType: NIOSSLHandler.self)) == nil
            let marks = ChannelOptions.Types.WriteBufferWaterMark(
                low: max(1, configuration.bufferSize / 2), high: configuration.bufferSize
            )
            // Synchronously: through the channel's future-returning API this costs a future.
            try? context.channel.syncOptions?.setOption(ChannelOptions.writeBufferWaterMark, value: marks)
        }
        peers[side] = .channel(context)
    }

    /// The client's side is a stream of Sluice's own HTTP/2 layer (RFC 8441), with no channel.
    func attach(_ stream: HTTP2WireStream) {
        peers.downstream = .stream(stream)
    }

    /// Begins relaying once both channels are switched: replays early events, arms the timer.
    func start() {
        started = true
        let early = earlyEvents
        earlyEvents = []
        for event in early {
            switch event {
            case .read(let buffer, let side): channelRead(buffer, from: side)
            case .inactive(let side): channelInactive(side)
            case .close(let downstreamCode, let upstreamCode, let reason, let ending):
                close(downstreamCode: downstreamCode, upstreamCode: upstreamCode, reason: reason, ending: ending)
            }
        }
        for side in RelaySide.allCases { flushIfNeeded(side) }
        armTimer()
    }

    /// Whether each destination's stream is inside a forwarded frame, for the machine.
    private var streams: StateMachine.Streams {
        StateMachine.Streams(
            insideFrameToDownstream: fromUpstream.isInsideFrame, insideFrameToUpstream: fromDownstream.isInsideFrame,
            insideMessageToDownstream: fromUpstream.inMessage && !fromUpstream.dropsData,
            insideMessageToUpstream: fromDownstream.inMessage && !fromDownstream.dropsData
        )
    }

    /// Makes sure the timer fires no later than the machine's next deadline.
    private func armTimer() {
        guard let deadline = machine.nextDeadline(lastActivity: lastActivity) else {
            timer.cancel()
            return
        }
        timer.arm(deadline, on: eventLoop) { [self] in
            timer.fired()
            let wasOpen = machine.isOpen
            perform(machine.timerFired(
                now: eventLoop.now, lastActivity: lastActivity, lastHeard: (lastHeardDownstream, lastHeardUpstream), streams: streams
            ))
            if wasOpen && machine.idleTimedOut {
                logger.debug("websocket idle timeout", metadata: ["route": "\(configuration.route)"])
            }
            armTimer()
        }
    }

    // MARK: Events from the handlers

    func channelRead(_ data: ByteBuffer, from side: RelaySide) {
        guard started else {
            earlyEvents.append(.read(data, side))
            return
        }
        var buffer = data
        let now = eventLoop.now
        if side == .downstream { lastHeardDownstream = now } else { lastHeardUpstream = now }
        let destination = side.peer
        let scratch = RelayScratch.current
        var outputs = scratch.take()
        defer { scratch.give(&outputs) }
        while buffer.readableBytes > 0 {
            outputs.removeAll(keepingCapacity: true)
            let waiting = machine.awaitsBoundary(to: destination)
            let origin = buffer.readerIndex
            let stop: RelayDirection.Stop
            if side == .downstream {
                stop = fromDownstream.process(&buffer, into: &outputs, stopAtFrameBoundary: waiting)
            } else {
                stop = fromUpstream.process(&buffer, into: &outputs, stopAtFrameBoundary: waiting)
            }
            var processed = buffer
            processed.moveReaderIndex(to: origin)
            emit(outputs, of: processed, from: side, at: now)
            switch stop {
            case .frameBoundary:
                perform(machine.frameBoundary(streams: streams, now: now))
            case .consumedAll, .closeReceived:
                return
            case .violation(let violation):
                logger.debug("websocket protocol violation", metadata: ["side": "\(side.rawValue)", "reason": "\(violation.reason)"])
                perform(machine.violation(code: violation.code, reason: violation.reason, from: side, streams: streams, now: now))
                return
            }
        }
    }

    /// Writes this read's outputs to the destination, in order; `buffer`'s readable bytes are
    /// the ones just processed.
    private func emit(_ outputs: [RelayDirection.Output], of buffer: ByteBuffer, from side: RelaySide, at now: NIODeadline) {
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
                    pongs[side] += 1
                } else {
                    lastActivity = now
                    if frame.opcode == FrameHeader.Opcode.ping { pings[side] += 1 }
                }
                perform(machine.controlFrame(frame, from: side, streams: streams, now: now))
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
        if readsFrom(side) { context.read() }
    }

    /// Whether `side` may be read now; if not, it is read again (`RelayPeer.read()`) once its
    /// destination can take more.
    func readsFrom(_ side: RelaySide) -> Bool {
        if let destination = peers[side.peer], !destination.isWritable, !machine.isFinished {
            readHeld[side] = true
            return false
        }
        return true
    }

    func writabilityChanged(_ side: RelaySide) {
        guard let destination = peers[side], destination.isWritable else { return }
        let source = side.peer
        if readHeld[source] {
            readHeld[source] = false
            peers[source]?.read()
        }
    }

    func channelInactive(_ side: RelaySide) {
        guard started else {
            earlyEvents.append(.inactive(side))
            return
        }
        // Whether the stream it fed was inside a frame is read before the side is forgotten.
        let streams = self.streams
        peers[side] = nil
        perform(machine.peerGone(side, streams: streams, now: eventLoop.now))
        if let other = peers[side.peer], readHeld[side.peer] {
            readHeld[side.peer] = false
            other.read()
        }
    }

    /// Closes the WebSocket with 1008 to the client (1001 to the backend) when the credential
    /// that admitted it expires.
    func closeWhenCredentialExpires(in delay: TimeAmount) {
        machine.expire(at: machine.startedAt + delay)
    }

    /// Closes both sides from outside (shutdown, kick). A connection already closing is not
    /// touched: its close timeout ends it.
    func close(downstreamCode: UInt16, upstreamCode: UInt16, reason: String, ending: StateMachine.Ending) {
        // Nothing is written before the handshake codecs have left both pipelines.
        guard started else {
            earlyEvents.append(.close(downstreamCode: downstreamCode, upstreamCode: upstreamCode, reason: reason, ending: ending))
            return
        }
        perform(machine.closeBoth(
            downstreamCode: downstreamCode, upstreamCode: upstreamCode, reason: reason, ending: ending, streams: streams, now: eventLoop.now
        ))
    }

    /// Closes both connections at the TCP level now (a drain's deadline passed).
    func abort() {
        guard started else {
            earlyEvents.append(.close(downstreamCode: CloseCode.goingAway, upstreamCode: CloseCode.goingAway, reason: "drain deadline", ending: .shutdown))
            return
        }
        perform(machine.abortAll(now: eventLoop.now))
    }

    // MARK: Figures

    /// What was read from `side` so far.
    func traffic(from side: RelaySide) -> TrafficCounters {
        let direction = side == .downstream ? fromDownstream : fromUpstream
        return TrafficCounters(
            bytes: direction.bytes, frames: direction.frames, messages: direction.messages,
            pings: pings[side], pongs: pongs[side]
        )
    }

    /// Adds the traffic since the last report to the route's counters: called when someone
    /// reads the metrics and when the relay ends, never per frame.
    func reportTraffic() {
        guard let metrics else { return }
        for side in RelaySide.allCases {
            let now = traffic(from: side)
            let before = reported[side]
            if now.messages > before.messages { metrics.messages[side.index].increment(by: now.messages - before.messages) }
            if now.frames > before.frames { metrics.frames[side.index].increment(by: now.frames - before.frames) }
            if now.bytes > before.bytes { metrics.bytes[side.index].increment(by: now.bytes - before.bytes) }
            reported[side] = now
        }
    }

    /// The live figures for `/connections`.
    func snapshot(_ info: ConnectionInfo) -> ConnectionSnapshot {
        reportTraffic()
        let sinceActivity = eventLoop.now - lastActivity
        let state = machine.isFinished ? "closed" : (!machine.isOpen ? "closing" : "open")
        return ConnectionSnapshot(
            info: info, fromClient: traffic(from: .downstream), fromBackend: traffic(from: .upstream),
            lastActivity: WallClock.now() - Double(sinceActivity.nanoseconds) / 1e9, state: state
        )
    }

    // MARK: Actions

    /// Carries out the machine's actions, then re-arms the timer: an event can move a deadline
    /// without any action (a violation's linger), so the timer is looked at after each.
    private func perform(_ actions: [StateMachine.Action]) {
        /// Sides told to go that have no channel or stream to close (never attached): nothing
        /// will report them gone, so they are reported here, after these actions.
        var detached: [RelaySide] = []
        for action in actions {
            switch action {
            case .forward(let frame, let side):
                if side == .upstream && configuration.remask {
                    write(ControlFrameEncoder.frame(opcode: frame.opcode, payload: frame.payload, masked: true, allocator: allocator), to: side)
                } else {
                    write(ByteBuffer(bytes: frame.wire), to: side)
                }
            case .sendClose(let code, let reason, let side):
                write(ControlFrameEncoder.close(code: code, reason: reason, masked: side == .upstream, allocator: allocator), to: side)
                flushIfNeeded(side)
                // No data frame may follow a close: what the other side still sends is dropped.
                if side == .upstream { fromDownstream.dropData() } else { fromUpstream.dropData() }
            case .sendPing(let payload, let side):
                write(ControlFrameEncoder.frame(opcode: FrameHeader.Opcode.ping, payload: payload, masked: side == .upstream, allocator: allocator), to: side)
                flushIfNeeded(side)
            case .disconnect(let side):
                if peers[side] == nil { detached.append(side) } else { disconnect(side) }
            case .abort(let side):
                if peers[side] == nil { detached.append(side) } else { abort(side) }
            case .finished:
                finish()
            }
        }
        armTimer()
        // (`peerGone` is idempotent: a side already reported gone changes nothing.)
        for side in detached { channelInactive(side) }
    }

    private var allocator: ByteBufferAllocator {
        (peers.downstream ?? peers.upstream)?.allocator ?? ByteBufferAllocator()
    }

    private func write(_ buffer: ByteBuffer, to side: RelaySide) {
        guard let peer = peers[side] else { return }
        peer.write(buffer)
        needsFlush[side] = true
    }

    private func flushIfNeeded(_ side: RelaySide) {
        guard needsFlush[side], let peer = peers[side] else { return }
        needsFlush[side] = false
        peer.flush()
    }

    /// Closes `side` once everything written to it has gone out (the machine's close deadline
    /// aborts it if the peer never reads).
    private func disconnect(_ side: RelaySide) {
        let context: ChannelHandlerContext
        switch peers[side] {
        case .none:
            return
        case .stream(let stream):
            // END_STREAM after what is queued; the stream closes once the client ends its side.
            needsFlush[side] = false
            stream.tunnelEnd()
            return
        case .channel(let channelContext):
            context = channelContext
        }
        if plainSocket[side] {
            if needsFlush[side] {
                needsFlush[side] = false
                context.flush()
            }
            // Everything written is with the kernel, in order before the FIN: close now. (A
            // socket's close drops what it still buffers, which is what the empty write's
            // promise below waits out.)
            if (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) == 0 {
                context.channel.close(promise: nil)
                return
            }
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(capacity: 0)), promise: promise)
        needsFlush[side] = false
        let channel = context.channel
        promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }

    /// Closes `side`'s connection now, without waiting for writes or for TLS's close_notify
    /// exchange: the close starts below the TLS handler when there is one; an HTTP/2 stream
    /// is reset.
    private func abort(_ side: RelaySide) {
        let context: ChannelHandlerContext
        switch peers[side] {
        case .none:
            return
        case .stream(let stream):
            stream.tunnelReset()
            return
        case .channel(let channelContext):
            context = channelContext
        }
        let pipeline = context.pipeline.syncOperations
        if let tls = try? pipeline.context(handlerType: NIOSSLHandler.self) {
            tls.close(promise: nil)
        } else if let stream = try? pipeline.context(handlerType: HTTP2TunnelCodec.self), let codec = stream.handler as? HTTP2TunnelCodec {
            codec.reset(stream)
        } else {
            context.channel.close(promise: nil)
        }
    }

    private func finish() {
        timer.cancel()
        let summary = Summary(
            route: configuration.route,
            duration: eventLoop.now - machine.startedAt,
            outcome: machine.outcome,
            fromClient: traffic(from: .downstream), fromBackend: traffic(from: .upstream),
            idleTimedOut: machine.idleTimedOut
        )
        reportTraffic()
        onFinish(summary)
    }
}
