/// Gradients of Gather, GatherElements and GatherND (com.microsoft v1): scatter-adds of dY into
/// zeros of the forward input's shape, so duplicate indices accumulate. Negative indices wrap;
/// an index outside [−s, s−1] is an error.

/// Resolves a possibly negative index against a dimension of size `size`.
@inline(__always)
func wrapIndex(_ i: Int, _ size: Int, _ what: String) throws -> Int {
    let j = i < 0 ? i + size : i
    guard j >= 0 && j < size else { throw KernelError("\(what) index \(i) is out of range for a dimension of size \(size)") }
    return j
}

/// Reads a shape input (1-D int64) and checks it for negative dims.
func shapeInput(_ t: Tensor, _ name: String) throws -> [Int] {
    guard t.rank <= 1 else { throw KernelError("\(name) must be a 1-D shape, got \(t.shape)") }
    let dims = try indexValues(t, name)
    guard dims.allSatisfy({ $0 >= 0 }) else { throw KernelError("\(name) \(dims) has a negative dimension") }
    return dims
}

/// Adds `src[srcOffsets]` into `dst[dstOffsets]` blockwise: dst[d + k] += src[s + k] for k < block.
struct ScatterAdd: ElementOperation {
    let source: Tensor
    let shape: [Int]
    let pairs: [(dst: Int, src: Int)]
    let block: Int
    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        var out = Tensor(zeros: T.dtype, shape: shape)
        try source.withUnsafeBufferPointer(as: T.self) { s in
            out.uncheckedMutableBufferPointer(as: T.self) { o in
                for (d, sIndex) in pairs {
                    for k in 0..<block { o[d + k] += s[sIndex + k] }
                }
            }
        }
        return out
    }
}

func scatterAdd(_ source: Tensor, shape: [Int], pairs: [(dst: Int, src: Int)], block: Int) throws -> Tensor {
    guard source.dtype.isFloatingPoint else { throw KernelError("the gradient must be a float tensor, got \(source.dtype)") }
    return try computingHalfInFloat([source]) { w in
        try dispatch(w[0].dtype, ScatterAdd(source: w[0], shape: shape, pairs: pairs, block: block))
    }
}

/// GatherGrad(shape, indices, dY; axis = 0) → dX of `shape`.
/// dY.shape == shape[:axis] + indices.shape + shape[axis+1:].
struct GatherGradKernel: Kernel {
    let axis: Int
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let shape = try shapeInput(try inputs.tensor(0), "shape")
        let dy = try inputs.tensor(2)
        let plan = try GatherGradKernel.scatterPlan(shape: shape, indices: inputs.tensor(1), dyShape: dy.shape, axis: axis)
        return [.tensor(try scatterAdd(dy, shape: shape, pairs: plan.pairs, block: plan.block))]
    }

    /// Where each block of dY adds into dX of `shape` (the offsets of both, in elements) and the
    /// block's length, after checking dY's shape against the indices'.
    static func scatterPlan(shape: [Int], indices indexTensor: Tensor, dyShape: [Int], axis: Int) throws -> (pairs: [(dst: Int, src: Int)], block: Int) {
        let indices = try indexValues(indexTensor, "indices")
        let indexShape = indexTensor.shape
        guard !shape.isEmpty else { throw KernelError("shape must have rank >= 1") }
        let a = try normalizeAxis(axis, rank: shape.count)
        let expected = Array(shape[..<a]) + indexShape + Array(shape[(a + 1)...])
        guard dyShape == expected else {
            throw KernelError("dY \(dyShape) must have shape \(expected) (shape[:axis] + indices.shape + shape[axis+1:])")
        }
        let outer = Tensor.elementCount(Array(shape[..<a])), size = shape[a]
        let inner = Tensor.elementCount(Array(shape[(a + 1)...]))
        let wrapped = try indices.map { try wrapIndex($0, size, "indices") }
        var pairs: [(dst: Int, src: Int)] = []
        pairs.reserveCapacity(outer * wrapped.count)
        for o in 0..<outer {
            for (j, idx) in wrapped.enumerated() { pairs.append(((o * size + idx) * inner, (o * wrapped.count + j) * inner)) }
        }
        return (pairs, inner)
    }
}

