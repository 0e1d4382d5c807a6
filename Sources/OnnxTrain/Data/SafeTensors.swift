import Foundation

/// The tensors and free-form metadata of a `.safetensors` file.
public struct SafeTensorsFile {
    /// Tensors in the order of their data in the file.
    public var tensors: [(name: String, tensor: Tensor)]
    /// The `__metadata__` map (string to string), kept as read.
    public var metadata: [String: String]

    public init(tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// The tensors by name.
    public var dictionary: [String: Tensor] {
        var result: [String: Tensor] = [:]
        for (name, tensor) in tensors { result[name] = tensor }
        return result
    }
}

/// Hugging Face `.safetensors`: an 8-byte little-endian header length, a JSON header mapping each
/// name to `{dtype, shape, data_offsets}` (offsets relative to the data that follows), the data.
public enum SafeTensors {
    static let codes: [(String, DType)] = [
        ("F64", .float64), ("F32", .float32), ("F16", .float16), ("BF16", .bfloat16),
        ("I64", .int64), ("I32", .int32), ("I16", .int16), ("I8", .int8),
        ("U64", .uint64), ("U32", .uint32), ("U16", .uint16), ("U8", .uint8), ("BOOL", .bool),
        ("F8_E4M3", .float8e4m3fn), ("F8_E5M2", .float8e5m2),
    ]

    /// Reads a `.safetensors` file.
    public static func read(contentsOf path: String) throws -> SafeTensorsFile {
        try decode(try DataFile.read(path), name: path)
    }

    /// Writes `file`; the data of the tensors follows in their given order.
    public static func write(_ file: SafeTensorsFile, to path: String) throws {
        try DataFile.write(try encode(file, name: path), to: path)
    }

    /// Parses `.safetensors` bytes; `name` goes into every error.
    public static func decode(_ data: Data, name: String) throws -> SafeTensorsFile {
        let data = data.startIndex == 0 ? data : Data(data)  // the offsets below are from 0
        func fail(_ message: String) -> OnnxTrainError { .invalidModel("\(name): \(message)") }
        guard data.count >= 8 else { throw fail("not a .safetensors file (\(data.count) bytes, shorter than the 8-byte header length)") }
        var headerLength: UInt64 = 0
        for i in 0..<8 { headerLength |= UInt64(data[data.startIndex + i]) << (8 * UInt64(i)) }
        guard headerLength <= UInt64(data.count - 8) else {
            throw fail("header length \(headerLength) runs past the end of the file (\(data.count) bytes)")
        }
        let headerEnd = 8 + Int(headerLength)
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<headerEnd))
        } catch {
            throw fail("header is not valid JSON")
        }
        guard let header = json as? [String: Any] else { throw fail("header is not a JSON object") }
        let bodyCount = data.count - headerEnd
        var metadata: [String: String] = [:]
        var entries: [(name: String, dtype: DType, shape: [Int], begin: Int, end: Int)] = []
        for (key, value) in header {
            if key == "__metadata__" {
                guard let map = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (k, v) in map {
                    guard let s = v as? String else { throw fail("__metadata__ '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            let label = "tensor '\(key)'"
            guard let info = value as? [String: Any] else { throw fail("\(label) is not an object") }
            guard let code = info["dtype"] as? String else { throw fail("\(label) has no dtype") }
            guard let dtype = codes.first(where: { $0.0 == code })?.1 else { throw fail("\(label) has unsupported dtype '\(code)'") }
            guard let shape = integers(info["shape"]) else { throw fail("\(label) has no valid shape") }
            guard let offsets = integers(info["data_offsets"]), offsets.count == 2 else {
                throw fail("\(label) has no valid data_offsets")
            }
            let count = try Npy.checkedCount(shape) { fail("\(label): \($0)") }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
            let (begin, end) = (offsets[0], offsets[1])
            guard begin >= 0, begin <= end, end <= bodyCount else {
                throw fail("\(label) data_offsets [\(begin), \(end)] lie outside the \(bodyCount) data bytes")
            }
            guard !overflow, end - begin == bytes else {
                throw fail("\(label) has \(end - begin) data bytes, \(overflow ? "too many" : String(bytes)) expected for \(code) \(shape)")
            }
            entries.append((key, dtype, shape, begin, end))
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var tensors: [(name: String, tensor: Tensor)] = []
        data.withUnsafeBytes { raw in
            for e in entries {
                let slice = UnsafeRawBufferPointer(rebasing: raw[(headerEnd + e.begin)..<(headerEnd + e.end)])
                tensors.append((e.name, Tensor.copying(slice, dtype: e.dtype, shape: e.shape)))
            }
        }
        return SafeTensorsFile(tensors: tensors, metadata: metadata)
    }

    /// Serialises `file` as `.safetensors` bytes (header padded with spaces to 8 bytes, as the
    /// reference writer does, so the data is aligned).
    public static func encode(_ file: SafeTensorsFile, name: String = "safetensors") throws -> Data {
        var header: [String: Any] = [:]
        if !file.metadata.isEmpty { header["__metadata__"] = file.metadata }
        var offset = 0
        for (tensorName, tensor) in file.tensors {
            guard tensorName != "__metadata__", header[tensorName] == nil else {
                throw OnnxTrainError.invalidInput("\(name): tensor name '\(tensorName)' is reserved or given twice")
            }
            guard let code = codes.first(where: { $0.1 == tensor.dtype })?.0 else {
                throw OnnxTrainError.unsupported("\(name): tensor '\(tensorName)': safetensors cannot hold tensor(\(tensor.dtype))")
            }
            header[tensorName] = ["dtype": code, "shape": tensor.shape, "data_offsets": [offset, offset + tensor.byteCount]] as [String: Any]
            offset += tensor.byteCount
        }
        var json: Data
        do {
            json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        } catch {
            throw OnnxTrainError.invalidInput("\(name): cannot encode the header (\(error))")
        }
        if header.isEmpty { json = Data("{}".utf8) }
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data(count: 8)
        let length = UInt64(json.count)
        for i in 0..<8 { out[i] = UInt8(truncatingIfNeeded: length >> (8 * UInt64(i))) }
        out.append(json)
        out.reserveCapacity(out.count + offset)
        for (_, tensor) in file.tensors { out.appendBytes(of: tensor) }
        return out
    }

    /// A JSON array of whole numbers (NSNumber on Linux), or nil.
    private static func integers(_ value: Any?) -> [Int]? {
        guard let array = value as? [Any] else { return nil }
        var result: [Int] = []
        for item in array {
            guard let n = item as? NSNumber else { return nil }
            let d = n.doubleValue
            guard d == d.rounded(), abs(d) < 9.0e15 else { return nil }
            result.append(n.intValue)
        }
        return result
    }
}
