import Crypto

/// `Sec-WebSocket-Key` and `Sec-WebSocket-Accept` (RFC 6455 §4.2.1, §4.2.2) on bytes. Every
/// upgrade checks one and computes the other; through Foundation (`Data`, base64 strings,
/// `CharacterSet` trimming) they were about a tenth of a handshake's CPU.
public enum WebSocketKey {
    /// Whether `key` is the base64 of 16 bytes: 22 characters of the standard alphabet and
    /// `==` (what Foundation's decoder accepts for a 16-byte value, trailing bits unchecked).
    static func isValid(_ key: some StringProtocol) -> Bool {
        let bytes = key.utf8
        guard bytes.count == 24 else { return false }
        var index = 0
        for byte in bytes {
            if index < 22 {
                guard decodedValue(byte) != nil else { return false }
            } else if byte != UInt8(ascii: "=") {
                return false
            }
            index += 1
        }
        return true
    }

    /// A fresh key: the base64 of 16 random bytes.
    static func random() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return bytes.withUnsafeBytes { base64($0) }
    }

    /// The `Sec-WebSocket-Accept` value for `key`: base64 of SHA-1 of the key and the GUID.
    public static func accept(for key: some StringProtocol) -> String {
        var hash = Insecure.SHA1()
        var text = String(key)
        text.withUTF8 { hash.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        guid.withUnsafeBytes { hash.update(bufferPointer: $0) }
        return hash.finalize().withUnsafeBytes { base64($0) }
    }

    /// RFC 6455's GUID, appended to the key before hashing.
    private static let guid: [UInt8] = Array("258EAFA5-E914-47DA-95CA-C5AB0DC85B11".utf8)

    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func base64(_ bytes: UnsafeRawBufferPointer) -> String {
        let length = (bytes.count + 2) / 3 * 4
        return String(unsafeUninitializedCapacity: length) { out in
            var written = 0
            var index = 0
            while index < bytes.count {
                let remaining = bytes.count - index
                let b0 = UInt32(bytes[index])
                let b1 = remaining > 1 ? UInt32(bytes[index + 1]) : 0
                let b2 = remaining > 2 ? UInt32(bytes[index + 2]) : 0
                let group = b0 << 16 | b1 << 8 | b2
                out[written] = alphabet[Int(group >> 18 & 63)]
                out[written + 1] = alphabet[Int(group >> 12 & 63)]
                out[written + 2] = remaining > 1 ? alphabet[Int(group >> 6 & 63)] : UInt8(ascii: "=")
                out[written + 3] = remaining > 2 ? alphabet[Int(group & 63)] : UInt8(ascii: "=")
                written += 4
                index += 3
            }
            return written
        }
    }

    private static func decodedValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): byte - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): byte - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: nil
        }
    }
}
