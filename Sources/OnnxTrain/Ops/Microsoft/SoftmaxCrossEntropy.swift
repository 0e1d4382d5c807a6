#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Softmax cross-entropy kernels: the ONNX-op gradient SoftmaxCrossEntropyLossGrad, the fused
/// SoftmaxCrossEntropyLossInternal(+Grad), and the legacy SoftmaxCrossEntropy(+Grad) and
/// SparseSoftmaxCrossEntropy(+Grad). The Internal forward is the ONNX SoftmaxCrossEntropyLoss
/// kernel (Losses.swift, in the input's float type) and the class-index gradient a row kernel in
/// T; the legacy SoftmaxCrossEntropy and SparseSoftmaxCrossEntropy (+Grad) compute in Double on
/// row views of the logits, rounded once to the log-probabilities' type.

/// Log-softmax of `x` viewed as [outer, classes, inner], over the class axis, in Double (the one
/// `softmax` kernel).
func logSoftmax(_ x: [Double], outer: Int, classes: Int, inner: Int) -> [Double] {
    var out = [Double](repeating: 0, count: x.count)
    x.withUnsafeBufferPointer { px in
        out.withUnsafeMutableBufferPointer { po in
            guard let px = px.baseAddress, let po = po.baseAddress else { return }
            softmax(px, po, outer: outer, n: classes, inner: inner, log: true)
        }
    }
    return out
}

/// Per-sample weights w_i for class-index labels: weight[label] (or 1), 0 for ignored labels.
/// Labels outside [0, C) that are not ignored are an error.
func sampleWeights(labels: [Int], classes: Int, weight: [Double]?, ignoreIndex: Int?) throws -> [Double] {
    try labels.map { l in
        if let ignoreIndex, l == ignoreIndex { return 0 }
        guard l >= 0 && l < classes else { throw KernelError("label \(l) is out of range for \(classes) classes") }
        return weight?[l] ?? 1
    }
}

/// The ONNX-layout class-index loss gradient shared by SoftmaxCrossEntropyLossGrad and
/// ...InternalGrad: log_prob [N, C, d...], labels [N, d...], weight [C]?.
///   d_logits[n,c,d] = (p − [c == label])·w_i·s_i, s_i = dY/Σw (mean; dY when Σw == 0), dY (sum), dY[i] (none).
func classIndexLossGrad(dy: Tensor, logProb: Tensor, label: Tensor, weight: Tensor?, ignoreIndex: Int?,
                        reduction: LossReduction, bias: Tensor?) throws -> Tensor {
    guard logProb.rank >= 2 else { throw KernelError("log_prob must have rank >= 2 [N, C, ...], got \(logProb.shape)") }
    let n = logProb.shape[0], classes = logProb.shape[1]
    let inner = Tensor.elementCount(Array(logProb.shape[2...]))
    let labelShape = [n] + Array(logProb.shape[2...])
    guard label.shape == labelShape else { throw KernelError("label \(label.shape) must have shape \(labelShape) for log_prob \(logProb.shape)") }
    let labels = try indexValues(label, "label")
    var weights: [Double]?
    if let weight {
        guard weight.shape == [classes] else { throw KernelError("weight \(weight.shape) must have shape [\(classes)]") }
        weights = try floatValues(weight, "weight")
    }
    let w = try sampleWeights(labels: labels, classes: classes, weight: weights, ignoreIndex: ignoreIndex)
    let g = try floatValues(dy, "dY")
    var scale = [Double](repeating: 0, count: labels.count)
    switch reduction {
    case .none:
        guard dy.count == labels.count else { throw KernelError("dY \(dy.shape) must have the labels' shape \(label.shape) for reduction none") }
        for i in 0..<labels.count { scale[i] = g[i] * w[i] }
    case .sum, .mean:
        guard g.count == 1 else { throw KernelError("dY must be a scalar for reduction \(reduction.rawValue), got \(dy.shape)") }
        let total = w.reduce(0, +)
        let s = reduction == .mean && total != 0 ? g[0] / total : g[0]
        for i in 0..<labels.count { scale[i] = s * w[i] }
    }
    // Half log_prob computes in float32 and rounds back once, as the other float kernels do.
    let wide = logProb.widenedToFloat()
    guard wide.dtype == .float32 || wide.dtype == .float64 else { throw KernelError("log_prob must be a float tensor, got \(logProb.dtype)") }
    var out = try dispatch(wide.dtype, ClassIndexLossGradRows(logProb: wide, labels: labels, scale: scale,
                                                              n: n, classes: classes, inner: inner))
    if let bias {
        guard bias.shape == logProb.shape else { throw KernelError("bias \(bias.shape) must have log_prob's shape \(logProb.shape)") }
        guard bias.dtype.isFloatingPoint else { throw KernelError("bias must be a float tensor, got \(bias.dtype)") }
        out = try zipNumeric(out, try bias.cast(to: out.dtype), AddFunction())
    }
    return out.narrowed(to: logProb.dtype)
}

