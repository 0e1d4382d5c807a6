import Foundation

/// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss over [N, C, d1, ...] inputs with
/// targets [N, d1, ...], optional class weights [C], ignore_index and reduction none/sum/mean;
/// com.microsoft SoftmaxCrossEntropyLossInternal's forward is the same kernel (crossEntropyLoss).

/// A loss's `reduction` attribute.
enum LossReduction: String {
    case none, sum, mean
    init(_ text: String, allowNone: Bool = true) throws {
        guard let r = LossReduction(rawValue: text), allowNone || r != .none else {
            throw KernelError("reduction '\(text)' is not one of \(allowNone ? "none, " : "")sum, mean")
        }
        self = r
    }
    /// The node's `reduction` (default mean).
    init(_ ctx: NodeContext, allowNone: Bool = true) throws {
        try self.init(try ctx.string("reduction", default: "mean"), allowNone: allowNone)
    }
}

/// loss[n, d] = -logProb[n, t, d] · w[t] (0 where t == ignoreIndex), then reduced; mean divides
/// by the summed weights of the targets that count.
func nllLoss<T: FloatElement>(_ logProb: Tensor, targets: [Int], weights: [Double]?, ignoreIndex: Int?,
                               reduction: LossReduction, _ type: T.Type) throws -> Tensor {
    guard logProb.rank >= 2 else { throw KernelError("input must be [N, C, ...], got \(logProb.shape)") }
    let n = logProb.shape[0], c = logProb.shape[1], inner = Tensor.elementCount(Array(logProb.shape.dropFirst(2)))
    guard targets.count == n * inner else { throw KernelError("target holds \(targets.count) values, \(n * inner) expected for input \(logProb.shape)") }
    if let weights, weights.count != c { throw KernelError("weight has \(weights.count) values, \(c) classes expected") }
    for (k, t) in targets.enumerated() where t != ignoreIndex && (t < 0 || t >= c) {
        throw KernelError("target \(t) at \(k) is out of range for \(c) classes")
    }
    var losses = [Double](repeating: 0, count: n * inner)
    var weightSum = 0.0
    try logProb.withUnsafeBufferPointer(as: T.self) { p in
        for b in 0..<n {
            for i in 0..<inner {
                let t = targets[b * inner + i]
                if t == ignoreIndex { continue }
                let w = weights?[t] ?? 1
                losses[b * inner + i] = -p[(b * c + t) * inner + i].doubleValue * w
                weightSum += w
            }
        }
    }
    switch reduction {
    case .none: return floatTensor(T.dtype, shape: [n] + Array(logProb.shape.dropFirst(2)), losses)
    case .sum: return floatTensor(T.dtype, shape: [], [losses.reduce(0, +)])
    case .mean: return floatTensor(T.dtype, shape: [], [weightSum == 0 ? 0 : losses.reduce(0, +) / weightSum])
    }
}

/// log_softmax over axis 1 of [N, C, d...] in T (the one `softmax` kernel).
func logSoftmaxChannels<T: FloatElement>(_ x: Tensor, _ type: T.Type) -> Tensor {
    let n = x.shape[0], c = x.shape[1], inner = Tensor.elementCount(Array(x.shape.dropFirst(2)))
    var y = Tensor(uninitialized: T.dtype, shape: x.shape)
    x.uncheckedBufferPointer(as: T.self) { px in
        y.uncheckedMutableBufferPointer(as: T.self) { py in
            guard let px = px.baseAddress, let py = py.baseAddress else { return }
            softmax(px, py, outer: n, n: c, inner: inner, log: true)
        }
    }
    return y
}

struct LossKernel: Kernel {
    let softmax: Bool
    let reduction: LossReduction
    let ignoreIndex: Int?

    init(_ ctx: NodeContext, softmax: Bool) throws {
        self.softmax = softmax
        reduction = try LossReduction(ctx)
        ignoreIndex = try ctx.int("ignore_index")
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        guard let targets = try inputs.tensor(1).intValues() else { throw KernelError("target must be an integer tensor") }
        let weights = try inputs.optionalTensor(2).map { w in
            try channelValues(w, count: w.count, default: 1, name: "weight")
        }
        return try crossEntropyLoss(x, targets: targets, weights: weights, ignoreIndex: ignoreIndex, reduction: reduction,
                                    softmax: softmax).map(Value.tensor)
    }
}

/// [loss] of log-probabilities `x` [N, C, d...], or [loss, log_prob] with log_prob =
/// log_softmax(x) over axis 1 when `softmax`: computed in x's float type (float32 for the half
/// types, as onnxruntime does), log_prob by the one `softmax` kernel, the losses summed in Double.
func crossEntropyLoss(_ x: Tensor, targets: [Int], weights: [Double]?, ignoreIndex: Int?, reduction: LossReduction,
                      softmax: Bool) throws -> [Tensor] {
    try withFloatCompute([x]) { t in
        try dispatch(t[0]!.dtype, LossOperation(x: t[0]!, targets: targets, weights: weights, ignoreIndex: ignoreIndex,
                                                reduction: reduction, softmax: softmax))
    }.compactMap { $0 }
}

private struct LossOperation: ElementOperation {
    let x: Tensor, targets: [Int], weights: [Double]?, ignoreIndex: Int?, reduction: LossReduction, softmax: Bool
    func float<T: FloatElement>(_ type: T.Type) throws -> [Tensor?] {
        guard x.rank >= 2 else { throw KernelError("input must be [N, C, ...], got \(x.shape)") }
        let logProb = softmax ? logSoftmaxChannels(x, T.self) : x
        let loss = try nllLoss(logProb, targets: targets, weights: weights, ignoreIndex: ignoreIndex, reduction: reduction, T.self)
        return softmax ? [loss, logProb] : [loss]
    }
}

func registerLossOps(_ registry: OpRegistry) {
    registry.register("NegativeLogLikelihoodLoss", since: 12) { ctx in try LossKernel(ctx, softmax: false) }
    registry.register("SoftmaxCrossEntropyLoss", since: 12) { ctx in try LossKernel(ctx, softmax: true) }
    registry.registerGradient("SoftmaxCrossEntropyLoss", softmaxCrossEntropyLossGradient)
}

/// The gradient rule of SoftmaxCrossEntropyLoss.
func softmaxCrossEntropyLossGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil, nil] }
    let logProb = g.forwardOutput(1, info: TensorInfo(dtype: g.dtype(g.input(0)), shape: g.shapeInfo(g.input(0))))
    var attributes: [String: Attribute] = ["reduction": .string(g.node.string("reduction") ?? "mean")]
    if let ignore = g.node.int("ignore_index") { attributes["ignore_index"] = .int(ignore) }
    var inputs = [try g.requiredDY(), logProb, g.input(1)]
    if g.hasInput(2) { inputs.append(g.input(2)) }
    return [g.ms("SoftmaxCrossEntropyLossGrad", inputs, attributes: attributes)[0], nil, nil]
}
