import NIOCore
@testable import Sluice

/// The strict reader of backends' responses, fed arbitrary bytes in arbitrary pieces, for a GET
/// or a HEAD, with the backend closing at the end: an error or events, never a crash, and never
/// more body than bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResponse(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count >= 2 else { return 0 }
    let input = UnsafeRawBufferPointer(start: start, count: count)
    var parser = UpstreamResponseParser(maxHeadBytes: 4096)
    parser.expectResponse(toHEAD: input[0] & 1 != 0)
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
                case .head: break
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