/// d_logits = (exp(log_prob) − onehot)·scale for float32/float64 log_prob [N, C, d...] read in
/// place (the one path of the class-index gradient; half types widen first), one row (sample, position) per call, rows split across threads. Accumulator: none
/// (elementwise in T, as onnxruntime computes float32 in float).
private struct ClassIndexLossGradRows: ElementOperation {
    let logProb: Tensor, labels: [Int], scale: [Double]
    let n: Int, classes: Int, inner: Int

    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        var out = Tensor(uninitialized: T.dtype, shape: logProb.shape)
        let (classes, inner) = (classes, inner)
        try logProb.withUnsafeBufferPointer(as: T.self) { lp in
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                labels.withUnsafeBufferPointer { labels in
                    scale.withUnsafeBufferPointer { scale in
                        guard let lp = lp.baseAddress, let po = po.baseAddress, let labels = labels.baseAddress,
                              let scale = scale.baseAddress else { return }
                        Parallel.forRange(n * inner, minimumChunk: max(1, 4096 / max(classes, 1))) { rows in
                            for i in rows {
                                let base = (i / inner) * classes * inner + i % inner
                                lossGradRow(lp + base, po + base, classes, stride: inner, label: labels[i], scale: T(fromDouble: scale[i]))
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// One row of the class-index loss gradient, `classes` elements `stride` apart:
/// (e^log_prob − [c == label])·scale. A function of its own so the stride-1 loop vectorises (it
/// stays scalar inside a Parallel.forRange closure).
@inline(never)
private func lossGradRow<T: FloatElement>(_ lp: UnsafePointer<T>, _ out: UnsafeMutablePointer<T>, _ classes: Int, stride: Int,
                                          label: Int, scale: T) {
    if stride == 1 {
        for c in 0..<classes { out[c] = T.fastExp(lp[c]) * scale }
    } else {
        for c in 0..<classes { out[c * stride] = T.fastExp(lp[c * stride]) * scale }
    }
    if label >= 0 && label < classes { out[label * stride] = (T.fastExp(lp[label * stride]) - 1) * scale }
}

/// SoftmaxCrossEntropyLossGrad(dY, log_prob, label, weight?; reduction, ignore_index).
/// onnxruntime's CPU kernel ignores label −1 when the attribute is absent.
struct SoftmaxCrossEntropyLossGradKernel: Kernel {
    let reduction: LossReduction
    let ignoreIndex: Int
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        [.tensor(try classIndexLossGrad(dy: try inputs.tensor(0), logProb: try inputs.tensor(1), label: try inputs.tensor(2),
                                        weight: try inputs.optionalTensor(3), ignoreIndex: ignoreIndex,
                                        reduction: reduction, bias: nil))]
    }
}

/// Reads the optional int64 ignore_index input of the Internal ops; like the attribute of the
/// ONNX-op kernels, it is −1 when absent (onnxruntime's CPU kernels ignore label −1 then too).
private func ignoreIndexInput(_ inputs: [Value?], _ index: Int) throws -> Int {
    guard let t = try inputs.optionalTensor(index) else { return -1 }
    guard t.count == 1, let v = t.intValues()?.first else { throw KernelError("ignore_index must be an integer scalar") }
    return v
}

/// The output element type named by `output_type` (a TensorProto code), if any.
private func outputType(_ ctx: NodeContext) throws -> DType? {
    guard let code = try ctx.int("output_type") else { return nil }
    guard let t = DType(rawValue: Int32(code)), t.isFloatingPoint else { throw KernelError("output_type \(code) is not a float type") }
    return t
}

private func cast(_ t: Tensor, to dtype: DType?) throws -> Tensor {
    guard let dtype else { return t }
    return try t.cast(to: dtype)
}

/// SoftmaxCrossEntropyLossInternal(scores [N,C,d...], labels, weights?, ignore_index?) → output, log_prob.
struct SoftmaxCrossEntropyLossInternalKernel: Kernel {
    let reduction: LossReduction
    let outputType: DType?
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let scores = try inputs.tensor(0), label = try inputs.tensor(1)
        let r = try softmaxCrossEntropyLossForward(scores: scores, label: label, weight: try inputs.optionalTensor(2),
                                                   ignoreIndex: try ignoreIndexInput(inputs, 3), reduction: reduction)
        return [.tensor(try cast(r.loss, to: outputType)), .tensor(try cast(r.logProb, to: outputType))]
    }
}

/// SoftmaxCrossEntropyLossInternal's forward: its labels and weights checked, then the ONNX
/// SoftmaxCrossEntropyLoss kernel (`crossEntropyLoss`, Losses.swift).
func softmaxCrossEntropyLossForward(scores: Tensor, label: Tensor, weight: Tensor?, ignoreIndex: Int?,
                                    reduction: LossReduction) throws -> (loss: Tensor, logProb: Tensor) {
    guard scores.rank >= 2 else { throw KernelError("scores must have rank >= 2 [N, C, ...], got \(scores.shape)") }
    let n = scores.shape[0], classes = scores.shape[1]
    let labelShape = [n] + Array(scores.shape[2...])
    guard label.shape == labelShape else { throw KernelError("labels \(label.shape) must have shape \(labelShape) for scores \(scores.shape)") }
    let labels = try indexValues(label, "labels")
    var weights: [Double]?
    if let weight {
        guard weight.shape == [classes] else { throw KernelError("weights \(weight.shape) must have shape [\(classes)]") }
        weights = try floatValues(weight, "weights")
    }
    let outs = try crossEntropyLoss(scores, targets: labels, weights: weights, ignoreIndex: ignoreIndex, reduction: reduction, softmax: true)
    return (outs[0], outs[1])
}

/// SoftmaxCrossEntropyLossInternalGrad(dY, log_prob, label, weight?, ignore_index?, bias?).
struct SoftmaxCrossEntropyLossInternalGradKernel: Kernel {
    let reduction: LossReduction
    let outputType: DType?
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let out = try classIndexLossGrad(dy: try inputs.tensor(0), logProb: try inputs.tensor(1), label: try inputs.tensor(2),
                                         weight: try inputs.optionalTensor(3), ignoreIndex: try ignoreIndexInput(inputs, 4),
                                         reduction: reduction, bias: try inputs.optionalTensor(5))
        return [.tensor(try cast(out, to: outputType))]
    }
}

/// SoftmaxCrossEntropy(logits [..., C], label: probabilities of the same shape) → Y, log_prob.
/// Classes on the last axis; mean divides by N = ∏dims[:-1].
struct SoftmaxCrossEntropyKernel: Kernel {
    let reduction: LossReduction
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let logits = try inputs.tensor(0), label = try inputs.tensor(1)
        try requireSameShape(logits, label, "logits", "label")
        guard let classes = logits.shape.last, classes > 0 else { throw KernelError("logits must have a non-empty last axis, got \(logits.shape)") }
        let rows = logits.count / classes
        let lp = logSoftmax(try floatValues(logits, "logits"), outer: rows, classes: classes, inner: 1)
        let p = try floatValues(label, "label")
        var total = 0.0
        for i in 0..<lp.count { total -= p[i] * lp[i] }
        if reduction == .mean { total /= Double(rows) }
        return [.tensor(floatTensor(logits.dtype, shape: [], [total])), .tensor(floatTensor(logits.dtype, shape: logits.shape, lp))]
    }
}

/// SoftmaxCrossEntropyGrad(dY, log_prob, label) → (p − label)·dY/N (mean) or ·dY (sum).
struct SoftmaxCrossEntropyGradKernel: Kernel {
    let reduction: LossReduction
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dy = try inputs.tensor(0), logProb = try inputs.tensor(1), label = try inputs.tensor(2)
        try requireSameShape(logProb, label, "log_prob", "label")
        guard let classes = logProb.shape.last, classes > 0, dy.count == 1 else {
            throw KernelError("dY must be a scalar and log_prob non-empty (got dY \(dy.shape), log_prob \(logProb.shape))")
        }
        var s = try floatValues(dy, "dY")[0]
        if reduction == .mean { s /= Double(logProb.count / classes) }
        let lp = try floatValues(logProb, "log_prob"), p = try floatValues(label, "label")
        return [.tensor(floatTensor(logProb.dtype, shape: logProb.shape, (0..<lp.count).map { (exp(lp[$0]) - p[$0]) * s }))]
    }
}

/// Sparse labels on the last axis: logits [..., C], label int [...], weight [...]?.
private func sparseWeights(_ label: Tensor, _ weight: Tensor?, logits: Tensor) throws -> (labels: [Int], w: [Double], classes: Int) {
    guard let classes = logits.shape.last, classes > 0 else { throw KernelError("logits must have a non-empty last axis, got \(logits.shape)") }
    guard label.shape == Array(logits.shape.dropLast()) else {
        throw KernelError("label \(label.shape) must have shape \(Array(logits.shape.dropLast()))")
    }
    let labels = try indexValues(label, "label")
    for l in labels where l < 0 || l >= classes { throw KernelError("label \(l) is out of range for \(classes) classes") }
    var w = [Double](repeating: 1, count: labels.count)
    if let weight {
        guard weight.shape == label.shape else { throw KernelError("weight \(weight.shape) must have the label's shape \(label.shape)") }
        w = try floatValues(weight, "weight")
    }
    return (labels, w, classes)
}

/// SparseSoftmaxCrossEntropy(logits, label, weight?) → Y, log_prob (onnx domain, since 9).
struct SparseSoftmaxCrossEntropyKernel: Kernel {
    let reduction: LossReduction
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let logits = try inputs.tensor(0)
        let (labels, w, classes) = try sparseWeights(try inputs.tensor(1), try inputs.optionalTensor(2), logits: logits)
        let lp = logSoftmax(try floatValues(logits, "logits"), outer: labels.count, classes: classes, inner: 1)
        var total = 0.0
        for (i, l) in labels.enumerated() { total -= lp[i * classes + l] * w[i] }
        if reduction == .mean { total /= w.reduce(0, +) }
        return [.tensor(floatTensor(logits.dtype, shape: [], [total])), .tensor(floatTensor(logits.dtype, shape: logits.shape, lp))]
    }
}

