import NIOCore
import NIOHTTP1

/// Where one request's answer goes, in response parts: an HTTP/1 connection's HTTP encoder, a
/// NIOHTTP2 stream channel, or a stream of Sluice's own HTTP/2 layer, which has no channel.
/// The proxy exchange and Sluice's own answers write through it, so they serve every kind of
/// client connection alike.
protocol ResponseSink: AnyObject {
    var eventLoop: any EventLoop { get }
    var responseAllocator: ByteBufferAllocator { get }
    /// The client takes more now; when it does not, the exchange stops reading the backend
    /// until it does (`HTTPProxyExchange.clientWritabilityChanged`).
    var responseWritable: Bool { get }
    func writeResponse(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?)
    func flushResponse()
    /// Ends the client's connection (HTTP/1) or stream (HTTP/2) now, whatever is unsent.
    func closeClient()
    /// Takes a backend's final head as it was read (its end-to-end fields, then `Via` and
    /// `setCookie`), in place of a `.head` part built from it; false when this sink takes
    /// parts only (then the caller writes the part).
    func writeBackendHead(_ head: UpstreamResponseParser.Head, setCookie: String?) -> Bool
}

extension ResponseSink {
    func writeBackendHead(_ head: UpstreamResponseParser.Head, setCookie: String?) -> Bool { false }
}

/// An HTTP/2 stream's side of `ResponseSink`, for the stream's request handler: the stream ends,
/// or may be read again.
protocol HTTP2StreamSink: ResponseSink {
    /// Ends the stream: closed if both sides ended, else reset (a refused upload stops).
    func endStream()
    /// The request's body may come again (its reads were held for backpressure).
    func readRequest()
    /// The sink of a handler added to a stream channel's pipeline (nil: not this kind).
    static func inPipeline(_ context: ChannelHandlerContext) -> Self?
    /// The stream's channel, whose pipeline takes the RFC 8441 relay (nil on Sluice's own layer).
    var pipelineContext: ChannelHandlerContext? { get }
    /// A stream of Sluice's own layer, which carries the RFC 8441 relay itself (nil in a channel).
    var wireStream: HTTP2WireStream? { get }
    /// Runs `body` once the stream is gone, however it ends.
    func whenClosed(_ body: @escaping () -> Void)
}

/// A channel's context is a sink: parts go down its pipeline (to the HTTP encoder or the HTTP/2
/// stream's codec).
extension ChannelHandlerContext: HTTP2StreamSink {
    var responseAllocator: ByteBufferAllocator { channel.allocator }
    var responseWritable: Bool { channel.isWritable }

    func writeResponse(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?) {
        write(NIOAny(part), promise: promise)
    }

    func flushResponse() {
        flush()
    }

    func closeClient() {
        close(promise: nil)
    }

    func endStream() {
        close(promise: nil)
    }

    func readRequest() {
        read()
    }

    static func inPipeline(_ context: ChannelHandlerContext) -> ChannelHandlerContext? { context }
    var pipelineContext: ChannelHandlerContext? { self }
    var wireStream: HTTP2WireStream? { nil }

    func whenClosed(_ body: @escaping () -> Void) {
        // On the loop, as every sink is used: the closure need not be Sendable.
        channel.closeFuture.assumeIsolated().whenComplete { _ in body() }
    }
}
