#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Small helpers shared by the com.microsoft training kernels.

/// Runs `op` with Float or Double for `dtype`; float16/bfloat16 run as Float, on inputs the caller
/// widened with `widenedIfHalf` and results it narrows back (onnxruntime's CPU training kernels
/// are float-only, so the half path only exists for completeness).
@inline(__always)
func trainingFloatDispatch<Op: FloatOperation>(_ dtype: DType, _ op: Op) throws -> Op.Result {
    try dispatchFloat(dtype == .float16 || dtype == .bfloat16 ? .float32 : dtype, op)
}

/// Elementwise `body(a)` over one float tensor, computed in Double; result has `a`'s shape and type.
struct FloatMap1: FloatOperation {
    let a: Tensor
    let body: (Double) -> Double
    func callAsFunction<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        var out = Tensor(uninitialized: T.dtype, shape: a.shape)
        try a.withUnsafeBufferPointer(as: T.self) { pa in
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                for i in 0..<po.count { po[i] = T(body(Double(pa[i]))) }
            }
        }
        return out
    }
}

/// Elementwise `body(a, b)` over two float tensors of one shape (or `b` repeating along the last
/// axes, as a bias does: b.count divides a.count), computed in Double; result has `a`'s shape.
struct FloatMap2: FloatOperation {
    let a: Tensor, b: Tensor
    let body: (Double, Double) -> Double
    func callAsFunction<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        var out = Tensor(uninitialized: T.dtype, shape: a.shape)
        let nb = b.count
        try a.withUnsafeBufferPointer(as: T.self) { pa in
            try b.withUnsafeBufferPointer(as: T.self) { pb in
                out.uncheckedMutableBufferPointer(as: T.self) { po in
                    if nb == po.count {
                        for i in 0..<po.count { po[i] = T(body(Double(pa[i]), Double(pb[i]))) }
                    } else {
                        for i in 0..<po.count { po[i] = T(body(Double(pa[i]), Double(pb[i % nb]))) }
                    }
                }
            }
        }
        return out
    }
}

/// Elementwise `body(a, b, c)`; `c` may repeat along the last axes like a bias.
struct FloatMap3: FloatOperation {
    let a: Tensor, b: Tensor, c: Tensor
    let body: (Double, Double, Double) -> Double
    func callAsFunction<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        var out = Tensor(uninitialized: T.dtype, shape: a.shape)
        let nc = c.count
        try a.withUnsafeBufferPointer(as: T.self) { pa in
            try b.withUnsafeBufferPointer(as: T.self) { pb in
                try c.withUnsafeBufferPointer(as: T.self) { pc in
                    out.uncheckedMutableBufferPointer(as: T.self) { po in
                        for i in 0..<po.count { po[i] = T(body(Double(pa[i]), Double(pb[i]), Double(pc[i % nc]))) }
                    }
                }
            }
        }
        return out
    }
}

extension Tensor {
    /// float16/bfloat16 as float32, other types unchanged (see `trainingFloatDispatch`).
    var widenedIfHalf: Tensor { isHalf ? widenedToFloat() : self }
}

/// Checks that float inputs share one element type and returns it.
func commonFloatType(_ tensors: [Tensor], names: [String]) throws -> DType {
    guard let first = tensors.first else { throw KernelError("no inputs") }
    for (t, n) in zip(tensors, names) {
        guard t.dtype.isFloatingPoint else { throw KernelError("\(n) must be a float tensor, got \(t.dtype)") }
        guard t.dtype == first.dtype else { throw KernelError("\(n) is \(t.dtype) but \(names[0]) is \(first.dtype)") }
    }
    return first.dtype
}

/// Applies a FloatMap-style op, widening half types and narrowing the result back.
func floatElementwise<Op: FloatOperation>(_ inputs: [Tensor], names: [String], make: ([Tensor]) -> Op) throws -> Tensor
where Op.Result == Tensor {
    let dtype = try commonFloatType(inputs, names: names)
    let out = try trainingFloatDispatch(dtype, make(inputs.map(\.widenedIfHalf)))
    return out.dtype == dtype ? out : out.narrowed(to: dtype)
}

