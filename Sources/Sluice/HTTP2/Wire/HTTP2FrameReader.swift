import NIOCore

/// Reads a client's HTTP/2 connection from its bytes, in whatever pieces they arrive: the
/// preface, then frames, each checked for what RFC 9113 §4–§6 require of a frame by itself —
/// lengths, stream identifiers, padding, SETTINGS values, CONTINUATION order — with the error
/// the RFC names, as a connection or a stream error. Header blocks are joined and bounded (a
/// CONTINUATION flood ends the connection with ENHANCE_YOUR_CALM). What needs the connection's
/// state — stream states, flow-control windows, HPACK — is the caller's.
///
/// The first piece of HTTP/2 of Sluice's own (`docs/architecture.md`, "Not built yet"): a value
/// with no channel, driven by whoever owns the connection's bytes.
package struct HTTP2FrameReader: Sendable {
    /// What one step of reading gives.
    package enum Read: Equatable, Sendable {
        case frame(HTTP2WireFrame)
        /// A frame that ends only its stream (RST_STREAM with the error's code); reading goes on.
        case streamError(HTTP2WireError)
    }

    /// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" (§3.4).
    package static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// The largest frame payload accepted: Sluice's SETTINGS_MAX_FRAME_SIZE once the client
    /// has acknowledged it, the default until then.
    package var maxFrameSize = HTTP2WireFrame.defaultMaxFrameSize
    /// The largest header block, its CONTINUATION frames joined.
    package let maxHeaderBlock: Int
    /// The most CONTINUATION frames one header block may take (empty ones grow no block).
    package let maxContinuations: Int

    private var buffer = ByteBuffer()
    private var prefaceRead: Bool
    private var settingsSeen = false
    /// A header block waiting for its CONTINUATION frames.
    private var open: (stream: UInt32, endStream: Bool, priority: HTTP2WirePriority?, block: ByteBuffer, continuations: Int)?
    /// Set by a connection error: nothing more is read.
    private var failure: HTTP2WireError?

    /// - Parameters:
    ///   - expectingPreface: false where something before (an HTTP/1.1 upgrade, or a test) has
    ///     consumed the preface.
    package init(maxHeaderBlock: Int = 65_536, maxContinuations: Int = 64, expectingPreface: Bool = true) {
        self.maxHeaderBlock = maxHeaderBlock
        self.maxContinuations = maxContinuations
        self.prefaceRead = !expectingPreface
    }

    /// Bytes read from the connection, appended to what is still unread.
    package mutating func receive(_ bytes: ByteBuffer) {
        if buffer.readableBytes == 0 {
            buffer = bytes
        } else {
            var bytes = bytes
            buffer.writeBuffer(&bytes)
        }
    }

    /// Bytes received and not yet read as frames.
    package var unread: Int { buffer.readableBytes }

    /// The next frame or stream error; nil until more bytes arrive. A connection error is
    /// thrown, and thrown again on every later call.
    package mutating func next() throws(HTTP2WireError) -> Read? {
        if let failure { throw failure }
        do {
            let read = try step()
            // Drained: let go of the read's storage rather than clear it (a frame handed out
            // still shares it, so clearing would allocate a copy; NIO may reuse it otherwise).
            if buffer.readableBytes == 0 { buffer = ByteBufferAllocator().buffer(capacity: 0) }
            return read
        } catch {
            failure = error
            throw error
        }
    }

    private mutating func step() throws(HTTP2WireError) -> Read? {
        if !prefaceRead {
            let count = min(buffer.readableBytes, Self.preface.count)
            guard buffer.readableBytesView.prefix(count).elementsEqual(Self.preface.prefix(count)) else {
                throw .connection(.protocolError, "the connection does not start with the HTTP/2 preface")
            }
            guard count == Self.preface.count else { return nil }
            buffer.moveReaderIndex(forwardBy: count)
            prefaceRead = true
        }
        while buffer.readableBytes >= HTTP2WireFrame.headerLength {
            let start = buffer.readerIndex
            let length = Int(buffer.getInteger(at: start, as: UInt16.self)!) << 8 | Int(buffer.getInteger(at: start + 2, as: UInt8.self)!)
            let type = buffer.getInteger(at: start + 3, as: UInt8.self)!
            let flags = buffer.getInteger(at: start + 4, as: UInt8.self)!
            let stream = buffer.getInteger(at: start + 5, as: UInt32.self)! & 0x7fff_ffff
            guard length <= maxFrameSize else {
                throw .connection(.frameSizeError, "a frame of \(length) bytes, over the \(maxFrameSize) agreed")
            }
            guard buffer.readableBytes >= HTTP2WireFrame.headerLength + length else { return nil }
            buffer.moveReaderIndex(forwardBy: HTTP2WireFrame.headerLength)
            var payload = buffer.readSlice(length: length)!
            if let read = try frame(type: type, flags: flags, stream: stream, payload: &payload) { return read }
        }
        return nil
    }

    /// One whole frame; nil for one with nothing to hand on (an unknown type, a CONTINUATION
    /// that does not end its block).
    private mutating func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: inout ByteBuffer) throws(HTTP2WireError) -> Read? {
        let kind = HTTP2WireFrame.Kind(rawValue: type)
        if !settingsSeen {
            guard kind == .settings, flags & HTTP2WireFrame.Flag.ack == 0 else {
                throw .connection(.protocolError, "the client's first frame is not SETTINGS")
            }
            settingsSeen = true
        }
        if let open {
            guard kind == .continuation, stream == open.stream else {
                throw .connection(.protocolError, "a header block on stream \(open.stream) interrupted by another frame")
            }
        }
        guard let kind else { return nil }
        switch kind {
        case .data:
            try requireStream(stream, kind)
            let whole = payload.readableBytes
            let data = try unpadded(&payload, flags: flags, kind)
            return .frame(.data(stream: stream, payload: data, endStream: flags & HTTP2WireFrame.Flag.endStream != 0, flowControlled: whole))
        case .headers:
            try requireStream(stream, kind)
            var body = payload
            var priority: HTTP2WirePriority?
            var padding = 0
            if flags & HTTP2WireFrame.Flag.padded != 0 {
                guard let pad = body.readInteger(as: UInt8.self) else { throw .connection(.frameSizeError, "a padded HEADERS frame with no pad length") }
                padding = Int(pad)
            }
            if flags & HTTP2WireFrame.Flag.priority != 0 {
                guard let fields = Self.priority(&body) else { throw .connection(.frameSizeError, "a HEADERS frame too short for its priority") }
                priority = fields
            }
            guard padding <= body.readableBytes else { throw .connection(.protocolError, "HEADERS padding longer than the frame") }
            let block = body.readSlice(length: body.readableBytes - padding)!
            let endStream = flags & HTTP2WireFrame.Flag.endStream != 0
            try checkBlockSize(block.readableBytes, stream)
            guard flags & HTTP2WireFrame.Flag.endHeaders == 0 else {
                return .frame(.headers(stream: stream, block: block, endStream: endStream, priority: priority))
            }
            open = (stream, endStream, priority, block, 0)
            return nil
        case .continuation:
            guard var pending = open else {
                throw .connection(.protocolError, "a CONTINUATION frame on stream \(stream) with no header block open")
            }
            pending.continuations += 1
            guard pending.continuations <= maxContinuations else {
                throw .connection(.enhanceYourCalm, "a header block on stream \(stream) past \(maxContinuations) CONTINUATION frames")
            }
            try checkBlockSize(pending.block.readableBytes + payload.readableBytes, stream)
            pending.block.writeBuffer(&payload)
            guard flags & HTTP2WireFrame.Flag.endHeaders != 0 else {
                open = pending
                return nil
            }
            open = nil
            return .frame(.headers(stream: stream, block: pending.block, endStream: pending.endStream, priority: pending.priority))
        case .priority:
            try requireStream(stream, kind)
            guard payload.readableBytes == 5, let fields = Self.priority(&payload) else {
                return .streamError(.stream(stream, .frameSizeError, "a PRIORITY frame of \(payload.readableBytes) bytes, not 5"))
            }
            guard fields.dependency != stream else { return .streamError(.stream(stream, .protocolError, "stream \(stream) depends on itself")) }
            return .frame(.priority(stream: stream, fields))
        case .resetStream:
            try requireStream(stream, kind)
            guard payload.readableBytes == 4 else { throw .connection(.frameSizeError, "an RST_STREAM frame of \(payload.readableBytes) bytes, not 4") }
            return .frame(.resetStream(stream: stream, code: payload.readInteger(as: UInt32.self)!))
        case .settings:
            try requireConnection(stream, kind)
            if flags & HTTP2WireFrame.Flag.ack != 0 {
                guard payload.readableBytes == 0 else { throw .connection(.frameSizeError, "a SETTINGS acknowledgement with a payload") }
                return .frame(.settingsAck)
            }
            guard payload.readableBytes % 6 == 0 else {
                throw .connection(.frameSizeError, "a SETTINGS frame of \(payload.readableBytes) bytes, not a multiple of 6")
            }
            var settings: [HTTP2WireSetting] = []
            settings.reserveCapacity(payload.readableBytes / 6)
            while let identifier = payload.readInteger(as: UInt16.self), let value = payload.readInteger(as: UInt32.self) {
                try Self.check(HTTP2WireSetting(identifier, value))
                settings.append(HTTP2WireSetting(identifier, value))
            }
            return .frame(.settings(settings))
        case .pushPromise:
            throw .connection(.protocolError, "a client sent PUSH_PROMISE")
        case .ping:
            try requireConnection(stream, kind)
            guard payload.readableBytes == 8 else { throw .connection(.frameSizeError, "a PING frame of \(payload.readableBytes) bytes, not 8") }
            return .frame(.ping(opaque: payload.readInteger(as: UInt64.self)!, ack: flags & HTTP2WireFrame.Flag.ack != 0))
        case .goAway:
            try requireConnection(stream, kind)
            guard payload.readableBytes >= 8 else { throw .connection(.frameSizeError, "a GOAWAY frame of \(payload.readableBytes) bytes, under 8") }
            let last = payload.readInteger(as: UInt32.self)! & 0x7fff_ffff
            let code = payload.readInteger(as: UInt32.self)!
            return .frame(.goAway(lastStream: last, code: code, debug: payload))
        case .windowUpdate:
            guard payload.readableBytes == 4 else { throw .connection(.frameSizeError, "a WINDOW_UPDATE frame of \(payload.readableBytes) bytes, not 4") }
            let increment = payload.readInteger(as: UInt32.self)! & 0x7fff_ffff
            guard increment > 0 else {
                if stream == 0 { throw .connection(.protocolError, "a WINDOW_UPDATE of 0 for the connection") }
                return .streamError(.stream(stream, .protocolError, "a WINDOW_UPDATE of 0"))
            }
            return .frame(.windowUpdate(stream: stream, increment: increment))
        }
    }

    private func requireStream(_ stream: UInt32, _ kind: HTTP2WireFrame.Kind) throws(HTTP2WireError) {
        if stream == 0 { throw .connection(.protocolError, "a \(kind) frame on stream 0") }
    }

    private func requireConnection(_ stream: UInt32, _ kind: HTTP2WireFrame.Kind) throws(HTTP2WireError) {
        if stream != 0 { throw .connection(.protocolError, "a \(kind) frame on stream \(stream), not 0") }
    }

    private func checkBlockSize(_ size: Int, _ stream: UInt32) throws(HTTP2WireError) {
        if size > maxHeaderBlock { throw .connection(.enhanceYourCalm, "a header block on stream \(stream) over \(maxHeaderBlock) bytes") }
    }

    /// A DATA frame's payload without its pad length and padding.
    private func unpadded(_ payload: inout ByteBuffer, flags: UInt8, _ kind: HTTP2WireFrame.Kind) throws(HTTP2WireError) -> ByteBuffer {
        guard flags & HTTP2WireFrame.Flag.padded != 0 else { return payload }
        guard let pad = payload.readInteger(as: UInt8.self) else { throw .connection(.frameSizeError, "a padded \(kind) frame with no pad length") }
        guard Int(pad) <= payload.readableBytes else { throw .connection(.protocolError, "\(kind) padding longer than the frame") }
        return payload.readSlice(length: payload.readableBytes - Int(pad))!
    }

    private static func priority(_ body: inout ByteBuffer) -> HTTP2WirePriority? {
        guard let word = body.readInteger(as: UInt32.self), let weight = body.readInteger(as: UInt8.self) else { return nil }
        return HTTP2WirePriority(dependency: word & 0x7fff_ffff, exclusive: word & 0x8000_0000 != 0, weight: weight)
    }

    /// §6.5.2's bounds on the values a client may set; unknown identifiers pass.
    private static func check(_ setting: HTTP2WireSetting) throws(HTTP2WireError) {
        switch setting.identifier {
        case HTTP2WireSetting.enablePush, HTTP2WireSetting.enableConnectProtocol:
            if setting.value > 1 { throw .connection(.protocolError, "SETTINGS parameter \(setting.identifier) set to \(setting.value), not 0 or 1") }
        case HTTP2WireSetting.initialWindowSize:
            if setting.value > 0x7fff_ffff { throw .connection(.flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE of \(setting.value), over 2^31-1") }
        case HTTP2WireSetting.maxFrameSize:
            if setting.value < HTTP2WireFrame.defaultMaxFrameSize || setting.value > HTTP2WireFrame.largestMaxFrameSize {
                throw .connection(.protocolError, "SETTINGS_MAX_FRAME_SIZE of \(setting.value), outside 16384...16777215")
            }
        default:
            break
        }
    }
}
