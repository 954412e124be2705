import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Reads a backend's HTTP/1.1 responses from its bytes as they arrive: the head as byte ranges
/// (no `String` per field, no `HTTPHeaders`), then the body as slices of what was read, framed
/// as RFC 9112 §6.3 says. The proxy copies the head's end-to-end fields to the client verbatim
/// and forwards the slices, so a response costs no parsing beyond finding its boundaries.
///
/// Strict where two readers could disagree: bare CR or LF, obs-fold, a field name with spaces,
/// `Content-Length` values that differ or are not digits, `Content-Length` with
/// `Transfer-Encoding`, a transfer coding other than one `chunked`, or bad chunk syntax make
/// the response malformed (the proxy answers 502,
/// or cuts the client off once the head went out) and the connection is never reused.
struct UpstreamResponseParser {
    /// One field line of a head: offsets into `Head.bytes`.
    struct Field {
        var name: Range<Int>
        var value: Range<Int>
        /// Just past the field line's CRLF: a run of fields passed on is copied as it came.
        var lineEnd: Int
        /// Neither hop-by-hop (RFC 9110 §7.6.1) nor named in `Connection`: passed to the client.
        var endToEnd: Bool
    }

    /// How the body after a head ends.
    enum Framing: Equatable {
        /// No body: a response to HEAD, or 1xx, 204, 304.
        case none
        case length(Int)
        case chunked
        /// Read until the backend closes (no length and no chunked coding).
        case untilClose
    }

    /// A response head, as received.
    struct Head {
        var status: Int
        /// From the status line to the blank line.
        var bytes: ByteBuffer
        var reason: Range<Int>
        var fields: [Field]
        var framing: Framing
        /// The backend will take another request on this connection after this response.
        var keepAlive: Bool
        /// The backend sent `Connection: close`.
        var closeRequested: Bool
        /// Seconds the backend says it keeps this connection open while idle (`Keep-Alive:
        /// timeout=N`, as Node, Apache and others announce), if it said.
        var keepAliveTimeout: Int? = nil
    }

    enum Event {
        case head(Head)
        case body(ByteBuffer)
        case end
    }

    /// Why a response cannot be read; the message names the fault for the operator.
    struct Malformed: Error, Equatable, CustomStringConvertible {
        var reason: String
        var description: String { "malformed response: \(reason)" }
    }

    private enum State {
        /// No request is waiting for an answer.
        case idle
        case head
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case untilClose
        /// The backend answered an upgrade with 101: what follows is the new protocol's.
        case switched
        case failed
    }

    private var state = State.idle
    private var respondingToHEAD = false
    /// The awaited response answers an upgrade request: a 101 is final.
    private var upgrading = false
    /// Bytes of a head or a chunk-size or trailer line not yet complete.
    private var partial: ByteBuffer?
    private var trailerBytes = 0
    /// The message ended with the event just returned: `.end` comes next.
    private var endDue = false
    /// Bytes came that belong to no response: the connection cannot be trusted again.
    private(set) var sawStrayBytes = false
    let maxHeadBytes: Int

    init(maxHeadBytes: Int = 64 * 1024) {
        self.maxHeadBytes = maxHeadBytes
    }

    /// A request was sent: its response comes next. For an upgrade request (`upgrading`), a 101
    /// is the final answer: `next` returns its head and leaves every byte after it in the buffer.
    mutating func expectResponse(toHEAD: Bool, upgrading: Bool = false) {
        respondingToHEAD = toHEAD
        self.upgrading = upgrading
        state = .head
        partial = nil
        endDue = false
    }

    /// Between responses, with nothing unexpected seen: the connection may carry another request.
    var isReusable: Bool {
        if case .idle = state { return !sawStrayBytes && partial == nil && !endDue }
        return false
    }

