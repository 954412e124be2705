import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// One connection to a Redis server, kept open: commands are pipelined (answers come back in the
/// order they were sent), each call has a timeout, and a lost connection is opened again with
/// doubling back-off. A call made while no connection is open fails at once, never waits: the
/// caller's failure policy decides, and the event loop is never blocked.
///
/// All state lives on `eventLoop`; the public calls hop onto it. A `subscriber` client sends only
/// its SUBSCRIBE and hands every value the server pushes to `onMessage`.
final class RedisClient: @unchecked Sendable {
    /// Where the server is and how to speak to it.
    struct Endpoint: Sendable {
        var host: String
        var port: Int
        var database = 0
        var username: String?
        var password: String?
        /// `rediss://`: TLS to the server.
        var tls: NIOSSLContext?
        var serverName: String?
        /// The bound on each call.
        var timeout: TimeAmount = .milliseconds(50)
        /// The bound on opening a connection (and its AUTH/SELECT).
        var connectTimeout: TimeAmount = .seconds(1)
    }

    enum Mode: Sendable {
        case commands
        /// Subscribes to these channels after each connect; pushes go to `onMessage`.
        case subscriber([String])
    }

    private struct Pending {
        var sequence: UInt64
        var promise: EventLoopPromise<RESPValue>?
        var timeout: Scheduled<Void>?
    }

    private enum State {
        case idle
        case connecting
        case ready(any Channel)
        case stopped
    }

    let eventLoop: any EventLoop
    let endpoint: Endpoint
    private let mode: Mode
    private let logger: Logger
    private var state = State.idle
    private var pending = CircularBuffer<Pending>()
    private var sent: UInt64 = 0
    private var answered: UInt64 = 0
    private var backoff: TimeAmount = .milliseconds(100)
    private var reconnect: Scheduled<Void>?
    private var lastFailure = "not connected yet"
    /// The connection a flush is asked for and not yet done on (`flushSoon`).
    private var flushAsked: (any Channel)?
    /// Called on `eventLoop` after each successful connect (and AUTH/SELECT), before any call
    /// made afterwards is sent.
    var onReady: (@Sendable () -> Void)?
    /// Called on `eventLoop` when an open connection is lost.
    var onLost: (@Sendable (String) -> Void)?
    /// A subscriber's messages: (channel, payload).
    var onMessage: (@Sendable (String, [UInt8]) -> Void)?

    static let maxBackoff: TimeAmount = .seconds(5)
    /// An answer this late means the server is stuck (stopped, swapping): the connection is
    /// dropped and opened again rather than letting calls queue behind it.
    static let stallLimit: TimeAmount = .seconds(1)
    /// Calls in flight beyond this fail at once.
    static let maxPending = 10_000

    init(endpoint: Endpoint, mode: Mode = .commands, eventLoop: any EventLoop, logger: Logger) {
        self.endpoint = endpoint
        self.mode = mode
        self.eventLoop = eventLoop
        self.logger = logger
    }

    /// Opens the connection (and keeps opening it).
    func start() {
        eventLoop.execute { [self] in
            if case .idle = state { connect() }
        }
    }

    /// Closes the connection for good; calls in flight fail.
    func stop() -> EventLoopFuture<Void> {
        eventLoop.submit { [self] in
            reconnect?.cancel()
            let channel: (any Channel)? = if case .ready(let channel) = state { channel } else { nil }
            state = .stopped
            failAll(.unavailable("the gateway is stopping"))
            channel?.close(promise: nil)
        }
    }

    var isConnected: Bool {
        eventLoop.assertInEventLoop()
        if case .ready = state { return true }
        return false
    }

    /// Sends one command; the answer, or why there is none. A server error is a `.server` failure.
    /// `timeout` replaces the endpoint's for calls that carry much (a whole table).
    func send(_ command: [String], timeout: TimeAmount? = nil) -> EventLoopFuture<RESPValue> {
        if eventLoop.inEventLoop { return sendOnLoop(command, timeout: timeout ?? endpoint.timeout) }
        return eventLoop.flatSubmit { [self] in sendOnLoop(command, timeout: timeout ?? endpoint.timeout) }
    }

    private func sendOnLoop(_ command: [String], timeout: TimeAmount) -> EventLoopFuture<RESPValue> {
        guard case .ready(let channel) = state else {
            return eventLoop.makeFailedFuture(RedisError.unavailable(lastFailure))
        }
        guard pending.count < Self.maxPending else {
            return eventLoop.makeFailedFuture(RedisError.unavailable("\(Self.maxPending) calls already waiting"))
        }
        var buffer = channel.allocator.buffer(capacity: 64)
        RESPValue.writeCommand(command, into: &buffer)
        return enqueue(buffer, on: channel, timeout: timeout)
    }

