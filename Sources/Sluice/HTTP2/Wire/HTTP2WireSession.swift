import NIOCore
import NIOHPACK
import SluiceConfig

/// The connection-wide work of Sluice's own HTTP/2, with no channel: bytes from the client in,
/// what the streams must act on out (`Event`), and every frame Sluice writes collected in
/// `outbound` for its owner to send. Inside: `HTTP2FrameReader`, `HTTP2ConnectionState`, HPACK
/// both ways, `HTTP2FieldCheck` on every request and trailer section, and the defences of
/// `listeners[].http2` (`HTTP2RateGuard`: resets, control frames, stream errors). SETTINGS and
/// PING are answered here; a malformed request is reset here and never reaches a stream.
///
/// Pull-style, like the reader: `receive` the bytes of a read, then take `next()` until it
/// returns nil, acting on each event before asking for the next one. A connection error is
/// thrown; `fail` then writes its GOAWAY, and the connection must close.
package struct HTTP2WireSession {
    /// What a stream's owner acts on.
    package enum Event {
        /// A new stream's request, its fields checked (pseudo-header fields first).
        case request(stream: UInt32, fields: [(String, String)], endStream: Bool)
        case data(stream: UInt32, payload: ByteBuffer, endStream: Bool)
        /// The request's trailers (checked, then dropped, as on HTTP/1): its end.
        case trailers(stream: UInt32)
        /// The stream is closed: the client reset it, or Sluice did for a stream error.
        case reset(stream: UInt32)
        /// The send window grew: for one stream, or (stream 0) for all.
        case windowOpened(stream: UInt32)
        /// The client sent GOAWAY: it opens no more streams.
        case clientWentAway
    }

    private var reader: HTTP2FrameReader
    package private(set) var state: HTTP2ConnectionState
    private var decoder: HPACKFieldDecoder
    private var encoder = HPACKEncoder(allocator: .init())
    private var resets: HTTP2RateGuard
    private var controlFrames: HTTP2RateGuard
    private var streamErrors = HTTP2RateGuard.streamErrors()
    /// RFC 8441's extended CONNECT is offered (SETTINGS_ENABLE_CONNECT_PROTOCOL).
    private let extendedConnect: Bool
    /// The frames to write, in order.
    package var outbound: ByteBuffer

    package init(limits: HTTP2Limits, extendedConnect: Bool, allocator: ByteBufferAllocator) {
        reader = HTTP2FrameReader(limits)
        var settings = HTTP2ConnectionState.Settings(limits)
        settings.extendedConnect = extendedConnect
        state = HTTP2ConnectionState(settings: settings)
        decoder = HPACKFieldDecoder(maxListSize: limits.maxHeaderListSize)
        resets = .resets(limits)
        controlFrames = .controlFrames(limits)
        self.extendedConnect = extendedConnect
        outbound = allocator.buffer(capacity: 4096)
        HTTP2FrameWriter.settings(state.settings.wire, to: &outbound)
        if let raise = state.openingWindowUpdate() { HTTP2FrameWriter.windowUpdate(stream: 0, increment: raise, to: &outbound) }
    }

    // MARK: From the client

    package mutating func receive(_ bytes: ByteBuffer) {
        reader.receive(bytes)
    }

    /// The next event the bytes received so far bring; nil when they bring no more. Frames
    /// that concern only the connection are dealt with on the way.
    package mutating func next(now: NIODeadline) throws(HTTP2WireError) -> Event? {
        while let read = try reader.next() {
            switch read {
            case .frame(let frame):
                switch frame {
                case .ping(_, false), .settings, .priority:
                    if let error = controlFrames.count(at: now, "PING, SETTINGS and PRIORITY frames") { throw error }
                case .resetStream:
                    // Every reset counts, even of a stream already answered (as NIOHTTP2 counts
                    // them): a client that opens and resets in a loop pays either way.
                    if let error = resets.count(at: now, "stream resets") { throw error }
                default:
                    break
                }
                if let event = try handle(try state.received(frame), now: now) { return event }
            case .streamError(let error):
                if let event = try refuse(error, now: now) { return event }
            }
        }
        if let update = state.connectionUpdate() { HTTP2FrameWriter.windowUpdate(stream: 0, increment: update.increment, to: &outbound) }
        return nil
    }

    private mutating func handle(_ inbound: HTTP2ConnectionState.Inbound, now: NIODeadline) throws(HTTP2WireError) -> Event? {
        switch inbound {
        case .request(let stream, let block, let endStream):
            let fields = try decode(block)
            if let malformed = HTTP2FieldCheck.request(fields, stream: stream, extendedConnect: extendedConnect) {
                _ = try refuse(malformed, now: now)
                return nil
            }
            return .request(stream: stream, fields: fields, endStream: endStream)
        case .trailers(let stream, let block):
            if let malformed = HTTP2FieldCheck.trailers(try decode(block), stream: stream) { return try refuse(malformed, now: now) }
            return .trailers(stream: stream)
        case .discardedBlock(let block, let refusal):
            _ = try decode(block)
            if let refusal { return try refuse(refusal, now: now) }
            return nil
        case .data(let stream, let payload, let endStream):
            return .data(stream: stream, payload: payload, endStream: endStream)
        case .reset(let stream, _):
            return .reset(stream: stream)
        case .streamError(let error):
            return try refuse(error, now: now)
        case .settings:
            do {
                try encoder.setDynamicTableSize(min(state.peerHeaderTableSize, HPACKEncoder.defaultDynamicTableSize))
            } catch {
                throw .connection(.compressionError, "HPACK table size: \(error)")
            }
            HTTP2FrameWriter.settingsAck(to: &outbound)
            return nil
        case .settingsAcknowledged:
            reader.maxFrameSize = state.settings.maxFrameSize
            return nil
        case .ping(let opaque):
            HTTP2FrameWriter.ping(opaque: opaque, ack: true, to: &outbound)
            return nil
        case .goAway:
            return .clientWentAway
        case .windowOpened(let stream):
            return .windowOpened(stream: stream)
        case .none:
            return nil
        }
    }

    private mutating func decode(_ block: ByteBuffer) throws(HTTP2WireError) -> [(String, String)] {
        try decoder.decode(block)
    }

    /// RST_STREAM for a stream error; the stream is closed. Too many of them end the connection.
    private mutating func refuse(_ error: HTTP2WireError, now: NIODeadline) throws(HTTP2WireError) -> Event? {
        guard let stream = error.stream else { throw error }
        resetStream(stream, error.code)
        if let tooMany = streamErrors.count(at: now, "stream errors") { throw tooMany }
        return .reset(stream: stream)
    }

    // MARK: To the client

    /// A response's (or an interim answer's) header block on `stream`; false when the stream
    /// can take no header block (it was reset, or its answer has ended).
    package mutating func sendHeaders(_ fields: HPACKHeaders, on stream: UInt32, endStream: Bool) -> Bool {
        guard state.canSend(on: stream) else { return false }
        do {
            try HTTP2FrameWriter.headers(stream: stream, endStream: endStream, maxFrameSize: state.peerMaxFrameSize, to: &outbound) { block in
                try encoder.encode(headers: fields, to: &block)
            }
        } catch {
            // Only a field HPACK cannot encode at all (none Sluice writes): the stream fails.
            resetStream(stream, .internalError)
            return false
        }
        state.sentHeaders(on: stream, endStream: endStream)
        return true
    }

    /// An answer's head on `stream`, its header block written by `block` (`HTTP2ResponseBlock`,
    /// which needs no HPACK state); false when the stream can take no header block (it was
    /// reset, or its answer has ended).
    @inline(__always)
    package mutating func sendResponseHead(on stream: UInt32, endStream: Bool, block: (inout ByteBuffer) -> Void) -> Bool {
        guard state.canSend(on: stream) else { return false }
        HTTP2FrameWriter.headers(stream: stream, endStream: endStream, maxFrameSize: state.peerMaxFrameSize, to: &outbound, encode: block)
        state.sentHeaders(on: stream, endStream: endStream)
        return true
    }

    /// DATA on `stream`: at most `sendable(on:)` bytes (an empty frame may always end a stream).
    package mutating func sendData(_ payload: ByteBuffer, on stream: UInt32, endStream: Bool) {
        HTTP2FrameWriter.data(stream: stream, payload: payload, endStream: endStream, maxFrameSize: state.peerMaxFrameSize, to: &outbound)
        state.sentData(on: stream, bytes: payload.readableBytes, endStream: endStream)
    }

    // The queries below are `mutating` though they change nothing: a session kept in a class
    // property is then reached in place, where a non-mutating call copies the whole session
    // (every buffer and table in it retained and released) on each of the stream's calls.

    /// How many DATA bytes `stream` may send now.
    package mutating func sendable(on stream: UInt32) -> Int { state.sendable(on: stream) }

    /// Whether `stream` is still open in either direction.
    package mutating func isOpen(_ stream: UInt32) -> Bool { state.state(of: stream) != nil }

    /// Whether Sluice may send a header block on `stream`.
    package mutating func canSend(on stream: UInt32) -> Bool { state.canSend(on: stream) }

    /// Sluice resets `stream`.
    package mutating func resetStream(_ stream: UInt32, _ code: HTTP2WireError.Code) {
        state.reset(stream)
        HTTP2FrameWriter.resetStream(stream: stream, code: code, to: &outbound)
    }

    /// The stream's owner consumed `bytes` of its DATA: the windows' updates, if due, are
    /// written. `wereHeld`: the bytes were `held`, the connection's window has them back.
    package mutating func consumed(_ bytes: Int, on stream: UInt32, wereHeld: Bool = false) {
        for update in state.consumed(bytes, on: stream, connection: !wereHeld) {
            HTTP2FrameWriter.windowUpdate(stream: update.stream, increment: update.increment, to: &outbound)
        }
    }

    /// `bytes` of DATA are held for a stream whose backend is full: the connection's window is
    /// given back now (other streams go on), the stream's once it is `consumed`.
    package mutating func held(_ bytes: Int) {
        state.connectionConsumed(bytes)
    }

    /// GOAWAY: with `.noError` the streams the client opened so far are still served.
    package mutating func goAway(_ code: HTTP2WireError.Code, debug: String = "") {
        HTTP2FrameWriter.goAway(lastStream: state.goAway(), code: code, debug: debug, to: &outbound)
    }

    /// A connection error's GOAWAY; the connection must close once it is written.
    package mutating func fail(_ error: HTTP2WireError) {
        goAway(error.code, debug: error.reason)
    }
}
