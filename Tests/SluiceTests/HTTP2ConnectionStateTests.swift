import NIOCore
import SluiceConfig
import Testing

@testable import Sluice

/// The server side of an HTTP/2 connection's state, with no sockets: streams through their
/// lives, identifier and concurrency rules, both flow-control windows both ways, the client's
/// SETTINGS, GOAWAY — each RFC 9113 rule with the error it names.
@Suite("HTTP/2 connection state")
struct HTTP2ConnectionStateTests {
    static let block = ByteBuffer(bytes: [0x82])

    static func headers(_ stream: UInt32, end: Bool = true, priority: HTTP2WirePriority? = nil) -> HTTP2WireFrame {
        .headers(stream: stream, block: block, endStream: end, priority: priority)
    }

    static func data(_ stream: UInt32, _ count: Int, end: Bool = false, padding: Int = 0) -> HTTP2WireFrame {
        .data(stream: stream, payload: ByteBuffer(repeating: 1, count: count), endStream: end, flowControlled: count + padding)
    }

    static func refusal(_ inbound: HTTP2ConnectionState.Inbound) -> HTTP2WireError? {
        switch inbound {
        case .discardedBlock(_, let refusal): refusal
        case .streamError(let error): error
        default: nil
        }
    }

    static func connectionError(_ state: inout HTTP2ConnectionState, _ frame: HTTP2WireFrame) -> HTTP2WireError? {
        do {
            _ = try state.received(frame)
            return nil
        } catch {
            return error
        }
    }

    @Test("a request's stream: opened by HEADERS, half-closed by the client's end, closed by Sluice's; a body and trailers in between")
    func streamLife() throws {
        var state = HTTP2ConnectionState()
        #expect(try state.received(Self.headers(1, end: false)) == .request(stream: 1, block: Self.block, endStream: false))
        #expect(state.state(of: 1) == .open)
        #expect(try state.received(Self.data(1, 10)) == .data(stream: 1, payload: ByteBuffer(repeating: 1, count: 10), endStream: false))
        #expect(try state.received(Self.headers(1)) == .trailers(stream: 1, block: Self.block))
        #expect(state.state(of: 1) == .halfClosedRemote)
        #expect(state.canSend(on: 1))
        state.sentHeaders(on: 1, endStream: false)
        state.sentData(on: 1, bytes: 5, endStream: true)
        #expect(state.state(of: 1) == nil && state.openStreams == 0)
        // Sluice may answer before the request ends; the client's end then closes the stream.
        _ = try state.received(Self.headers(3, end: false))
        state.sentHeaders(on: 3, endStream: true)
        #expect(state.state(of: 3) == .halfClosedLocal && !state.canSend(on: 3) && state.sendable(on: 3) == 0)
        #expect(try state.received(Self.data(3, 1, end: true)) == .data(stream: 3, payload: ByteBuffer(repeating: 1, count: 1), endStream: true))
        #expect(state.openStreams == 0)
    }

    @Test("stream identifiers: odd, rising; frames on idle streams end the connection; a closed stream's late frames get STREAM_CLOSED")
    func identifiers() throws {
        var state = HTTP2ConnectionState()
        #expect(Self.connectionError(&state, Self.headers(2))?.code == .protocolError)
        state = HTTP2ConnectionState()
        #expect(Self.connectionError(&state, Self.data(1, 1))?.code == .protocolError)
        #expect(Self.connectionError(&state, .windowUpdate(stream: 9, increment: 1))?.code == .protocolError)
        #expect(Self.connectionError(&state, .resetStream(stream: 9, code: 8))?.code == .protocolError)
        _ = try state.received(Self.headers(5))
        state.sentHeaders(on: 5, endStream: true)
        // Stream 3 was skipped and stream 5 is done: both are closed now.
        #expect(Self.connectionError(&state, Self.headers(3))?.code == .streamClosed)
        #expect(Self.refusal(try state.received(Self.data(5, 1)))?.code == .streamClosed)
        #expect(try state.received(.windowUpdate(stream: 5, increment: 1)) == HTTP2ConnectionState.Inbound.none)
        #expect(try state.received(.resetStream(stream: 5, code: 8)) == HTTP2ConnectionState.Inbound.none)
        #expect(try state.received(.priority(stream: 11, HTTP2WirePriority(dependency: 0, exclusive: false, weight: 1))) == HTTP2ConnectionState.Inbound.none)
    }

