/// OneHot: on_value at each index along a new axis, off_value elsewhere.

/// OneHot, since opset 9.
func oneHotKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis", default: -1)
    return AnyKernel { inputs, _ in
        let indices = try inputs.tensor(0).doubles()
        let indexShape = try inputs.tensor(0).shape
        guard let depthValue = try inputs.tensor(1).doubles().first else { throw KernelError("depth must be a scalar") }
        let depth = try checkedInt(depthValue, "depth")
        let values = try inputs.tensor(2)
        guard values.count == 2, depth >= 0 else { throw KernelError("values must hold [off, on] and depth be nonnegative") }
        let rank = indexShape.count + 1
        let a = try normalizeAxis(axis, rank: rank)
        var out = indexShape
        out.insert(depth, at: a)
        try checkShape(out, "output")
        let outer = indexShape[..<a].reduce(1, *), inner = indexShape[a...].reduce(1, *)
        var idx = [Int](repeating: 0, count: outer * depth * inner)
        for o in 0..<outer {
            for i in 0..<inner {
                var hot = try checkedInt(indices[o * inner + i], "index")
                if hot < 0 { hot += depth }
                if hot >= 0 && hot < depth { idx[(o * depth + hot) * inner + i] = 1 }
            }
        }
        return [.tensor(try take(values.reshaped([2]), idx, shape: out))]
    }
}
