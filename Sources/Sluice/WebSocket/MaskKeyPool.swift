import Crypto
import NIOPosix

/// Masking keys drawn 256 at a time from the system's cryptographic generator (swift-crypto's,
/// seeded by the kernel), one pool per thread.
///
/// Sluice masks every frame it sends towards a backend that it did not receive masked in the
/// same place: its own close and ping frames, and, on routes that remask, every frame. RFC 6455
/// §5.3 asks for keys a peer cannot predict; the standard library's generator gives them but
/// makes a `getrandom` system call for each, a syscall per close (and per frame when remasking).
final class MaskKeyPool {
    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<MaskKeyPool>()
    private static let size = 256

    private var keys = [UInt32](repeating: 0, count: size)
    private var next = size

    /// A fresh key from this thread's pool.
    static func take() -> UInt32 {
        perThread.current { MaskKeyPool() }.take()
    }

    private func take() -> UInt32 {
        if next == Self.size { refill() }
        defer { next += 1 }
        return keys[next]
    }

    private func refill() {
        let random = SymmetricKey(size: SymmetricKeySize(bitCount: Self.size * 32))
        random.withUnsafeBytes { bytes in
            for index in 0..<Self.size { keys[index] = bytes.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self) }
        }
        next = 0
    }
}
