import NIOCore

/// One HTTP/2 frame as it crossed the wire (RFC 9113 §6), checked for everything the frame alone
/// can show: what `HTTP2FrameReader` hands on and `HTTP2FrameWriter` writes. A header block
/// arrives whole (its CONTINUATION frames joined) and still HPACK-encoded; padding is gone.
/// Unknown frame types never appear: the reader skips them as §5.5 requires.
package enum HTTP2WireFrame: Equatable, Sendable {
    /// DATA: `flowControlled` is the frame's whole payload length, padding included, which is
    /// what both flow-control windows are charged (§6.9.1).
    case data(stream: UInt32, payload: ByteBuffer, endStream: Bool, flowControlled: Int)
    /// HEADERS (with its CONTINUATION frames): the encoded field block.
    case headers(stream: UInt32, block: ByteBuffer, endStream: Bool, priority: HTTP2WirePriority?)
    case priority(stream: UInt32, HTTP2WirePriority)
    case resetStream(stream: UInt32, code: UInt32)
    case settings([HTTP2WireSetting])
    case settingsAck
    case ping(opaque: UInt64, ack: Bool)
    case goAway(lastStream: UInt32, code: UInt32, debug: ByteBuffer)
    /// WINDOW_UPDATE: stream 0 for the connection's window.
    case windowUpdate(stream: UInt32, increment: UInt32)

    /// RFC 9113's frame type codes.
    package enum Kind: UInt8 {
        case data = 0x0, headers = 0x1, priority = 0x2, resetStream = 0x3, settings = 0x4
        case pushPromise = 0x5, ping = 0x6, goAway = 0x7, windowUpdate = 0x8, continuation = 0x9
    }

    /// The flags RFC 9113 defines (each meaningful only on some frame types).
    package enum Flag {
        package static let endStream: UInt8 = 0x1
        package static let ack: UInt8 = 0x1
        package static let endHeaders: UInt8 = 0x4
        package static let padded: UInt8 = 0x8
        package static let priority: UInt8 = 0x20
    }

    /// A frame's fixed header: 24-bit length, type, flags, reserved bit and 31-bit stream.
    package static let headerLength = 9
    /// SETTINGS_MAX_FRAME_SIZE's initial value and least allowed (§6.5.2).
    package static let defaultMaxFrameSize = 16_384
    /// SETTINGS_MAX_FRAME_SIZE's largest allowed value.
    package static let largestMaxFrameSize = 16_777_215
}

/// The priority fields of HEADERS and PRIORITY frames. RFC 9113 deprecates the scheme; the
/// fields are still read so their length and the self-dependency rule can be checked.
package struct HTTP2WirePriority: Equatable, Sendable {
    package var dependency: UInt32
    package var exclusive: Bool
    package var weight: UInt8
}

/// One SETTINGS parameter; unknown identifiers are carried and ignored (§6.5.2).
package struct HTTP2WireSetting: Equatable, Sendable {
    package var identifier: UInt16
    package var value: UInt32

    package init(_ identifier: UInt16, _ value: UInt32) {
        self.identifier = identifier
        self.value = value
    }

    package static let headerTableSize: UInt16 = 0x1
    package static let enablePush: UInt16 = 0x2
    package static let maxConcurrentStreams: UInt16 = 0x3
    package static let initialWindowSize: UInt16 = 0x4
    package static let maxFrameSize: UInt16 = 0x5
    package static let maxHeaderListSize: UInt16 = 0x6
    /// RFC 8441 §3: extended CONNECT (WebSockets over HTTP/2).
    package static let enableConnectProtocol: UInt16 = 0x8
}
