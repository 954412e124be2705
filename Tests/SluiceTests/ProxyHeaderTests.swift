import SluiceConfig
import Testing

@testable import Sluice

/// The PROXY protocol header reader with no sockets: every form the specification allows, every
/// way a header can be wrong, and bytes arriving one at a time.
@Suite("PROXY protocol header")
struct ProxyHeaderTests {
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    @Test("v1: TCP4, TCP6 and UNKNOWN; the length covers the CRLF and not what follows")
    func v1() {
        let text = Array("PROXY TCP4 203.0.113.9 10.0.0.1 5555 80\r\nGET /".utf8)
        #expect(ProxyHeader.parse(text, accepting: .v1) == .header(ProxyHeader(source: IPAddress("203.0.113.9"), sourcePort: 5555), length: text.count - 5))
        #expect(ProxyHeader.parse(Array("PROXY TCP6 2001:db8::7 ::1 1 2\r\n".utf8), accepting: .any) == .header(ProxyHeader(source: IPAddress("2001:db8::7"), sourcePort: 1), length: 32))
        #expect(ProxyHeader.parse(Array("PROXY UNKNOWN ffff::1 ::1 1 2\r\n".utf8), accepting: .v1) == .header(ProxyHeader(source: nil, sourcePort: nil), length: 31))
        for bad in ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
                    "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
                    "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r\n", "PROXY TCP4 1.2.3.4\u{7F} 5.6.7.8 1 2\r\n"] {
            if case .invalid = ProxyHeader.parse(Array(bad.utf8), accepting: .v1) {} else { Issue.record("accepted: \(bad.debugDescription)") }
        }
        let long = Array(("PROXY TCP4 " + String(repeating: "1", count: 100)).utf8)
        #expect(ProxyHeader.parse(long, accepting: .v1) == .invalid("PROXY v1 header longer than 107 bytes"))
        #expect(ProxyHeader.parse(Array("GET / HTTP/1.1\r\n".utf8), accepting: .v1) == .invalid("not a PROXY v1 header (it starts with 'PROXY ')"))
    }

    @Test("v2: INET and INET6 with TLVs, LOCAL, UNSPEC and UNIX families; bad versions, commands, families and lengths are refused")
    func v2() {
        func header(_ command: UInt8, _ family: UInt8, _ body: [UInt8]) -> [UInt8] {
            Self.signature + [command, family, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
        }
        let inet = header(0x21, 0x11, [198, 51, 100, 4, 10, 0, 0, 1, 0x9C, 0x40, 0x01, 0xBB, 0x04, 0x00, 0x01, 0x00])
        #expect(ProxyHeader.parse(inet + [0x47], accepting: .v2) == .header(ProxyHeader(source: IPAddress("198.51.100.4"), sourcePort: 40000), length: inet.count))
        let six = header(0x21, 0x21, [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 12) + [UInt8](repeating: 0, count: 16) + [0, 80, 1, 187])
        #expect(ProxyHeader.parse(six, accepting: .any) == .header(ProxyHeader(source: IPAddress("2001:db8::"), sourcePort: 80), length: six.count))
        #expect(ProxyHeader.parse(header(0x20, 0x00, []), accepting: .v2) == .header(ProxyHeader(source: nil, sourcePort: nil), length: 16))
        #expect(ProxyHeader.parse(header(0x21, 0x31, [UInt8](repeating: 0, count: 216)), accepting: .v2) == .header(ProxyHeader(source: nil, sourcePort: nil), length: 232))
        for (name, bytes) in [
            ("version 1", header(0x11, 0x11, [])), ("command 2", header(0x22, 0x11, [])), ("family 4", header(0x21, 0x41, [])),
            ("datagram", header(0x21, 0x12, [UInt8](repeating: 0, count: 12))), ("short", header(0x21, 0x11, [1, 2, 3])),
            ("short six", header(0x21, 0x21, [UInt8](repeating: 0, count: 20))), ("oversized", Self.signature + [0x21, 0x11, 0xFF, 0xFF]),
            ("bad signature", [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0B]),
        ] {
            if case .invalid = ProxyHeader.parse(bytes, accepting: .v2) {} else { Issue.record("accepted: \(name)") }
        }
        // A v1 header where only v2 is accepted, and the other way round.
        if case .invalid = ProxyHeader.parse(Array("PROXY UNKNOWN\r\n".utf8), accepting: .v2) {} else { Issue.record("v1 taken as v2") }
        if case .invalid = ProxyHeader.parse(inet, accepting: .v1) {} else { Issue.record("v2 taken as v1") }
    }

    @Test("byte by byte: needMore until the header is whole, for both versions")
    func byteByByte() {
        let inputs = [Array("PROXY TCP4 203.0.113.9 10.0.0.1 5555 80\r\n".utf8), Self.signature + [0x21, 0x11, 0x00, 0x0C, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]]
        for input in inputs {
            for end in 0..<input.count {
                #expect(ProxyHeader.parse(input[..<end], accepting: .any) == .needMore, "at \(end)")
            }
            if case .header(_, let length) = ProxyHeader.parse(input, accepting: .any) { #expect(length == input.count) } else { Issue.record("no header") }
        }
    }
}
