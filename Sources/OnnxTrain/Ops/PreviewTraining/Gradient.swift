/// ai.onnx.preview.training Gradient: the gradient of `y` (seeded with ones, i.e. of sum(y)) with
/// respect to each of `xs`, through the part of the node's own graph that computes `y` from
/// `xs` and `zs`. The forward part is compiled once as a subgraph and rerun with the node's
/// inputs; reverse mode then walks it backwards with the rules in `backward`.
func registerPreviewGradientOp(_ registry: OpRegistry) {
    registry.register("Gradient", domain: "ai.onnx.preview.training", since: 1, gradientKernel)
}

/// Gradient (ai.onnx.preview.training), since opset 1.
func gradientKernel(_ ctx: NodeContext) throws -> Kernel {
    guard let xs = try ctx.strings("xs"), let y = try ctx.string("y") else { throw KernelError("attributes 'xs' and 'y' are required") }
    let zs = try ctx.strings("zs") ?? []
    let sources = Set(xs + zs)
    // The nodes between the sources and y, in graph order.
    var producer: [String: Int] = [:]
    for (i, n) in ctx.enclosingNodes.enumerated() { for o in n.outputs where !o.isEmpty { producer[o] = i } }
    var needed = Set<Int>(), stack = [y]
    while let name = stack.popLast() {
        guard !sources.contains(name), let p = producer[name], needed.insert(p).inserted else { continue }
        stack += ctx.enclosingNodes[p].inputs.filter { !$0.isEmpty }
    }
    let nodes = needed.sorted().map { ctx.enclosingNodes[$0] }
    for n in nodes where !differentiable.contains(n.opType) || !n.domain.isEmpty {
        throw KernelError("Gradient cannot differentiate \(n.opType) yet (supported: \(differentiable.sorted().joined(separator: ", ")))")
    }
    var forward = Graph()
    forward.name = "gradient_forward"
    forward.inputs = (xs + zs).map { ValueInfo(name: $0, type: nil) }
    forward.nodes = nodes
    var names: [String] = []
    for n in nodes { for v in n.inputs + n.outputs where !v.isEmpty && !names.contains(v) { names.append(v) } }
    if !names.contains(y) { names.append(y) }
    forward.outputs = names.map { ValueInfo(name: $0, type: nil) }
    let body = try ctx.compileSubgraph(forward)
    return AnyKernel { inputs, context in
        let feeds = try (0..<(xs.count + zs.count)).map { Value.tensor(try inputs.tensor($0)) }
        let results = try body.run(feeds, context)
        var values: [String: Tensor] = [:]
        for (name, v) in zip(names, results) {
            guard let t = v.tensor else { throw KernelError("Gradient needs tensor values, '\(name)' is \(v.summary)") }
            values[name] = t
        }
        guard let yValue = values[y] else { throw KernelError("y '\(y)' was not computed") }
        var grads: [String: [Double]] = [y: [Double](repeating: 1, count: yValue.count)]
        for n in nodes.reversed() {
            guard let out = n.outputs.first, let g = grads[out] else { continue }
            let ins = try n.inputs.map { name -> Tensor in try values[name].orThrow("missing value '\(name)'") }
            for (k, contribution) in try backward(n.opType, g, ins, try values[out].orThrow("missing value '\(out)'")).enumerated() {
                let name = n.inputs[k]
                guard let c = contribution else { continue }
                if var acc = grads[name] {
                    for i in acc.indices { acc[i] += c[i] }
                    grads[name] = acc
                } else {
                    grads[name] = c
                }
            }
        }
        return try xs.enumerated().map { k, name in
            let x = try inputs.tensor(k)
            return .tensor(try Tensor(dtype: x.dtype, shape: x.shape, doubles: grads[name] ?? [Double](repeating: 0, count: x.count)))
        }
    }
}

private let differentiable: Set<String> = ["Add", "Sub", "Mul", "Div", "Neg", "Identity", "Relu", "Exp", "Log", "Sqrt", "Tanh", "Sigmoid", "MatMul"]

/// Input gradients of one node given its output gradient `g` (nil: that input gets none).
private func backward(_ op: String, _ g: [Double], _ inputs: [Tensor], _ output: Tensor) throws -> [[Double]?] {
    let outShape = output.shape
    func operand(_ i: Int) throws -> [Double] {
        // The input broadcast to the output's shape.
        let t = inputs[i]
        let v = try t.doubles()
        return stridedIndices(shape: outShape, strides: Broadcast.strides(t.shape, to: outShape)).map { v[$0] }
    }
    func reduce(_ full: [Double], to i: Int) -> [Double] {
        // Sum a full-shape gradient back over the dimensions input i was broadcast along.
        let shape = inputs[i].shape
        var out = [Double](repeating: 0, count: inputs[i].count)
        let map = stridedIndices(shape: outShape, strides: Broadcast.strides(shape, to: outShape))
        for (k, j) in map.enumerated() { out[j] += full[k] }
        return out
    }
    let y = try output.doubles()
    switch op {
    case "Identity": return [g]
    case "Neg": return [g.map { -$0 }]
    case "Add": return [reduce(g, to: 0), reduce(g, to: 1)]
    case "Sub": return [reduce(g, to: 0), reduce(g.map { -$0 }, to: 1)]
    case "Mul":
        let a = try operand(0), b = try operand(1)
        return [reduce(zip(g, b).map(*), to: 0), reduce(zip(g, a).map(*), to: 1)]
    case "Div":
        let a = try operand(0), b = try operand(1)
        return [reduce(zip(g, b).map { $0 / $1 }, to: 0), reduce(g.indices.map { -g[$0] * a[$0] / (b[$0] * b[$0]) }, to: 1)]
    case "Relu": return [try zip(g, operand(0)).map { $1 > 0 ? $0 : 0 }]
    case "Exp": return [zip(g, y).map(*)]
    case "Log": return [try zip(g, operand(0)).map { $0 / $1 }]
    case "Sqrt": return [zip(g, y).map { $0 / (2 * $1) }]
    case "Tanh": return [zip(g, y).map { $0 * (1 - $1 * $1) }]
    case "Sigmoid": return [zip(g, y).map { $0 * $1 * (1 - $1) }]
    case "MatMul":
        let a = inputs[0], b = inputs[1]
        guard a.rank == 2, b.rank == 2 else { throw KernelError("Gradient handles 2-D MatMul only") }
        let (m, k, n) = (a.shape[0], a.shape[1], b.shape[1])
        let av = try a.doubles(), bv = try b.doubles()
        var ga = [Double](repeating: 0, count: m * k), gb = [Double](repeating: 0, count: k * n)
        for i in 0..<m { for j in 0..<n { let gij = g[i * n + j]; for p in 0..<k { ga[i * k + p] += gij * bv[p * n + j]; gb[p * n + j] += av[i * k + p] * gij } } }
        return [ga, gb]
    default: throw KernelError("Gradient cannot differentiate \(op)")
    }
}
