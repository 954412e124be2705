import Testing
@testable import Sluice

/// Masking keys come from a per-thread pool refilled from the cryptographic generator.
@Suite("Mask key pool")
struct MaskKeyPoolTests {
    @Test("keys across several refills are all different and use every bit position")
    func keysDiffer() {
        let keys = (0..<2_000).map { _ in MaskKeyPool.take() }
        // 2,000 draws from 2^32 collide with probability ~5e-4; allow one.
        #expect(Set(keys).count >= 1_999)
        let ored = keys.reduce(UInt32(0)) { $0 | $1 }
        let anded = keys.reduce(UInt32.max) { $0 & $1 }
        #expect(ored == .max && anded == 0, "every bit varies")
        let masks = (0..<300).map { _ in MaskKey.random() }
        #expect(Set(masks.map { [$0.bytes.0, $0.bytes.1, $0.bytes.2, $0.bytes.3] }).count >= 299)
    }
}