/// SparseSoftmaxCrossEntropyGrad(dY, log_prob, label, weight?) → (p − onehot)·w_i·dY/Σw (mean) or ·dY (sum).
struct SparseSoftmaxCrossEntropyGradKernel: Kernel {
    let reduction: LossReduction
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dy = try inputs.tensor(0), logProb = try inputs.tensor(1)
        let (labels, w, classes) = try sparseWeights(try inputs.tensor(2), try inputs.optionalTensor(3), logits: logProb)
        guard dy.count == 1 else { throw KernelError("dY must be a scalar, got \(dy.shape)") }
        var s = try floatValues(dy, "dY")[0]
        if reduction == .mean { s /= w.reduce(0, +) }
        let lp = try floatValues(logProb, "log_prob")
        var out = [Double](repeating: 0, count: lp.count)
        for (i, l) in labels.enumerated() {
            for c in 0..<classes {
                let k = i * classes + c
                out[k] = (exp(lp[k]) - (c == l ? 1 : 0)) * w[i] * s
            }
        }
        return [.tensor(floatTensor(logProb.dtype, shape: logProb.shape, out))]
    }
}

func registerCrossEntropyOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    registry.register("SoftmaxCrossEntropyLossGrad", domain: ms, since: 1) { ctx in
        SoftmaxCrossEntropyLossGradKernel(reduction: try LossReduction(ctx), ignoreIndex: try ctx.int("ignore_index", default: -1))
    }
    registry.register("SoftmaxCrossEntropyLossInternal", domain: ms, since: 1) { ctx in
        SoftmaxCrossEntropyLossInternalKernel(reduction: try LossReduction(ctx), outputType: try outputType(ctx))
    }
    registry.register("SoftmaxCrossEntropyLossInternalGrad", domain: ms, since: 1) { ctx in
        SoftmaxCrossEntropyLossInternalGradKernel(reduction: try LossReduction(ctx), outputType: try outputType(ctx))
    }
    registry.register("SoftmaxCrossEntropy", domain: ms, since: 1) { ctx in
        SoftmaxCrossEntropyKernel(reduction: try LossReduction(ctx, allowNone: false))
    }
    registry.register("SoftmaxCrossEntropyGrad", domain: ms, since: 1) { ctx in
        SoftmaxCrossEntropyGradKernel(reduction: try LossReduction(ctx, allowNone: false))
    }
    registry.register("SparseSoftmaxCrossEntropy", domain: "", since: 9) { ctx in
        SparseSoftmaxCrossEntropyKernel(reduction: try LossReduction(ctx, allowNone: false))
    }
    registry.register("SparseSoftmaxCrossEntropyGrad", domain: "", since: 9) { ctx in
        SparseSoftmaxCrossEntropyGradKernel(reduction: try LossReduction(ctx, allowNone: false))
    }

    // Gradient rules (GradientContext):
    registry.registerGradient("SoftmaxCrossEntropy", domain: ms, softmaxCrossEntropyGradient)
    registry.registerGradient("SparseSoftmaxCrossEntropy", sparseSoftmaxCrossEntropyGradient)
    registry.registerGradient("SoftmaxCrossEntropyLossInternal", domain: ms, softmaxCrossEntropyLossInternalGradient)
}

