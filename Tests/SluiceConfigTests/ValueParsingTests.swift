import Testing
@testable import SluiceConfig

@Suite("Durations, sizes, addresses and backend URLs")
struct ValueParsingTests {
    @Test("durations", arguments: [
        ("30s", Duration.seconds(30)), ("500ms", .milliseconds(500)), ("2m", .seconds(120)),
        ("1h", .seconds(3600)), ("1m30s", .seconds(90)), ("0s", .zero),
    ])
    func durations(text: String, expected: Duration) {
        #expect(ValueParsing.duration(text) == expected)
    }

    @Test("bad durations", arguments: ["", "30", "s", "1.5s", "-1s", "10 s", "5d", "999999999999999s"])
    func badDurations(text: String) {
        #expect(ValueParsing.duration(text) == nil)
    }

    @Test("sizes", arguments: [
        ("64KiB", 65536), ("16MiB", 16 << 20), ("1GiB", 1 << 30), ("512B", 512), ("10KB", 10_000), ("42", 42),
    ])
    func sizes(text: String, expected: Int) {
        #expect(ValueParsing.size(text) == expected)
    }

    @Test("bad sizes", arguments: ["", "KiB", "1.5MiB", "-1", "10kib", "99999999999999999GiB"])
    func badSizes(text: String) {
        #expect(ValueParsing.size(text) == nil)
    }

    @Test("addresses")
    func addresses() throws {
        #expect(try ValueParsing.address("127.0.0.1:8443") == SocketAddressSpec(host: "127.0.0.1", port: 8443))
        #expect(try ValueParsing.address("[::1]:0") == SocketAddressSpec(host: "::1", port: 0))
        #expect(try ValueParsing.address("[2001:db8::1]:443") == SocketAddressSpec(host: "2001:db8::1", port: 443))
        #expect(try ValueParsing.address("localhost:80") == SocketAddressSpec(host: "localhost", port: 80))
        #expect(throws: ValueError.self) { try ValueParsing.address("[::g]:80") }
        #expect(throws: ValueError.self) { try ValueParsing.address(":80") }
    }

    @Test("backend URLs")
    func backendURLs() throws {
        #expect(try BackendURL.parse("ws://h:1").target == .remote(scheme: .ws, host: "h", port: 1, path: "/"))
        #expect(try BackendURL.parse("wss://h").target == .remote(scheme: .wss, host: "h", port: 443, path: "/"))
        #expect(try BackendURL.parse("WS://[::1]:9/p").target == .remote(scheme: .ws, host: "::1", port: 9, path: "/p"))
        #expect(try BackendURL.parse("builtin:echo").target == .builtin(.echo))
        for bad in ["ftp://h", "ws://", "ws://u:p@h", "ws://h/?q", "ws://h:0", "builtin:nope", "h:80"] {
            #expect(throws: ValueError.self, "\(bad)") { try BackendURL.parse(bad) }
        }
    }
}
