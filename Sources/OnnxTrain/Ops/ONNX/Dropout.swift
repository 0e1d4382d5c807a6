/// Dropout: identity in inference; in training (opset 12+ `training_mode` input) each element is
/// kept with probability 1 - ratio and scaled by 1 / (1 - ratio). The mask output is bool
/// (opset 10+) or of X's type (opsets 7-9).
struct DropoutKernel: Kernel {
    let since: Int
    let ratioAttribute: Double
    let seed: UInt64?
    let wantMask: Bool

    init(_ ctx: NodeContext) throws {
        since = ctx.sinceVersion
        ratioAttribute = Double(try ctx.float("ratio", default: 0.5))
        seed = try ctx.int("seed").map { UInt64(bitPattern: Int64($0)) }
        wantMask = ctx.hasOutput(1)
    }

    struct Op: ElementOperation {
        let x: Tensor, keep: [Bool], scale: Double
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            var y = x
            let s = T(fromDouble: scale)
            try y.withUnsafeMutableBufferPointer(as: T.self) { p in for i in p.indices { p[i] = keep[i] ? p[i] * s : 0 } }
            return y
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        var ratio = ratioAttribute, training = false
        if since >= 12 {
            if let r = try inputs.optionalTensor(1) {
                guard let v = r.scalarDouble() else { throw KernelError("ratio must be a float scalar") }
                ratio = v
            }
            if let t = try inputs.optionalTensor(2) {
                guard t.dtype == .bool, let v = t.scalarDouble() else { throw KernelError("training_mode must be a bool scalar") }
                training = v != 0
            }
        }
        guard ratio >= 0 && ratio < 1 || !training else { throw KernelError("ratio must be in [0, 1), got \(ratio)") }
        guard training && ratio > 0 else {
            let mask: Value? = wantMask ? .tensor(maskTensor(Array(repeating: true, count: x.count), like: x)) : nil
            return [.tensor(x), mask]
        }
        var keep = [Bool](repeating: true, count: x.count)
        context.state.withRandom(seed: seed) { rng in
            for i in keep.indices { keep[i] = rng.nextDouble() >= ratio }
        }
        let scale = 1 / (1 - ratio)
        let y = try withFloatCompute([x]) { t in [try dispatch(t[0]!.dtype, Op(x: t[0]!, keep: keep, scale: scale))] }
        return [y[0].map(Value.tensor), wantMask ? .tensor(maskTensor(keep, like: x)) : nil]
    }

    private func maskTensor(_ keep: [Bool], like x: Tensor) -> Tensor {
        if since >= 10 { return Tensor(shape: x.shape, scalars: keep) }
        return floatTensor(x.dtype, shape: x.shape, keep.map { $0 ? 1 : 0 })
    }
}

func registerDropoutOps(_ registry: OpRegistry) {
    registry.register("Dropout", since: [1, 7, 10, 12, 13, 22], dropoutKernel)
    registry.registerGradient("Dropout", dropoutGradient)
}

/// Dropout, since opset 1, 7, 10, 12, 13, 22.
func dropoutKernel(_ ctx: NodeContext) throws -> Kernel {
    try DropoutKernel(ctx)
}

/// The gradient rule of Dropout.
func dropoutGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let dY = try g.requiredDY()
    let trainingMode: Bool? = g.opset >= 12 ? (g.hasInput(2) ? g.constantInput(2)?.scalarDouble().map { $0 != 0 } : false) : (g.node.int("is_test") ?? 0) == 0
    if trainingMode == false { return [dY] }
    let mask = g.forwardOutput(1, info: TensorInfo(dtype: .bool, shape: g.shapeInfo(g.input(0))))
    var inputs = [dY, mask]
    if g.opset >= 12 {
        inputs.append(g.hasInput(1) ? g.input(1) : "")
        if g.hasInput(2) { inputs.append(g.input(2)) }
        while inputs.last == "" { inputs.removeLast() }
    } else {
        inputs.append(try g.scalar(Double(g.node.float("ratio") ?? 0.5), like: g.input(0), name: "ratio"))
    }
    return [g.ms("DropoutGrad", inputs)[0]]
}
