/// HPACK's Huffman code (RFC 7541 §5.2), decoding only: Sluice writes its own header blocks
/// without it (`HTTP2ResponseBlock`), and clients Huffman-code most literal strings.
///
/// The code is canonical — within one length, codes rise with the symbol — so the length of
/// each symbol's code (Appendix B's `len` column, below) is the whole table; the codes and the
/// decoding arrays are derived from it once. A decoder reads the bits of a string one at a
/// time from the code's first length on, and knows a symbol once the bits read so far fall in
/// that length's range; EOS (symbol 256, thirty 1 bits) in a string, padding longer than seven
/// bits or not all 1s, and bits that are no code are errors (§5.2).
enum HPACKHuffman {
    /// Appendix B's code lengths, symbols 0 to 256 (EOS), sixteen to a row.
    static let lengths: [UInt8] = [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
        28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
        5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
        7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
        6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
        24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
        21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
        19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
        26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
        30
    ]

    /// The canonical code's decoding arrays: for each length, the first code of that length
    /// and where its symbols start in `symbols` (sorted by length, then by value).
    private struct Table {
        var firstCode = [UInt32](repeating: 0, count: 32)
        var firstIndex = [Int](repeating: 0, count: 32)
        var count = [Int](repeating: 0, count: 32)
        var symbols: [UInt16] = []
        let shortest: Int

        init() {
            for length in HPACKHuffman.lengths { count[Int(length)] += 1 }
            var code: UInt32 = 0
            var index = 0
            for length in 1..<32 {
                firstCode[length] = code
                firstIndex[length] = index
                for (symbol, symbolLength) in HPACKHuffman.lengths.enumerated() where Int(symbolLength) == length {
                    symbols.append(UInt16(symbol))
                }
                index += count[length]
                code = (code + UInt32(count[length])) << 1
            }
            shortest = Int(HPACKHuffman.lengths.min()!)
        }
    }

    private static let table = Table()

    /// Why a Huffman-coded string cannot be read.
    enum Failure: Error, Equatable {
        case eos, badPadding, notACode
    }

    /// Decodes `encoded` into `out` (which has room for `maxDecodedCount(encoded.count)`
    /// bytes); returns how many bytes it wrote.
    static func decode(_ encoded: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<UInt8>) throws(Failure) -> Int {
        let table = Self.table
        return try table.symbols.withUnsafeBufferPointer { symbols throws(Failure) in
            var written = 0
            var code: UInt32 = 0
            var length = 0
            // Whether the bits since the last symbol are all 1s (they may be padding).
            var allOnes = true
            for byte in encoded {
                var bit = 7
                while bit >= 0 {
                    let value = UInt32((byte >> UInt8(bit)) & 1)
                    bit -= 1
                    code = code << 1 | value
                    length += 1
                    allOnes = allOnes && value == 1
                    guard length >= table.shortest else { continue }
                    guard length < 31 else { throw .notACode }
                    let offset = code &- table.firstCode[length]
                    guard code >= table.firstCode[length], Int(offset) < table.count[length] else { continue }
                    let symbol = symbols[table.firstIndex[length] + Int(offset)]
                    if symbol == 256 { throw .eos }
                    out[written] = UInt8(symbol)
                    written += 1
                    code = 0
                    length = 0
                    allOnes = true
                }
            }
            // What is left is padding: fewer than eight bits, the most significant of EOS (1s).
            if length > 7 || !allOnes { throw .badPadding }
            return written
        }
    }

    /// The most bytes `count` encoded bytes can decode to (the shortest code has five bits).
    static func maxDecodedCount(_ count: Int) -> Int { (count * 8) / 5 + 1 }
}