    /// The next event from `buffer`, reading only as far as it needs; nil once `buffer` is used
    /// up without completing one. Pull-based, so whoever handles an event may send the next
    /// request (and call `expectResponse`) before the next call.
    mutating func next(_ buffer: inout ByteBuffer) throws(Malformed) -> Event? {
        if endDue {
            endDue = false
            return .end
        }
        while buffer.readableBytes > 0 {
            switch state {
            case .switched:
                return nil
            case .idle, .failed:
                sawStrayBytes = true
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            case .head:
                guard let head = try readHead(&buffer) else { return nil }
                if head.status == 101 && upgrading {
                    state = .switched
                    return .head(head)
                }
                if head.status < 200 {
                    // Interim answers (100, 103): the final one follows.
                    guard head.status != 101 else { try fail("switched protocols on a plain request") }
                    continue
                }
                switch head.framing {
                case .none: finish()
                case .length(let length): if length == 0 { finish() } else { state = .fixedBody(remaining: length) }
                case .chunked: state = .chunkSize
                case .untilClose: state = .untilClose
                }
                return .head(head)
            case .fixedBody(let remaining):
                let slice = buffer.readSlice(length: min(remaining, buffer.readableBytes))!
                if remaining == slice.readableBytes { finish() } else { state = .fixedBody(remaining: remaining - slice.readableBytes) }
                return .body(slice)
            case .chunkSize:
                guard let line = try readLine(&buffer, limit: 4096, what: "chunk size line") else { return nil }
                let size: Int
                do throws(Malformed) { size = try Self.chunkSize(line) } catch { try fail(error.reason) }
                state = size == 0 ? .trailers : .chunkData(remaining: size)
                trailerBytes = 0
            case .chunkData(let remaining):
                let slice = buffer.readSlice(length: min(remaining, buffer.readableBytes))!
                state = remaining == slice.readableBytes ? .chunkDataEnd : .chunkData(remaining: remaining - slice.readableBytes)
                return .body(slice)
            case .chunkDataEnd:
                guard let line = try readLine(&buffer, limit: 2, what: "chunk end") else { return nil }
                guard line.readableBytes == 0 else { try fail("chunk data longer than its size") }
                state = .chunkSize
            case .trailers:
                guard let line = try readLine(&buffer, limit: 4096, what: "trailer line") else { return nil }
                trailerBytes += line.readableBytes + 2
                if trailerBytes > maxHeadBytes { try fail("trailers larger than \(maxHeadBytes) bytes") }
                // Trailers are not passed on (nor were they asked for): the blank line ends the body.
                if line.readableBytes == 0 {
                    state = .idle
                    return .end
                }
            case .untilClose:
                return .body(buffer.readSlice(length: buffer.readableBytes)!)
            }
        }
        if endDue {
            endDue = false
            return .end
        }
        return nil
    }

    /// The backend closed its side: `.end` of a body read until close; nil if no response was
    /// under way (between responses, or before a byte of the awaited one — the caller decides
    /// what a request without an answer means); an error if a response was cut short.
    mutating func inputClosed() throws(Malformed) -> Event? {
        switch state {
        case .idle, .failed, .switched: return nil
        case .untilClose:
            state = .idle
            return .end
        case .head where partial == nil: return nil
        default: try fail("closed the connection in the middle of a response")
        }
    }

    /// The message ended: `.end` is the next event.
    private mutating func finish() {
        state = .idle
        endDue = true
    }

    private mutating func fail(_ reason: String) throws(Malformed) -> Never {
        state = .failed
        partial = nil
        throw Malformed(reason: reason)
    }

    // MARK: Lines and heads

    /// What is held of an incomplete line or head, followed by all of `buffer` (used up). Without
    /// anything held, `buffer` itself: nothing is copied in the usual case of a whole head or
    /// line in one read.
    private func gather(_ buffer: inout ByteBuffer) -> ByteBuffer {
        defer { buffer.moveReaderIndex(forwardBy: buffer.readableBytes) }
        guard var held = partial else { return buffer }
        held.writeBuffer(&buffer)
        return held
    }

    /// The next CRLF-terminated line without its CRLF, once complete; nil while more is needed.
    private mutating func readLine(_ buffer: inout ByteBuffer, limit: Int, what: String) throws(Malformed) -> ByteBuffer? {
        let searched = partial?.readableBytes ?? 0
        var pending = gather(&buffer)
        partial = pending
        let view = pending.readableBytesView
        guard let newline = view.dropFirst(max(0, searched - 1)).firstIndex(of: UInt8(ascii: "\n")) else {
            if pending.readableBytes > limit + 2 { try fail("\(what) longer than \(limit) bytes") }
            return nil
        }
        let length = newline - view.startIndex
        guard length >= 1, view[newline - 1] == UInt8(ascii: "\r") else { try fail("bare LF in \(what)") }
        if length - 1 > limit { try fail("\(what) longer than \(limit) bytes") }
        let line = pending.readSlice(length: length - 1)!
        pending.moveReaderIndex(forwardBy: 2)
        // What followed the line goes back to the caller's buffer.
        buffer = pending
        partial = nil
        return line
    }

