import NIOCore
import NIOHTTP1

/// The phases of one client connection's HTTP/1.1 requests, as a value: what the connection
/// is doing, whether it may read, which request parts wait their turn, and when it closes. The
/// handler feeds it events (a request part, a read wanted, an answer written, the client's
/// half-close, a drain) and carries out the actions it returns; the machine itself touches no
/// channel, so every path is tested as a table (`HTTPConnectionStateMachineTests`).
///
/// Requests are answered one at a time and in order. Parts of a request pipelined behind one
/// still being answered are queued and replayed once it is done; reads stop only once
/// something is queued (holding reads for every request would cost two `epoll_ctl` calls per
/// request). While a route's authentication decides or an upgrade is in flight, reads are held,
/// so bytes the client sends early stay in the decoder and reach the relay in order.
///
/// Generic over what it holds (the answer decided from a head, the proxied exchange, the
/// upgrade), so tests drive it with plain values.
struct HTTPConnectionStateMachine<Answer, Exchange, Upgrade> {
    /// What the connection is doing with its current request.
    enum Phase {
        /// Waiting for a request head.
        case idle
        /// Head seen and decided; the answer is given when the request ends.
        case pending(Answer)
        /// The route's authentication is deciding; reads are held and request parts kept.
        case authorizing(Answer)
        /// A plain request is being proxied; its body streams through the exchange.
        case proxying(Exchange)
        /// A backend upgrade is in flight; reads are held.
        case upgrading(Upgrade)
        /// The relay took over, or the connection is closing.
        case closed
    }

    /// What to do with a request part that came in.
    enum PartAction {
        /// A new request: decide its answer (`decided`, `authorizing`, `proxying` follow).
        case decide(HTTPRequestHead)
        /// Body bytes for the exchange.
        case body(Exchange, ByteBuffer)
        /// The request's end, for the exchange.
        case end(Exchange)
        /// The request ended: give the answer decided at its head.
        case perform(Answer)
        /// Nothing now (queued, kept for after authentication, or nothing to do).
        case none
    }

    private(set) var phase: Phase = .idle
    /// The gateway is draining: the current answer is the connection's last.
    private(set) var quiescing = false
    /// A `read()` was held back; issue it when the connection is free.
    private var readHeld = false
    /// The exchange's backend cannot take more: the client is not read.
    private var backendFull = false
    /// The current request's end was read.
    private var requestEnded = false
    /// The client half-closed: what it sent is answered, then the connection closes.
    private var clientInputClosed = false
    /// Parts read while authentication decides, replayed to the exchange; body bytes read while
    /// an upgrade is in flight, given to the relay.
    private var held: [HTTPServerRequestPart] = []
    /// Parts of requests pipelined behind the current one.
    private var queued: [HTTPServerRequestPart] = []

    /// The current request was read to its end and is still being answered.
    private var busyWithEarlierRequest: Bool {
        switch phase {
        case .proxying, .authorizing: requestEnded
        default: false
        }
    }

    // MARK: Reads

    /// The pipeline wants to read: whether to read now (otherwise the read is held).
    mutating func readWanted() -> Bool {
        switch phase {
        case .upgrading, .authorizing:
            readHeld = true
            return false
        case .proxying where backendFull || (requestEnded && !queued.isEmpty):
            readHeld = true
            return false
        default:
            return true
        }
    }

    /// Whether a held read should be issued now.
    mutating func resumeReading() -> Bool {
        guard readHeld else { return false }
        readHeld = false
        return true
    }

    /// The exchange's backend filled up or drained: whether a held read should be issued now.
    mutating func backendFull(_ full: Bool) -> Bool {
        backendFull = full
        return full ? false : resumeReading()
    }

    // MARK: Request parts

    /// A part from the decoder.
    mutating func received(_ part: HTTPServerRequestPart) -> PartAction {
        if !queued.isEmpty || busyWithEarlierRequest {
            queued.append(part)
            return .none
        }
        return handle(part)
    }

    /// The next queued part's action once the connection is free, or `nil` when nothing queued
    /// can go yet (call again after acting on it).
    mutating func nextQueued() -> PartAction? {
        guard !queued.isEmpty else { return nil }
        if case .closed = phase {
            queued = []
            return nil
        }
        guard !busyWithEarlierRequest else { return nil }
        return handle(queued.removeFirst())
    }

