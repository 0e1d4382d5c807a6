/// Indexed reads and writes: Gather, GatherElements, GatherND, Scatter, ScatterElements,
/// ScatterND, TensorScatter, Unique. Every index is checked against its dimension.
func registerGatherScatterOps(_ registry: OpRegistry) {
    registry.register("Gather", since: 1, gatherKernel)
    registry.register("GatherElements", since: 11, gatherElementsKernel)
    registry.register("GatherND", since: 11, gatherNDKernel)
    registry.register("Scatter", since: 9, scatterElementsKernel)
    registry.register("ScatterElements", since: 11, scatterElementsKernel)
    registry.register("ScatterND", since: 11, scatterNDKernel)
    registry.register("TensorScatter", since: 24, tensorScatterKernel)
    registry.register("Unique", since: 11, uniqueKernel)

    // Gradient rules (GradientContext):
    registry.registerGradient("Gather", gatherGradient)
    registry.registerGradient("GatherElements", gatherElementsGradient)
    registry.registerGradient("GatherND", gatherNDGradient)
    registry.registerGradient("ScatterElements", scatterElementsGradient)
    registry.registerGradient("ScatterND", scatterNDGradient)
}

/// Gather, since opset 1.
func gatherKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis", default: 0)
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0), indices = try inputs.tensor(1)
        guard x.rank >= 1 else { throw KernelError("data must have rank >= 1, got a scalar") }
        let a = try normalizeAxis(axis, rank: x.rank)
        let n = x.shape[a]
        let idx = try indices.ints("indices").map { try checkedIndex($0, n) }
        let outer = x.shape[..<a].reduce(1, *), inner = x.shape[(a + 1)...].reduce(1, *)
        var starts = [Int]()
        starts.reserveCapacity(outer * idx.count)
        for o in 0..<outer { for i in idx { starts.append((o * n + i) * inner) } }
        let out = Array(x.shape[..<a]) + indices.shape + Array(x.shape[(a + 1)...])
        return [.tensor(try gatherBlocks(x, starts: starts, block: inner, shape: out))]
    }
}

/// GatherElements, since opset 11.
func gatherElementsKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis", default: 0)
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0), indices = try inputs.tensor(1)
        guard x.rank == indices.rank, x.rank >= 1 else { throw KernelError("indices rank \(indices.rank) differs from data rank \(x.rank) (both must be >= 1)") }
        let a = try normalizeAxis(axis, rank: x.rank)
        let map = try elementTargets(dataShape: x.shape, indices: indices, axis: a)
        return [.tensor(try take(x, map, shape: indices.shape))]
    }
}

/// GatherND, since opset 11.
func gatherNDKernel(_ ctx: NodeContext) throws -> Kernel {
    let batchDims = try ctx.int("batch_dims", default: 0)
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0), indices = try inputs.tensor(1)
        let (targets, sliceShape, outShape) = try ndTargets(dataShape: x.shape, indices: indices, batchDims: batchDims)
        return [.tensor(try gatherBlocks(x, starts: targets, block: sliceShape.reduce(1, *), shape: outShape))]
    }
}

/// ScatterND, since opset 11.
func scatterNDKernel(_ ctx: NodeContext) throws -> Kernel {
    let reduction = try ctx.string("reduction", default: "none")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0), indices = try inputs.tensor(1), updates = try inputs.tensor(2)
        let (targets, sliceShape, outShape) = try ndTargets(dataShape: x.shape, indices: indices, batchDims: 0)
        guard updates.shape == outShape else { throw KernelError("updates \(updates.shape) must have shape \(outShape)") }
        return [.tensor(try scatter(x, updates, targets: targets, sliceSize: sliceShape.reduce(1, *), reduction: reduction))]
    }
}

