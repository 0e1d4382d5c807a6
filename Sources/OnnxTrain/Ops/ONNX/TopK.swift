/// TopK: the k largest (or smallest) elements along an axis and their int64 indices; equal
/// values keep the lower index first.
struct TopKOperation: NumericOperation {
    let x: Tensor, k: Int, axis: Int, largest: Bool

    func numeric<T: NumericElement>(_ type: T.Type) throws -> (Tensor, Tensor) {
        // x: [outer, n, inner] -> values, indices: [outer, k, inner]
        let n = x.shape[axis]
        let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *)
        var shape = x.shape
        shape[axis] = k
        var values = Tensor(uninitialized: T.dtype, shape: shape)
        var indices = Tensor(uninitialized: .int64, shape: shape)
        let largest = self.largest, k = self.k
        var order = [Int](repeating: 0, count: n)
        var column = [T](repeating: 0 as T, count: n)
        try x.withUnsafeBufferPointer(as: T.self) { px in
            values.uncheckedMutableBufferPointer(as: T.self) { pv in
                indices.uncheckedMutableBufferPointer(as: Int64.self) { pi in
                    for o in 0..<outer {
                        for i in 0..<inner {
                            for j in 0..<n { column[j] = px[(o * n + j) * inner + i]; order[j] = j }
                            // NaN sorts as the largest value, as numpy and onnxruntime order it.
                            order.sort { a, b in
                                let va = column[a], vb = column[b]
                                if va == vb || (va.isNaNValue && vb.isNaNValue) { return a < b }
                                if va.isNaNValue { return largest }
                                if vb.isNaNValue { return !largest }
                                return largest ? va > vb : va < vb
                            }
                            for j in 0..<k {
                                let at = (o * k + j) * inner + i
                                pv[at] = column[order[j]]
                                pi[at] = Int64(order[j])
                            }
                        }
                    }
                }
            }
        }
        return (values, indices)
    }
}

func topK(_ x: Tensor, k: Int, axis axisAttribute: Int, largest: Bool) throws -> [Value?] {
    guard x.rank > 0 else { throw KernelError("input must have rank 1 or more") }
    let axis = try normalizeAxis(axisAttribute, rank: x.rank)
    guard k >= 0 && k <= x.shape[axis] else {
        throw KernelError("k = \(k) is out of range for axis \(axis) of shape \(x.shape)")
    }
    let wide = x.isHalf ? x.widenedToFloat() : x
    var (values, indices) = try dispatch(wide.dtype, TopKOperation(x: wide, k: k, axis: axis, largest: largest))
    if x.isHalf { values = values.narrowed(to: x.dtype) }
    return [.tensor(values), .tensor(indices)]
}

func registerTopKOps(_ registry: OpRegistry) {
    registry.register("TopK", since: 1, topKKernel)
    registry.register("TopK", since: [10, 11, 24], topK2Kernel)
    registry.registerGradient("TopK", topKGradient)
}

/// TopK, since opset 1.
func topKKernel(_ ctx: NodeContext) throws -> Kernel {
    let k = try ctx.requiredInt("k"), axis = try ctx.int("axis", default: -1)
    return AnyKernel { inputs, _ in try topK(try inputs.tensor(0), k: k, axis: axis, largest: true) }
}

/// TopK, since opset 10, 11, 24.
func topK2Kernel(_ ctx: NodeContext) throws -> Kernel {
    let v = ctx.sinceVersion
    let axis = try ctx.int("axis", default: -1)
    let largest = v < 11 ? true : try ctx.int("largest", default: 1) != 0
    // sorted = 0 leaves the order unspecified; sorted output satisfies it.
    return AnyKernel { inputs, _ in
        let kTensor = try inputs.tensor(1)
        guard let ks = kTensor.intValues(), ks.count == 1 else {
            throw KernelError("K must be a one-element integer tensor, got \(kTensor)")
        }
        return try topK(try inputs.tensor(0), k: ks[0], axis: axis, largest: largest)
    }
}

/// The gradient rule of TopK.
func topKGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0), let dY = g.dY(0) else { return [nil, nil] }
    let indices = g.forwardOutput(1)
    return [g.ms("GatherElementsGrad", [dY, g.shape(of: g.input(0)), indices],
                 attributes: ["axis": .int(g.node.int("axis") ?? -1)])[0], nil]
}
