import NIOCore
import NIOHPACK
import SluiceConfig
@testable import Sluice

/// HTTP/2's frame reader and the connection state behind it, fed what a client could send
/// after the preface (the fuzzer's bytes behind a SETTINGS frame, so that the frames themselves
/// are what varies), whole and in two pieces split where the first byte says: frames, stream
/// errors or one connection error, never a crash; the pieces read exactly what the whole reads,
/// and stop with the same error. No frame handed on is over the frame size, no header block
/// over its bound; the state, given every frame and told every body byte consumed, never holds
/// more streams than its limit. Then the whole `HTTP2WireSession`, answering every request it
/// hands out as a server would: every byte it writes reads back as frames, with no error.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTP2Frames(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count >= 1 else { return 0 }
    let input = Array(UnsafeRawBufferPointer(start: start, count: count))
    var bytes = HTTP2FrameReader.preface + [0, 0, 0, 4, 0, 0, 0, 0, 0]
    bytes += input.dropFirst()
    let whole = read([bytes[...]])
    let cut = Int(input[0]) * bytes.count / 256
    let pieces = read([bytes[..<cut], bytes[cut...]])
    precondition(whole.reads == pieces.reads, "pieces read differently")
    precondition(whole.failure == pieces.failure, "the error depends on where the bytes were split")
    var settings = HTTP2ConnectionState.Settings()
    settings.maxConcurrentStreams = 4
    settings.initialWindowSize = 1_024
    var state = HTTP2ConnectionState(settings: settings)
    _ = state.openingWindowUpdate()
    for read in whole.reads {
        if case .frame(let frame) = read {
            do {
                if case .data(let stream, let payload, _) = try state.received(frame) {
                    _ = state.consumed(payload.readableBytes, on: stream)
                }
                _ = state.connectionUpdate()
            } catch {
                break
            }
            precondition(state.openStreams <= 4, "more streams than the limit")
        }
        switch read {
        case .frame(.data(_, let payload, _, let flowControlled)):
            precondition(payload.readableBytes <= flowControlled && flowControlled <= HTTP2WireFrame.defaultMaxFrameSize)
        case .frame(.headers(_, let block, _, _)):
            precondition(block.readableBytes <= 4096)
        case .streamError(let error):
            precondition(error.stream != nil && error.stream != 0)
        default:
            break
        }
    }
    serve(bytes)
    return 0
}

/// The session as `HTTP2WireConnection` drives it, with small bounds: requests answered with a
/// body as far as the windows allow, request bodies consumed; what it writes must be frames.
private func serve(_ bytes: [UInt8]) {
    var limits = HTTP2Limits()
    limits.maxConcurrentStreams = 4
    limits.initialWindowSize = 1_024
    limits.maxHeaderListSize = 4_096
    limits.maxContinuationFrames = 8
    var session = HTTP2WireSession(limits: limits, extendedConnect: true, allocator: ByteBufferAllocator())
    session.receive(ByteBuffer(bytes: bytes))
    let body = ByteBuffer(repeating: 0x61, count: 700)
    do {
        while let event = try session.next(now: .uptimeNanoseconds(0)) {
            switch event {
            case .request(let stream, _, _):
                if session.sendHeaders([":status": "200"], on: stream, endStream: false) {
                    let room = min(session.sendable(on: stream), body.readableBytes)
                    session.sendData(body.getSlice(at: 0, length: room)!, on: stream, endStream: room == body.readableBytes)
                }
            case .data(let stream, let payload, _):
                session.consumed(payload.readableBytes, on: stream)
            default:
                break
            }
            precondition(session.state.openStreams <= 100, "more streams than any limit")
        }
    } catch {
        session.fail(error)
    }
    // What Sluice wrote reads back as frames (the reader takes it as a peer's, after the preface).
    var reader = HTTP2FrameReader(maxHeaderBlock: 1 << 20, maxContinuations: 1_000, expectingPreface: false)
    reader.maxFrameSize = 16_777_215
    reader.receive(session.outbound)
    do {
        while try reader.next() != nil {}
    } catch {
        preconditionFailure("Sluice wrote what is not HTTP/2: \(error)")
    }
}

/// Every frame and stream error the reader gives as the pieces arrive, and the connection error
/// that stopped it.
private func read(_ pieces: [ArraySlice<UInt8>]) -> (reads: [HTTP2FrameReader.Read], failure: HTTP2WireError?) {
    var reader = HTTP2FrameReader(maxHeaderBlock: 4096, maxContinuations: 8)
    var reads: [HTTP2FrameReader.Read] = []
    for piece in pieces {
        reader.receive(ByteBuffer(bytes: piece))
        do {
            while let read = try reader.next() { reads.append(read) }
        } catch {
            return (reads, error)
        }
    }
    return (reads, nil)
}