/// The gradient rule of SoftmaxCrossEntropy (com.microsoft).
func softmaxCrossEntropyGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil] }
    let logProb = g.forwardOutput(1)
    return [g.ms("SoftmaxCrossEntropyGrad", [try g.requiredDY(), logProb, g.input(1)],
                 attributes: ["reduction": .string(g.node.string("reduction") ?? "mean")])[0], nil]
}

/// The gradient rule of SparseSoftmaxCrossEntropy.
func sparseSoftmaxCrossEntropyGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil, nil] }
    let logProb = g.forwardOutput(1)
    var inputs = [try g.requiredDY(), logProb, g.input(1)]
    if g.hasInput(2) { inputs.append(g.input(2)) }
    return [g.op("SparseSoftmaxCrossEntropyGrad", inputs, attributes: ["reduction": .string(g.node.string("reduction") ?? "mean")]), nil, nil]
}

/// The gradient rule of SoftmaxCrossEntropyLossInternal (com.microsoft).
func softmaxCrossEntropyLossInternalGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil, nil, nil] }
    let logProb = g.forwardOutput(1)
    var inputs = [try g.requiredDY(), logProb, g.input(1), g.hasInput(2) ? g.input(2) : "", g.hasInput(3) ? g.input(3) : ""]
    while inputs.last == "" { inputs.removeLast() }
    var attributes: [String: Attribute] = ["reduction": .string(g.node.string("reduction") ?? "mean")]
    if let t = g.node.int("output_type") { attributes["output_type"] = .int(t) }
    return [g.ms("SoftmaxCrossEntropyLossInternalGrad", inputs, attributes: attributes)[0], nil, nil, nil]
}
