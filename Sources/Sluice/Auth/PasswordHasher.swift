import CCrypt
import Crypto

/// Password hashes through the system's libxcrypt: verification of bcrypt, SHA-crypt and
/// yescrypt hashes, and new bcrypt hashes for `sluice passwd`. No hashing is written here.
///
/// A bcrypt check costs tens of milliseconds by design: callers run it on a thread pool, never
/// on an event loop.
public enum PasswordHasher {
    /// Whether `password` hashes to `hash` (the stored setting is the salt). The comparison of
    /// the two hash strings takes the same time wherever they differ.
    public static func verify(password: String, hash: String) -> Bool {
        guard let computed = crypt(password, setting: hash) else { return false }
        return ConstantTime.equal(Array(computed.utf8), Array(hash.utf8))
    }

    /// A new bcrypt (`$2b$`) hash with a random salt and `cost` (2^cost rounds).
    public static func bcrypt(password: String, cost: Int = 12) -> String? {
        var setting = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        let made = crypt_gensalt_rn("$2b$", UInt(cost), nil, 0, &setting, Int32(setting.count))
        guard made != nil else { return nil }
        let prefix = String(decoding: setting.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return crypt(password, setting: prefix)
    }

    private static func crypt(_ password: String, setting: String) -> String? {
        // crypt_data is ~32 KiB: on the heap, one per call, so calls on several threads never share it.
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer {
            UnsafeMutableRawPointer(data).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<crypt_data>.size)
            data.deallocate()
        }
        UnsafeMutableRawPointer(data).initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<crypt_data>.size)
        guard let result = crypt_r(password, setting, data) else { return nil }
        let text = String(cString: result)
        // libxcrypt returns a string starting with '*' on failure.
        return text.hasPrefix("*") ? nil : text
    }

    /// A short digest of credentials, for cache keys that never hold the secret itself.
    static func digest(_ parts: String...) -> [UInt8] {
        var hasher = SHA256()
        for part in parts {
            // Each part's length first, so no two lists of parts hash the same bytes.
            let bytes = Array(part.utf8)
            withUnsafeBytes(of: UInt64(bytes.count).bigEndian) { hasher.update(bufferPointer: $0) }
            hasher.update(data: bytes)
        }
        return Array(hasher.finalize())
    }
}
