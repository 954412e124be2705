#if os(Linux)
import Glibc
import Sluice
import Testing

/// The descriptor table is grown once at start-up, and growing it never touches an open descriptor.
///
/// Other tests run in this process at the same time with sockets of their own: these tests only
/// ever take descriptors the kernel hands out (`F_DUPFD`), never name one, so they cannot close
/// or replace anyone else's.
@Suite struct DescriptorTableTests {
    @Test func reservingGrowsTheTableToTheLimitOrTheCap() throws {
        let before = try #require(DescriptorTable.size())
        let target = max(before * 2, 4096)
        let reserved = try #require(DescriptorTable.reserve(cap: target))
        #expect(reserved <= target)
        #expect(try #require(DescriptorTable.size()) >= reserved)
    }

    @Test func anOpenDescriptorInTheHighestSlotIsLeftAlone() throws {
        // A pipe, not /dev/null (what reserve opens), so a replacement would show.
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        let file = ends[0]
        defer { close(ends[0]); close(ends[1]) }
        // A descriptor of ours beyond the table as it is, in the slot reserve will aim at.
        let size = try #require(DescriptorTable.size())
        let ours = fcntl(file, F_DUPFD_CLOEXEC, Int32(size + 100))
        try #require(ours >= 0)
        defer { close(ours) }
        var before = stat()
        try #require(fstat(ours, &before) == 0)
        #expect(DescriptorTable.reserve(cap: Int(ours) + 1) == Int(ours) + 1)
        var after = stat()
        #expect(fstat(ours, &after) == 0 && after.st_ino == before.st_ino && after.st_dev == before.st_dev, "reserve replaced a descriptor it did not open")
        #expect(try #require(DescriptorTable.size()) > Int(ours))
    }
}
#endif