/// Requires two shapes to be equal, naming both inputs otherwise.
func requireSameShape(_ a: Tensor, _ b: Tensor, _ na: String, _ nb: String) throws {
    guard a.shape == b.shape else { throw KernelError("\(na) \(a.shape) and \(nb) \(b.shape) must have the same shape") }
}

/// An int64 tensor of `values` (1-D unless `shape` says otherwise).
func int64Tensor(_ values: [Int], shape: [Int]? = nil) -> Tensor {
    Tensor(shape: shape ?? [values.count], scalars: values.map { Int64($0) })
}

/// The elements of an integer index tensor (int32 or int64), or a KernelError naming it.
func indexValues(_ t: Tensor, _ name: String) throws -> [Int] {
    guard t.dtype == .int64 || t.dtype == .int32, let v = t.intValues() else {
        throw KernelError("\(name) must be int32 or int64, got \(t.dtype)")
    }
    return v
}

/// A bool tensor's single flag (the first element), or nil when absent.
func boolFlag(_ t: Tensor?, _ name: String) throws -> Bool? {
    guard let t else { return nil }
    guard t.count >= 1 else { throw KernelError("\(name) is empty") }
    guard let v = t.scalarDouble(at: 0) else { throw KernelError("\(name) must be numeric or bool, got \(t.dtype)") }
    return v != 0
}

/// Reads a float tensor (any float type) as [Double].
func floatValues(_ t: Tensor, _ name: String) throws -> [Double] {
    switch t.dtype {
    case .float32: return try t.withUnsafeBufferPointer(as: Float.self) { $0.map { Double($0) } }
    case .float64: return t.scalars(as: Double.self)
    case .float16, .bfloat16: return try t.widenedToFloat().withUnsafeBufferPointer(as: Float.self) { $0.map { Double($0) } }
    default: throw KernelError("\(name) must be a float tensor, got \(t.dtype)")
    }
}

/// Sums `values` (laid out in `fullShape`) down to `shape`, the way a broadcast operand's gradient
/// is reduced: `shape` right-aligns against `fullShape`, and every broadcast axis is summed.
func reduceSumToShape(_ values: [Double], fullShape: [Int], to shape: [Int]) -> [Double] {
    var out = [Double](repeating: 0, count: Tensor.elementCount(shape))
    if shape == fullShape { return values }
    let strides = Broadcast.strides(shape, to: fullShape)
    let rank = fullShape.count
    var index = [Int](repeating: 0, count: rank)
    var offset = 0
    for v in values {
        out[offset] += v
        var d = rank - 1
        while d >= 0 {
            index[d] += 1
            offset += strides[d]
            if index[d] < fullShape[d] { break }
            offset -= strides[d] * fullShape[d]
            index[d] = 0
            d -= 1
        }
    }
    return out
}

/// Copies `t` with its axes permuted (`out.shape[i] = t.shape[perm[i]]`); any element type.
func permuted(_ t: Tensor, _ perm: [Int]) -> Tensor {
    let outShape = perm.map { t.shape[$0] }
    let size = t.dtype.byteSize
    let out = Tensor(uninitialized: t.dtype, shape: outShape)
    let inStrides = contiguousStrides(t.shape)
    let strides = perm.map { inStrides[$0] }
    let n = t.count, rank = outShape.count
    if n == 0 { return out }
    let src = t.storage.bytes
    let dst = out.storage.bytes
    var index = [Int](repeating: 0, count: rank)
    var offset = 0
    for o in 0..<n {
        memcpy(dst + o * size, src + offset * size, size)
        var d = rank - 1
        while d >= 0 {
            index[d] += 1
            offset += strides[d]
            if index[d] < outShape[d] { break }
            offset -= strides[d] * outShape[d]
            index[d] = 0
            d -= 1
        }
    }
    return out
}

/// The tensors of a sequence input, or a KernelError naming it.
func sequenceTensors(_ inputs: [Value?], _ index: Int, _ name: String) throws -> [Tensor] {
    guard index < inputs.count, let v = inputs[index] else { throw KernelError("\(name) (input \(index)) is required") }
    guard case .sequence(let items, _) = v else { throw KernelError("\(name) must be a sequence of tensors, got \(v.summary)") }
    return try items.map { item in
        guard case .tensor(let t) = item else { throw KernelError("\(name) must hold tensors, got \(item.summary)") }
        return t
    }
}