    @Test("the half-closed rules: more DATA or HEADERS after the client's end is STREAM_CLOSED; trailers need END_STREAM; a stream on itself is refused")
    func halfClosed() throws {
        var state = HTTP2ConnectionState()
        _ = try state.received(Self.headers(1))
        #expect(Self.refusal(try state.received(Self.data(1, 1)))?.code == .streamClosed)
        #expect(state.state(of: 1) == nil)
        _ = try state.received(Self.headers(3))
        #expect(Self.refusal(try state.received(Self.headers(3)))?.code == .streamClosed)
        _ = try state.received(Self.headers(5, end: false))
        #expect(Self.refusal(try state.received(Self.headers(5, end: false)))?.code == .protocolError)
        let selfish = try state.received(Self.headers(7, priority: HTTP2WirePriority(dependency: 7, exclusive: false, weight: 1)))
        #expect(Self.refusal(selfish)?.code == .protocolError && state.state(of: 7) == nil)
        // Every refused block is still handed on, for HPACK.
        if case .discardedBlock(let block, _) = selfish { #expect(block == Self.block) } else { Issue.record("\(selfish)") }
    }

    @Test("concurrency: streams past the limit are refused once the client acknowledged it (before, up to 100), with their blocks handed on; a reset stream's late frames are ignored; room again once one closes")
    func concurrency() throws {
        var settings = HTTP2ConnectionState.Settings()
        settings.maxConcurrentStreams = 2
        var early = HTTP2ConnectionState(settings: settings)
        for stream in stride(from: UInt32(1), through: 199, by: 2) {
            #expect(Self.refusal(try early.received(Self.headers(stream, end: false))) == nil)
        }
        #expect(Self.refusal(try early.received(Self.headers(201, end: false)))?.code == .refusedStream)
        var state = HTTP2ConnectionState(settings: settings)
        #expect(try state.received(.settingsAck) == .settingsAcknowledged)
        _ = try state.received(Self.headers(1, end: false))
        _ = try state.received(Self.headers(3, end: false))
        let refused = try state.received(Self.headers(5, end: false))
        #expect(Self.refusal(refused)?.code == .refusedStream && Self.refusal(refused)?.stream == 5)
        // The client had sent more on the refused stream before it read the refusal: ignored.
        #expect(try state.received(Self.data(5, 100)) == HTTP2ConnectionState.Inbound.none)
        #expect(try state.received(Self.headers(5)) == .discardedBlock(block: Self.block, refusal: nil))
        #expect(try state.received(.resetStream(stream: 1, code: 8)) == .reset(stream: 1, code: 8))
        #expect(try state.received(Self.headers(7)) == .request(stream: 7, block: Self.block, endStream: true))
        state.reset(3)
        #expect(state.openStreams == 1)
        #expect(try state.received(Self.data(3, 10)) == HTTP2ConnectionState.Inbound.none)
    }

    @Test("receiving: DATA past a stream's window resets it, past the connection's ends the connection; consumed bytes come back as WINDOW_UPDATEs at half a window")
    func receiveWindows() throws {
        var state = HTTP2ConnectionState()
        #expect(state.openingWindowUpdate() == UInt32((1 << 20) - 65_535))
        #expect(state.openingWindowUpdate() == nil)
        _ = try state.received(Self.headers(1, end: false))
        _ = try state.received(Self.data(1, 30_000))
        #expect(state.consumed(30_000, on: 1).isEmpty)
        _ = try state.received(Self.data(1, 3_000, padding: 10))
        let updates = state.consumed(3_000, on: 1)
        #expect(updates.count == 1 && updates[0].stream == 1 && updates[0].increment == 33_010)
        // The stream's window is back to whole: another 65,535 fit, one more byte does not.
        _ = try state.received(Self.data(1, 65_535))
        #expect(Self.refusal(try state.received(Self.data(1, 1)))?.code == .flowControlError)
        #expect(state.state(of: 1) == nil)
        // The connection: 1 MiB, less what no one consumed yet.
        var small = HTTP2ConnectionState()
        _ = try small.received(Self.headers(1, end: false))
        _ = try small.received(Self.data(1, 60_000))
        #expect(Self.connectionError(&small, Self.data(1, 6_000))?.code == .flowControlError)
        // Bytes on a closed stream are given back to the connection without a consumer.
        var closed = HTTP2ConnectionState()
        _ = closed.openingWindowUpdate()
        _ = try closed.received(Self.headers(1))
        closed.sentHeaders(on: 1, endStream: true)
        for _ in 0..<40 { _ = try closed.received(Self.data(1, 16_384)) }
        let update = closed.connectionUpdate()
        #expect(update?.stream == 0 && update?.increment == 40 * 16_384)
    }

    @Test("sending: the smaller of the stream's and the connection's windows; WINDOW_UPDATE and the client's INITIAL_WINDOW_SIZE move them; overflow is refused")
    func sendWindows() throws {
        var state = HTTP2ConnectionState()
        _ = try state.received(Self.headers(1))
        _ = try state.received(Self.headers(3))
        #expect(state.sendable(on: 1) == 65_535)
        state.sentData(on: 1, bytes: 60_000, endStream: false)
        #expect(state.sendable(on: 1) == 5_535 && state.sendable(on: 3) == 5_535)
        #expect(try state.received(.windowUpdate(stream: 0, increment: 100_000)) == .windowOpened(stream: 0))
        #expect(state.sendable(on: 1) == 5_535 && state.sendable(on: 3) == 65_535)
        #expect(try state.received(.windowUpdate(stream: 1, increment: 10)) == .windowOpened(stream: 1))
        #expect(state.sendable(on: 1) == 5_545)
        // A smaller initial window takes every stream's window down, below zero if it must.
        #expect(try state.received(.settings([HTTP2WireSetting(HTTP2WireSetting.initialWindowSize, 1_000)])) == .settings)
        #expect(state.sendable(on: 1) == 0 && state.sendable(on: 3) == 1_000)
        _ = try state.received(Self.headers(5))
        #expect(state.sendable(on: 5) == 1_000)
        #expect(Self.refusal(try state.received(.windowUpdate(stream: 3, increment: 0x7fff_ffff)))?.code == .flowControlError)
        #expect(Self.connectionError(&state, .windowUpdate(stream: 0, increment: 0x7fff_ffff))?.code == .flowControlError)
        var growing = HTTP2ConnectionState()
        _ = try growing.received(Self.headers(1))
        _ = try growing.received(.windowUpdate(stream: 1, increment: 0x7fff_0000))
        #expect(Self.connectionError(&growing, .settings([HTTP2WireSetting(HTTP2WireSetting.initialWindowSize, 0x7fff_ffff)]))?.code == .flowControlError)
    }

    @Test("Sluice's own SETTINGS apply once acknowledged: a smaller stream window shrinks the open streams' windows then, below zero if it must")
    func acknowledgedSettings() throws {
        var limits = HTTP2Limits()
        limits.initialWindowSize = 1_024
        limits.maxFrameSize = 32_768
        limits.maxConcurrentStreams = 7
        var state = HTTP2ConnectionState(settings: .init(limits))
        #expect(state.settings.wire.contains(HTTP2WireSetting(HTTP2WireSetting.initialWindowSize, 1_024)))
        #expect(state.settings.wire.contains(HTTP2WireSetting(HTTP2WireSetting.maxFrameSize, 32_768)))
        #expect(state.settings.wire.contains(HTTP2WireSetting(HTTP2WireSetting.maxConcurrentStreams, 7)))
        // Before the acknowledgement the client may use the protocol's 65,535.
        _ = try state.received(Self.headers(1, end: false))
        _ = try state.received(Self.data(1, 60_000))
        #expect(try state.received(.settingsAck) == .settingsAcknowledged)
        #expect(try state.received(.settingsAck) == HTTP2ConnectionState.Inbound.none)
        #expect(Self.refusal(try state.received(Self.data(1, 1)))?.code == .flowControlError)
        _ = try state.received(Self.headers(3, end: false))
        _ = try state.received(Self.data(3, 1_024))
        #expect(Self.refusal(try state.received(Self.data(3, 1)))?.code == .flowControlError)
    }

    @Test("a listener's http2 block configures the reader's bounds and the rate guards")
    func limits() throws {
        var limits = HTTP2Limits()
        limits.maxHeaderListSize = 2_048
        limits.maxContinuationFrames = 2
        limits.maxResets = 3
        limits.maxControlFrames = 4
        let reader = HTTP2FrameReader(limits)
        #expect(reader.maxHeaderBlock == 2_048 && reader.maxContinuations == 2)
        #expect(HTTP2RateGuard.resets(limits).limit == 3 && HTTP2RateGuard.resets(limits).window == .seconds(30))
        #expect(HTTP2RateGuard.controlFrames(limits).limit == 4)
    }

    @Test("empty DATA frames: one in a row is tolerated (a sender's quirk), two end the connection; HEADERS or END_STREAM start the count again")
    func emptyData() throws {
        var state = HTTP2ConnectionState()
        _ = try state.received(Self.headers(1, end: false))
        _ = try state.received(Self.data(1, 0))
        _ = try state.received(Self.data(1, 10))
        // A frame with a payload does not end the run: only HEADERS or END_STREAM do.
        #expect(Self.connectionError(&state, Self.data(1, 0, padding: 5))?.code == .enhanceYourCalm)
        var reset = HTTP2ConnectionState()
        _ = try reset.received(Self.headers(1, end: false))
        _ = try reset.received(Self.data(1, 0))
        _ = try reset.received(Self.headers(3, end: false))
        _ = try reset.received(Self.data(3, 0))
        _ = try reset.received(Self.data(3, 0, end: true))
        _ = try reset.received(Self.data(1, 0))
        #expect(Self.connectionError(&reset, Self.data(1, 0))?.code == .enhanceYourCalm)
    }

    @Test("the client's SETTINGS set what Sluice writes; PING is answered, its ACK not; GOAWAY either way")
    func settingsPingGoAway() throws {
        var state = HTTP2ConnectionState()
        let list = [HTTP2WireSetting(HTTP2WireSetting.maxFrameSize, 32_768), HTTP2WireSetting(HTTP2WireSetting.headerTableSize, 0), HTTP2WireSetting(0x77, 1)]
        #expect(try state.received(.settings(list)) == .settings)
        #expect(state.peerMaxFrameSize == 32_768 && state.peerHeaderTableSize == 0)
        #expect(try state.received(.ping(opaque: 7, ack: false)) == .ping(opaque: 7))
        #expect(try state.received(.ping(opaque: 7, ack: true)) == HTTP2ConnectionState.Inbound.none)
        _ = try state.received(Self.headers(1, end: false))
        #expect(state.goAway() == 1)
        #expect(Self.refusal(try state.received(Self.headers(3)))?.code == .refusedStream)
        // The stream opened before GOAWAY goes on.
        #expect(try state.received(Self.data(1, 1, end: true)) == .data(stream: 1, payload: ByteBuffer(repeating: 1, count: 1), endStream: true))
        #expect(try state.received(.goAway(lastStream: 0, code: 0, debug: ByteBuffer())) == .goAway(lastStream: 0, code: 0))
        #expect(state.clientWentAway)
    }
}
