import NIOCore

/// Reads the rest of a response no client waits for any more, then gives its keep-alive
/// connection back to the pool.
///
/// A client that cancels a request (an HTTP/2 stream reset, a browser leaving the page, a load
/// generator stopping with streams in flight, an HTTP/1 client closing its TLS connection)
/// leaves a backend connection in the middle of an exchange. (On a plain HTTP/1 listener a
/// client's close reads as a half-close: the exchange runs to its end and keeps its connection
/// without this.) Closed, it costs a close now and a connect (and, for an `https` backend, a
/// handshake) for a later request: under load, a cancelled stream each became a fresh backend
/// connection. The request has gone out whole, so the response is read and dropped here, within
/// bounds: at most `maxBytes` of it and `maxTime`, else the connection is closed as before. What
/// the backend says about keeping it (`Connection: close`, a body that runs until it closes,
/// bytes after the response) decides as for any exchange. A head read here counts toward the
/// backend's passive health as the exchange's own would have (`BackendSet.answered`): a backend
/// that fails the requests its clients gave up on is still ejected.
final class UpstreamDrain: UpstreamHTTPHandler.Delegate {
    /// The most of an abandoned response read to save its connection: small answers and the
    /// tail of a larger one; a download cut early is not worth reading on.
    static let maxBytes = 64 * 1024
    /// The longest an abandoned response is waited for (its head included): a slow backend's
    /// answer still saves its connection, one that hangs does not hold it longer than this.
    static let maxTime = TimeAmount.seconds(5)

    private let connection: UpstreamConnection
    /// The backend's set and its place in it: the pool's key, and its passive health.
    private let backends: BackendSet
    private let index: Int
    private let settings: PoolSettings
    private let pool: UpstreamPool
    /// The head of the response, once read (by the exchange before it let go, or here).
    private var head: UpstreamResponseParser.Head?
    private var bytes = 0
    private var overdue: Scheduled<Void>?
    private var done = false

    /// Starts reading on `connection` to backend `index` of `backends`; the response's head is
    /// passed when the exchange had it (and counted it).
    @discardableResult
    static func start(
        _ connection: UpstreamConnection, head: UpstreamResponseParser.Head?, from backends: BackendSet, _ index: Int, settings: PoolSettings,
        pool: UpstreamPool
    ) -> UpstreamDrain {
        let drain = UpstreamDrain(connection: connection, head: head, backends: backends, index: index, settings: settings, pool: pool)
        connection.handler.delegate = drain
        drain.overdue = connection.channel.eventLoop.assumeIsolated().scheduleTask(in: maxTime) {
            drain.finish(reusable: false)
        }
        connection.handler.paused = false
        // A request written inside the client's last read may still wait for that read's flush.
        connection.handler.flushWrites()
        return drain
    }

    private init(
        connection: UpstreamConnection, head: UpstreamResponseParser.Head?, backends: BackendSet, index: Int, settings: PoolSettings,
        pool: UpstreamPool
    ) {
        self.connection = connection
        self.head = head
        self.backends = backends
        self.index = index
        self.settings = settings
        self.pool = pool
    }

    func upstreamRead(_ event: UpstreamResponseParser.Event, now: NIODeadline) {
        guard !done else { return }
        switch event {
        case .head(let head):
            self.head = head
            backends.answered(index, status: head.status, to: "a cancelled request")
        case .body(let buffer):
            bytes += buffer.readableBytes
            if bytes > Self.maxBytes { finish(reusable: false) }
        case .end:
            finish(reusable: (head?.keepAlive ?? false) && connection.handler.isReusable, now: now)
        }
    }

    func upstreamReadComplete() {}

    func upstreamClosed(_ error: (any Error)?) {
        guard !done else { return }
        done = true
        overdue?.cancel()
        overdue = nil
    }

    func upstreamWritable() {}

    private func finish(reusable: Bool, now: NIODeadline? = nil) {
        guard !done else { return }
        done = true
        overdue?.cancel()
        overdue = nil
        connection.handler.delegate = nil
        pool.release(
            connection, backend: backends.backend(index), settings: settings, reusable: reusable, backendKeepAliveSeconds: head?.keepAliveTimeout,
            now: now
        )
    }
}
