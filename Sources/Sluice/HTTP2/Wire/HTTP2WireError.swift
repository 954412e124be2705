/// What a peer did wrong at the HTTP/2 frame level (RFC 9113 §5.4), in the terms the answer
/// needs: the error code to send, and whether it ends the whole connection (a GOAWAY) or only
/// one stream (an RST_STREAM). `reason` says what was wrong, for the operator's log and the
/// GOAWAY's debug data. The frame layer's own error: a request that reaches admission fails
/// with `SluiceError` as on HTTP/1.
package struct HTTP2WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// RFC 9113 §7's error codes.
    package enum Code: UInt32, Sendable {
        case noError = 0x0
        case protocolError = 0x1
        case internalError = 0x2
        case flowControlError = 0x3
        case settingsTimeout = 0x4
        case streamClosed = 0x5
        case frameSizeError = 0x6
        case refusedStream = 0x7
        case cancel = 0x8
        case compressionError = 0x9
        case connectError = 0xa
        case enhanceYourCalm = 0xb
        case inadequateSecurity = 0xc
        case http11Required = 0xd
    }

    package var code: Code
    /// The stream a stream error ends; nil for a connection error.
    package var stream: UInt32?
    package var reason: String

    /// An error that ends the connection: GOAWAY with `code`.
    package static func connection(_ code: Code, _ reason: String) -> HTTP2WireError {
        HTTP2WireError(code: code, stream: nil, reason: reason)
    }

    /// An error that ends one stream: RST_STREAM with `code`; the connection goes on.
    package static func stream(_ stream: UInt32, _ code: Code, _ reason: String) -> HTTP2WireError {
        HTTP2WireError(code: code, stream: stream, reason: reason)
    }

    package var description: String {
        if let stream { return "HTTP/2 stream \(stream) error \(code): \(reason)" }
        return "HTTP/2 connection error \(code): \(reason)"
    }
}