    /// The head, once its blank line has arrived; nil while more is needed.
    private mutating func readHead(_ buffer: inout ByteBuffer) throws(Malformed) -> Head? {
        let searched = partial?.readableBytes ?? 0
        var pending = gather(&buffer)
        guard let end = Self.headEnd(in: pending, from: max(0, searched - 3)) else {
            if pending.readableBytes > maxHeadBytes { try fail("response head larger than \(maxHeadBytes) bytes") }
            partial = pending
            return nil
        }
        if end > maxHeadBytes { try fail("response head larger than \(maxHeadBytes) bytes") }
        let bytes = pending.readSlice(length: end)!
        partial = nil
        buffer = pending
        do {
            return try Self.parseHead(bytes, respondingToHEAD: respondingToHEAD)
        } catch {
            try fail(error.reason)
        }
    }

    /// The length of the head including its blank line, if complete. Read in place: a
    /// `ByteBufferView` sliced per line cost a retain and a release of the storage each; and
    /// from line end to line end with `memchr`, which reads many bytes an instruction, where a
    /// loop over the bytes cost ~10 instructions each.
    static func headEnd(in buffer: ByteBuffer, from offset: Int) -> Int? {
        buffer.withUnsafeReadableBytes { raw in
            guard let base = raw.baseAddress else { return nil }
            var index = offset
            while index < raw.count {
                guard let found = memchr(base + index, Int32(UInt8(ascii: "\n")), raw.count - index) else { return nil }
                index = base.distance(to: UnsafeRawPointer(found))
                // CRLF CRLF: the LF ends a line that is empty (CR only).
                if index >= 3, raw[index - 1] == UInt8(ascii: "\r"), raw[index - 2] == UInt8(ascii: "\n") {
                    return index + 1
                }
                index += 1
            }
            return nil
        }
    }

    static func parseHead(_ bytes: ByteBuffer, respondingToHEAD: Bool) throws(Malformed) -> Head {
        let parsed = bytes.withUnsafeReadableBytes { raw -> Result<Head, Malformed> in
            var reader = HeadReader(raw)
            do throws(Malformed) {
                return .success(try reader.read(bytes, respondingToHEAD: respondingToHEAD))
            } catch {
                return .failure(error)
            }
        }
        return try parsed.get()
    }

    /// A chunk-size line: hex digits, then optional extensions (ignored).
    static func chunkSize(_ line: ByteBuffer) throws(Malformed) -> Int {
        var size = 0
        var digits = 0
        for byte in line.readableBytesView {
            guard let value = hexValue(byte) else {
                guard digits > 0, byte == UInt8(ascii: ";") || byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") else {
                    throw Malformed(reason: "invalid chunk size")
                }
                break
            }
            digits += 1
            guard digits <= 15 else { throw Malformed(reason: "chunk size too large") }
            size = size << 4 | Int(value)
        }
        guard digits > 0 else { throw Malformed(reason: "invalid chunk size") }
        return size
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Parses one complete response head from its bytes (ending in CRLF CRLF).
private struct HeadReader {
    let raw: UnsafeRawBufferPointer
    var position = 0

    init(_ raw: UnsafeRawBufferPointer) {
        self.raw = raw
    }

    typealias Malformed = UpstreamResponseParser.Malformed

    /// The next line's range without CRLF; every line of a complete head ends in one.
    mutating func line() throws(Malformed) -> Range<Int> {
        let start = position
        while raw[position] != UInt8(ascii: "\n") { position += 1 }
        guard position > start, raw[position - 1] == UInt8(ascii: "\r") else { throw Malformed(reason: "bare LF in the response head") }
        defer { position += 1 }
        return start..<(position - 1)
    }

