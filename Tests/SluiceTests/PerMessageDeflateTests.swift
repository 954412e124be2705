import NIOCore
import NIOHTTP1
import Testing

@testable import Sluice

/// permessage-deflate (RFC 7692): negotiation and the codec, without sockets.
@Suite("permessage-deflate")
struct PerMessageDeflateTests {
    let allocator = ByteBufferAllocator()

    func bytes(_ buffer: ByteBuffer) -> [UInt8] { Array(buffer.readableBytesView) }
    func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }
    /// Headers carrying `values` as separate `Sec-WebSocket-Extensions` fields.
    static func extensions(_ values: String...) -> HTTPHeaders { HTTPHeaders(values.map { ("Sec-WebSocket-Extensions", $0) }) }

    @Test("the RFC 7692 §7.2.3 examples: 'Hello' alone, and twice with a shared window")
    func rfcExamples() throws {
        let (compressor, decompressor) = try PerMessageDeflate().codec(isServer: true, maxMessageSize: 1024)
        let hello = ByteBuffer(string: "Hello")
        #expect(bytes(try compressor.compress(hello, allocator: allocator)) == [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
        // The second message refers back to the first (context takeover).
        #expect(bytes(try compressor.compress(hello, allocator: allocator)) == [0xF2, 0x00, 0x11, 0x00, 0x00])

        #expect(try decompressor.decompress(buffer([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]), allocator: allocator) == hello)
        #expect(try decompressor.decompress(buffer([0xF2, 0x00, 0x11, 0x00, 0x00]), allocator: allocator) == hello)
        // A message with a no-compression block (§7.2.3.3) and one ending in a final block.
        let (_, fresh) = try PerMessageDeflate().codec(isServer: true, maxMessageSize: 1024)
        #expect(try fresh.decompress(buffer([0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00]), allocator: allocator) == hello)
        #expect(try fresh.decompress(buffer([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00]), allocator: allocator) == hello)
    }

    @Test("without context takeover each message compresses alone; large and random messages round-trip")
    func roundTrips() throws {
        var settings = PerMessageDeflate()
        settings.serverNoContextTakeover = true
        let (compressor, _) = try settings.codec(isServer: true, maxMessageSize: 1 << 21)
        let (_, decompressor) = try settings.codec(isServer: false, maxMessageSize: 1 << 21)
        let hello = ByteBuffer(string: "Hello")
        let first = try compressor.compress(hello, allocator: allocator)
        #expect(try compressor.compress(hello, allocator: allocator) == first)

        // Incompressible bytes larger than zlib's window and output chunks, without a slow loop
        // in a debug build: a 64 KiB random block repeated past the 32 KiB window is still new.
        var generator = SystemRandomNumberGenerator()
        let block = (0..<(64 << 10)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        var random = allocator.buffer(capacity: 4 * block.count)
        for _ in 0..<4 { random.writeBytes(block) }
        let text = ByteBuffer(string: String(repeating: "the same line again and again\n", count: 50_000))
        for message in [random, text, ByteBuffer(), hello, random] {
            let compressed = try compressor.compress(message, allocator: allocator)
            #expect(try decompressor.decompress(compressed, allocator: allocator) == message)
        }
        #expect(try compressor.compress(text, allocator: allocator).readableBytes < text.readableBytes / 50)
    }

    @Test("a message that inflates past the limit, and data that is not DEFLATE, are errors, not crashes")
    func refusals() throws {
        let (compressor, _) = try PerMessageDeflate().codec(isServer: false, maxMessageSize: 1 << 30)
        let zeros = ByteBuffer(repeating: 0, count: 8 << 20)
        let bomb = try compressor.compress(zeros, allocator: allocator)
        #expect(bomb.readableBytes < 64 << 10)
        let (_, small) = try PerMessageDeflate().codec(isServer: true, maxMessageSize: 1 << 20)
        #expect(throws: DeflateError.self) { try small.decompress(bomb, allocator: allocator) }
        let (_, other) = try PerMessageDeflate().codec(isServer: true, maxMessageSize: 1 << 20)
        #expect(throws: DeflateError.self) { try other.decompress(buffer([0xFF, 0xFF, 0xFF, 0xFF, 0x12]), allocator: allocator) }
    }

    @Test("a server accepts the first offer it can honour and answers with what it will do")
    func serverNegotiation() throws {
        #expect(PerMessageDeflate.accept(offers: Self.extensions("permessage-deflate; client_max_window_bits"))?.response == "permessage-deflate")
        let narrowed = try #require(PerMessageDeflate.accept(offers: Self.extensions("permessage-deflate; server_no_context_takeover; server_max_window_bits=10")))
        #expect(narrowed.response == "permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
        #expect(narrowed.0.serverNoContextTakeover && narrowed.0.serverMaxWindowBits == 10)
        // An offer with an unknown parameter or a bad value is skipped for the next one.
        let second = PerMessageDeflate.accept(offers: Self.extensions("permessage-deflate; mystery=1, permessage-deflate; server_max_window_bits=16", "permessage-deflate; client_no_context_takeover"))
        #expect(second?.response == "permessage-deflate; client_no_context_takeover")
        #expect(PerMessageDeflate.accept(offers: Self.extensions("x-webkit-deflate-frame")) == nil)
        #expect(PerMessageDeflate.accept(offers: Self.extensions("permessage-deflate; server_no_context_takeover; server_no_context_takeover")) == nil)
        #expect(PerMessageDeflate.accept(offers: HTTPHeaders()) == nil)
    }

    @Test("a client reads the server's answer; answers it cannot honour are errors")
    func clientNegotiation() throws {
        #expect(try PerMessageDeflate.accepted(response: HTTPHeaders()) == nil)
        let settings = try #require(try PerMessageDeflate.accepted(response: Self.extensions("permessage-deflate; client_no_context_takeover; client_max_window_bits=12")))
        #expect(settings.clientNoContextTakeover && settings.clientMaxWindowBits == 12)
        #expect(throws: PerMessageDeflate.NegotiationError.self) { try PerMessageDeflate.accepted(response: Self.extensions("permessage-deflate; client_max_window_bits=8")) }
        #expect(throws: PerMessageDeflate.NegotiationError.self) { try PerMessageDeflate.accepted(response: Self.extensions("permessage-deflate; client_max_window_bits")) }
        #expect(throws: PerMessageDeflate.NegotiationError.self) { try PerMessageDeflate.accepted(response: Self.extensions("permessage-deflate, permessage-deflate")) }
    }
}
