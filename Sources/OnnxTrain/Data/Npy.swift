import Foundation

/// NumPy `.npy` files: a magic string, a version, a Python-literal header, then the raw elements.
///
/// Only C-order, little-endian arrays of the numeric types and bool are read and written: that is
/// what numpy writes by default on every machine onnx-train runs on. Everything else (Fortran order,
/// big-endian, structured or object dtypes) is reported as one clear error.
public enum Npy {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // "\x93NUMPY"

    /// Reads one `.npy` file.
    public static func read(contentsOf path: String) throws -> Tensor {
        let data = try DataFile.read(path)
        return try decode(data, name: path)
    }

    /// Writes `tensor` as a version 1.0 `.npy` file (2.0 if the header needs more than 64 KiB).
    public static func write(_ tensor: Tensor, to path: String) throws {
        try DataFile.write(try encode(tensor, name: path), to: path)
    }

    /// Parses `.npy` bytes; `name` (a file or an array in an archive) goes into every error.
    public static func decode(_ data: Data, name: String) throws -> Tensor {
        func fail(_ message: String) -> OnnxTrainError { .invalidModel("\(name): \(message)") }
        // Only the header is copied out; the elements are copied once, straight into the tensor.
        return try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> Tensor in
            guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
                throw fail("not a .npy file (missing the \\x93NUMPY magic)")
            }
            let major = bytes[6], minor = bytes[7]
            let headerLength: Int, headerStart: Int
            switch major {
            case 1:
                headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
                headerStart = 10
            case 2, 3:
                guard bytes.count >= 12 else { throw fail("truncated .npy header") }
                headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
                headerStart = 12
            default:
                throw fail("unsupported .npy version \(major).\(minor) (1.0, 2.0 and 3.0 are supported)")
            }
            guard headerLength <= bytes.count - headerStart else {
                throw fail("truncated .npy header (\(headerLength) bytes declared, \(bytes.count - headerStart) present)")
            }
            let headerBytes = bytes[headerStart..<(headerStart + headerLength)]
            // Versions 1 and 2 are latin-1, version 3 is UTF-8; the keys we need are ASCII either way.
            let headerText = major == 3 ? String(decoding: headerBytes, as: UTF8.self)
                                        : String(headerBytes.map { Character(Unicode.Scalar($0)) })
            let header: [String: PyLiteral]
            do {
                var parser = PyLiteralParser(headerText)
                header = try parser.parseDict()
            } catch let message as PyLiteralParser.Failure {
                throw fail("malformed .npy header (\(message.text)): \(headerText.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            guard case .string(let descr)? = header["descr"] else {
                if header["descr"] != nil { throw fail("structured dtypes are not supported (descr is not a type string)") }
                throw fail(".npy header has no 'descr'")
            }
            guard case .bool(let fortran)? = header["fortran_order"] else { throw fail(".npy header has no 'fortran_order'") }
            guard !fortran else {
                throw fail("Fortran-order arrays are not supported; save with np.ascontiguousarray(a) first")
            }
            guard case .tuple(let dims)? = header["shape"] else { throw fail(".npy header has no 'shape' tuple") }
            let dtype = try dtypeOf(descr: descr, fail: fail)
            let count = try checkedCount(dims, fail: fail)
            let bodyStart = headerStart + headerLength
            let (byteCount, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, byteCount == bytes.count - bodyStart else {
                throw fail("\(bytes.count - bodyStart) data bytes, \(overflow ? "too many" : String(byteCount)) expected for \(descr) \(dims)")
            }
            return Tensor.copying(UnsafeRawBufferPointer(rebasing: bytes[bodyStart...]), dtype: dtype, shape: dims)
        }
    }