/// GatherElementsGrad(dY, shape, indices; axis = 0) → dX of `shape`; dY.shape == indices.shape.
struct GatherElementsGradKernel: Kernel {
    let axis: Int
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dy = try inputs.tensor(0)
        let shape = try shapeInput(try inputs.tensor(1), "shape")
        let indexTensor = try inputs.tensor(2)
        let indices = try indexValues(indexTensor, "indices")
        guard dy.shape == indexTensor.shape else { throw KernelError("dY \(dy.shape) and indices \(indexTensor.shape) must have the same shape") }
        guard indexTensor.rank == shape.count, !shape.isEmpty else { throw KernelError("indices rank \(indexTensor.rank) must equal the rank of shape \(shape)") }
        let a = try normalizeAxis(axis, rank: shape.count)
        for d in 0..<shape.count where d != a && indexTensor.shape[d] > shape[d] {
            throw KernelError("indices \(indexTensor.shape) exceed shape \(shape) on axis \(d)")
        }
        let outStrides = contiguousStrides(shape)
        let ishape = indexTensor.shape
        // Output offset of index element p: its own position, with axis a replaced by the index.
        var strides = outStrides
        strides[a] = 0
        var walk = Odometer(shape: ishape, strides: [strides])
        var pairs: [(dst: Int, src: Int)] = []
        pairs.reserveCapacity(indices.count)
        for (p, raw) in indices.enumerated() {
            let wrapped = try wrapIndex(raw, shape[a], "indices")
            pairs.append((walk.offsets[0] + wrapped * outStrides[a], p))
            walk.advance()
        }
        return [.tensor(try scatterAdd(dy, shape: shape, pairs: pairs, block: 1))]
    }
}

/// GatherNDGrad(shape, indices: int64 [..., k], update; batch_dims = 0) → dX of `shape`.
/// update.shape == indices.shape[:-1] + shape[batch_dims + k:].
struct GatherNDGradKernel: Kernel {
    let batchDims: Int
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let shape = try shapeInput(try inputs.tensor(0), "shape")
        let indexTensor = try inputs.tensor(1)
        guard indexTensor.dtype == .int64, let indices = indexTensor.intValues() else {
            throw KernelError("indices must be int64, got \(indexTensor.dtype)")
        }
        let update = try inputs.tensor(2)
        let b = batchDims
        guard let k = indexTensor.shape.last, indexTensor.rank >= 1, b >= 0, b < indexTensor.rank,
              b + k <= shape.count, Array(indexTensor.shape[..<b]) == Array(shape[..<b]) else {
            throw KernelError("indices \(indexTensor.shape) with batch_dims \(b) do not fit shape \(shape)")
        }
        let expected = Array(indexTensor.shape.dropLast()) + Array(shape[(b + k)...])
        guard update.shape == expected else { throw KernelError("update \(update.shape) must have shape \(expected)") }
        let batches = Tensor.elementCount(Array(shape[..<b]))
        let tuples = Tensor.elementCount(Array(indexTensor.shape[b..<(indexTensor.rank - 1)]))
        let block = Tensor.elementCount(Array(shape[(b + k)...]))
        let batchSize = Tensor.elementCount(Array(shape[b...]))
        let strides = contiguousStrides(Array(shape[b...]))
        var pairs: [(dst: Int, src: Int)] = []
        pairs.reserveCapacity(batches * tuples)
        for i in 0..<batches {
            for j in 0..<tuples {
                let t = i * tuples + j
                var offset = i * batchSize
                for q in 0..<k { offset += try wrapIndex(indices[t * k + q], shape[b + q], "indices") * strides[q] }
                pairs.append((offset, t * block))
            }
        }
        return [.tensor(try scatterAdd(update, shape: shape, pairs: pairs, block: block))]
    }
}

func registerGatherGradOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    registry.register("GatherGrad", domain: ms, since: 1) { ctx in GatherGradKernel(axis: try ctx.int("axis", default: 0)) }
    registry.register("GatherElementsGrad", domain: ms, since: 1) { ctx in GatherElementsGradKernel(axis: try ctx.int("axis", default: 0)) }
    registry.register("GatherNDGrad", domain: ms, since: 1) { ctx in GatherNDGradKernel(batchDims: try ctx.int("batch_dims", default: 0)) }
}
