/// ReduceSumTraining (com.microsoft v1; registered in TrainingShapeOps.swift's list).

/// ReduceSumTraining(data, axes: int64 1-D; keepdims 1, noop_with_empty_axes 0) → reduced.
/// Empty axes reduce everything, or pass the input through when noop_with_empty_axes is 1.
struct ReduceSumTrainingKernel: Kernel {
    let keepDims: Bool, noopWithEmptyAxes: Bool
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        let raw = try inputs.optionalTensor(1).map { try indexValues($0, "axes") } ?? []
        if raw.isEmpty && noopWithEmptyAxes { return [.tensor(x)] }
        let axes = raw.isEmpty ? Array(0..<x.rank) : try raw.map { try normalizeAxis($0, rank: x.rank, name: "axes") }
        return [.tensor(try reduceSum(x, axes: Set(axes), keepDims: keepDims))]
    }
}

/// Sums `x` over `axes` (numeric types; accumulates in Double).
func reduceSum(_ x: Tensor, axes: Set<Int>, keepDims: Bool) throws -> Tensor {
    let kept = x.shape.enumerated().map { axes.contains($0.offset) ? 1 : $0.element }
    guard x.dtype.isFloatingPoint || x.dtype.isInteger else { throw KernelError("data must be numeric, got \(x.dtype)") }
    let sums = reduceSumToShape(try x.doubles(), fullShape: x.shape, to: kept)
    let shape = keepDims ? kept : x.shape.enumerated().filter { !axes.contains($0.offset) }.map(\.element)
    return try Tensor(dtype: x.dtype, shape: shape, doubles: sums)
}

/// ReduceSumTraining (com.microsoft), since opset 1.
func reduceSumTrainingKernel(_ ctx: NodeContext) throws -> Kernel {
    ReduceSumTrainingKernel(keepDims: try ctx.int("keepdims", default: 1) != 0,
                            noopWithEmptyAxes: try ctx.int("noop_with_empty_axes", default: 0) != 0)
}
