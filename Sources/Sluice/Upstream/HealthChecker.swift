import NIOConcurrencyHelpers
import NIOCore
import SluiceConfig

/// The active checks of one backend of one set: every `interval` (jittered ±10%, the first at a
/// random point of the first interval, so a set's checks do not fire together), connect, send
/// the check's request, read the answer with `HealthProbe` within `timeout`, tell the set.
/// Runs on one event loop for its whole life.
final class HealthChecker: Sendable {
    /// Held until `stop()`, which the set calls when it leaves the configuration.
    private let set: BackendSet
    private let index: Int
    private let configuration: HealthCheckConfiguration
    private let eventLoop: any EventLoop
    private let state = NIOLockedValueBox(State())

    private struct State {
        var stopped = false
        var timer: Scheduled<Void>?
    }

    init(set: BackendSet, index: Int, configuration: HealthCheckConfiguration, eventLoop: any EventLoop) {
        self.set = set
        self.index = index
        self.configuration = configuration
        self.eventLoop = eventLoop
    }

    func start() {
        let interval = configuration.interval.nanoseconds
        schedule(in: .nanoseconds(Int64.random(in: 0...max(1, interval))))
    }

    func stop() {
        state.withLockedValue { state in
            state.stopped = true
            state.timer?.cancel()
            state.timer = nil
        }
    }

    private func schedule(in delay: TimeAmount) {
        state.withLockedValue { state in
            guard !state.stopped else { return }
            state.timer = eventLoop.scheduleTask(in: delay) { [self] in check() }
        }
    }

    private func nextDelay() -> TimeAmount {
        let interval = Double(configuration.interval.nanoseconds)
        return .nanoseconds(Int64(interval * Double.random(in: 0.9...1.1)))
    }

    /// One check; the next is scheduled when it has a verdict.
    private func check() {
        guard !state.withLockedValue({ $0.stopped }) else { return }
        let backend = set.backend(index)
        let startedAt = NIODeadline.now()
        let key = WebSocketKey.random()
        let done = ProbeOutcome(eventLoop.makePromise(of: HealthProbe.Step.self))
        let handler = HealthProbeHandler(
            probe: HealthProbe(mode: configuration.mode, expectStatus: configuration.expectStatus, key: key),
            request: HealthProbe.request(mode: configuration.mode, target: backend.target(for: configuration.path), host: backend.hostHeader, key: key),
            done: done
        )
        let timeout = TimeAmount.nanoseconds(configuration.timeout.nanoseconds)
        let timer = eventLoop.scheduleTask(in: timeout) { done.succeed(.fail("no answer within \(self.configuration.timeout)")) }
        backend.connectBytes(on: eventLoop, timeout: timeout, handler: handler).whenComplete { result in
            switch result {
            case .success(let channel):
                done.promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            case .failure(let error):
                done.succeed(.fail("connect: \(BackendConnectFailure.describe(error))"))
            }
        }
        done.promise.futureResult.whenSuccess { [self] step in
            timer.cancel()
            let latency = Duration.nanoseconds((NIODeadline.now() - startedAt).nanoseconds)
            if case .fail(let reason) = step {
                set.checked(index, passed: false, latency: latency, reason: reason)
            } else {
                set.checked(index, passed: true, latency: latency, reason: "")
            }
            schedule(in: nextDelay())
        }
    }
}

/// A check's verdict, given once: the timer, the connect, the answer and the close all race to
/// give it, all on the check's event loop.
private final class ProbeOutcome: @unchecked Sendable {
    let promise: EventLoopPromise<HealthProbe.Step>
    private var given = false

    init(_ promise: EventLoopPromise<HealthProbe.Step>) {
        self.promise = promise
    }

    func succeed(_ step: HealthProbe.Step) {
        promise.futureResult.eventLoop.preconditionInEventLoop()
        guard !given else { return }
        given = true
        promise.succeed(step)
    }
}

/// The channel side of one check: writes the request when connected, feeds the probe, sends
/// the ping and the close of a `websocket` check.
private final class HealthProbeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var probe: HealthProbe
    private let request: String
    private let done: ProbeOutcome

    init(probe: HealthProbe, request: String, done: ProbeOutcome) {
        self.probe = probe
        self.request = request
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: request)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        var step = probe.received(bytes.readableBytesView)
        if step == .ping {
            let ping = ControlFrameEncoder.frame(opcode: FrameHeader.Opcode.ping, payload: Array("sluice-health".utf8), masked: true, allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(ping), promise: nil)
            step = probe.readFrames()
        }
        switch step {
        case .wait, .ping: break
        case .pass:
            if probe.mode == .websocket {
                let close = ControlFrameEncoder.close(code: 1000, reason: "", masked: true, allocator: context.channel.allocator)
                context.writeAndFlush(wrapOutboundOut(close), promise: nil)
            }
            done.succeed(.pass)
        case .fail:
            done.succeed(step)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .fail(let reason) = probe.closed() { done.succeed(.fail(reason)) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.succeed(.fail("\(BackendConnectFailure.describe(error))"))
        context.close(promise: nil)
    }
}
