/// A minimal FlatBuffers reader and builder, enough for onnxruntime's training checkpoint.
///
/// No FlatBuffers package is available to us, and the checkpoint schema is small and fixed
/// (tables, strings, vectors of scalars, bytes, strings and tables), so both directions are
/// written here. Format: little-endian; a table starts with an int32 `soffset` back to its
/// vtable (vtable = table - soffset); the vtable holds u16 vtable size, u16 table size, then one
/// u16 offset per field (0 = absent, the default applies); references to strings, vectors and
/// tables are u32 offsets relative to where they are stored, always pointing forward.
///
/// The reader checks every offset and length against the buffer before using it, so a
/// truncated or corrupted file ends in a `FlatBufferError`, never a trap.
struct FlatBufferError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// A read-only, bounds-checked view of a FlatBuffers buffer.
struct FlatBufferReader {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Checks that `count` bytes at `offset` lie inside the buffer.
    @inline(__always)
    func check(_ offset: Int, _ count: Int, _ what: @autoclosure () -> String) throws {
        guard offset >= 0, count >= 0, offset <= bytes.count, count <= bytes.count - offset else {
            throw FlatBufferError("\(what()) at byte \(offset) (\(count) bytes) runs past the end of the \(bytes.count)-byte buffer")
        }
    }

    /// A little-endian integer or float read after a bounds check.
    func load<T: FixedWidthInteger>(_ type: T.Type, at offset: Int, _ what: @autoclosure () -> String = "value") throws -> T {
        try check(offset, MemoryLayout<T>.size, what())
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(truncatingIfNeeded: bytes[offset + i]) << (8 * i) }
        return value
    }

    /// The root table: the u32 at byte 0 points to it; bytes 4..<8 hold the file identifier.
    func root(identifier: String) throws -> FlatBufferTable {
        guard bytes.count >= 8 else { throw FlatBufferError("the file is only \(bytes.count) bytes, too short for a FlatBuffer") }
        let found = bytes[4..<8]
        guard Array(found) == Array(identifier.utf8) else {
            let text = String(decoding: found, as: UTF8.self).unicodeScalars.map { $0.isASCII && $0.value >= 32 ? String($0) : "?" }.joined()
            throw FlatBufferError("wrong file identifier '\(text)' (expected '\(identifier)')")
        }
        let offset = Int(try load(UInt32.self, at: 0, "root offset"))
        return try table(at: offset, "root table")
    }

    /// The table at absolute position `position`, with its vtable checked.
    func table(at position: Int, _ what: String) throws -> FlatBufferTable {
        let soffset = Int(try load(Int32.self, at: position, "\(what) vtable offset"))
        let vtable = position - soffset
        let vtableSize = Int(try load(UInt16.self, at: vtable, "\(what) vtable"))
        guard vtableSize >= 4, vtableSize % 2 == 0 else { throw FlatBufferError("\(what) has a malformed vtable (size \(vtableSize))") }
        try check(vtable, vtableSize, "\(what) vtable")
        let tableSize = Int(try load(UInt16.self, at: vtable + 2, "\(what) vtable"))
        guard tableSize >= 4 else { throw FlatBufferError("\(what) has a malformed vtable (table size \(tableSize))") }
        try check(position, tableSize, what)
        return FlatBufferTable(reader: self, position: position, vtable: vtable, vtableSize: vtableSize, tableSize: tableSize, what: what)
    }

    /// Follows the u32 offset stored at `position`.
    func indirect(_ position: Int, _ what: String) throws -> Int {
        let target = position + Int(try load(UInt32.self, at: position, what))
        try check(target, 0, what)
        return target
    }

    /// A vector's element count and first element position; elements are checked to fit.
    func vector(at position: Int, elementSize: Int, _ what: String) throws -> (start: Int, count: Int) {
        let count = Int(try load(UInt32.self, at: position, "\(what) length"))
        let start = position + 4
        let (total, overflow) = count.multipliedReportingOverflow(by: elementSize)
        guard !overflow else { throw FlatBufferError("\(what) length \(count) is impossible") }
        try check(start, total, what)
        return (start, count)
    }

    /// A string stored at `position` (u32 length, UTF-8 bytes, NUL).
    func string(at position: Int, _ what: String) throws -> String {
        let (start, count) = try vector(at: position, elementSize: 1, what)
        guard let s = String(validating: bytes[start..<(start + count)], as: UTF8.self) else {
            throw FlatBufferError("\(what) is not valid UTF-8")
        }
        return s
    }
}