/// TensorScatter, since opset 24.
func tensorScatterKernel(_ ctx: NodeContext) throws -> Kernel {
    let circular = try ctx.string("mode", default: "linear") == "circular"
    let axis = try ctx.int("axis", default: -2)
    return AnyKernel { inputs, _ in
        let cache = try inputs.tensor(0), update = try inputs.tensor(1)
        let a = try normalizeAxis(axis, rank: cache.rank)
        guard a > 0, update.rank == cache.rank, (0..<cache.rank).allSatisfy({ $0 == a || update.shape[$0] == cache.shape[$0] }) else {
            throw KernelError("update \(update.shape) does not fit cache \(cache.shape) along axis \(axis)")
        }
        let batch = cache.shape[0]
        let starts = try inputs.optionalTensor(2)?.ints("write_indices") ?? [Int](repeating: 0, count: batch)
        guard starts.count == batch else { throw KernelError("write_indices must hold one index per batch entry") }
        let maxLen = cache.shape[a], len = update.shape[a]
        let inner = cache.shape[(a + 1)...].reduce(1, *)
        let middle = cache.shape[1..<a].reduce(1, *)
        var targets: [Int] = []
        for b in 0..<batch {
            for m in 0..<middle {
                for s in 0..<len {
                    var pos = starts[b] + s
                    if circular { pos = ((pos % maxLen) + maxLen) % maxLen }
                    guard pos >= 0 && pos < maxLen else { throw KernelError("write index \(starts[b]) + \(len) overflows axis length \(maxLen)") }
                    targets.append(((b * middle + m) * maxLen + pos) * inner)
                }
            }
        }
        return [.tensor(try scatter(cache, update, targets: targets, sliceSize: inner, reduction: "none"))]
    }
}

/// An index checked against dimension `n` (negative counts from the end).
@inline(__always)
func checkedIndex(_ i: Int, _ n: Int) throws -> Int {
    let j = i < 0 ? i + n : i
    guard j >= 0 && j < n else { throw KernelError("index \(i) is out of range for dimension \(n)") }
    return j
}

/// For GatherElements/ScatterElements: the flat data index each element of `indices` names.
func elementTargets(dataShape: [Int], indices: Tensor, axis: Int) throws -> [Int] {
    let idx = try indices.ints("indices")
    let rank = dataShape.count
    let dataStrides = contiguousStrides(dataShape)
    let idxStrides = contiguousStrides(indices.shape)
    for d in 0..<rank where d != axis && indices.shape[d] > dataShape[d] {
        throw KernelError("indices shape \(indices.shape) exceeds data shape \(dataShape) on axis \(d)")
    }
    var result = [Int](repeating: 0, count: idx.count)
    for i in 0..<idx.count {
        var flat = 0
        for d in 0..<rank {
            let c = (i / idxStrides[d]) % indices.shape[d]
            flat += (d == axis ? try checkedIndex(idx[i], dataShape[axis]) : c) * dataStrides[d]
        }
        result[i] = flat
    }
    return result
}

/// For GatherND/ScatterND: the flat start of each addressed slice, the slice shape, and the
/// gathered output shape (indices.shape[:-1] + slice shape, with batch dims in front).
func ndTargets(dataShape: [Int], indices: Tensor, batchDims b: Int) throws -> ([Int], [Int], [Int]) {
    guard indices.rank >= 1, let k = indices.shape.last else { throw KernelError("indices must have rank 1 or more") }
    guard b >= 0, b < indices.rank, b + k <= dataShape.count, Array(dataShape[..<b]) == Array(indices.shape[..<b]) else {
        throw KernelError("indices \(indices.shape) with batch_dims \(b) do not fit data \(dataShape)")
    }
    let idx = try indices.ints("indices")
    let sliceShape = Array(dataShape[(b + k)...])
    let dataStrides = contiguousStrides(dataShape)
    let batch = dataShape[..<b].reduce(1, *)
    let batchStride = b == 0 ? 0 : dataStrides[b - 1]
    let tuples = idx.count / max(k, 1)
    let perBatch = indices.shape[b..<(indices.rank - 1)].reduce(1, *)
    var targets = [Int](repeating: 0, count: k == 0 ? batch * perBatch : tuples)
    for t in 0..<targets.count {
        var flat = (t / max(perBatch, 1)) * batchStride
        for j in 0..<k { flat += try checkedIndex(idx[t * k + j], dataShape[b + j]) * dataStrides[b + j] }
        targets[t] = flat
    }
    let outShape = Array(indices.shape[..<(indices.rank - 1)]) + sliceShape
    return (targets, sliceShape, outShape)
}