    /// The next field line's name and value (trimmed), and where the line ends after its CRLF;
    /// nil at the blank line that ends the head. One pass over the line's bytes: the name's are
    /// checked as a token's up to the colon, the value's for control bytes up to the CR (a
    /// complete head ends in CRLF CRLF, so both scans stop inside it).
    mutating func field() throws(Malformed) -> (name: Range<Int>, value: Range<Int>, lineEnd: Int)? {
        let start = position
        let first = raw[start]
        if first == UInt8(ascii: "\r") || first == UInt8(ascii: "\n") {
            guard try line().isEmpty else { throw Malformed(reason: "invalid field name in the response head") }
            return nil
        }
        guard first != UInt8(ascii: " "), first != UInt8(ascii: "\t") else { throw Malformed(reason: "obs-fold in the response head") }
        var index = start
        while raw[index] != UInt8(ascii: ":") {
            let byte = raw[index]
            guard HTTPSyntax.isTokenByte(byte) else {
                if byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n") { throw Malformed(reason: "field line without a name") }
                throw Malformed(reason: "invalid field name in the response head")
            }
            index += 1
        }
        guard index > start else { throw Malformed(reason: "field line without a name") }
        let name = start..<index
        index += 1
        while raw[index] == UInt8(ascii: " ") || raw[index] == UInt8(ascii: "\t") { index += 1 }
        let valueStart = index
        while raw[index] != UInt8(ascii: "\r") {
            let byte = raw[index]
            guard !HTTPSyntax.isControl(byte) else {
                throw Malformed(reason: byte == UInt8(ascii: "\n") ? "bare LF in the response head" : "control character in a field value")
            }
            index += 1
        }
        guard raw[index + 1] == UInt8(ascii: "\n") else { throw Malformed(reason: "control character in a field value") }
        var valueEnd = index
        while valueEnd > valueStart && (raw[valueEnd - 1] == UInt8(ascii: " ") || raw[valueEnd - 1] == UInt8(ascii: "\t")) { valueEnd -= 1 }
        position = index + 2
        return (name, valueStart..<valueEnd, position)
    }

    /// The bytes in `range` against a lower-case name or token.
    func equalsIgnoringCase(_ range: Range<Int>, _ lowercase: StaticString) -> Bool {
        HTTPSyntax.equalsIgnoringCase(raw[range], lowercase)
    }

    func equalsIgnoringCase(_ a: Range<Int>, _ b: Range<Int>) -> Bool {
        HTTPSyntax.equalsIgnoringCase(raw[a], raw[b])
    }

    /// Calls `body` with each comma-separated element of `range`, trimmed.
    func forEachElement(_ range: Range<Int>, _ body: (Range<Int>) -> Void) {
        HTTPSyntax.forEachListElement(raw[range]) { body($0.startIndex..<$0.endIndex) }
    }

