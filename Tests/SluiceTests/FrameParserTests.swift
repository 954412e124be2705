import NIOCore
import Testing
@testable import Sluice

/// The streaming frame parser on every length boundary, split at every byte.
@Suite("Relay direction: frame parsing and checks")
struct FrameParserTests {
    static let key = MaskKey(0x11, 0x22, 0x33, 0x44)

    static func frame(opcode: UInt8, payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, masked: Bool = true) -> [UInt8] {
        let header = FrameHeader(fin: fin, rsv: rsv, opcode: opcode, maskKey: masked ? key : nil, payloadLength: UInt64(payload.count))
        var buffer = ByteBuffer()
        header.write(to: &buffer)
        buffer.writeBytes(masked ? payload.enumerated().map { $0.element ^ key[$0.offset] } : payload)
        return Array(buffer.readableBytesView)
    }

    static func direction(client: Bool = true, deflate: Bool = false, maxFrame: UInt64 = 1 << 40, maxMessage: UInt64 = 1 << 40, remask: Bool = false) -> RelayDirection {
        RelayDirection(configuration: .init(sourceIsClient: client, allowsCompressedBit: deflate, maxFrameSize: maxFrame, maxMessageSize: maxMessage, remask: remask))
    }

    /// Feeds `bytes` in chunks of the given sizes and returns the forwarded bytes, the control
    /// frames seen, and the last stop.
    static func run(_ direction: inout RelayDirection, _ bytes: [UInt8], chunks: [Int]) -> (forwarded: [UInt8], controls: [RelayDirection.ControlFrame], stop: RelayDirection.Stop) {
        var forwarded: [UInt8] = []
        var controls: [RelayDirection.ControlFrame] = []
        var stop = RelayDirection.Stop.consumedAll
        var offset = 0
        var chunkIndex = 0
        while offset < bytes.count {
            let size = min(chunks[chunkIndex % chunks.count], bytes.count - offset)
            chunkIndex += 1
            var buffer = ByteBuffer(bytes: bytes[offset..<offset + size])
            let origin = buffer.readerIndex
            offset += size
            var outputs: [RelayDirection.Output] = []
            stop = direction.process(&buffer, into: &outputs)
            buffer.moveReaderIndex(to: origin)
            for output in outputs {
                switch output {
                case .range(let lower, let upper): forwarded += buffer.getBytes(at: lower, length: upper - lower)!
                case .bytes(let bytes): forwarded += Array(bytes.readableBytesView)
                case .control(let frame): controls.append(frame)
                }
            }
            if case .violation = stop { break }
            if stop == .closeReceived { break }
        }
        return (forwarded, controls, stop)
    }