/// One table of a buffer; field ids are 0-based, in schema order.
struct FlatBufferTable {
    let reader: FlatBufferReader
    let position: Int
    let vtable: Int
    let vtableSize: Int
    let tableSize: Int
    let what: String

    /// The field's position in the buffer, or nil when the field is absent.
    func field(_ id: Int, size: Int) throws -> Int? {
        let slot = 4 + 2 * id
        guard slot + 2 <= vtableSize else { return nil }
        let offset = Int(try reader.load(UInt16.self, at: vtable + slot, "\(what) vtable"))
        guard offset != 0 else { return nil }
        guard offset + size <= tableSize else {
            throw FlatBufferError("\(what) field \(id) lies outside its table")
        }
        return position + offset
    }

    func scalar<T: FixedWidthInteger>(_ id: Int, default value: T) throws -> T {
        guard let p = try field(id, size: MemoryLayout<T>.size) else { return value }
        return try reader.load(T.self, at: p, "\(what) field \(id)")
    }

    func float(_ id: Int, default value: Float) throws -> Float {
        guard let p = try field(id, size: 4) else { return value }
        return Float(bitPattern: try reader.load(UInt32.self, at: p, "\(what) field \(id)"))
    }

    func bool(_ id: Int) throws -> Bool { try scalar(id, default: UInt8(0)) != 0 }

    func string(_ id: Int, _ name: String) throws -> String? {
        guard let p = try field(id, size: 4) else { return nil }
        return try reader.string(at: try reader.indirect(p, "\(what).\(name)"), "\(what).\(name)")
    }

    func table(_ id: Int, _ name: String) throws -> FlatBufferTable? {
        guard let p = try field(id, size: 4) else { return nil }
        return try reader.table(at: try reader.indirect(p, "\(what).\(name)"), "\(what).\(name)")
    }

    /// A vector of tables; nil when the field is absent.
    func tables(_ id: Int, _ name: String) throws -> [FlatBufferTable]? {
        guard let p = try field(id, size: 4) else { return nil }
        let (start, count) = try reader.vector(at: try reader.indirect(p, "\(what).\(name)"), elementSize: 4, "\(what).\(name)")
        return try (0..<count).map { i in
            try reader.table(at: try reader.indirect(start + 4 * i, "\(what).\(name)[\(i)]"), "\(name)[\(i)]")
        }
    }

    func strings(_ id: Int, _ name: String) throws -> [String]? {
        guard let p = try field(id, size: 4) else { return nil }
        let (start, count) = try reader.vector(at: try reader.indirect(p, "\(what).\(name)"), elementSize: 4, "\(what).\(name)")
        return try (0..<count).map { i in
            try reader.string(at: try reader.indirect(start + 4 * i, "\(what).\(name)[\(i)]"), "\(what).\(name)[\(i)]")
        }
    }

    func int64s(_ id: Int, _ name: String) throws -> [Int64]? {
        guard let p = try field(id, size: 4) else { return nil }
        let (start, count) = try reader.vector(at: try reader.indirect(p, "\(what).\(name)"), elementSize: 8, "\(what).\(name)")
        return try (0..<count).map { try reader.load(Int64.self, at: start + 8 * $0) }
    }

    /// A byte vector's position and length (not copied).
    func bytes(_ id: Int, _ name: String) throws -> Range<Int>? {
        guard let p = try field(id, size: 4) else { return nil }
        let (start, count) = try reader.vector(at: try reader.indirect(p, "\(what).\(name)"), elementSize: 1, "\(what).\(name)")
        return start..<(start + count)
    }
}

/// Builds a FlatBuffer front to back: a table is written first and its children after it, so
/// every u32 reference points forward as the format requires. Scalars and vectors are aligned to
/// their size from the start of the buffer, as FlatBuffers verifiers (onnxruntime's included)
/// check.
struct FlatBufferBuilder {
    /// A value to serialize: the checkpoint schema needs only these shapes.
    indirect enum Node {
        /// Fields by id; nil = absent (the schema default applies).
        case table([Field?])
        case string(String)
        case tables([Node])
        case strings([String])
        case int64s([Int64])
        /// Raw bytes (a tensor's data), aligned to `alignment`.
        case bytes([UInt8], alignment: Int)
    }

    enum Field {
        case int32(Int32)
        case int64(Int64)
        case float(Float)
        case bool(Bool)
        case ref(Node)

        var size: Int {
            switch self {
            case .int32, .float, .ref: return 4
            case .int64: return 8
            case .bool: return 1
            }
        }
    }

    private(set) var buffer: [UInt8] = []