    /// The seconds of a `timeout=N` element of a `Keep-Alive` field (`N` may be quoted), nil
    /// for any other parameter or a value that is not a number; at most a day.
    func timeoutParameter(_ element: Range<Int>) -> Int? {
        var index = element.lowerBound
        let name: StaticString = "timeout"
        let nameEnd = index + name.utf8CodeUnitCount
        guard nameEnd <= element.upperBound, equalsIgnoringCase(index..<nameEnd, name) else { return nil }
        index = nameEnd
        func skipSpace() { while index < element.upperBound, raw[index] == UInt8(ascii: " ") || raw[index] == UInt8(ascii: "\t") { index += 1 } }
        skipSpace()
        guard index < element.upperBound, raw[index] == UInt8(ascii: "=") else { return nil }
        index += 1
        skipSpace()
        var end = element.upperBound
        if index < end, raw[index] == UInt8(ascii: "\""), raw[end - 1] == UInt8(ascii: "\""), end - index >= 2 {
            index += 1
            end -= 1
        }
        guard index < end, end - index <= 9 else { return nil }
        var seconds = 0
        for position in index..<end {
            let byte = raw[position]
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            seconds = seconds * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return min(seconds, 86_400)
    }

    mutating func read(_ bytes: ByteBuffer, respondingToHEAD: Bool) throws(Malformed) -> UpstreamResponseParser.Head {
        // Status line: HTTP/1.x SP 3DIGIT [SP reason]
        let statusLine = try line()
        let http: StaticString = "HTTP/1."
        guard statusLine.count >= 12, (0..<7).allSatisfy({ raw[statusLine.lowerBound + $0] == http.utf8Start[$0] }) else {
            throw Malformed(reason: "not an HTTP/1.x status line")
        }
        let minor = raw[statusLine.lowerBound + 7]
        guard minor == UInt8(ascii: "0") || minor == UInt8(ascii: "1"), raw[statusLine.lowerBound + 8] == UInt8(ascii: " ") else {
            throw Malformed(reason: "not an HTTP/1.x status line")
        }
        var status = 0
        for offset in 9..<12 {
            let digit = raw[statusLine.lowerBound + offset]
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { throw Malformed(reason: "invalid status code") }
            status = status * 10 + Int(digit - UInt8(ascii: "0"))
        }
        guard status >= 100 else { throw Malformed(reason: "invalid status code") }
        var reason = statusLine.upperBound..<statusLine.upperBound
        if statusLine.count > 12 {
            guard raw[statusLine.lowerBound + 12] == UInt8(ascii: " ") else { throw Malformed(reason: "invalid status code") }
            reason = (statusLine.lowerBound + 13)..<statusLine.upperBound
            for index in reason where HTTPSyntax.isControl(raw[index]) { throw Malformed(reason: "control character in the reason phrase") }
        }

        var fields: [UpstreamResponseParser.Field] = []
        fields.reserveCapacity(12)
        var length: Range<Int>?
        var lengthsDiffer = false
        var transferEncoding = false
        /// Transfer codings named, and whether every one was `chunked`.
        var codings = 0
        var onlyChunked = true
        var connectionClose = false
        var connectionKeepAlive = false
        var keepAliveTimeout: Int?
        var connectionNamed: [Range<Int>] = []
        while let (name, value, lineEnd) = try field() {
            var endToEnd = true
            switch name.count {
            case 14 where equalsIgnoringCase(name, "content-length"):
                var failed = false
                forEachElement(value) { element in
                    guard element.allSatisfy({ raw[$0] >= UInt8(ascii: "0") && raw[$0] <= UInt8(ascii: "9") }), element.count <= 18 else {
                        failed = true
                        return
                    }
                    if let seen = length {
                        lengthsDiffer = lengthsDiffer || !raw[seen].elementsEqual(raw[element])
                    } else {
                        length = element
                    }
                }
                if failed || value.isEmpty { throw Malformed(reason: "invalid Content-Length") }
            case 17 where equalsIgnoringCase(name, "transfer-encoding"):
                transferEncoding = true
                endToEnd = false
                forEachElement(value) { element in
                    codings += 1
                    onlyChunked = onlyChunked && equalsIgnoringCase(element, "chunked")
                }
            case 10 where equalsIgnoringCase(name, "connection"):
                endToEnd = false
                forEachElement(value) { element in
                    if equalsIgnoringCase(element, "close") {
                        connectionClose = true
                    } else if equalsIgnoringCase(element, "keep-alive") {
                        connectionKeepAlive = true
                    } else {
                        connectionNamed.append(element)
                    }
                }
            case 10 where equalsIgnoringCase(name, "keep-alive"):
                endToEnd = false
                forEachElement(value) { element in
                    if let seconds = timeoutParameter(element) { keepAliveTimeout = min(keepAliveTimeout ?? seconds, seconds) }
                }
            default:
                // Most fields are not as long as any hop-by-hop name: no comparison at all.
                endToEnd = !ForwardedHeaders.hopByHop.contains(raw[name])
            }
            fields.append(.init(name: name, value: value, lineEnd: lineEnd, endToEnd: endToEnd))
        }
        if !connectionNamed.isEmpty {
            for index in fields.indices where fields[index].endToEnd {
                let name = fields[index].name
                if connectionNamed.contains(where: { equalsIgnoringCase($0, name) }) {
                    fields[index].endToEnd = false
                }
            }
        }

        let framing: UpstreamResponseParser.Framing
        if respondingToHEAD || status < 200 || status == 204 || status == 304 {
            framing = .none
        } else if transferEncoding {
            guard length == nil else { throw Malformed(reason: "both Content-Length and Transfer-Encoding") }
            // The client gets the body re-framed in Sluice's own chunks, so a coding other
            // than chunked (gzip, say) would reach it as plain bytes without its label. The
            // request to the backend names no `TE`, so such a coding is the backend's fault.
            guard codings == 1, onlyChunked else { throw Malformed(reason: "Transfer-Encoding other than a single chunked") }
            framing = .chunked
        } else if let length {
            guard !lengthsDiffer else { throw Malformed(reason: "conflicting Content-Length values") }
            framing = .length(raw[length].reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) })
        } else {
            framing = .untilClose
        }
        let keepAlive = framing != .untilClose && !connectionClose && (minor == UInt8(ascii: "1") || connectionKeepAlive)
        return .init(
            status: status, bytes: bytes, reason: reason, fields: fields,
            framing: framing, keepAlive: keepAlive, closeRequested: connectionClose, keepAliveTimeout: keepAliveTimeout
        )
    }
}
