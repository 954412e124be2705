import NIOCore

/// One value of the Redis serialization protocol, RESP2 and RESP3 (redis.io/docs/reference/protocol-spec).
/// Sluice writes commands as arrays of bulk strings and reads whatever the server answers; RESP3's
/// extra types (maps, sets, doubles, booleans, pushes) decode to their own cases so a server that
/// was switched to RESP3 with `HELLO 3` is understood too.
enum RESPValue: Equatable, Sendable {
    case simpleString(String)
    /// `-ERR …`, RESP3's blob error included: the server refused the command.
    case error(String)
    case integer(Int64)
    case bulkString([UInt8])
    /// RESP2's null bulk string and null array, and RESP3's `_`.
    case null
    case array([RESPValue])
    case double(Double)
    case boolean(Bool)
    /// RESP3 `%`: key-value pairs in the server's order.
    case map([(RESPValue, RESPValue)])
    case set([RESPValue])
    /// RESP3 `>`: out-of-band data (pub/sub messages on a RESP3 connection).
    case push([RESPValue])

    static func == (lhs: RESPValue, rhs: RESPValue) -> Bool {
        switch (lhs, rhs) {
        case (.simpleString(let a), .simpleString(let b)), (.error(let a), .error(let b)): a == b
        case (.integer(let a), .integer(let b)): a == b
        case (.bulkString(let a), .bulkString(let b)): a == b
        case (.null, .null): true
        case (.array(let a), .array(let b)), (.set(let a), .set(let b)), (.push(let a), .push(let b)): a == b
        case (.double(let a), .double(let b)): a == b || (a.isNaN && b.isNaN)
        case (.boolean(let a), .boolean(let b)): a == b
        case (.map(let a), .map(let b)): a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    /// The value as text: simple and bulk strings (valid UTF-8) and integers.
    var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let bytes): String(validating: bytes, as: UTF8.self)
        case .integer(let value): String(value)
        default: nil
        }
    }

    var integer: Int64? {
        switch self {
        case .integer(let value): value
        case .bulkString, .simpleString: string.flatMap { Int64($0) }
        default: nil
        }
    }

    var array: [RESPValue]? {
        switch self {
        case .array(let items), .set(let items), .push(let items): items
        default: nil
        }
    }

    /// Writes a command — an array of bulk strings, the only form a server must accept.
    static func writeCommand(_ arguments: [String], into buffer: inout ByteBuffer) {
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            buffer.writeString("$\(argument.utf8.count)\r\n")
            buffer.writeString(argument)
            buffer.writeStaticString("\r\n")
        }
    }
}
