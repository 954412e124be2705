import NIOCore
import NIOHTTP1
import SluiceConfig

/// Who the client is, for limits, logs and forwarding headers: the socket's peer, unless that
/// peer is a trusted proxy, in which case the rightmost `X-Forwarded-For` entry that is not
/// itself a trusted proxy. Never the header's word by default.
enum ClientAddress {
    static func ip(of address: SocketAddress?) -> IPAddress? {
        switch address {
        case .v4(let v4):
            let value = UInt32(bigEndian: v4.address.sin_addr.s_addr)
            return IPAddress(bytes: [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)])
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            return IPAddress(bytes: bytes)
        default:
            return nil
        }
    }

    /// The client address for a request that arrived from `peer` with `headers`.
    static func resolve(peer: IPAddress?, headers: HTTPHeaders, trusted: [CIDR]) -> IPAddress? {
        guard let peer, !trusted.isEmpty, isTrusted(peer, trusted) else { return peer }
        let entries = headers[canonicalForm: "x-forwarded-for"].map { String($0).trimmingSpacesAndTabs() }
        var candidate = peer
        for entry in entries.reversed() {
            guard let address = parse(entry) else { return candidate }
            candidate = address
            if !isTrusted(address, trusted) { return address }
        }
        return candidate
    }

    static func isTrusted(_ address: IPAddress, _ trusted: [CIDR]) -> Bool {
        trusted.contains { $0.contains(address) }
    }

    /// An `X-Forwarded-For` element: a bare address, `[v6]`, or either with a port.
    static func parse(_ entry: String) -> IPAddress? {
        if let direct = IPAddress(entry) { return direct }
        if entry.hasPrefix("["), let close = entry.firstIndex(of: "]") {
            return IPAddress(String(entry[entry.index(after: entry.startIndex)..<close]))
        }
        if let colon = entry.lastIndex(of: ":"), entry.firstIndex(of: ":") == colon {
            return IPAddress(String(entry[..<colon]))
        }
        return nil
    }
}