/// Writes `updates` (slices of `sliceSize` elements) at flat `targets` of a copy of `x`,
/// combining with the existing element by `reduction` (none, add, mul, max, min).
func scatter(_ x: Tensor, _ updates: Tensor, targets: [Int], sliceSize: Int, reduction: String) throws -> Tensor {
    guard x.dtype == updates.dtype else { throw KernelError("updates are \(updates.dtype), data is \(x.dtype)") }
    if reduction == "none" {
        // One index map over data followed by updates.
        var map = Array(0..<x.count)
        for (t, target) in targets.enumerated() {
            for j in 0..<sliceSize { map[target + j] = x.count + t * sliceSize + j }
        }
        let joined = try concatenate([x.reshaped([x.count]), updates.reshaped([updates.count])], axis: 0, dtype: x.dtype)
        return try take(joined, map, shape: x.shape)
    }
    let combine: (Double, Double) -> Double
    switch reduction {
    case "add": combine = { $0 + $1 }
    case "mul": combine = { $0 * $1 }
    case "max": combine = { max($0, $1) }
    case "min": combine = { min($0, $1) }
    default: throw KernelError("unknown reduction '\(reduction)'")
    }
    var values = try x.doubles()
    let u = try updates.doubles()
    for (t, target) in targets.enumerated() {
        for j in 0..<sliceSize { values[target + j] = combine(values[target + j], u[t * sliceSize + j]) }
    }
    return try Tensor(dtype: x.dtype, shape: x.shape, doubles: values)
}

/// The gradient rule of Gather.
func gatherGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil] }
    return [g.ms("GatherGrad", [g.shape(of: g.input(0)), g.input(1), try g.requiredDY()],
                 attributes: ["axis": .int(g.node.int("axis") ?? 0)])[0], nil]
}

/// The gradient rule of GatherElements.
func gatherElementsGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil] }
    return [g.ms("GatherElementsGrad", [try g.requiredDY(), g.shape(of: g.input(0)), g.input(1)],
                 attributes: ["axis": .int(g.node.int("axis") ?? 0)])[0], nil]
}

/// The gradient rule of GatherND.
func gatherNDGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil] }
    var indices = g.input(1)
    if g.dtype(indices) != .int64 { indices = g.op("Cast", [indices], attributes: ["to": .int(Int(DType.int64.rawValue))]) }
    return [g.ms("GatherNDGrad", [g.shape(of: g.input(0)), indices, try g.requiredDY()],
                 attributes: ["batch_dims": .int(g.node.int("batch_dims") ?? 0)])[0], nil]
}

/// The gradient rule of ScatterElements.
func scatterElementsGradient(_ g: GradientContext) throws -> [String?] {
    if let r = g.node.string("reduction"), r != "none" { throw GradientError("ScatterElements with reduction '\(r)' is not supported") }
    let dY = try g.requiredDY()
    let axis: [String: Attribute] = ["axis": .int(g.node.int("axis") ?? 0)]
    var dData: String?, dUpdates: String?
    if g.needs(0) {
        // The scattered positions were overwritten: their gradient does not reach data.
        let zeros = g.op("ConstantOfShape", [g.shape(of: g.input(2))],
                         attributes: ["value": .tensor(try GradientContext.scalarTensor(0, dtype: try g.floatType(g.input(0)), shape: [1]))])
        dData = g.op("ScatterElements", [dY, g.input(1), zeros], attributes: axis)
    }
    if g.needs(2) { dUpdates = g.op("GatherElements", [dY, g.input(1)], attributes: axis) }
    return [dData, nil, dUpdates]
}

/// The gradient rule of ScatterND.
func scatterNDGradient(_ g: GradientContext) throws -> [String?] {
    if let r = g.node.string("reduction"), r != "none" { throw GradientError("ScatterND with reduction '\(r)' is not supported") }
    let dY = try g.requiredDY()
    var dData: String?, dUpdates: String?
    if g.needs(0) {
        let zeros = g.op("ConstantOfShape", [g.shape(of: g.input(2))],
                         attributes: ["value": .tensor(try GradientContext.scalarTensor(0, dtype: try g.floatType(g.input(0)), shape: [1]))])
        dData = g.op("ScatterND", [dY, g.input(1), zeros])
    }
    if g.needs(2) { dUpdates = g.op("GatherND", [dY, g.input(1)]) }
    return [dData, nil, dUpdates]
}

/// ScatterElements (and Scatter, its pre-11 name): updates written, or reduced, at the indices'
/// positions along `axis`.
func scatterElementsKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis", default: 0)
    let reduction = try ctx.string("reduction", default: "none")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0), indices = try inputs.tensor(1), updates = try inputs.tensor(2)
        guard x.rank == indices.rank, x.rank >= 1, indices.shape == updates.shape else {
            throw KernelError("indices \(indices.shape) and updates \(updates.shape) must match each other and data's rank")
        }
        let a = try normalizeAxis(axis, rank: x.rank)
        let targets = try elementTargets(dataShape: x.shape, indices: indices, axis: a)
        return [.tensor(try scatter(x, updates, targets: targets, sliceSize: 1, reduction: reduction))]
    }
}
