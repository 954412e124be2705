import NIOCore
import NIOEmbedded
import NIOHTTP1
@testable import Sluice

/// Request heads, two readers: whatever Sluice's fast path accepts, NIO's decoder must read
/// the same way (the fast path is never a second opinion). Then the gateway's own reading of a
/// head: its framing verdict, its path normalisation, its host check.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequestHead(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    let fast = SimpleRequestHead.parse(input)
    let nio = nioHead(input)
    if case .request(let head, let length, let vetted) = fast {
        precondition(length <= count)
        guard let (nioHead, nioLength) = nio else { preconditionFailure("the fast path accepted what NIO's decoder refuses") }
        precondition(nioLength == nil || nioLength == length, "lengths differ")
        precondition(head.method == nioHead.method && head.uri == nioHead.uri && head.version == nioHead.version, "request lines differ")
        precondition(head.headers.map { "\($0.name): \($0.value)" } == nioHead.headers.map { "\($0.name): \($0.value)" }, "fields differ")
        precondition(vetted.framing == RequestFraming.read(nioHead.headers), "framing verdicts differ")
        precondition(vetted.keepAlive == nioHead.isKeepAlive, "keep-alive verdicts differ")
        precondition(vetted.offersUpgrade == UpgradeRequest.offersUpgrade(nioHead), "upgrade verdicts differ")
    }
    if let (head, _) = nio {
        _ = RequestFraming.read(head.headers)
        if let path = try? RequestPath.parse(head.uri) {
            // Normalised: no dot or empty segments survive.
            precondition(path.path.hasPrefix("/"))
            precondition(!path.path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().contains { $0 == "." || $0 == ".." }, "dot segment left in \(path.path)")
            precondition(!path.path.contains("//"), "empty segment left in \(path.path)")
            precondition((try? RequestPath.parse(path.target)) == path, "normalising twice changes \(path.path)")
        }
        if let host = head.headers.first(name: "host") { _ = HTTPSyntax.isValidHost(host) }
        _ = UpgradeRequest.isAttempt(head)
        _ = try? UpgradeRequest.validate(head, allowedProtocols: ["chat"])
    }
    return 0
}

/// What NIO's decoder makes of the bytes: the first head, and its length when the request ends
/// within them.
private func nioHead(_ input: UnsafeRawBufferPointer) -> (HTTPRequestHead, Int?)? {
    final class Collector: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        var head: HTTPRequestHead?
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head(let head) = unwrapInboundIn(data), self.head == nil { self.head = head }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {}
    }
    let channel = EmbeddedChannel()
    let collector = Collector()
    do {
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        try channel.pipeline.syncOperations.addHandler(collector)
        try channel.writeInbound(ByteBuffer(bytes: input))
    } catch {}
    _ = try? channel.finish()
    return collector.head.map { ($0, nil) }
}