    /// Serialises `tensor` as `.npy` bytes.
    public static func encode(_ tensor: Tensor, name: String = "array") throws -> Data {
        guard let descr = descr(of: tensor.dtype) else {
            throw OnnxTrainError.unsupported("\(name): .npy cannot hold tensor(\(tensor.dtype)) (numeric types and bool only)")
        }
        let shape: String
        switch tensor.rank {
        case 0: shape = "()"
        case 1: shape = "(\(tensor.shape[0]),)"
        default: shape = "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        }
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
        // numpy pads with spaces so the data starts on a 64-byte boundary; the header ends in '\n'.
        let v1 = (header.utf8.count + 11 + 63) / 64 * 64 - 10 <= 65535
        let prefix = v1 ? 10 : 12
        let total = (prefix + header.utf8.count + 1 + 63) / 64 * 64
        header += String(repeating: " ", count: total - prefix - header.utf8.count - 1) + "\n"
        var out = Data(magic)
        let length = header.utf8.count
        if v1 {
            out.append(contentsOf: [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)])
        } else {
            out.append(contentsOf: [2, 0, UInt8(length & 0xFF), UInt8((length >> 8) & 0xFF),
                                    UInt8((length >> 16) & 0xFF), UInt8(length >> 24)])
        }
        out.append(contentsOf: Array(header.utf8))
        out.appendBytes(of: tensor)
        return out
    }

    /// numpy's type string for a dtype we can store, or nil.
    static func descr(of dtype: DType) -> String? {
        switch dtype {
        case .float16: return "<f2"
        case .float32: return "<f4"
        case .float64: return "<f8"
        case .int8: return "|i1"
        case .int16: return "<i2"
        case .int32: return "<i4"
        case .int64: return "<i8"
        case .uint8: return "|u1"
        case .uint16: return "<u2"
        case .uint32: return "<u4"
        case .uint64: return "<u8"
        case .bool: return "|b1"
        default: return nil
        }
    }

    static func dtypeOf(descr: String, fail: (String) -> OnnxTrainError) throws -> DType {
        guard let order = descr.first, descr.count >= 2 else { throw fail("unknown dtype '\(descr)'") }
        let code = String(descr.dropFirst())
        let types: [String: DType] = ["f2": .float16, "f4": .float32, "f8": .float64, "i1": .int8, "i2": .int16,
                                      "i4": .int32, "i8": .int64, "u1": .uint8, "u2": .uint16, "u4": .uint32,
                                      "u8": .uint64, "b1": .bool]
        guard let dtype = types[code] else {
            throw fail("unsupported dtype '\(descr)' (float16/32/64, int8..64, uint8..64 and bool are supported)")
        }
        switch order {
        case "<", "|": return dtype
        case ">" where dtype.byteSize == 1: return dtype
        case ">": throw fail("big-endian dtype '\(descr)' is not supported; save with a.astype(a.dtype.newbyteorder('<'))")
        default: throw fail("unknown byte order in dtype '\(descr)'")
        }
    }

    /// The element count of `dims`, or an error for negative or overflowing dimensions.
    static func checkedCount(_ dims: [Int], fail: (String) -> OnnxTrainError) throws -> Int {
        var count = 1
        for d in dims {
            guard d >= 0 else { throw fail("negative dimension in shape \(dims)") }
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw fail("shape \(dims) has too many elements") }
            count = p
        }
        return count
    }
}

extension Tensor {
    /// A tensor holding a copy of `raw` (exactly `count * byteSize` bytes, checked by the caller);
    /// bool bytes are normalised to 0 or 1 so Swift's `Bool` always reads them correctly.
    static func copying(_ raw: UnsafeRawBufferPointer, dtype: DType, shape: [Int]) -> Tensor {
        let tensor = Tensor(uninitialized: dtype, shape: shape)  // fresh storage: nobody else sees it
        guard let src = raw.baseAddress, raw.count > 0 else { return tensor }
        let dst = tensor.storage.bytes
        dst.copyMemory(from: src, byteCount: raw.count)
        if dtype == .bool {
            let b = dst.assumingMemoryBound(to: UInt8.self)
            for i in 0..<raw.count where b[i] > 1 { b[i] = 1 }
        }
        return tensor
    }
}

