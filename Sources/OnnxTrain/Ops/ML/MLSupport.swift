/// Helpers shared by the ai.onnx.ml kernels: element conversion, lookup keys and a typeless gather.

/// A tensor element as a lookup key: integers, reals and strings never compare equal to each other.
enum MLKey: Hashable {
    case int(Int64)
    case real(Double)
    case string(String)
}

/// The elements of `t` as lookup keys (integer, float or string tensors).
func mlKeys(_ t: Tensor) throws -> [MLKey] {
    switch t.dtype {
    case .string: return t.strings.map { .string($0) }
    case .float32, .float64, .float16, .bfloat16: return try t.doubles().map { .real($0) }
    case .uint64: return try t.withUnsafeBufferPointer(as: UInt64.self) { $0.map { .int(Int64(truncatingIfNeeded: $0)) } }
    default:
        guard let ints = t.intValues() else { throw KernelError("element type \(t.dtype) cannot be a key") }
        return ints.map { .int(Int64($0)) }
    }
}

/// Elements of `source` (flattened) at `indices`, in a tensor of `shape`; any element type.
/// The caller has checked every index against `source.count`.
func mlGather(_ source: Tensor, _ indices: [Int], shape: [Int]) throws -> Tensor {
    if source.dtype == .string {
        let s = source.strings
        return Tensor(shape: shape, strings: indices.map { s[$0] })
    }
    var out = try Tensor(checkedZeros: source.dtype, shape: shape, label: "output")
    let size = source.dtype.byteSize
    let src = source.rawBytes
    out.withUnsafeMutableRawBytes { dst in
        for (i, j) in indices.enumerated() {
            dst.baseAddress!.advanced(by: i * size).copyMemory(from: src.baseAddress!.advanced(by: j * size), byteCount: size)
        }
    }
    return out
}

/// Two 1-D tensors of one element type joined end to end.
func mlConcat(_ a: Tensor, _ b: Tensor) throws -> Tensor {
    guard a.dtype == b.dtype else { throw KernelError("element types \(a.dtype) and \(b.dtype) differ") }
    if a.dtype == .string { return Tensor(shape: [a.count + b.count], strings: a.strings + b.strings) }
    var out = try Tensor(checkedZeros: a.dtype, shape: [a.count + b.count], label: "table")
    let ab = a.rawBytes, bb = b.rawBytes
    out.withUnsafeMutableRawBytes { dst in
        if ab.count > 0 { dst.baseAddress!.copyMemory(from: ab.baseAddress!, byteCount: ab.count) }
        if bb.count > 0 { dst.baseAddress!.advanced(by: ab.count).copyMemory(from: bb.baseAddress!, byteCount: bb.count) }
    }
    return out
}
