#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Small helpers shared by the com.microsoft training kernels.

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

/// Sums `values` (laid out in `fullShape`) down to `shape`, the way a broadcast operand's gradient
/// is reduced: `shape` right-aligns against `fullShape`, and every broadcast axis is summed.
func reduceSumToShape(_ values: [Double], fullShape: [Int], to shape: [Int]) -> [Double] {
    var out = [Double](repeating: 0, count: Tensor.elementCount(shape))
    if shape == fullShape { return values }
    var walk = Odometer(shape: fullShape, strides: [Broadcast.strides(shape, to: fullShape)])
    for v in values {
        out[walk.offsets[0]] += v
        walk.advance()
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
