import NIOCore

/// HPACK decoding (RFC 7541) of a client's header blocks for Sluice's own HTTP/2 layer, into
/// the list of fields that becomes the request's `HTTPHeaders` as it is.
///
/// Sluice's own because NIOHPACK's decoder made a string for every field it looked up in its
/// table, gathered them into `HPACKHeaders`, which the request's head then copied again: the
/// most of an HTTP/2 request's cost before admission. Here the dynamic table keeps its entries
/// as strings, so an indexed field — almost every field of a connection's second and later
/// requests — costs two references and no copy, and the list is the one the request keeps.
///
/// The connection's one decoder: its table is shared by every block on the connection, so a
/// block it cannot read is a connection error (COMPRESSION_ERROR, RFC 9113 §4.3). Field bytes
/// are not checked here (`HTTP2FieldCheck` does): a value that is not UTF-8 is made a string
/// with its invalid bytes replaced, as an HTTP/1 request's fields are.
package struct HPACKFieldDecoder {
    /// A dynamic table entry and its RFC 7541 §4.1 size.
    private struct Entry {
        var name: String
        var value: String
        var size: Int
    }

    /// Oldest first: index 62 is the last entry.
    private var entries: [Entry] = []
    private var tableSize = 0
    /// The table's size now: the encoder may lower it (a size update) to at most `allowedTableSize`.
    private var maxTableSize: Int
    /// SETTINGS_HEADER_TABLE_SIZE as Sluice sends it (RFC 9113's default, 4,096).
    private let allowedTableSize: Int
    /// SETTINGS_MAX_HEADER_LIST_SIZE: names, values and 32 bytes a field (RFC 9113 §6.5.2).
    private let maxListSize: Int

    package init(allowedTableSize: Int = 4096, maxListSize: Int) {
        self.allowedTableSize = allowedTableSize
        maxTableSize = allowedTableSize
        self.maxListSize = maxListSize
    }

    /// The fields of one whole header block, in order.
    package mutating func decode(_ block: ByteBuffer) throws(HTTP2WireError) -> [(String, String)] {
        do {
            return try block.withUnsafeReadableBytes { bytes throws(Failure) in try decode(bytes) }
        } catch {
            throw .connection(.compressionError, "header block: \(error.reason)")
        }
    }

    /// Why a block cannot be read.
    private struct Failure: Error {
        var reason: String
    }

    private mutating func decode(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> [(String, String)] {
        var reader = Reader(bytes: bytes)
        var fields: [(String, String)] = []
        fields.reserveCapacity(12)
        var listSize = 0
        var sizeUpdates = 0
        while let first = reader.peek() {
            let field: (String, String)
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                field = try lookUp(reader.integer(prefix: 7))
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                field = try literal(&reader, prefix: 6)
                insert(field)
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3): only before the block's first field, at
                // most two (§4.2).
                guard fields.isEmpty else { throw Failure(reason: "a table size update after a field") }
                guard sizeUpdates < 2 else { throw Failure(reason: "a third table size update in a row") }
                sizeUpdates += 1
                let size = try reader.integer(prefix: 5)
                guard size <= allowedTableSize else {
                    throw Failure(reason: "a table size of \(size) bytes, over the \(allowedTableSize) allowed")
                }
                maxTableSize = size
                evict(toFit: 0)
                continue
            } else {
                // Literal without indexing, or never indexed (§6.2.2, §6.2.3): 0000 or 0001.
                field = try literal(&reader, prefix: 4)
            }
            listSize += field.0.utf8.count + field.1.utf8.count + 32
            guard listSize <= maxListSize else {
                throw Failure(reason: "a header list over the \(maxListSize) bytes allowed")
            }
            fields.append(field)
        }
        return fields
    }

    private func lookUp(_ index: Int) throws(Failure) -> (String, String) {
        if index >= 1 && index <= HPACKStaticTable.fields.count { return HPACKStaticTable.fields[index - 1] }
        let dynamic = index - HPACKStaticTable.fields.count
        guard index > 0, dynamic <= entries.count else { throw Failure(reason: "index \(index), not in the tables") }
        let entry = entries[entries.count - dynamic]
        return (entry.name, entry.value)
    }

    private func literal(_ reader: inout Reader, prefix: Int) throws(Failure) -> (String, String) {
        let index = try reader.integer(prefix: prefix)
        let name = index == 0 ? try reader.string() : try lookUp(index).0
        return (name, try reader.string())
    }

    /// Adds a field as the newest entry, evicting the oldest to make room (§4.4); a field
    /// larger than the whole table empties it and is not added.
    private mutating func insert(_ field: (String, String)) {
        let size = field.0.utf8.count + field.1.utf8.count + 32
        guard size <= maxTableSize else {
            entries.removeAll(keepingCapacity: true)
            tableSize = 0
            return
        }
        evict(toFit: size)
        entries.append(Entry(name: field.0, value: field.1, size: size))
        tableSize += size
    }

    private mutating func evict(toFit size: Int) {
        var evicted = 0
        while tableSize + size > maxTableSize, evicted < entries.count {
            tableSize -= entries[evicted].size
            evicted += 1
        }
        if evicted > 0 { entries.removeFirst(evicted) }
    }

    /// Reads HPACK's integers and strings off a block's bytes.
    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var at = 0

        func peek() -> UInt8? { at < bytes.count ? bytes[at] : nil }

        /// An integer with an N-bit prefix (§5.1), at most 2^28: larger than any table, string
        /// or index a block can hold.
        mutating func integer(prefix: Int) throws(Failure) -> Int {
            guard at < bytes.count else { throw Failure(reason: "the block ends inside an integer") }
            let mask = (1 << prefix) - 1
            var value = Int(bytes[at]) & mask
            at += 1
            guard value == mask else { return value }
            var shift = 0
            while true {
                guard at < bytes.count else { throw Failure(reason: "the block ends inside an integer") }
                let byte = Int(bytes[at])
                at += 1
                value += (byte & 0x7f) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
                guard shift <= 21 else { throw Failure(reason: "an integer over 2^28") }
            }
        }

        /// A string literal (§5.2), Huffman-coded or not.
        mutating func string() throws(Failure) -> String {
            guard let first = peek() else { throw Failure(reason: "the block ends before a string") }
            let length = try integer(prefix: 7)
            guard length <= bytes.count - at else {
                throw Failure(reason: "a string of \(length) bytes, \(bytes.count - at) left in the block")
            }
            let encoded = UnsafeRawBufferPointer(rebasing: bytes[at..<(at + length)])
            at += length
            guard first & 0x80 != 0 else { return String(decoding: encoded, as: UTF8.self) }
            var failure: HPACKHuffman.Failure?
            let decoded = String(unsafeUninitializedCapacity: HPACKHuffman.maxDecodedCount(length)) { out in
                do throws(HPACKHuffman.Failure) {
                    return try HPACKHuffman.decode(encoded, into: out)
                } catch {
                    failure = error
                    return 0
                }
            }
            if let failure { throw Failure(reason: "a Huffman-coded string: \(failure)") }
            return decoded
        }
    }
}

/// RFC 7541 Appendix A: the fields every HPACK block may name by index 1 to 61.
enum HPACKStaticTable {
    static let fields: [(String, String)] = [
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
        (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
        (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
        ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
        ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
        ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""), ("date", ""), ("etag", ""),
        ("expect", ""), ("expires", ""), ("from", ""), ("host", ""), ("if-match", ""), ("if-modified-since", ""),
        ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""),
        ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""),
        ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""), ("set-cookie", ""),
        ("strict-transport-security", ""), ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""),
        ("www-authenticate", ""),
    ]
}
