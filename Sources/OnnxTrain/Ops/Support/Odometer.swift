/// The one multi-index loop of the kernels: a row-major walk over `shape` that carries, for up to
/// four operands at once, the flat offset Σ index[d]·strides[d] (strides of 0 broadcast an axis).
///
/// Kernels that copy or combine strided data (broadcasting, transposes, slices, batched GEMMs,
/// reductions) step it once per element, or once per row with `advance(axes: rank - 1)` and run
/// the last axis as a plain loop. Offsets are updated incrementally (one add per step, one
/// subtract per carry), never recomputed from the index.
struct Odometer {
    let shape: [Int]
    /// strides[d] holds axis d's stride for each operand (lane k = operand k).
    private let strides: [SIMD4<Int>]
    /// The current multi-index.
    private(set) var index: [Int]
    /// The current flat offset of each operand (lane k = operand k).
    private(set) var offsets: SIMD4<Int>

    /// A walk over `shape` for operands whose per-axis strides are `strides[k]` (each of
    /// `shape.count` entries; none for an index-only walk), starting at `start`.
    init(shape: [Int], strides operandStrides: [[Int]] = [], start: SIMD4<Int> = .zero) {
        precondition(operandStrides.count <= 4 && operandStrides.allSatisfy { $0.count == shape.count })
        self.shape = shape
        strides = shape.indices.map { d in
            var s = SIMD4<Int>.zero
            for (k, operand) in operandStrides.enumerated() { s[k] = operand[d] }
            return s
        }
        index = [Int](repeating: 0, count: shape.count)
        offsets = start
    }

    /// Steps to the next position in row-major order over axes 0..<axes (all axes by default;
    /// `rank - 1` steps row by row while the caller walks the last axis itself). Past the last
    /// position the index wraps to zero.
    @inline(__always)
    mutating func advance(axes: Int? = nil) {
        var d = (axes ?? shape.count) - 1
        while d >= 0 {
            index[d] += 1
            offsets &+= strides[d]
            if index[d] < shape[d] { return }
            offsets &-= strides[d] &* shape[d]
            index[d] = 0
            d -= 1
        }
    }
}

/// Flat source indices of `shape` read through `strides` from `offset` (transposes, slices,
/// broadcasts: any strided view of a contiguous tensor), in row-major order of `shape`.
func stridedIndices(shape: [Int], strides: [Int], offset: Int = 0) -> [Int] {
    var walk = Odometer(shape: shape, strides: [strides], start: SIMD4(offset, 0, 0, 0))
    return (0..<Tensor.elementCount(shape)).map { _ in
        defer { walk.advance() }
        return walk.offsets[0]
    }
}

/// `values` read along a strided walk over `shape`: out[i] = values[stridedIndices(...)[i]]
/// (broadcasts, diagonals, permutations of small arrays).
func gatherStrided<T>(_ values: [T], shape: [Int], strides: [Int], start: Int = 0) -> [T] {
    stridedIndices(shape: shape, strides: strides, offset: start).map { values[$0] }
}
