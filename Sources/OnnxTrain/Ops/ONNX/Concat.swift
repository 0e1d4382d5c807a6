/// Concat: the inputs' blocks laid end to end along one axis.

/// Concat, since opset 1.
func concatKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis") ?? (ctx.opset < 4 ? 1 : nil)
    guard let axis else { throw KernelError("attribute 'axis' is required") }
    return AnyKernel { inputs, _ in
        let parts = try (0..<inputs.count).map { try inputs.tensor($0) }
        guard let first = parts.first else { throw KernelError("Concat needs at least one input") }
        let a = try normalizeAxis(axis, rank: first.rank)
        return [.tensor(try concatenate(parts, axis: a, dtype: first.dtype))]
    }
}

/// The gradient rule of Concat.
func concatGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let n = g.node.inputs.count
    let rawAxis = g.node.int("axis") ?? 0
    guard let r = g.rank(g.output(0)) ?? g.rank(g.input(0)) ?? (rawAxis >= 0 ? rawAxis + 1 : nil) else {
        throw GradientError("Concat with a negative axis needs the rank of its inputs")
    }
    let axis = TypeInference.normalize(rawAxis, r, clamp: false)
    let sizes = g.node.inputs.map { name -> Int? in
        guard let s = g.shapeInfo(name), axis < s.count, case .value(let v) = s[axis] else { return nil }
        return v
    }
    let split: String
    if sizes.allSatisfy({ $0 != nil }) {
        split = g.ints(sizes.map { $0! }, name: "split")
    } else {
        // Each input's length along the axis, at run time.
        let lengths = g.node.inputs.map { name in
            g.op("Gather", [g.shape(of: name), g.ints([axis], name: "axis")], attributes: ["axis": .int(0)])
        }
        split = g.op("Concat", lengths, attributes: ["axis": .int(0)])
    }
    let parts = g.ms("SplitTraining", [dY, split], outputs: n, attributes: ["axis": .int(axis)])
    return (0..<n).map { g.needs($0) ? parts[$0] : nil }
}
