/// Trilu: the upper or lower triangle of the last two axes.

/// Trilu, since opset 14.
func triluKernel(_ ctx: NodeContext) throws -> Kernel {
    let upper = try ctx.int("upper", default: 1) != 0
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.rank >= 2 else { throw KernelError("input must have rank 2 or more, got \(x.shape)") }
        let k = try inputs.optionalTensor(1)?.ints("k").first ?? 0
        let rows = x.shape[x.rank - 2], cols = x.shape[x.rank - 1]
        var idx = [Int](repeating: 0, count: x.count)
        for i in 0..<x.count {
            let c = i % cols, r = (i / cols) % rows
            let keep = upper ? c - r >= k : c - r <= k
            idx[i] = keep ? i : -1
        }
        return [.tensor(try take(x, idx, shape: x.shape))]
    }
}

/// The gradient rule of Trilu.
func triluGradient(_ g: GradientContext) throws -> [String?] {
    // The same triangle of the gradient survives.
    var grads: [String?] = Array(repeating: nil, count: g.node.inputs.count)
    if g.needs(0) {
        var inputs = [try g.requiredDY()]
        if g.hasInput(1) { inputs.append(g.input(1)) }
        grads[0] = g.op("Trilu", inputs, attributes: ["upper": .int(g.node.int("upper") ?? 1)])
    }
    return grads
}
