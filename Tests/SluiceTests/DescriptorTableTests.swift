#if os(Linux)
import Glibc
import Sluice
import Testing

/// The descriptor table is grown once at start-up, and growing it never touches an open descriptor.
@Suite struct DescriptorTableTests {
    @Test func reservingGrowsTheTableToTheLimitOrTheCap() throws {
        let before = try #require(DescriptorTable.size())
        let target = max(before * 2, 4096)
        let reserved = try #require(DescriptorTable.reserve(cap: target))
        #expect(reserved <= target)
        #expect(try #require(DescriptorTable.size()) >= reserved)
        // The slot used to grow the table is free again.
        #expect(fcntl(Int32(reserved - 1), F_GETFD) == -1)
    }

    @Test func anOpenDescriptorInTheHighestSlotIsLeftAlone() throws {
        let file = open("/dev/null", O_RDONLY | O_CLOEXEC)
        try #require(file >= 0)
        defer { close(file) }
        let size = try #require(DescriptorTable.size())
        let highest = Int32(size + 100)
        try #require(fcntl(highest, F_GETFD) == -1, "the slot the test uses must be free")
        try #require(dup2(file, highest) == highest)
        defer { close(highest) }
        #expect(DescriptorTable.reserve(cap: Int(highest) + 1) == Int(highest) + 1)
        #expect(fcntl(highest, F_GETFD) != -1, "reserve closed a descriptor it did not open")
    }
}
#endif