    private mutating func handle(_ part: HTTPServerRequestPart) -> PartAction {
        switch part {
        case .head(let head):
            guard case .idle = phase else { return .none }
            requestEnded = false
            return .decide(head)
        case .body(let buffer):
            switch phase {
            case .proxying(let exchange): return .body(exchange, buffer)
            // (An upgrade's: an HTTP/2 stream's DATA before the answer, which no held read
            // keeps back; the relay gets it first.)
            case .authorizing, .upgrading: held.append(part)
            default: break
            }
            return .none
        case .end:
            requestEnded = true
            switch phase {
            case .proxying(let exchange): return .end(exchange)
            case .authorizing: held.append(part)
            case .pending(let answer): return .perform(answer)
            default: break
            }
            return .none
        }
    }

    // MARK: Decisions

    /// The head's answer is known and waits for the request's end.
    mutating func decided(_ answer: Answer) {
        phase = .pending(answer)
    }

    /// The route's authentication runs for `answer`.
    mutating func authorizing(_ answer: Answer) {
        phase = .authorizing(answer)
        held = []
    }

    /// Authentication admitted the request: the answer it was deciding, or `nil` when the
    /// connection has moved on (it closed meanwhile).
    mutating func authorized() -> Answer? {
        guard case .authorizing(let answer) = phase else { return nil }
        return answer
    }

    /// Whether authentication's verdict still matters (the connection did not close meanwhile).
    var isAuthorizing: Bool {
        if case .authorizing = phase { true } else { false }
    }

    /// A plain request is proxied through `exchange`: the parts read meanwhile, to replay to it.
    mutating func proxying(_ exchange: Exchange) -> [HTTPServerRequestPart] {
        phase = .proxying(exchange)
        defer { held = [] }
        return held
    }

    /// The relay takes over from the upgrade: the body bytes read before it, in order, for the
    /// relay to take first.
    mutating func relaying() -> [ByteBuffer] {
        let early = held.compactMap { part -> ByteBuffer? in
            if case .body(let buffer) = part { buffer } else { nil }
        }
        _ = close()
        return early
    }

    /// A backend upgrade is in flight.
    mutating func upgrading(_ upgrade: Upgrade) {
        phase = .upgrading(upgrade)
    }

    // MARK: Endings

    /// An answer was written. `keepAlive`: the connection may carry another request (it will
    /// not while draining). Returns whether it does: arm the header timer and go on
    /// (`nextQueued`, `resumeReading`, `closeIfClientDone`); otherwise it is closing.
    mutating func answered(keepAlive: Bool) -> Bool {
        backendFull = false
        // What was held belonged to the request just answered (a refused upgrade's early
        // bytes, say): none of it may reach the next request's exchange.
        held = []
        guard keepAlive && !quiescing else {
            phase = .closed
            return false
        }
        phase = .idle
        return true
    }

    /// The client half-closed: whether to close now (nothing it sent is left to answer).
    mutating func inputClosed() -> Bool {
        clientInputClosed = true
        return closeIfClientDone()
    }

    /// After an answer: whether to close now because the client half-closed and everything it
    /// sent has been answered.
    mutating func closeIfClientDone() -> Bool {
        guard clientInputClosed else { return false }
        return closeIfIdle()
    }

    /// The gateway drains: whether to close now (idle, nothing queued); a busy connection closes
    /// after its current answer.
    mutating func quiesce() -> Bool {
        quiescing = true
        return closeIfIdle()
    }

    private mutating func closeIfIdle() -> Bool {
        guard case .idle = phase, queued.isEmpty else { return false }
        phase = .closed
        return true
    }

    /// The connection ends (the client left, an exchange was cut short, the relay took over):
    /// the phase it was in, so the handler cancels the work in flight.
    mutating func close() -> Phase {
        let previous = phase
        phase = .closed
        queued = []
        held = []
        return previous
    }

    /// Whether the client already half-closed (a relay cannot start on it).
    var clientHalfClosed: Bool { clientInputClosed }
}
