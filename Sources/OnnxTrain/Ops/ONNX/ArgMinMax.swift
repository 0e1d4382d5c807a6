/// ArgMax and ArgMin along one axis, with keepdims and select_last_index; int64 output.
struct ArgReduction: NumericOperation {
    let x: Tensor, axis: Int, largest: Bool, selectLast: Bool

    func numeric<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        // x: [outer, n, inner] -> out: [outer, inner]
        let n = x.shape[axis]
        let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *)
        guard n > 0 else { throw KernelError("cannot take the arg of an empty axis \(axis) in shape \(x.shape)") }
        var out = Tensor(uninitialized: .int64, shape: [outer * inner])
        try x.withUnsafeBufferPointer(as: T.self) { px in
            out.uncheckedMutableBufferPointer(as: Int64.self) { po in
                for o in 0..<outer {
                    for i in 0..<inner {
                        let base = o * n * inner + i
                        var best = px[base], bestIndex = 0
                        for k in 1..<max(n, 1) {
                            let v = px[base + k * inner]
                            let better = largest ? (selectLast ? v >= best : v > best) : (selectLast ? v <= best : v < best)
                            if better { best = v; bestIndex = k }
                        }
                        po[o * inner + i] = Int64(bestIndex)
                    }
                }
            }
        }
        return out
    }
}

/// The ArgMax (`largest`) or ArgMin kernel builder: axis, keepdims and select_last_index read once.
func argReductionKernel(largest: Bool) -> KernelFactory {
    { ctx in
        let axisAttribute = try ctx.int("axis", default: 0)
        let keepDims = try ctx.int("keepdims", default: 1) != 0
        let selectLast = try ctx.int("select_last_index", default: 0) != 0
        return AnyKernel { inputs, _ in
            let x = try inputs.tensor(0)
            guard x.rank > 0 else { throw KernelError("input must have rank 1 or more") }
            let axis = try normalizeAxis(axisAttribute, rank: x.rank)
            let wide = x.isHalf ? x.widenedToFloat() : x
            let flat = try dispatch(wide.dtype, ArgReduction(x: wide, axis: axis, largest: largest, selectLast: selectLast))
            var shape = x.shape
            if keepDims { shape[axis] = 1 } else { shape.remove(at: axis) }
            return [.tensor(flat.reshaped(shape))]
        }
    }
}

func registerArgMinMaxOps(_ registry: OpRegistry) {
    registry.register("ArgMax", since: [1, 11, 12, 13], argReductionKernel(largest: true))
    registry.register("ArgMin", since: [1, 11, 12, 13], argReductionKernel(largest: false))
}
