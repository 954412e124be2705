import NIOCore
import NIOHTTP1
@testable import Sluice

/// The strict reader of backends' responses, fed arbitrary bytes in arbitrary pieces, for a GET,
/// a HEAD or a WebSocket upgrade, with the backend closing at the end: an error or events, never
/// a crash, and never more body than bytes. A 101 read for an upgrade is checked against a
/// client's offer, and the 101 Sluice would write to that client from it must read back as a
/// 101 with the backend's end-to-end fields (its accept left out) and Sluice's three.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResponse(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count >= 2 else { return 0 }
    let input = UnsafeRawBufferPointer(start: start, count: count)
    var parser = UpstreamResponseParser(maxHeadBytes: 4096)
    parser.expectResponse(toHEAD: input[0] & 1 != 0, upgrading: input[0] & 2 != 0)
    var seed = UInt64(input[1]) | 1
    var offset = 2
    var body = 0
    do {
        while offset < count {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            let piece = min(count - offset, Int(seed >> 58) + 1)
            var buffer = ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: input[offset..<offset + piece]))
            offset += piece
            while let event = try parser.next(&buffer) {
                switch event {
                case .body(let chunk): body += chunk.readableBytes
                case .head(let head): if head.status == 101 { checkSwitch(head) }
                case .end: parser.expectResponse(toHEAD: false)  // as if the next request went out
                }
            }
        }
        while let event = try parser.inputClosed() {
            if case .body(let chunk) = event { body += chunk.readableBytes }
        }
    } catch {}
    precondition(body <= count, "more body than bytes")
    return 0
}

/// A client's offer with a subprotocol and an extension, as the backend's 101 is checked against.
private let offer: UpgradeRequest = {
    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [
        "Host": "x", "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13", "Sec-WebSocket-Protocol": "chat", "Sec-WebSocket-Extensions": "permessage-deflate",
    ])
    return try! UpgradeRequest.validate(head, allowedProtocols: nil)
}()

private func checkSwitch(_ head: UpstreamResponseParser.Head) {
    let accept = offer.expectedAccept
    _ = try? UpgradeResponse.validate(head, for: offer, expectedAccept: accept)
    let answer = SwitchingAnswer(backendHead: head, accept: accept, setCookie: "sluice_backend=1")
    _ = answer.http2Fields
    var reader = UpstreamResponseParser(maxHeadBytes: 1 << 20)
    reader.expectResponse(toHEAD: false, upgrading: true)
    var written = answer.http1Bytes(allocator: ByteBufferAllocator())
    guard case .head(let back)? = try? reader.next(&written) else { preconditionFailure("the client's 101 does not read back") }
    precondition(back.status == 101, "the client's 101 reads back as \(back.status)")
    let kept = head.fields.filter { field in
        field.endToEnd && !head.bytes.withUnsafeReadableBytes { HTTPSyntax.equalsIgnoringCase($0[field.name], "sec-websocket-accept") }
    }
    // Upgrade and Connection are hop-by-hop: of Sluice's four, the accept and the cookie pass.
    precondition(back.fields.filter(\.endToEnd).count == kept.count + 2, "fields lost or invented in the client's 101")
}
