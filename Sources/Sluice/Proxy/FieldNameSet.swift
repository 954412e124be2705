/// A fixed set of field names, asked about every field of every proxied request: is this one
/// dropped? Most fields are not, so the answer is found by the name's length alone (a bit in a
/// mask) whenever it can be, and otherwise by comparing bytes in place, ignoring ASCII case —
/// no lower-cased copy, no string made, no array walked per name.
struct FieldNameSet: Sendable {
    /// The names' bytes, lower-cased, one after another.
    private let bytes: [UInt8]
    /// Where each name lies in `bytes`.
    private let names: [Range<Int>]
    /// Bit `n` is set when a name has `n` bytes; names of 64 bytes or more set bit 63.
    private let lengths: UInt64

    init(_ names: some Sequence<String>) {
        var bytes: [UInt8] = []
        var ranges: [Range<Int>] = []
        var lengths: UInt64 = 0
        for name in Set(names.map { $0.lowercased() }).sorted() {
            let start = bytes.count
            bytes.append(contentsOf: name.utf8)
            ranges.append(start..<bytes.count)
            lengths |= Self.bit(name.utf8.count)
        }
        self.bytes = bytes
        self.names = ranges
        self.lengths = lengths
    }

    private static func bit(_ count: Int) -> UInt64 { 1 << UInt64(min(count, 63)) }

    /// The set has `name`, in any case.
    func contains(_ name: String) -> Bool {
        guard lengths & Self.bit(name.utf8.count) != 0 else { return false }
        return HTTPSyntax.withBytes(of: name) { contains(UnsafeRawBufferPointer($0)[...]) }
    }

    /// The set has the name in `bytes`, in any case (a field read in place, as a backend's
    /// response head is).
    func contains(_ bytes: Slice<UnsafeRawBufferPointer>) -> Bool {
        let count = bytes.count
        guard lengths & Self.bit(count) != 0 else { return false }
        for range in names where range.count == count {
            // The first bytes compared here: most names of a set's lengths differ there.
            if count > 0, !HTTPSyntax.sameIgnoringCase(bytes[bytes.startIndex], self.bytes[range.lowerBound]) { continue }
            if self.bytes.withUnsafeBytes({ HTTPSyntax.equalsIgnoringCase(bytes, $0[range]) }) { return true }
        }
        return false
    }
}
