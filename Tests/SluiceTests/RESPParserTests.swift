import NIOCore
import Testing

@testable import Sluice

/// The RESP reader with no sockets: every RESP2 and RESP3 type, values split at every byte, and
/// malformed or oversized input refused with a reason.
@Suite("RESP parser")
struct RESPParserTests {
    static func parseAll(_ text: String, parser: RESPParser = RESPParser()) throws -> [RESPValue] {
        var buffer = ByteBuffer(string: text)
        var values: [RESPValue] = []
        while let value = try parser.next(from: &buffer) { values.append(value) }
        #expect(buffer.readableBytes == 0, "left over: \(buffer.readableBytes) bytes")
        return values
    }

    @Test("RESP2 and RESP3 values decode to their cases")
    func types() throws {
        let text = "+OK\r\n-ERR wrong\r\n:-42\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n*2\r\n:1\r\n*1\r\n+x\r\n"
            + "_\r\n#t\r\n#f\r\n,1.5\r\n,inf\r\n(12345678901234567890\r\n!3\r\nbad\r\n=8\r\ntxt:some\r\n"
            + "%1\r\n+k\r\n:2\r\n~2\r\n:1\r\n:2\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n|1\r\n+ttl\r\n:3\r\n:9\r\n"
        let values = try Self.parseAll(text)
        #expect(values == [
            .simpleString("OK"), .error("ERR wrong"), .integer(-42), .bulkString(Array("hello".utf8)), .bulkString([]), .null, .null,
            .array([.integer(1), .array([.simpleString("x")])]), .null, .boolean(true), .boolean(false), .double(1.5), .double(.infinity),
            .bulkString(Array("12345678901234567890".utf8)), .error("bad"), .bulkString(Array("some".utf8)),
            .map([(.simpleString("k"), .integer(2))]), .set([.integer(1), .integer(2)]),
            .push([.bulkString(Array("message".utf8)), .bulkString([UInt8(ascii: "c")]), .bulkString([UInt8(ascii: "p")])]), .integer(9),
        ])
    }

    @Test("a value split at any byte waits for the rest and then reads the same")
    func split() throws {
        let text = "*3\r\n$3\r\nabc\r\n:7\r\n%1\r\n+a\r\n$2\r\nbc\r\n"
        let whole = try Self.parseAll(text)
        let bytes = Array(text.utf8)
        for cut in 1..<bytes.count {
            var buffer = ByteBuffer(bytes: bytes[..<cut])
            let parser = RESPParser()
            #expect(try parser.next(from: &buffer) == nil, "complete after \(cut) bytes")
            #expect(buffer.readableBytes == cut, "consumed part of an incomplete value")
            buffer.writeBytes(bytes[cut...])
            #expect(try parser.next(from: &buffer) == whole.first)
        }
    }

    @Test("malformed, oversized and too deeply nested input is refused with a reason")
    func malformed() {
        var small = RESPParser()
        small.maxBulkLength = 10
        small.maxElements = 4
        small.maxDepth = 3
        small.maxLineLength = 16
        let cases = [
            "?what\r\n", ":12x\r\n", "$abc\r\n", "$-2\r\n", "$11\r\n", "*5\r\n", "*-2\r\n", "$3\r\nabcd\r\n", "+no cr\n", "#x\r\n", ",one\r\n",
            "_x\r\n", "=2\r\nab\r\n", "*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", "+" + String(repeating: "a", count: 40),
            "+\u{FF}\r\n",
        ]
        for text in cases {
            var buffer = ByteBuffer(string: text)
            if text == "+\u{FF}\r\n" { buffer = ByteBuffer(bytes: [UInt8(ascii: "+"), 0xFF, 13, 10]) }
            #expect(throws: RESPParser.Malformed.self, "\(text.debugDescription)") { _ = try small.next(from: &buffer) }
        }
    }

    @Test("commands are written as arrays of bulk strings, binary-safe")
    func commands() throws {
        var buffer = ByteBuffer()
        RESPValue.writeCommand(["SET", "k\r\n", "é"], into: &buffer)
        #expect(buffer.readString(length: buffer.readableBytes) == "*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\né\r\n")
    }
}
