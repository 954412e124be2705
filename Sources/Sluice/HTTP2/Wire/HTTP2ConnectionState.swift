import NIOCore

/// The server side of one HTTP/2 connection's state, with no channel: which streams exist and
/// where each is in its life (RFC 9113 §5.1), the rules on stream identifiers (§5.1.1) and on
/// concurrency (§5.1.2), both flow-control windows in both directions (§6.9), the peer's
/// SETTINGS as they bear on what Sluice writes (§6.5), and GOAWAY either way. It takes the
/// frames `HTTP2FrameReader` reads and says what they mean for the connection (`Inbound`);
/// the connection's owner tells it what it writes and what the application consumed, and it
/// answers with the window updates to send. Header blocks stay encoded: every block that
/// arrives — even on a stream being refused or already reset — is handed on, since HPACK's
/// table must see every block in order.
///
/// The second piece of HTTP/2 of Sluice's own (`docs/architecture.md`, "Not built yet").
package struct HTTP2ConnectionState: Sendable {
    /// What Sluice sets for the connection, sent in its first SETTINGS.
    package struct Settings: Sendable {
        package var maxConcurrentStreams = 100
        /// Each stream's receive window, in effect once the client acknowledges the SETTINGS
        /// (until then the protocol's 65,535).
        package var initialWindowSize = 65_535
        /// The largest frame Sluice reads, likewise once acknowledged.
        package var maxFrameSize = HTTP2WireFrame.defaultMaxFrameSize
        /// The decoded size of a header list Sluice accepts (advertised; HPACK's decoder
        /// enforces it).
        package var maxHeaderListSize = 16_384
        /// The connection's receive window, raised from 65,535 by a WINDOW_UPDATE at the start.
        package var connectionWindowSize = 1 << 20
        /// DATA frames with nothing in them (and no END_STREAM) allowed in a row before the
        /// connection ends: a client can make a server spin on them for free (NIOHTTP2's 1).
        package var maxEmptyDataFrames = 1
        /// RFC 8441's extended CONNECT is offered (SETTINGS_ENABLE_CONNECT_PROTOCOL).
        package var extendedConnect = true

        package init() {}

        /// What goes in Sluice's first SETTINGS frame.
        package var wire: [HTTP2WireSetting] {
            [
                HTTP2WireSetting(HTTP2WireSetting.maxConcurrentStreams, UInt32(maxConcurrentStreams)),
                HTTP2WireSetting(HTTP2WireSetting.initialWindowSize, UInt32(initialWindowSize)),
                HTTP2WireSetting(HTTP2WireSetting.maxFrameSize, UInt32(maxFrameSize)),
                HTTP2WireSetting(HTTP2WireSetting.maxHeaderListSize, UInt32(maxHeaderListSize)),
            ] + (extendedConnect ? [HTTP2WireSetting(HTTP2WireSetting.enableConnectProtocol, 1)] : [])
        }
    }

    /// What a frame from the client means, for the connection's owner to act on.
    package enum Inbound: Equatable, Sendable {
        /// Nothing to act on (a PRIORITY, a SETTINGS acknowledgement, a window update that
        /// opened no stream, a frame on a stream Sluice reset).
        case none
        /// A new stream's request header block.
        case request(stream: UInt32, block: ByteBuffer, endStream: Bool)
        /// A header block on a stream that has its request: trailers, ending the stream.
        case trailers(stream: UInt32, block: ByteBuffer)
        /// A block to decode (HPACK's table must see it) and drop: its stream is refused, reset
        /// or closed; `refusal` is the stream error to send, if one is due.
        case discardedBlock(block: ByteBuffer, refusal: HTTP2WireError?)
        case data(stream: UInt32, payload: ByteBuffer, endStream: Bool)
        /// The client reset a stream.
        case reset(stream: UInt32, code: UInt32)
        /// A stream error to send as RST_STREAM; the stream is closed.
        case streamError(HTTP2WireError)
        /// The client's SETTINGS, applied: acknowledge them.
        case settings
        /// The client acknowledged Sluice's first SETTINGS: its frame size is in effect now
        /// (for the reader), as its stream window is (here).
        case settingsAcknowledged
        /// A PING to answer with the same opaque data.
        case ping(opaque: UInt64)
        /// The client goes away: no stream above `lastStream` of Sluice's will be read.
        case goAway(lastStream: UInt32, code: UInt32)
        /// The send window grew: for the connection (`stream` 0), so every stream may have
        /// room, or for one stream.
        case windowOpened(stream: UInt32)
    }

    /// Where one stream is (§5.1), seen from the server; a stream out of the table is idle
    /// (above `highestStream`) or closed.
    package enum StreamState: Equatable, Sendable {
        case open
        /// The client ended its side; Sluice may still send.
        case halfClosedRemote
        /// Sluice ended its side; the client may still send.
        case halfClosedLocal
    }

    private struct Stream {
        var state: StreamState
        var sendWindow: Int
        var receiveWindow: Int
        /// Bytes the application consumed and no WINDOW_UPDATE has announced yet.
        var unannounced = 0
    }

    package let settings: Settings
    private var streams = HTTP2StreamTable<Stream>()
    /// The highest stream the client opened (or tried to): any below it not in `streams` is closed.
    package private(set) var highestStream: UInt32 = 0
    /// Streams Sluice reset or refused lately, whose late frames are ignored (§5.1, "closed").
    private var recentlyReset: [UInt32] = []
    private static let recentlyResetKept = 64

    /// The client's SETTINGS_INITIAL_WINDOW_SIZE: each new stream's send window.
    private var peerInitialWindow = 65_535
    /// The client's SETTINGS_MAX_FRAME_SIZE: what the writer splits to.
    package private(set) var peerMaxFrameSize = HTTP2WireFrame.defaultMaxFrameSize
    /// The client's SETTINGS_HEADER_TABLE_SIZE: the most Sluice's HPACK encoder may use.
    package private(set) var peerHeaderTableSize = 4_096
    private var connectionSendWindow = 65_535
    private var connectionReceiveWindow = 65_535
    private var connectionUnannounced = 0
    package private(set) var settingsAcknowledged = false
    /// The concurrent streams allowed: Sluice's limit once the client acknowledged it (§6.5.3);
    /// before, what the protocol allows by default (no limit), bounded at 100 (NIOHTTP2 too
    /// takes its limit in effect only on acknowledgement, and h2load opens its streams before
    /// it reads Sluice's SETTINGS).
    private var concurrencyLimit: Int {
        settingsAcknowledged ? settings.maxConcurrentStreams : max(settings.maxConcurrentStreams, 100)
    }
    /// The stream receive window in effect: 65,535 until the client acknowledges Sluice's SETTINGS.
    private var receiveInitial: Int { settingsAcknowledged ? settings.initialWindowSize : 65_535 }
    /// Set once Sluice sent GOAWAY: streams above it are refused.
    package private(set) var goAwayLastStream: UInt32?
    /// Set once the client sent GOAWAY.
    package private(set) var clientWentAway = false
    /// Empty DATA frames since the last HEADERS or END_STREAM.
    private var emptyDataRun = 0

    private static let maxWindow = 0x7fff_ffff

    package init(settings: Settings = Settings()) {
        precondition(settings.initialWindowSize > 0 && settings.initialWindowSize <= Self.maxWindow)
        precondition(settings.connectionWindowSize >= 65_535 && settings.connectionWindowSize <= Self.maxWindow)
        self.settings = settings
    }

    /// Streams open in either direction.
    package var openStreams: Int { streams.count }

    package func state(of stream: UInt32) -> StreamState? { streams[stream]?.state }

    /// What Sluice writes first, after its SETTINGS: the connection window's raise, if any.
    package mutating func openingWindowUpdate() -> UInt32? {
        let raise = settings.connectionWindowSize - connectionReceiveWindow
        guard raise > 0 else { return nil }
        connectionReceiveWindow += raise
        return UInt32(raise)
    }

    // MARK: Frames from the client

    package mutating func received(_ frame: HTTP2WireFrame) throws(HTTP2WireError) -> Inbound {
        switch frame {
        case .headers(let stream, let block, let endStream, let priority):
            return try receivedHeaders(stream: stream, block: block, endStream: endStream, priority: priority)
        case .data(let stream, let payload, let endStream, let flowControlled):
            return try receivedData(stream: stream, payload: payload, endStream: endStream, flowControlled: flowControlled)
        case .priority:
            return .none
        case .resetStream(let stream, let code):
            if streams[stream] != nil {
                streams[stream] = nil
                return .reset(stream: stream, code: code)
            }
            if stream > highestStream { throw .connection(.protocolError, "RST_STREAM on idle stream \(stream)") }
            return .none
        case .settings(let list):
            try apply(list)
            return .settings
        case .settingsAck:
            guard !settingsAcknowledged else { return .none }
            // §6.9.2: the change applies to every open stream's window, below zero if it must.
            let delta = settings.initialWindowSize - receiveInitial
            settingsAcknowledged = true
            for id in streams.keys { streams[id]!.receiveWindow += delta }
            return .settingsAcknowledged
        case .ping(let opaque, let ack):
            return ack ? .none : .ping(opaque: opaque)
        case .goAway(let lastStream, let code, _):
            clientWentAway = true
            return .goAway(lastStream: lastStream, code: code)
        case .windowUpdate(let stream, let increment):
            return try receivedWindowUpdate(stream: stream, increment: Int(increment))
        }
    }

    private mutating func receivedHeaders(stream: UInt32, block: ByteBuffer, endStream: Bool, priority: HTTP2WirePriority?) throws(HTTP2WireError) -> Inbound {
        emptyDataRun = 0
        if var existing = streams[stream] {
            guard existing.state != .halfClosedRemote else {
                streams[stream] = nil
                remember(stream)
                return .discardedBlock(block: block, refusal: .stream(stream, .streamClosed, "HEADERS after the request's end on stream \(stream)"))
            }
            guard endStream else {
                streams[stream] = nil
                remember(stream)
                return .discardedBlock(block: block, refusal: .stream(stream, .protocolError, "trailers without END_STREAM on stream \(stream)"))
            }
            if existing.state == .halfClosedLocal {
                streams[stream] = nil
            } else {
                existing.state = .halfClosedRemote
                streams[stream] = existing
            }
            return .trailers(stream: stream, block: block)
        }
        if stream <= highestStream {
            if recentlyReset.contains(stream) { return .discardedBlock(block: block, refusal: nil) }
            throw .connection(.streamClosed, "HEADERS on closed stream \(stream)")
        }
        guard stream % 2 == 1 else { throw .connection(.protocolError, "a client opened even-numbered stream \(stream)") }
        highestStream = stream
        if priority?.dependency == stream {
            remember(stream)
            return .discardedBlock(block: block, refusal: .stream(stream, .protocolError, "stream \(stream) depends on itself"))
        }
        if let last = goAwayLastStream, stream > last {
            remember(stream)
            return .discardedBlock(block: block, refusal: .stream(stream, .refusedStream, "stream \(stream) opened after GOAWAY"))
        }
        guard streams.count < concurrencyLimit else {
            remember(stream)
            let reason = "stream \(stream) past \(concurrencyLimit) concurrent streams"
            return .discardedBlock(block: block, refusal: .stream(stream, .refusedStream, reason))
        }
        streams[stream] = Stream(state: endStream ? .halfClosedRemote : .open, sendWindow: peerInitialWindow, receiveWindow: receiveInitial)
        return .request(stream: stream, block: block, endStream: endStream)
    }

    private mutating func receivedData(stream: UInt32, payload: ByteBuffer, endStream: Bool, flowControlled: Int) throws(HTTP2WireError) -> Inbound {
        if endStream {
            emptyDataRun = 0
        } else if payload.readableBytes == 0 {
            emptyDataRun += 1
            guard emptyDataRun <= settings.maxEmptyDataFrames else {
                throw .connection(.enhanceYourCalm, "more than \(settings.maxEmptyDataFrames) empty DATA frames in a row")
            }
        }
        guard flowControlled <= connectionReceiveWindow else {
            throw .connection(.flowControlError, "DATA of \(flowControlled) bytes past the connection's window of \(connectionReceiveWindow)")
        }
        connectionReceiveWindow -= flowControlled
        guard var existing = streams[stream] else {
            if stream > highestStream { throw .connection(.protocolError, "DATA on idle stream \(stream)") }
            // Nobody will consume these bytes: the connection's window gets them back at once.
            connectionUnannounced += flowControlled
            if recentlyReset.contains(stream) { return .none }
            remember(stream)
            return .streamError(.stream(stream, .streamClosed, "DATA on closed stream \(stream)"))
        }
        guard existing.state != .halfClosedRemote else {
            connectionUnannounced += flowControlled
            streams[stream] = nil
            remember(stream)
            return .streamError(.stream(stream, .streamClosed, "DATA after the request's end on stream \(stream)"))
        }
        guard flowControlled <= existing.receiveWindow else {
            connectionUnannounced += flowControlled
            streams[stream] = nil
            remember(stream)
            let reason = "DATA of \(flowControlled) bytes past stream \(stream)'s window of \(existing.receiveWindow)"
            return .streamError(.stream(stream, .flowControlError, reason))
        }
        existing.receiveWindow -= flowControlled
        // Padding is consumed on arrival; the payload when the application says so.
        let padding = flowControlled - payload.readableBytes
        existing.unannounced += padding
        connectionUnannounced += padding
        if endStream {
            if existing.state == .halfClosedLocal {
                streams[stream] = nil
            } else {
                existing.state = .halfClosedRemote
                streams[stream] = existing
            }
        } else {
            streams[stream] = existing
        }
        return .data(stream: stream, payload: payload, endStream: endStream)
    }

    private mutating func receivedWindowUpdate(stream: UInt32, increment: Int) throws(HTTP2WireError) -> Inbound {
        if stream == 0 {
            guard connectionSendWindow + increment <= Self.maxWindow else {
                throw .connection(.flowControlError, "the connection's send window past 2^31-1")
            }
            connectionSendWindow += increment
            return .windowOpened(stream: 0)
        }
        guard var existing = streams[stream] else {
            if stream > highestStream { throw .connection(.protocolError, "WINDOW_UPDATE on idle stream \(stream)") }
            return .none
        }
        guard existing.sendWindow + increment <= Self.maxWindow else {
            streams[stream] = nil
            remember(stream)
            return .streamError(.stream(stream, .flowControlError, "stream \(stream)'s send window past 2^31-1"))
        }
        existing.sendWindow += increment
        streams[stream] = existing
        return .windowOpened(stream: stream)
    }

    private mutating func apply(_ list: [HTTP2WireSetting]) throws(HTTP2WireError) {
        for setting in list {
            switch setting.identifier {
            case HTTP2WireSetting.initialWindowSize:
                let delta = Int(setting.value) - peerInitialWindow
                for id in streams.keys {
                    guard var stream = streams[id] else { continue }
                    guard stream.sendWindow + delta <= Self.maxWindow else {
                        throw .connection(.flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE takes stream \(id)'s window past 2^31-1")
                    }
                    stream.sendWindow += delta
                    streams[id] = stream
                }
                peerInitialWindow = Int(setting.value)
            case HTTP2WireSetting.maxFrameSize:
                peerMaxFrameSize = Int(setting.value)
            case HTTP2WireSetting.headerTableSize:
                peerHeaderTableSize = Int(setting.value)
            default:
                break
            }
        }
    }

    private mutating func remember(_ stream: UInt32) {
        if recentlyReset.count == Self.recentlyResetKept { recentlyReset.removeFirst() }
        recentlyReset.append(stream)
    }

    // MARK: What Sluice writes and consumes

    /// How many DATA bytes stream `stream` may send now: the smaller of its window and the
    /// connection's (0 for a stream that cannot send).
    package func sendable(on stream: UInt32) -> Int {
        guard let existing = streams[stream], existing.state != .halfClosedLocal else { return 0 }
        return max(0, min(existing.sendWindow, connectionSendWindow))
    }

    /// Whether Sluice may send a header block on `stream` (its answer, or trailers).
    package func canSend(on stream: UInt32) -> Bool {
        guard let existing = streams[stream] else { return false }
        return existing.state != .halfClosedLocal
    }

    /// Sluice sends a header block on `stream`; with `endStream` its side ends.
    package mutating func sentHeaders(on stream: UInt32, endStream: Bool) {
        guard endStream else { return }
        endLocal(stream)
    }

    /// Sluice sends `bytes` of DATA on `stream` (at most `sendable(on:)`).
    package mutating func sentData(on stream: UInt32, bytes: Int, endStream: Bool) {
        guard var existing = streams[stream] else {
            precondition(bytes == 0, "DATA past the send window")
            return
        }
        precondition(bytes == 0 || (existing.state != .halfClosedLocal && bytes <= min(existing.sendWindow, connectionSendWindow)), "DATA past the send window")
        connectionSendWindow -= bytes
        if endStream && existing.state == .halfClosedRemote {
            streams[stream] = nil
        } else {
            existing.sendWindow -= bytes
            if endStream { existing.state = .halfClosedLocal }
            streams[stream] = existing
        }
    }

    private mutating func endLocal(_ stream: UInt32) {
        guard let existing = streams[stream] else { return }
        if existing.state == .halfClosedRemote {
            streams[stream] = nil
        } else {
            streams[stream]?.state = .halfClosedLocal
        }
    }

    /// Sluice resets `stream` (RST_STREAM): it is closed, and its late frames ignored.
    package mutating func reset(_ stream: UInt32) {
        streams[stream] = nil
        remember(stream)
    }

    /// The application consumed `bytes` of `stream`'s DATA: the WINDOW_UPDATE increments to send
    /// (stream 0 for the connection), each once half its window waits to be announced.
    /// `connection`: false for bytes already given back to the connection's window
    /// (`connectionConsumed`).
    package mutating func consumed(_ bytes: Int, on stream: UInt32, connection: Bool = true) -> [(stream: UInt32, increment: UInt32)] {
        var updates: [(stream: UInt32, increment: UInt32)] = []
        if connection { connectionUnannounced += bytes }
        if var existing = streams[stream], existing.state != .halfClosedRemote {
            existing.unannounced += bytes
            if existing.unannounced >= max(receiveInitial / 2, 1) {
                existing.receiveWindow += existing.unannounced
                updates.append((stream, UInt32(existing.unannounced)))
                existing.unannounced = 0
            }
            streams[stream] = existing
        }
        if let update = connectionUpdate() { updates.append(update) }
        return updates
    }

    /// `bytes` of DATA count as consumed for the connection's window only: their stream's
    /// window waits until its owner `consumed` them.
    package mutating func connectionConsumed(_ bytes: Int) {
        connectionUnannounced += bytes
    }

    /// The connection's WINDOW_UPDATE, once half its window waits to be announced: asked after
    /// each read, since DATA on closed streams and padding are given back without a consumer.
    package mutating func connectionUpdate() -> (stream: UInt32, increment: UInt32)? {
        guard connectionUnannounced >= settings.connectionWindowSize / 2 else { return nil }
        connectionReceiveWindow += connectionUnannounced
        defer { connectionUnannounced = 0 }
        return (0, UInt32(connectionUnannounced))
    }

    /// Sluice sends GOAWAY: streams the client opens after the last it has seen are refused.
    /// The last stream to name in the frame.
    package mutating func goAway() -> UInt32 {
        if goAwayLastStream == nil { goAwayLastStream = highestStream }
        return goAwayLastStream!
    }
}
