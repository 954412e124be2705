import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// A request as it came on an HTTP/2 stream: its head in HTTP/1 terms (what admission and the
/// backends read), and what HTTP/2 says beside it.
struct HTTP2RequestHead {
    var head: HTTPRequestHead
    /// `:authority`, else the `Host` field.
    var host: String?
    /// RFC 8441's `:protocol`, on an extended CONNECT.
    var extendedConnect: String?
    var framing: RequestFraming
    /// Why the head cannot be served, though HTTP/2 itself accepted it.
    var problem: String?
    /// The HEADERS frame ended the stream: there is no body, and the head is the request's end.
    var endStream = false
}

/// A request part on an HTTP/2 stream.
enum HTTP2RequestPart {
    /// The head; when it ends the stream (`endStream`), no `.end` follows.
    case head(HTTP2RequestHead)
    case body(ByteBuffer)
    case end
}

/// Translates one HTTP/2 stream between frames and the parts the gateway reads and writes: a
/// HEADERS frame becomes the request head (pseudo-headers to method, target and host, the
/// `:protocol` of an extended CONNECT kept beside it, cookie fields joined as RFC 9113 §8.2.3
/// requires before HTTP/1.1), DATA frames the body; response parts become HEADERS and DATA,
/// without the connection-specific fields HTTP/2 forbids (§8.2.2).
///
/// NIOHTTP2 has already refused what RFC 9113 makes malformed (connection-specific request
/// fields, uppercase names, missing or duplicate pseudo-headers, a `Content-Length` the DATA
/// frames contradict): those streams are reset before they get here.
final class HTTP2RequestCodec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2RequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTP2Frame.FramePayload

    private var headRead = false
    private var requestEnded = false
    /// A final response head not yet written: sent with the next part, so a response with no
    /// body goes out as one HEADERS frame that ends the stream.
    private var pendingHead: HPACKHeaders?
    /// The last body part not yet written, until the next part or a flush: when the end comes
    /// first it is sent as the DATA frame that ends the stream, not followed by an empty one.
    private var pendingData: (buffer: ByteBuffer, promise: EventLoopPromise<Void>?)?
    private var responseEnded = false

    /// The client ended its side of the stream.
    var clientFinished: Bool { requestEnded }
    /// The response was ended.
    var responseFinished: Bool { responseEnded }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .headers(let headers):
            if !headRead {
                headRead = true
                // A head that ends the stream (most requests: no body) is the request's end too
                // (`HTTP2RequestHead.endStream`): no `.end` part follows it.
                requestEnded = headers.endStream
                context.fireChannelRead(wrapInboundOut(.head(Self.requestHead(headers.headers, endStream: headers.endStream))))
            }
            // Trailers are read and dropped, as on HTTP/1.
            if headers.endStream { end(context) }
        case .data(let data):
            if case .byteBuffer(let buffer) = data.data, buffer.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(.body(buffer)))
            }
            if data.endStream { end(context) }
        default:
            break
        }
    }

    private func end(_ context: ChannelHandlerContext) {
        guard !requestEnded else { return }
        requestEnded = true
        context.fireChannelRead(wrapInboundOut(.end))
    }

    /// The request head in HTTP/1 terms.
    static func requestHead(_ fields: HPACKHeaders, endStream: Bool) -> HTTP2RequestHead {
        requestHead(fields.map { ($0.name, $0.value) }, endStream: endStream)
    }

    /// `fields` as decoded (pseudo-header fields included) becomes the request's header list
    /// itself: the pseudo-header fields are taken out in place and the cookie crumbs joined
    /// into the first (RFC 9113 §8.2.3), so the list is not copied.
    static func requestHead(_ fields: consuming [(String, String)], endStream: Bool) -> HTTP2RequestHead {
        var method = ""
        var path: String?
        var authority: String?
        var extendedConnect: String?
        var hostField: String?
        var list = fields
        var kept = 0
        var firstCookie: Int?
        for index in list.indices {
            let (name, value) = list[index]
            if name.utf8.first == UInt8(ascii: ":") {
                switch name {
                case ":method": method = value
                case ":path": path = value
                case ":authority": authority = value
                case ":protocol": extendedConnect = value
                default: break  // :scheme
                }
                continue
            }
            if name == "cookie" {
                if let firstCookie {
                    list[firstCookie].1 += "; " + value
                    continue
                }
                firstCookie = kept
            } else if name == "host" {
                hostField = hostField ?? value
            }
            if kept != index { list.swapAt(kept, index) }
            kept += 1
        }
        list.removeLast(list.count - kept)
        let headers = HTTPHeaders(list)
        var framing = RequestFraming.read(headers)
        // HTTP/2 frames the body itself: a body of no declared length is sent to the backend in
        // HTTP/1.1 chunks.
        framing.chunked = !endStream && framing.contentLength == nil
        var problem: String?
        if let authority, let hostField, authority != hostField {
            problem = "the Host field differs from :authority"
        }
        let head = HTTPRequestHead(
            version: .http2, method: HTTPMethod(rawValue: method), uri: path ?? authority ?? "", headers: headers
        )
        return HTTP2RequestHead(
            head: head, host: authority ?? hostField, extendedConnect: extendedConnect, framing: framing, problem: problem, endStream: endStream
        )
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            let fields = Self.responseFields(head)
            if head.status.code < 200 {
                // Interim (100 Continue): its own HEADERS frame.
                context.write(wrapOutboundOut(.headers(.init(headers: fields))), promise: promise)
            } else {
                pendingHead = fields
                promise?.succeed(())
            }
        case .body(let body):
            writePendingHead(context)
            guard case .byteBuffer(let buffer) = body else {
                promise?.fail(ChannelError.operationUnsupported)
                return
            }
            writePendingData(context)
            pendingData = (buffer, promise)
        case .end(let trailers):
            responseEnded = true
            if trailers == nil, let head = pendingHead.take() {
                context.write(wrapOutboundOut(.headers(.init(headers: head, endStream: true))), promise: promise)
            } else if let trailers {
                writePendingHead(context)
                writePendingData(context)
                context.write(wrapOutboundOut(.headers(.init(headers: HPACKHeaders(httpHeaders: trailers), endStream: true))), promise: promise)
            } else if let (buffer, dataPromise) = pendingData {
                pendingData = nil
                let written = Self.joined(dataPromise, promise)
                context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(buffer), endStream: true))), promise: written)
            } else {
                context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))), promise: promise)
            }
        }
    }

    func flush(context: ChannelHandlerContext) {
        writePendingHead(context)
        writePendingData(context)
        context.flush()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        failPendingData()
        context.close(mode: mode, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The RFC 8441 switch removes the codec once the 200 is written and flushed: nothing is
        // held then; anything held otherwise is a write the stream's close drops.
        failPendingData()
    }

    private func writePendingData(_ context: ChannelHandlerContext) {
        guard let (buffer, promise) = pendingData else { return }
        pendingData = nil
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(buffer)))), promise: promise)
    }

    private func failPendingData() {
        guard let (_, promise) = pendingData else { return }
        pendingData = nil
        promise?.fail(ChannelError.ioOnClosedChannel)
    }

    /// One promise for a write that carries two parts' bytes: both complete with it.
    private static func joined(_ first: EventLoopPromise<Void>?, _ second: EventLoopPromise<Void>?) -> EventLoopPromise<Void>? {
        guard let first else { return second }
        guard let second else { return first }
        first.futureResult.cascade(to: second)
        return first
    }

    private func writePendingHead(_ context: ChannelHandlerContext) {
        guard let head = pendingHead.take() else { return }
        context.write(wrapOutboundOut(.headers(.init(headers: head))), promise: nil)
    }

    /// `:status` and the head's fields, lower-cased, without connection-specific ones or those
    /// `Connection` names.
    static func responseFields(_ head: HTTPResponseHead) -> HPACKHeaders {
        var fields = HPACKHeaders()
        fields.reserveCapacity(head.headers.count + 1)
        fields.add(name: ":status", value: String(head.status.code))
        // Fields a `Connection` field names; a proxied answer has none left (the backend's head
        // comes end-to-end only), so the set is built only when there is one.
        let named = head.headers.contains(name: "connection") ? Set(head.headers[canonicalForm: "connection"].map { $0.lowercased() }) : []
        for (name, value) in head.headers {
            let lower = name.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) ? name.lowercased() : name
            if HTTP2ResponseBlock.isConnectionSpecific(lower) || (!named.isEmpty && named.contains(lower)) { continue }
            fields.add(name: lower, value: value)
        }
        return fields
    }
}
