/// A connection's open streams by identifier, in place of a `Dictionary`: a request looks its
/// stream up a dozen times (its state, both windows, the handler), and a dictionary hashes the
/// identifier with SipHash each time.
///
/// Open addressing with linear probing, the slot an identifier's half (`id >> 1`: client
/// streams are odd and rise by two). The open streams are mostly a window of recent
/// identifiers, so they sit in consecutive slots with no collision; an old stream still open
/// (a WebSocket) only makes a probe longer. At most half the slots are used; a removal shifts
/// the entries after it back (no tombstones). Stream 0 is never a stream: it marks a free slot.
/// Nothing is allocated until the first stream opens (an idle connection holds no table).
struct HTTP2StreamTable<Value> {
    private var ids: [UInt32] = []
    private var values: [Value?] = []
    private(set) var count = 0

    init() {}

    var isEmpty: Bool { count == 0 }

    private var mask: Int { ids.count - 1 }

    private func home(_ id: UInt32) -> Int { Int(id >> 1) & mask }

    /// Where `id` is, or the free slot that ends its probe.
    private func slot(_ id: UInt32) -> (index: Int, found: Bool) {
        var index = home(id)
        while true {
            let here = ids[index]
            if here == id { return (index, true) }
            if here == 0 { return (index, false) }
            index = (index + 1) & mask
        }
    }

    subscript(id: UInt32) -> Value? {
        get {
            // Stream 0 (the connection) is never in the table: a lookup of it finds nothing.
            guard id != 0, count > 0 else { return nil }
            let (index, found) = slot(id)
            return found ? values[index] : nil
        }
        set {
            precondition(id != 0, "stream 0 is the connection")
            if ids.isEmpty {
                guard newValue != nil else { return }
                ids = Array(repeating: 0, count: 8)
                values = Array(repeating: nil, count: 8)
            }
            let (index, found) = slot(id)
            if let newValue {
                if found {
                    values[index] = newValue
                    return
                }
                ids[index] = id
                values[index] = newValue
                count += 1
                if count * 2 > ids.count { grow() }
            } else if found {
                remove(at: index)
            }
        }
    }

    /// The open streams' identifiers, in no order.
    var keys: [UInt32] { ids.filter { $0 != 0 } }

    /// The open streams' values, in no order.
    var allValues: [Value] { values.compactMap { $0 } }

    mutating func removeAll() {
        guard count > 0 else { return }
        for index in ids.indices where ids[index] != 0 {
            ids[index] = 0
            values[index] = nil
        }
        count = 0
    }

    /// Empties slot `index` and moves back each following entry whose probe passed it.
    private mutating func remove(at index: Int) {
        var hole = index
        var next = (index + 1) & mask
        while ids[next] != 0 {
            let wanted = home(ids[next])
            // The entry may move into the hole if its home is not in (hole, next] cyclically.
            let between = hole <= next ? (wanted > hole && wanted <= next) : (wanted > hole || wanted <= next)
            if !between {
                ids[hole] = ids[next]
                values[hole] = values[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        ids[hole] = 0
        values[hole] = nil
        count -= 1
    }

    private mutating func grow() {
        let oldIDs = ids
        var oldValues = values
        ids = Array(repeating: 0, count: oldIDs.count * 2)
        values = Array(repeating: nil, count: oldIDs.count * 2)
        count = 0
        for index in oldIDs.indices where oldIDs[index] != 0 {
            let (slot, _) = slot(oldIDs[index])
            ids[slot] = oldIDs[index]
            values[slot] = oldValues[index].take()
            count += 1
        }
    }
}

extension HTTP2StreamTable: Sendable where Value: Sendable {}
