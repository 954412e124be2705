import NIOCore
@testable import Sluice

/// The RESP reader, fed arbitrary bytes (what a broken or hostile Redis could send) whole and in
/// two pieces split where the first byte says: values or a reason, never a crash; the values read
/// from the pieces are the ones read from the whole, and a refusal of the whole is a refusal of
/// the pieces.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRESP(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count >= 1 else { return 0 }
    let input = Array(UnsafeRawBufferPointer(start: start, count: count))
    let bytes = Array(input.dropFirst())
    var parser = RESPParser()
    parser.maxBulkLength = 4096
    parser.maxElements = 256
    parser.maxDepth = 8
    parser.maxLineLength = 512
    let whole = read([bytes[...]], parser)
    let cut = bytes.isEmpty ? 0 : Int(input[0]) % (bytes.count + 1)
    let pieces = read([bytes[..<cut], bytes[cut...]], parser)
    precondition(whole.values == pieces.values, "pieces read differently: \(whole.values) vs \(pieces.values)")
    precondition(whole.failed == pieces.failed, "a refusal depends on where the bytes were split")
    return 0
}

/// Every value the parser reads as the pieces arrive, and whether it refused the stream.
private func read(_ pieces: [ArraySlice<UInt8>], _ parser: RESPParser) -> (values: [RESPValue], failed: Bool) {
    var buffer = ByteBuffer()
    var values: [RESPValue] = []
    for piece in pieces {
        buffer.writeBytes(piece)
        do {
            while buffer.readableBytes > 0, let value = try parser.next(from: &buffer) { values.append(value) }
        } catch {
            return (values, true)
        }
    }
    return (values, false)
}