    /// The finished buffer for `root`, with `identifier` (4 ASCII bytes) after the root offset.
    static func build(root: Node, identifier: String) -> [UInt8] {
        var b = FlatBufferBuilder()
        b.buffer = [0, 0, 0, 0] + Array(identifier.utf8.prefix(4))
        let position = b.write(root)
        b.patch(at: 0, UInt32(position))
        return b.buffer
    }

    private mutating func pad(to alignment: Int) {
        while buffer.count % alignment != 0 { buffer.append(0) }
    }

    private mutating func append<T: FixedWidthInteger>(_ value: T) {
        for i in 0..<MemoryLayout<T>.size { buffer.append(UInt8(truncatingIfNeeded: value >> (8 * i))) }
    }

    private mutating func patch<T: FixedWidthInteger>(at offset: Int, _ value: T) {
        for i in 0..<MemoryLayout<T>.size { buffer[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }

    /// Writes `node` and everything it references at the end of the buffer; returns its position.
    private mutating func write(_ node: Node) -> Int {
        switch node {
        case .table(let fields):
            return writeTable(fields)
        case .string(let s):
            pad(to: 4)
            let position = buffer.count
            let utf8 = Array(s.utf8)
            append(UInt32(utf8.count))
            buffer.append(contentsOf: utf8)
            buffer.append(0)
            return position
        case .strings(let items):
            return writeReferenceVector(items.map { Node.string($0) })
        case .tables(let items):
            return writeReferenceVector(items)
        case .int64s(let values):
            // The length sits just before 8-aligned elements.
            while (buffer.count + 4) % 8 != 0 { buffer.append(0) }
            let position = buffer.count
            append(UInt32(values.count))
            for v in values { append(v) }
            return position
        case .bytes(let data, let alignment):
            while (buffer.count + 4) % max(alignment, 4) != 0 { buffer.append(0) }
            let position = buffer.count
            append(UInt32(data.count))
            buffer.append(contentsOf: data)
            return position
        }
    }

    /// A vector of u32 references, each patched once its target is written after the vector.
    private mutating func writeReferenceVector(_ items: [Node]) -> Int {
        pad(to: 4)
        let position = buffer.count
        append(UInt32(items.count))
        let slots = buffer.count
        buffer.append(contentsOf: [UInt8](repeating: 0, count: 4 * items.count))
        for (i, item) in items.enumerated() {
            let target = write(item)
            patch(at: slots + 4 * i, UInt32(target - (slots + 4 * i)))
        }
        return position
    }

    /// vtable, then the table (soffset + fields, largest first), then referenced children.
    private mutating func writeTable(_ fields: [Field?]) -> Int {
        // Lay the fields out after the 4-byte soffset, 8-byte ones first so none needs padding
        // beyond the table's own alignment.
        let order = fields.indices.filter { fields[$0] != nil }.sorted { fields[$0]!.size > fields[$1]!.size }
        var fieldOffset = [Int](repeating: 0, count: fields.count)
        let tableAlignment = order.contains { fields[$0]!.size == 8 } ? 8 : 4
        var cursor = 4
        for id in order {
            let size = fields[id]!.size
            // Offsets inside the table are aligned because the table start is.
            while cursor % size != 0 { cursor += 1 }
            fieldOffset[id] = cursor
            cursor += size
        }
        var tableSize = cursor
        while tableSize % 4 != 0 { tableSize += 1 }

        // vtable: u16 vtable size, u16 table size, u16 per field id up to the last present one.
        pad(to: 2)
        let vtable = buffer.count
        let lastId = (fields.lastIndex { $0 != nil } ?? -1)
        append(UInt16(4 + 2 * (lastId + 1)))
        append(UInt16(tableSize))
        for id in 0..<(lastId + 1) { append(UInt16(fieldOffset[id])) }

        pad(to: tableAlignment)
        let table = buffer.count
        append(Int32(table - vtable))
        buffer.append(contentsOf: [UInt8](repeating: 0, count: tableSize - 4))
        var children: [(slot: Int, node: Node)] = []
        for id in order {
            let at = table + fieldOffset[id]
            switch fields[id]! {
            case .int32(let v): patch(at: at, v)
            case .int64(let v): patch(at: at, v)
            case .float(let v): patch(at: at, v.bitPattern)
            case .bool(let v): buffer[at] = v ? 1 : 0
            case .ref(let node): children.append((at, node))
            }
        }
        // Children in field-id order, so the layout does not depend on the packing order.
        for (slot, node) in children.sorted(by: { $0.slot < $1.slot }) {
            let target = write(node)
            patch(at: slot, UInt32(target - slot))
        }
        return table
    }
}