    @Test("headers parse on every length boundary", arguments: [0, 1, 125, 126, 127, 65535, 65536, 70000])
    func lengths(length: Int) {
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0) }
        let bytes = Self.frame(opcode: 2, payload: payload)
        guard case .complete(let header) = bytes.withUnsafeBytes({ FrameHeader.parse($0) }) else {
            Issue.record("header did not parse")
            return
        }
        #expect(header.payloadLength == UInt64(length))
        #expect(header.headerLength == (length < 126 ? 2 : length <= 65535 ? 4 : 10) + 4)
        #expect(header.maskKey == Self.key)
        var direction = Self.direction()
        let result = Self.run(&direction, bytes, chunks: [4096])
        #expect(result.forwarded == bytes)
        #expect(direction.messages == 1)
    }

    @Test("a 64-bit length at and beyond 2^32 parses; the top bit set is a violation")
    func hugeLengths() {
        var bytes: [UInt8] = [0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]
        guard case .complete(let header) = bytes.withUnsafeBytes({ FrameHeader.parse($0) }) else {
            Issue.record("header did not parse")
            return
        }
        #expect(header.payloadLength == 1 << 32)
        bytes[2] = 0x80
        #expect(bytes.withUnsafeBytes { FrameHeader.parse($0) } == .invalidLength)
    }

    @Test("a huge frame streams: its payload is forwarded as it arrives, never held")
    func streamingHugeFrame() {
        var direction = Self.direction()
        let header = FrameHeader(fin: true, opcode: 2, maskKey: Self.key, payloadLength: 1 << 32)
        var buffer = ByteBuffer()
        header.write(to: &buffer)
        var outputs: [RelayDirection.Output] = []
        _ = direction.process(&buffer, into: &outputs)
        #expect(outputs == [.range(0, 14)])
        for _ in 0..<4 {
            var chunk = ByteBuffer(repeating: 0xAB, count: 1 << 16)
            outputs.removeAll()
            #expect(direction.process(&chunk, into: &outputs) == .consumedAll)
            #expect(outputs == [.range(0, 1 << 16)])
            #expect(direction.isInsideFrame)
        }
    }

    @Test("split at every byte, a message of fragments with control frames between them comes out unchanged")
    func everySplit() {
        let bytes = Self.frame(opcode: 1, payload: Array("frag".utf8), fin: false)
            + Self.frame(opcode: 9, payload: Array("ping".utf8))
            + Self.frame(opcode: 0, payload: Array(repeating: 7, count: 300), fin: false)
            + Self.frame(opcode: 10, payload: [])
            + Self.frame(opcode: 0, payload: Array("end".utf8), fin: true)
            + Self.frame(opcode: 2, payload: Array(repeating: 1, count: 126))
        let dataOnly = Self.frame(opcode: 1, payload: Array("frag".utf8), fin: false)
            + Self.frame(opcode: 0, payload: Array(repeating: 7, count: 300), fin: false)
            + Self.frame(opcode: 0, payload: Array("end".utf8), fin: true)
            + Self.frame(opcode: 2, payload: Array(repeating: 1, count: 126))
        for split in 1...bytes.count {
            var direction = Self.direction()
            let result = Self.run(&direction, bytes, chunks: [split])
            #expect(result.forwarded == dataOnly, "split \(split)")
            #expect(result.controls.map(\.opcode) == [9, 10], "split \(split)")
            #expect(result.controls.first?.payload == Array("ping".utf8))
            #expect(result.controls.first?.wire == Self.frame(opcode: 9, payload: Array("ping".utf8)))
            #expect(direction.messages == 2)
            #expect(direction.frames == 6)
            #expect(direction.bytes == UInt64(bytes.count))
        }
    }

    @Test("a close frame ends the direction; bytes after it are discarded")
    func close() {
        var direction = Self.direction()
        let bytes = Self.frame(opcode: 8, payload: [0x03, 0xE8] + Array("bye".utf8)) + Self.frame(opcode: 1, payload: [1])
        let result = Self.run(&direction, bytes, chunks: [bytes.count])
        #expect(result.stop == .closeReceived)
        #expect(result.controls.first?.closeCode == 1000)
        #expect(result.forwarded.isEmpty)
        #expect(direction.isFinished)
    }

    static func violation(_ bytes: [UInt8], client: Bool = true, deflate: Bool = false, maxFrame: UInt64 = 1 << 40, maxMessage: UInt64 = 1 << 40) -> RelayDirection.Violation? {
        var direction = direction(client: client, deflate: deflate, maxFrame: maxFrame, maxMessage: maxMessage)
        if case .violation(let violation) = run(&direction, bytes, chunks: [bytes.count]).stop { return violation }
        return nil
    }

    @Test("checks: each broken rule is a 1002")
    func checks() {
        #expect(Self.violation(Self.frame(opcode: 1, payload: [1], rsv: 0x40))?.code == 1002)
        #expect(Self.violation(Self.frame(opcode: 1, payload: [1], rsv: 0x40), deflate: true) == nil)
        #expect(Self.violation(Self.frame(opcode: 1, payload: [1], rsv: 0x20), deflate: true)?.code == 1002)
        #expect(Self.violation(Self.frame(opcode: 9, payload: [1], rsv: 0x40), deflate: true)?.code == 1002)
        #expect(Self.violation(Self.frame(opcode: 3, payload: []))?.reason == "unknown opcode 3")
        #expect(Self.violation(Self.frame(opcode: 0xB, payload: []))?.code == 1002)
        #expect(Self.violation(Self.frame(opcode: 9, payload: Array(repeating: 0, count: 126)))?.code == 1002)
        #expect(Self.violation(Self.frame(opcode: 9, payload: [], fin: false))?.code == 1002)
        #expect(Self.violation(Self.frame(opcode: 1, payload: [1], masked: false))?.reason == "client frame not masked")
        #expect(Self.violation(Self.frame(opcode: 1, payload: [1], masked: true), client: false)?.reason == "server frame masked")
        #expect(Self.violation(Self.frame(opcode: 1, payload: [1], masked: false), client: false) == nil)
        #expect(Self.violation(Self.frame(opcode: 0, payload: [1]))?.code == 1002)
        #expect(Self.violation(Self.frame(opcode: 1, payload: [1], fin: false) + Self.frame(opcode: 2, payload: [1]))?.code == 1002)
    }

    @Test("size limits are a 1009, per frame and per message")
    func limits() {
        #expect(Self.violation(Self.frame(opcode: 2, payload: Array(repeating: 0, count: 200)), maxFrame: 199)?.code == 1009)
        #expect(Self.violation(Self.frame(opcode: 2, payload: Array(repeating: 0, count: 199)), maxFrame: 199) == nil)
        let fragments = Self.frame(opcode: 2, payload: Array(repeating: 0, count: 150), fin: false)
            + Self.frame(opcode: 0, payload: Array(repeating: 0, count: 150), fin: true)
        #expect(Self.violation(fragments, maxMessage: 299)?.code == 1009)
        #expect(Self.violation(fragments, maxMessage: 300) == nil)
    }

    @Test("remask: the backend receives the same payload under a fresh key")
    func remask() {
        let payload = Array((0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        let bytes = Self.frame(opcode: 2, payload: payload)
        for split in [1, 3, 7, 100, 1000, 2000] {
            var direction = Self.direction(remask: true)
            let forwarded = Self.run(&direction, bytes, chunks: [split]).forwarded
            guard case .complete(let header) = forwarded.withUnsafeBytes({ FrameHeader.parse($0) }), let key = header.maskKey else {
                Issue.record("no masked header")
                return
            }
            #expect(key != Self.key)
            let unmasked = forwarded.dropFirst(header.headerLength).enumerated().map { $0.element ^ key[$0.offset] }
            #expect(unmasked == payload, "split \(split)")
        }
    }

    @Test("masking applies at any offset, word-at-a-time and byte-at-a-time alike")
    func maskOffsets() {
        let key = MaskKey(1, 2, 3, 4)
        for offset in 0..<8 {
            var bytes = Array(repeating: UInt8(0), count: 37)
            bytes.withUnsafeMutableBytes { key.apply(to: $0, offset: UInt64(offset)) }
            #expect(bytes == (0..<37).map { key[$0 + offset] })
        }
    }
}

extension FrameParserTests {
    @Test("after the gateway's own close, data frames are checked but dropped; control frames still come out")
    func dropsDataAfterClose() {
        var direction = Self.direction()
        direction.dropData()
        let bytes = Self.frame(opcode: 2, payload: Array(repeating: 9, count: 300)) + Self.frame(opcode: 8, payload: [0x03, 0xE9])
        let result = Self.run(&direction, bytes, chunks: [7])
        #expect(result.forwarded.isEmpty)
        #expect(result.controls.first?.closeCode == 1001)
        #expect(direction.frames == 2)
    }
}
