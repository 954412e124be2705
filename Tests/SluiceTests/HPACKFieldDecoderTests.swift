import NIOCore
import NIOHPACK
import Testing

@testable import Sluice

/// Sluice's HPACK decoder with no sockets: RFC 7541's own examples, NIOHPACK's encoder (which no
/// one here wrote) as the other side for thousands of blocks of every representation, and every
/// way a block can be unreadable, each a connection error.
@Suite("HPACK field decoder")
struct HPACKFieldDecoderTests {
    static func block(_ hex: String) -> ByteBuffer {
        let digits = Array(hex.filter { !$0.isWhitespace })
        var bytes: [UInt8] = []
        var index = 0
        while index + 1 < digits.count {
            bytes.append(UInt8(String(digits[index...index + 1]), radix: 16)!)
            index += 2
        }
        return ByteBuffer(bytes: bytes)
    }

    static func same(_ decoded: [(String, String)], _ expected: [(String, String)]) -> Bool {
        decoded.count == expected.count && zip(decoded, expected).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    @Test("RFC 7541 C.3 and C.4: three requests on one connection, without and with Huffman coding, the table carried between them")
    func rfcExamples() throws {
        let expected: [[(String, String)]] = [
            [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")],
            [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"), ("cache-control", "no-cache")],
            [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"), ("custom-key", "custom-value")],
        ]
        let plain = [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]
        let huffman = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]
        for blocks in [plain, huffman] {
            var decoder = HPACKFieldDecoder(maxListSize: 16_384)
            for (hex, fields) in zip(blocks, expected) {
                #expect(Self.same(try decoder.decode(Self.block(hex)), fields))
            }
        }
    }

    @Test("the Huffman table is a complete canonical code: every bit string decodes, EOS is thirty 1s")
    func huffmanTable() {
        #expect(HPACKHuffman.lengths.count == 257)
        // Kraft's sum of 2^-length is exactly 1: no code missing, none in excess.
        let sum = HPACKHuffman.lengths.reduce(0.0) { $0 + 1.0 / Double(1 << Int($1)) }
        #expect(sum == 1.0)
        #expect(HPACKHuffman.lengths[256] == 30)
    }

    /// A small deterministic generator (xorshift), so a failure reproduces.
    struct Random {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return Int(state % UInt64(bound))
        }
    }

    static func value(_ random: inout Random) -> String {
        let pieces = ["", "a", "gzip, deflate", "text/html", "/search?q=%20x", "é", "Ünïcödé ✓", "Mozilla/5.0 (X11; Linux x86_64)", "0", "1234567890",
                      "trailers", "session=abcdef0123456789; theme=dark", "\u{7f}~!@#$%^&*()_+{}|:<>?", String(repeating: "x", count: 300)]
        var text = ""
        for _ in 0..<(1 + random.next(3)) { text += pieces[random.next(pieces.count)] }
        return text
    }

    @Test("NIOHPACK's encoder as the client: 3,000 blocks of every representation, Huffman on and off, tables of 4,096 and 256 bytes, decode to what was encoded")
    func againstNIOHPACK() throws {
        let names = [":method", ":path", ":authority", ":scheme", "accept", "accept-encoding", "cookie", "user-agent", "x-custom", "x-trace-id",
                     "content-type", "authorization", "referer", "a-very-long-field-name-that-no-table-has"]
        let indexings: [HPACKIndexing] = [.indexable, .nonIndexable, .neverIndexed]
        var random = Random(state: 0x9E37_79B9_7F4A_7C15)
        for (huffman, tableSize) in [(true, 4096), (false, 4096), (true, 256)] {
            var encoder = HPACKEncoder(allocator: ByteBufferAllocator(), useHuffmanEncoding: huffman)
            if tableSize != 4096 { try encoder.setDynamicTableSize(tableSize) }
            var decoder = HPACKFieldDecoder(maxListSize: 1 << 20)
            for _ in 0..<1000 {
                var headers = HPACKHeaders()
                for _ in 0..<(1 + random.next(12)) {
                    headers.add(name: names[random.next(names.count)], value: Self.value(&random), indexing: indexings[random.next(3)])
                }
                var block = ByteBuffer()
                try encoder.encode(headers: headers, to: &block)
                let decoded = try decoder.decode(block)
                #expect(Self.same(decoded, headers.map { ($0.name, $0.value) }))
            }
        }
    }

    @Test("every byte from 0 to 255 in a Huffman-coded literal decodes to itself")
    func everyByte() throws {
        // A literal without indexing, a new name "x", its value every byte once, Huffman-coded
        // here from the table's canonical codes.
        var byCode = [UInt32](repeating: 0, count: 257)
        var lengthOf = [Int](repeating: 0, count: 257)
        var next: UInt32 = 0
        var previousLength = 0
        for length in 1...30 {
            next <<= (length - previousLength)
            previousLength = length
            for (symbol, symbolLength) in HPACKHuffman.lengths.enumerated() where Int(symbolLength) == length {
                byCode[symbol] = next
                lengthOf[symbol] = length
                next += 1
            }
        }
        var bits: [Bool] = []
        for byte in 0..<256 {
            for shift in stride(from: lengthOf[byte] - 1, through: 0, by: -1) { bits.append(byCode[byte] >> UInt32(shift) & 1 == 1) }
        }
        while bits.count % 8 != 0 { bits.append(true) }
        var encoded: [UInt8] = []
        for start in stride(from: 0, to: bits.count, by: 8) {
            encoded.append(bits[start..<start + 8].reduce(0) { $0 << 1 | ($1 ? 1 : 0) })
        }
        var block = ByteBuffer(bytes: [0x00, 0x01, UInt8(ascii: "x")])
        block.writeInteger(UInt8(0xff))  // Huffman, length 127 + the rest below
        var rest = encoded.count - 127
        while rest >= 128 {
            block.writeInteger(UInt8(rest & 0x7f | 0x80))
            rest >>= 7
        }
        block.writeInteger(UInt8(rest))
        block.writeBytes(encoded)
        var decoder = HPACKFieldDecoder(maxListSize: 1 << 20)
        let fields = try decoder.decode(block)
        #expect(fields.count == 1)
        #expect(fields.first?.0 == "x")
        // Every byte that is valid UTF-8 on its own (ASCII) comes back as it was sent.
        #expect(fields.first.map { Array($0.1.utf8.prefix(128)) } == Array(0..<128))
    }

    @Test("an unreadable block is a COMPRESSION_ERROR of the connection, naming what is wrong")
    func unreadable() {
        let cases: [(String, String)] = [
            ("80", "index 0, not in the tables"),
            ("be", "index 62, not in the tables"),
            ("ff 80 80 80 80 01", "an integer over 2^28"),
            ("ff", "ends inside an integer"),
            ("82 20", "a table size update after a field"),
            ("20 20 20", "a third table size update"),
            ("3f e2 1f", "over the 4096 allowed"),
            ("00 01 78 05 61", "a string of 5 bytes, 1 left"),
            ("00 01 78 81 00", "Huffman"),  // padding of 0s
            ("00 01 78 84 ff ff ff ff", "Huffman"),  // EOS
            ("00 01 78 82 1f ff", "Huffman"),  // 'a' (00011) then 11 bits of padding
            ("00", "ends before a string"),
        ]
        for (hex, reason) in cases {
            var decoder = HPACKFieldDecoder(maxListSize: 16_384)
            do {
                _ = try decoder.decode(Self.block(hex))
                Issue.record("\(hex) decoded")
            } catch {
                #expect(error.code == .compressionError && error.stream == nil, "\(hex)")
                #expect(error.reason.contains(reason), "\(hex): \(error.reason)")
            }
        }
    }

    @Test("a header list over SETTINGS_MAX_HEADER_LIST_SIZE is refused; a field larger than the table empties it")
    func limits() throws {
        var small = HPACKFieldDecoder(maxListSize: 100)
        // Two fields of 32 + 1 + 40 bytes each: the second passes the limit.
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator(), useHuffmanEncoding: false)
        var block = ByteBuffer()
        try encoder.encode(headers: HPACKHeaders([("a", String(repeating: "v", count: 40)), ("b", String(repeating: "w", count: 40))]), to: &block)
        #expect(throws: HTTP2WireError.self) { try small.decode(block) }

        // A 256-byte table: a 300-byte field empties it, and is not added (index 62 is then unknown).
        var tiny = HPACKFieldDecoder(allowedTableSize: 256, maxListSize: 1 << 20)
        var first = ByteBuffer(bytes: [0x40, 0x01, UInt8(ascii: "k"), 0x01, UInt8(ascii: "v")])  // k: v, indexed
        #expect(Self.same(try tiny.decode(first), [("k", "v")]))
        #expect(Self.same(try tiny.decode(Self.block("be")), [("k", "v")]))
        first = ByteBuffer(bytes: [0x40, 0x01, UInt8(ascii: "k"), 0x7f, 0x83, 0x01] + Array(repeating: UInt8(ascii: "x"), count: 258))
        #expect(try tiny.decode(first).first?.1.utf8.count == 258)
        #expect(throws: HTTP2WireError.self) { try tiny.decode(Self.block("be")) }
    }
}
