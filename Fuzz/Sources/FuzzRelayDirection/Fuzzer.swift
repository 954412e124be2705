import NIOCore
@testable import Sluice

/// One direction of the relay's frame parser fed arbitrary bytes in arbitrary pieces.
/// Byte 0 picks the configuration (client or backend source, compression, remasking, small
/// limits); byte 1 seeds the piece sizes; the rest is the stream.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRelayDirection(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count >= 2 else { return 0 }
    let input = UnsafeRawBufferPointer(start: start, count: count)
    let flags = input[0]
    var seed = UInt64(input[1]) | 1
    let fromClient = flags & 1 != 0
    var direction = RelayDirection(configuration: .init(
        sourceIsClient: fromClient, allowsCompressedBit: flags & 2 != 0,
        maxFrameSize: flags & 8 != 0 ? 64 : 1 << 20, maxMessageSize: flags & 8 != 0 ? 200 : 1 << 20,
        remask: fromClient && flags & 4 != 0
    ))
    var offset = 2
    var forwarded = 0
    var outputs: [RelayDirection.Output] = []
    while offset < count {
        seed = seed &* 6364136223846793005 &+ 1442695040888963407
        let piece = min(count - offset, Int(seed >> 59) + 1)
        var buffer = ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: input[offset..<offset + piece]))
        let origin = buffer.readerIndex
        outputs.removeAll(keepingCapacity: true)
        let stop = direction.process(&buffer, into: &outputs, stopAtFrameBoundary: flags & 16 != 0)
        // Ranges lie within what this call consumed, in order, without overlap.
        var last = origin
        for output in outputs {
            if case .range(let lower, let upper) = output {
                precondition(lower >= last && upper > lower && upper <= buffer.readerIndex, "range \(lower)..<\(upper) outside \(origin)..<\(buffer.readerIndex)")
                last = upper
                forwarded += upper - lower
            }
            if case .control(let frame) = output { precondition(frame.payload.count <= 125) }
        }
        let consumed = buffer.readerIndex - origin
        if case .violation = stop {
            // The relay stops reading this source at a violation; nothing after it matters.
            precondition(direction.isFinished)
            break
        }
        precondition(consumed > 0, "no progress: \(stop) at \(offset) of \(count)")
        offset += consumed
    }
    precondition(forwarded <= count - 2)
    return 0
}