    private func enqueue(_ buffer: ByteBuffer, on channel: any Channel, timeout: TimeAmount) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        sent += 1
        let sequence = sent
        let scheduled = eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in timedOut(sequence, after: timeout) }
        pending.append(Pending(sequence: sequence, promise: promise, timeout: scheduled))
        channel.write(buffer, promise: nil)
        flushSoon(channel)
        return promise.futureResult
    }

    /// Flushes once the loop has handled this wake-up's events: the calls of every upgrade and
    /// close handled in one wake-up leave in one write, not one syscall each.
    private func flushSoon(_ channel: any Channel) {
        guard flushAsked !== channel else { return }
        flushAsked = channel
        eventLoop.assumeIsolated().execute { [self] in
            if flushAsked === channel { flushAsked = nil }
            channel.flush()
        }
    }

    private func timedOut(_ sequence: UInt64, after timeout: TimeAmount) {
        guard let index = pending.firstIndex(where: { $0.sequence == sequence }), let promise = pending[index].promise else { return }
        pending[index].promise = nil
        promise.fail(RedisError.timeout(milliseconds: Int(timeout.nanoseconds / 1_000_000)))
        // The answer may still come (and is then dropped); if it does not within the stall
        // limit, the connection is not worth keeping.
        eventLoop.assumeIsolated().scheduleTask(in: Self.stallLimit) { [self] in
            guard answered < sequence, case .ready(let channel) = state else { return }
            logger.warning("Redis stalled: no answer for \(Self.stallLimit); reconnecting", metadata: ["redis": "\(endpoint.host):\(endpoint.port)"])
            channel.close(promise: nil)
        }
    }

    private func received(_ value: RESPValue) {
        if case .subscriber = mode, pending.isEmpty {
            // Past the handshake every value is a push: ["message", channel, payload] (RESP2 array or RESP3 push); subscribe confirmations
            // and anything else are not messages.
            if let items = value.array, items.count == 3, items[0].string == "message", let channel = items[1].string,
                case .bulkString(let payload) = items[2]
            {
                onMessage?(channel, payload)
            }
            return
        }
        if case .push = value { return }  // out-of-band (RESP3 invalidation): not an answer
        guard let first = pending.popFirst() else {
            lastFailure = "an answer to no command"
            if case .ready(let channel) = state { channel.close(promise: nil) }
            return
        }
        answered = first.sequence
        first.timeout?.cancel()
        guard let promise = first.promise else { return }
        if case .error(let message) = value {
            promise.fail(RedisError.server(message))
        } else {
            promise.succeed(value)
        }
    }

    private func failAll(_ error: RedisError) {
        while let entry = pending.popFirst() {
            entry.timeout?.cancel()
            entry.promise?.fail(error)
        }
    }

    // MARK: Connecting

    private func connect() {
        state = .connecting
        let endpoint = self.endpoint
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(endpoint.connectTimeout)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls = endpoint.tls {
                        try sync.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: endpoint.serverName))
                    }
                    try sync.addHandler(RedisChannelHandler(
                        onValue: { [self] value in received(value) },
                        onFailure: { [self] reason in lastFailure = reason }
                    ))
                }
            }
        bootstrap.connect(host: endpoint.host, port: endpoint.port).assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let channel):
                guard case .connecting = state else {
                    channel.close(promise: nil)
                    return
                }
                channel.closeFuture.assumeIsolated().whenComplete { [self] _ in lost(channel) }
                handshake(channel)
            case .failure(let error):
                guard case .connecting = state else { return }
                lastFailure = "cannot connect to \(endpoint.host):\(endpoint.port): \(error)"
                retryLater()
            }
        }
    }

    /// AUTH, SELECT, SUBSCRIBE as the endpoint needs, then ready.
    private func handshake(_ channel: any Channel) {
        var commands: [[String]] = []
        if let password = endpoint.password {
            commands.append(endpoint.username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
        }
        if endpoint.database != 0 { commands.append(["SELECT", String(endpoint.database)]) }
        // Ready means the server answers, not only that its kernel accepted the connection (a
        // stopped server's does).
        commands.append(["PING"])
        let futures = commandFutures(commands, on: channel)
        EventLoopFuture.andAllSucceed(futures, on: eventLoop).assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success:
                guard case .connecting = state else { return }
                if case .subscriber(let channels) = mode, !channels.isEmpty {
                    var buffer = channel.allocator.buffer(capacity: 64)
                    RESPValue.writeCommand(["SUBSCRIBE"] + channels, into: &buffer)
                    channel.writeAndFlush(buffer, promise: nil)
                }
                state = .ready(channel)
                backoff = .milliseconds(100)
                logger.info("connected to Redis", metadata: ["redis": "\(endpoint.host):\(endpoint.port)"])
                onReady?()
            case .failure(let error):
                lastFailure = "Redis at \(endpoint.host):\(endpoint.port) refused the connection's setup: \(error)"
                logger.error("\(lastFailure)")
                channel.close(promise: nil)
            }
        }
    }

    private func commandFutures(_ commands: [[String]], on channel: any Channel) -> [EventLoopFuture<Void>] {
        commands.map { command in
            var buffer = channel.allocator.buffer(capacity: 64)
            RESPValue.writeCommand(command, into: &buffer)
            return enqueue(buffer, on: channel, timeout: endpoint.connectTimeout).map { _ in }
        }
    }

    private func lost(_ channel: any Channel) {
        let wasReady: Bool
        switch state {
        case .ready(let current) where current === channel: wasReady = true
        case .connecting: wasReady = false
        default: return
        }
        if wasReady { lastFailure = "connection to \(endpoint.host):\(endpoint.port) lost" }
        failAll(.unavailable(lastFailure))
        if wasReady {
            logger.warning("lost the Redis connection; reconnecting", metadata: ["redis": "\(endpoint.host):\(endpoint.port)"])
            onLost?(lastFailure)
        }
        retryLater()
    }

    private func retryLater() {
        guard case .stopped = state else {
            state = .idle
            let delay = backoff
            backoff = min(backoff * 2, Self.maxBackoff)
            reconnect = eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
                if case .idle = state { connect() }
            }
            return
        }
    }
}
