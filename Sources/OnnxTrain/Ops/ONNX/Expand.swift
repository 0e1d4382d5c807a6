/// Expand and Tile: the input repeated to a larger shape (broadcast, or whole copies).

/// Expand, since opset 8.
func expandKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let shape = try inputs.tensor(1).ints("shape")
        let out = try Broadcast.shape(x.shape, shape)
        try checkShape(out, "output")
        return [.tensor(try stridedCopy(x, shape: out, strides: Broadcast.strides(x.shape, to: out)))]
    }
}

/// Tile, since opset 6.
func tileKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let repeats = try inputs.tensor(1).ints("repeats")
        guard repeats.count == x.rank, repeats.allSatisfy({ $0 >= 0 }) else {
            throw KernelError("repeats \(repeats) must hold one nonnegative count per dimension of \(x.shape)")
        }
        var out: [Int] = []
        for (d, r) in zip(x.shape, repeats) {
            let (n, overflow) = d.multipliedReportingOverflow(by: r)
            guard !overflow else { throw KernelError("repeats \(repeats) overflow the output size") }
            out.append(n)
        }
        try checkShape(out, "output")
        let maps = (0..<x.rank).map { d in (0..<out[d]).map { $0 % x.shape[d] } }
        return [.tensor(try take(x, combineAxisMaps(maps, inputShape: x.shape), shape: out))]
    }
}

/// The gradient rule of Expand: dY summed over the broadcast axes.
func expandGradient(_ g: GradientContext) throws -> [String?] {
    [g.needs(0) ? g.reduced(try g.requiredDY(), toInput: 0) : nil, nil]
}

/// The gradient rule of Tile.
func tileGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil] }
    // Y = X tiled r_k times along k: view dY as [r_0, d_0, r_1, d_1, ...] and sum the r_k.
    guard let shape = g.staticShape(g.input(0)), let repeats = g.constantInput(1)?.intValues(), repeats.count == shape.count else {
        throw GradientError("Tile is differentiated for a static input shape and constant repeats")
    }
    var split: [Int] = []
    for (d, r) in zip(shape, repeats) { split += [r, d] }
    let view = g.op("Reshape", [try g.requiredDY(), g.ints(split, name: "tiles")])
    let summed = g.reduceSum(view, axes: (0..<shape.count).map { 2 * $0 }, keepdims: false)
    return [summed, nil]
}