extension Data {
    /// Appends a tensor's elements with one copy (`append(contentsOf:)` on a raw buffer goes
    /// byte by byte through the generic Sequence path, very slow in debug builds).
    mutating func appendBytes(of tensor: Tensor) {
        let raw = tensor.rawBytes
        guard let base = raw.baseAddress, raw.count > 0 else { return }
        append(base.assumingMemoryBound(to: UInt8.self), count: raw.count)
    }
}

/// File reading and writing with errors that name the file.
enum DataFile {
    /// The whole file; anything but a regular file (a folder, a pipe, a device) is refused.
    static func read(_ path: String) throws -> Data {
        let file = try RegularFile.opened(path)
        defer { close(file.descriptor) }
        var data = Data(count: file.size)
        try data.withUnsafeMutableBytes { try RegularFile.read(file, path: path, into: $0) }
        return data
    }

    static func write(_ data: Data, to path: String) throws {
        do {
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw OnnxTrainError.io("\(path): cannot write (\(error.localizedDescription))")
        }
    }
}

/// A value in a Python literal, as numpy writes its `.npy` header.
enum PyLiteral: Equatable {
    case string(String)
    case bool(Bool)
    case int(Int)
    case tuple([Int])
    case none
    /// A list or a tuple of anything other than ints (a structured dtype's description).
    case other
}

/// Parses the `{'key': value, ...}` dict of a `.npy` header (strings, bools, ints, int tuples).
struct PyLiteralParser {
    struct Failure: Error { let text: String }
    private let chars: [Character]
    private var i = 0

    init(_ text: String) { chars = Array(text) }

    mutating func parseDict() throws -> [String: PyLiteral] {
        try expect("{")
        var dict: [String: PyLiteral] = [:]
        while true {
            skipSpace()
            if peek() == "}" { i += 1; break }
            guard case .string(let key) = try value() else { throw Failure(text: "dict keys must be strings") }
            try expect(":")
            dict[key] = try value()
            skipSpace()
            if peek() == "," { i += 1; continue }
            try expect("}")
            break
        }
        skipSpace()
        guard i == chars.count else { throw Failure(text: "text after the dict") }
        return dict
    }

    private mutating func value() throws -> PyLiteral {
        skipSpace()
        guard let c = peek() else { throw Failure(text: "unexpected end") }
        switch c {
        case "'", "\"":
            i += 1
            var s = ""
            while let d = peek(), d != c { s.append(d); i += 1 }
            guard peek() == c else { throw Failure(text: "unterminated string") }
            i += 1
            return .string(s)
        case "(", "[":
            let close: Character = c == "(" ? ")" : "]"
            i += 1
            var items: [PyLiteral] = []
            while true {
                skipSpace()
                if peek() == close { i += 1; break }
                items.append(try value())
                skipSpace()
                if peek() == "," { i += 1; continue }
                try expect(close)
                break
            }
            var ints: [Int] = []
            for item in items {
                guard case .int(let v) = item else { return .other }
                ints.append(v)
            }
            return c == "(" || !ints.isEmpty || items.isEmpty ? .tuple(ints) : .other
        case "{":
            _ = try parseDict()
            return .other
        default:
            var word = ""
            while let d = peek(), d.isLetter || d.isNumber || d == "-" || d == "+" || d == "_" { word.append(d); i += 1 }
            switch word {
            case "True": return .bool(true)
            case "False": return .bool(false)
            case "None": return .none
            default:
                // numpy may write long dims as "3L" in Python 2 era files.
                let digits = word.hasSuffix("L") ? String(word.dropLast()) : word
                guard let v = Int(digits) else { throw Failure(text: "unexpected '\(word.isEmpty ? String(c) : word)'") }
                return .int(v)
            }
        }
    }

    private func peek() -> Character? { i < chars.count ? chars[i] : nil }

    private mutating func skipSpace() { while let c = peek(), c.isWhitespace { i += 1 } }

    private mutating func expect(_ c: Character) throws {
        skipSpace()
        guard peek() == c else { throw Failure(text: "expected '\(c)'") }
        i += 1
    }
}
