import SluiceConfig

/// The PROXY protocol header a balancer in TCP mode (HAProxy `send-proxy[-v2]`, AWS NLB, a
/// Kubernetes LoadBalancer) sends before the client's first byte, read with no I/O: the text
/// form (v1) and the binary form (v2) of haproxy.org's proxy-protocol.txt. Whatever is not a
/// well-formed header of an accepted version is an error with a reason, never a guess.
struct ProxyHeader: Equatable {
    /// The client the balancer accepted; `nil` when the header says the connection is the
    /// balancer's own (v2 `LOCAL`, v1 `UNKNOWN`, an unspecified or UNIX family): the socket's
    /// peer stands.
    var source: IPAddress?
    var sourcePort: Int?

    /// What parsing the first bytes of a connection gave.
    enum Outcome: Equatable {
        case needMore
        /// The header, and how many bytes it took; what follows is the client's.
        case header(ProxyHeader, length: Int)
        case invalid(String)
    }

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let v1Prefix = Array("PROXY ".utf8)
    /// The longest v1 line the specification allows, CRLF included.
    static let v1MaxLength = 107
    /// Longer v2 headers (addresses and TLVs) are refused rather than buffered.
    static let v2MaxLength = 16 + 2048

    /// Parses the start of `bytes` as a header of `version`.
    static func parse(_ bytes: some Collection<UInt8>, accepting version: ProxyProtocolVersion) -> Outcome {
        let bytes = Array(bytes)
        guard let first = bytes.first else { return .needMore }
        switch version {
        case .v1: return parseV1(bytes)
        case .v2: return parseV2(bytes)
        case .any:
            if first == v1Prefix[0] { return parseV1(bytes) }
            if first == v2Signature[0] { return parseV2(bytes) }
            return .invalid("no PROXY protocol header (first byte 0x\(String(first, radix: 16)))")
        }
    }

    // MARK: v1

    private static func parseV1(_ bytes: [UInt8]) -> Outcome {
        let prefixCount = min(bytes.count, v1Prefix.count)
        guard bytes.prefix(prefixCount).elementsEqual(v1Prefix.prefix(prefixCount)) else {
            return .invalid("not a PROXY v1 header (it starts with 'PROXY ')")
        }
        guard let end = lineEnd(bytes) else {
            return bytes.count >= v1MaxLength ? .invalid("PROXY v1 header longer than \(v1MaxLength) bytes") : .needMore
        }
        guard end + 2 <= v1MaxLength else { return .invalid("PROXY v1 header longer than \(v1MaxLength) bytes") }
        guard bytes[..<end].allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return .invalid("PROXY v1 header with control or non-ASCII bytes") }
        let fields = String(decoding: bytes[v1Prefix.count..<end], as: UTF8.self).split(separator: " ", omittingEmptySubsequences: false)
        let length = end + 2
        switch fields.first {
        case "UNKNOWN":
            return .header(ProxyHeader(source: nil, sourcePort: nil), length: length)
        case "TCP4", "TCP6":
            guard fields.count == 5 else { return .invalid("PROXY v1 \(fields[0]) needs source, destination and two ports") }
            guard let source = IPAddress(String(fields[1])), let destination = IPAddress(String(fields[2])) else {
                return .invalid("PROXY v1 header with an invalid address")
            }
            let v4 = fields[0] == "TCP4"
            guard source.isIPv4 == v4, destination.isIPv4 == v4 else { return .invalid("PROXY v1 \(fields[0]) with addresses of the other family") }
            guard let sourcePort = port(fields[3]), port(fields[4]) != nil else { return .invalid("PROXY v1 header with an invalid port") }
            return .header(ProxyHeader(source: source, sourcePort: sourcePort), length: length)
        default:
            return .invalid("PROXY v1 protocol is TCP4, TCP6 or UNKNOWN")
        }
    }

    private static func lineEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        for index in 0..<(min(bytes.count, v1MaxLength) - 1) where bytes[index] == 0x0D && bytes[index + 1] == 0x0A {
            return index
        }
        return nil
    }

    private static func port(_ text: Substring) -> Int? {
        guard (1...5).contains(text.count), text.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(text), value <= 65535 else { return nil }
        // No leading zeros (the specification's own rule), but "0" itself is a port.
        return text.count > 1 && text.first == "0" ? nil : value
    }

    // MARK: v2

    private static func parseV2(_ bytes: [UInt8]) -> Outcome {
        let signatureCount = min(bytes.count, v2Signature.count)
        guard bytes.prefix(signatureCount).elementsEqual(v2Signature.prefix(signatureCount)) else {
            return .invalid("not a PROXY v2 header (bad signature)")
        }
        guard bytes.count >= 16 else { return .needMore }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { return .invalid("PROXY v2 header of version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid("PROXY v2 header with unknown command \(command)") }
        let family = bytes[13] >> 4
        let transport = bytes[13] & 0x0F
        let addressLength = Int(bytes[14]) << 8 | Int(bytes[15])
        let length = 16 + addressLength
        guard length <= v2MaxLength else { return .invalid("PROXY v2 header of \(length) bytes (at most \(v2MaxLength))") }
        guard family <= 3, transport <= 2 else { return .invalid("PROXY v2 header with unknown family or transport 0x\(String(bytes[13], radix: 16))") }
        guard bytes.count >= length else { return .needMore }
        // LOCAL: the balancer's own connection (a health check); the socket's peer stands.
        if command == 0 { return .header(ProxyHeader(source: nil, sourcePort: nil), length: length) }
        let body = bytes[16..<length]
        switch (family, transport) {
        case (0, _), (3, _):
            // Unspecified or UNIX: nothing usable; the socket's peer stands.
            return .header(ProxyHeader(source: nil, sourcePort: nil), length: length)
        case (_, 2):
            return .invalid("PROXY v2 header for a datagram connection on a TCP listener")
        case (1, _):
            guard body.count >= 12, let source = IPAddress(bytes: Array(body.prefix(4))) else { return .invalid("PROXY v2 INET header shorter than its addresses") }
            let port = Int(body[body.startIndex + 8]) << 8 | Int(body[body.startIndex + 9])
            return .header(ProxyHeader(source: source, sourcePort: port), length: length)
        default:
            guard body.count >= 36, let source = IPAddress(bytes: Array(body.prefix(16))) else { return .invalid("PROXY v2 INET6 header shorter than its addresses") }
            let port = Int(body[body.startIndex + 32]) << 8 | Int(body[body.startIndex + 33])
            return .header(ProxyHeader(source: source, sourcePort: port), length: length)
        }
    }
}
