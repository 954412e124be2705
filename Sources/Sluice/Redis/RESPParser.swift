import NIOCore

/// Reads RESP values from the bytes a Redis connection delivers, with no I/O: a value split across
/// reads waits for the rest; a malformed one, or one past the size and depth bounds, is an error
/// with a reason (the connection is then dropped and opened again, never trusted further).
struct RESPParser {
    struct Malformed: Error, Equatable {
        var reason: String
    }

    /// The longest bulk string accepted (Redis's own proto-max-bulk-len default is 512 MB; Sluice
    /// reads only small replies, so a huge one means the stream is not what it seems).
    var maxBulkLength = 64 * 1024 * 1024
    /// The most elements one aggregate may announce.
    var maxElements = 1_048_576
    var maxDepth = 16
    /// The longest line (a simple string, error, number or length).
    var maxLineLength = 64 * 1024

    /// Takes one whole value from the front of `buffer`; `nil` (and `buffer` untouched) when its
    /// bytes have not all arrived.
    func next(from buffer: inout ByteBuffer) throws(Malformed) -> RESPValue? {
        var cursor = buffer
        guard let value = try parse(&cursor, depth: 0) else { return nil }
        buffer = cursor
        return value
    }

    private func parse(_ buffer: inout ByteBuffer, depth: Int) throws(Malformed) -> RESPValue? {
        guard depth <= maxDepth else { throw Malformed(reason: "values nested deeper than \(maxDepth)") }
        guard let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        var cursor = buffer
        cursor.moveReaderIndex(forwardBy: 1)
        guard let line = try readLine(&cursor) else { return nil }
        let value: RESPValue
        switch type {
        case UInt8(ascii: "+"): value = .simpleString(line)
        case UInt8(ascii: "-"): value = .error(line)
        case UInt8(ascii: ":"):
            guard let number = Int64(line) else { throw Malformed(reason: "integer '\(line.prefix(40))' is not a number") }
            value = .integer(number)
        case UInt8(ascii: "_"):
            guard line.isEmpty else { throw Malformed(reason: "null with a payload") }
            value = .null
        case UInt8(ascii: "#"):
            guard line == "t" || line == "f" else { throw Malformed(reason: "boolean '\(line.prefix(40))'") }
            value = .boolean(line == "t")
        case UInt8(ascii: ","):
            let number: Double? = switch line {
            case "inf": .infinity
            case "-inf": -.infinity
            case "nan": .nan
            default: Double(line)
            }
            guard let number else { throw Malformed(reason: "double '\(line.prefix(40))' is not a number") }
            value = .double(number)
        case UInt8(ascii: "("):
            // A big number: kept as its digits.
            guard !line.isEmpty, line.drop(while: { $0 == "-" }).allSatisfy(\.isNumber) else { throw Malformed(reason: "big number '\(line.prefix(40))'") }
            value = .bulkString(Array(line.utf8))
        case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
            let length = try self.length(line, allowNull: type == UInt8(ascii: "$"), limit: maxBulkLength, what: "bulk string")
            guard length >= 0 else { value = .null; break }
            guard cursor.readableBytes >= length + 2 else { return nil }
            let bytes = cursor.readBytes(length: length)!
            guard cursor.readInteger(as: UInt8.self) == 13, cursor.readInteger(as: UInt8.self) == 10 else {
                throw Malformed(reason: "bulk string not followed by CRLF")
            }
            if type == UInt8(ascii: "!") {
                value = .error(String(decoding: bytes, as: UTF8.self))
            } else if type == UInt8(ascii: "=") {
                // Verbatim string: a three-letter format and ':' before the text.
                guard bytes.count >= 4, bytes[3] == UInt8(ascii: ":") else { throw Malformed(reason: "verbatim string without its format") }
                value = .bulkString(Array(bytes[4...]))
            } else {
                value = .bulkString(bytes)
            }
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
            let isMap = type == UInt8(ascii: "%") || type == UInt8(ascii: "|")
            let count = try length(line, allowNull: type == UInt8(ascii: "*"), limit: maxElements, what: "aggregate")
            guard count >= 0 else { value = .null; break }
            var items: [RESPValue] = []
            items.reserveCapacity(min(isMap ? count * 2 : count, 1024))
            for _ in 0..<(isMap ? count * 2 : count) {
                guard let item = try parse(&cursor, depth: depth + 1) else { return nil }
                items.append(item)
            }
            switch type {
            case UInt8(ascii: "~"): value = .set(items)
            case UInt8(ascii: ">"): value = .push(items)
            case UInt8(ascii: "|"):
                // Attributes describe the value that follows; Sluice reads the value.
                guard let attributed = try parse(&cursor, depth: depth + 1) else { return nil }
                value = attributed
            case UInt8(ascii: "%"): value = .map(stride(from: 0, to: items.count, by: 2).map { (items[$0], items[$0 + 1]) })
            default: value = .array(items)
            }
        default:
            throw Malformed(reason: "unknown type byte 0x\(String(type, radix: 16))")
        }
        buffer = cursor
        return value
    }

    /// A line up to CRLF, CRLF consumed; `nil` until it has arrived.
    private func readLine(_ buffer: inout ByteBuffer) throws(Malformed) -> String? {
        let view = buffer.readableBytesView
        guard let lf = view.firstIndex(of: 10) else {
            if view.count > maxLineLength { throw Malformed(reason: "line longer than \(maxLineLength) bytes") }
            return nil
        }
        guard lf > view.startIndex, view[lf - 1] == 13 else { throw Malformed(reason: "line ends in LF without CR") }
        let length = lf - view.startIndex - 1
        guard length <= maxLineLength else { throw Malformed(reason: "line longer than \(maxLineLength) bytes") }
        let bytes = buffer.readBytes(length: length)!
        buffer.moveReaderIndex(forwardBy: 2)
        guard let text = String(validating: bytes, as: UTF8.self) else { throw Malformed(reason: "line is not UTF-8") }
        return text
    }

    private func length(_ line: String, allowNull: Bool, limit: Int, what: String) throws(Malformed) -> Int {
        guard let value = Int(line) else { throw Malformed(reason: "\(what) length '\(line.prefix(40))' is not a number") }
        if value == -1 && allowNull { return -1 }
        guard value >= 0 else { throw Malformed(reason: "\(what) length \(value)") }
        guard value <= limit else { throw Malformed(reason: "\(what) length \(value) over the limit of \(limit)") }
        return value
    }
}
