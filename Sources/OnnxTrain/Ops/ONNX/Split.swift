/// Split: pieces of one axis, sizes from the input, the attribute, or equal chunks.

/// Split, since opset 1.
func splitKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis", default: 0)
    let attrSplit = try ctx.ints("split")
    let numOutputs = try ctx.int("num_outputs")
    let outputs = ctx.outputCount
    if let n = numOutputs, n != outputs { throw KernelError("num_outputs \(n) differs from the node's \(outputs) outputs") }
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let a = try normalizeAxis(axis, rank: x.rank)
        let dim = x.shape[a]
        var sizes: [Int]
        if let s = try inputs.optionalTensor(1)?.ints("split") ?? attrSplit {
            sizes = s
        } else {
            let n = numOutputs ?? outputs
            guard n > 0 else { throw KernelError("nothing to split into") }
            let chunk = (dim + n - 1) / n
            sizes = (0..<n).map { max(0, min(chunk, dim - $0 * chunk)) }
        }
        return try splitTensor(x, axis: a, sizes: sizes).map { .tensor($0) }
    }
}

/// The gradient rule of Split.
func splitGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil] }
    let x = g.input(0)
    let rawAxis = g.node.int("axis") ?? 0
    guard let r = g.rank(x) ?? (rawAxis >= 0 ? rawAxis + 1 : nil) else { throw GradientError("Split with a negative axis needs the rank of its input") }
    let axis = TypeInference.normalize(rawAxis, r, clamp: false)
    // Outputs without a gradient contribute zeros of their own shape.
    var parts: [String] = []
    for (i, out) in g.node.outputs.enumerated() where !out.isEmpty {
        if let d = g.dY(i) { parts.append(d); continue }
        let zero = try GradientContext.scalarTensor(0, dtype: try g.floatType(x), shape: [1])
        parts.append(g.op("ConstantOfShape", [g.shape(of: out)], attributes: ["value": .tensor(zero)]))
    }
    return [g.op("Concat", parts, attributes: ["axis": .int(axis)]), nil]
}
