import Testing

@testable import Sluice

/// The stream table against a `Dictionary` doing the same, with no sockets: streams opening in
/// order and out of it, old ones staying open while the window moves on (colliding slots),
/// growth, and removals that must shift the entries after them back.
@Suite("HTTP/2 stream table")
struct HTTP2StreamTableTests {
    static func same(_ table: HTTP2StreamTable<Int>, _ model: [UInt32: Int]) -> Bool {
        guard table.count == model.count, table.isEmpty == model.isEmpty, Set(table.keys) == Set(model.keys) else { return false }
        guard table.allValues.sorted() == model.values.sorted() else { return false }
        return model.allSatisfy { table[$0.key] == $0.value }
    }

    @Test("20,000 random opens, updates and closes agree with a dictionary at every step")
    func againstDictionary() {
        var table = HTTP2StreamTable<Int>()
        var model: [UInt32: Int] = [:]
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        func next(_ bound: Int) -> Int {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return Int(state % UInt64(bound))
        }
        var highest: UInt32 = 1
        for step in 0..<20_000 {
            switch next(10) {
            case 0..<4:
                // A new stream: the next odd identifier, sometimes far ahead.
                highest += next(20) == 0 ? UInt32(2 * (1 + next(200))) : 2
                table[highest] = step
                model[highest] = step
            case 4..<7:
                // A close: a recent stream, or any open one.
                let open = Array(model.keys)
                guard let id = open.isEmpty ? nil : open[next(open.count)] else { continue }
                table[id] = nil
                model[id] = nil
            case 7:
                let open = Array(model.keys)
                guard let id = open.isEmpty ? nil : open[next(open.count)] else { continue }
                table[id] = -step
                model[id] = -step
            case 8:
                // Lookups of streams never opened or long closed.
                let id = UInt32(2 * next(Int(highest / 2 + 1)) + 1)
                #expect(table[id] == model[id])
            default:
                // A stream closed twice, or one never opened: nothing changes.
                let id = highest + 2 * UInt32(1 + next(50))
                table[id] = nil
            }
            if step % 97 == 0 { #expect(Self.same(table, model), "step \(step)") }
        }
        #expect(Self.same(table, model))
        table.removeAll()
        #expect(table.isEmpty && table.keys.isEmpty && table[highest] == nil)
    }

    @Test("identifiers that share a slot: removing the first keeps the others reachable")
    func collisions() {
        var table = HTTP2StreamTable<Int>()
        // Eight slots at first: ids 1, 17, 33 share slot 0; 3 sits in slot 1.
        for id: UInt32 in [1, 17, 3, 33] { table[id] = Int(id) }
        table[1] = nil
        #expect(table[17] == 17 && table[33] == 33 && table[3] == 3)
        table[17] = nil
        #expect(table[33] == 33 && table[3] == 3 && table.count == 2)
        // A wrap around the end of the slots: 15 and 31 share slot 7, then slot 0.
        table[15] = 15
        table[31] = 31
        table[15] = nil
        #expect(table[31] == 31 && table[33] == 33 && table[3] == 3 && table.count == 3)
    }

    @Test("nothing is allocated for a connection with no stream; growth keeps every stream")
    func growth() {
        var table = HTTP2StreamTable<Int>()
        table[5] = nil
        #expect(table.isEmpty && table[5] == nil)
        table[1] = 1
        #expect(table[0] == nil, "stream 0 is the connection, never a stream")
        for id in stride(from: UInt32(1), through: 401, by: 2) { table[id] = Int(id) }
        #expect(table.count == 201)
        #expect(stride(from: UInt32(1), through: 401, by: 2).allSatisfy { table[$0] == Int($0) })
    }
}
