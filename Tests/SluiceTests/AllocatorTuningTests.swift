import Testing
@testable import Sluice

/// What `GLIBC_TUNABLES` the gateway re-executes itself with (`AllocatorTuning`).
@Suite("Allocator tuning")
struct AllocatorTuningTests {
    @Test("the per-thread cache count is added to whatever the operator set, and an operator's own count is kept", arguments: [
        (nil, "glibc.malloc.tcache_count=65535"),
        ("", "glibc.malloc.tcache_count=65535"),
        ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=65535"),
        ("glibc.malloc.arena_max=2::glibc.malloc.mxfast=64:", "glibc.malloc.arena_max=2:glibc.malloc.mxfast=64:glibc.malloc.tcache_count=65535"),
        // A tunable that only starts with the name is another one.
        ("glibc.malloc.tcache_count_x=1", "glibc.malloc.tcache_count_x=1:glibc.malloc.tcache_count=65535"),
        ("glibc.malloc.tcache_count=7", nil),
        ("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0", nil),
    ] as [(String?, String?)])
    func tunables(current: String?, expected: String?) {
        #expect(AllocatorTuning.tunables(current: current) == expected)
    }
}
