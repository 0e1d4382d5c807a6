import Foundation

/// BatchNormalization (opsets 6-15): per-channel statistics over N and the spatial dims, taken
/// as BatchNormInternal takes them (`meanVariance`, Sums.swift: rows summed in T, the rows' sums
/// added in Double), the population (biased) variance as ONNX specifies. Registered in
/// Normalization.swift's list; training graphs use BatchNormInternal.

struct BatchNormKernel: Kernel {
    let epsilon: Double, momentum: Double
    let training: Bool          // opset 14+: training_mode; earlier: more than one output requested
    let opset: Int
    /// Opset 14+ in inference mode with running_mean/running_var requested, as onnxruntime's
    /// eval graphs keep them from the training graph (onnxruntime itself refuses such a model):
    /// those outputs pass input_mean and input_var through unchanged.
    let passesStatisticsThrough: Bool

    init(_ ctx: NodeContext) throws {
        epsilon = Double(try ctx.float("epsilon", default: 1e-5))
        momentum = Double(try ctx.float("momentum", default: 0.9))
        opset = ctx.sinceVersion
        if ctx.sinceVersion >= 14 {
            training = try ctx.int("training_mode", default: 0) != 0
            passesStatisticsThrough = !training && (ctx.hasOutput(1) || ctx.hasOutput(2))
        } else {
            passesStatisticsThrough = false
            training = try ctx.int("is_test", default: 0) == 0 && (1..<5).contains(where: { ctx.hasOutput($0) })
        }
    }

    struct Op: ElementOperation {
        let k: BatchNormKernel, x: Tensor, scale: [Double], bias: [Double], mean: [Double], variance: [Double]
        func float<T: FloatElement>(_ type: T.Type) throws -> [Tensor?] {
            let n = x.shape[0], c = x.rank > 1 ? x.shape[1] : 1
            let inner = x.rank > 2 ? Tensor.elementCount(Array(x.shape.dropFirst(2))) : 1
            var useMean = mean, useVar = variance
            var batchMean = mean, batchVar = variance
            if k.training {
                try x.withUnsafeBufferPointer(as: T.self) { p in
                    guard let X = p.baseAddress else { return }
                    for ch in 0..<c {
                        (batchMean[ch], batchVar[ch]) = meanVariance(X + ch * inner, rows: n, stride: c * inner, length: inner)
                    }
                }
                useMean = batchMean; useVar = batchVar
            }
            var y = Tensor(uninitialized: T.dtype, shape: x.shape)
            // Y = X·a + shift per channel, rows of `inner` values spread over the threads.
            var a = [T](repeating: 0, count: c), shift = [T](repeating: 0, count: c)
            for ch in 0..<c {
                let ad = scale[ch] / (useVar[ch] + k.epsilon).squareRoot()
                a[ch] = T(fromDouble: ad)
                shift[ch] = T(fromDouble: bias[ch] - useMean[ch] * ad)
            }
            try x.withUnsafeBufferPointer(as: T.self) { px in
                y.uncheckedMutableBufferPointer(as: T.self) { py in
                    a.withUnsafeBufferPointer { pa in
                        shift.withUnsafeBufferPointer { ps in
                            guard let X = px.baseAddress, let Y = py.baseAddress else { return }
                            Parallel.forRange(n * c, minimumChunk: max(1, 16_384 / max(inner, 1))) { rows in
                                for r in rows {
                                    affineRow(X + r * inner, Y + r * inner, inner, pa[r % c], ps[r % c])
                                }
                            }
                        }
                    }
                }
            }
            guard k.training else { return [y] }
            let running = { (input: [Double], batch: [Double]) in zip(input, batch).map { $0 * k.momentum + $1 * (1 - k.momentum) } }
            let runningMean = running(mean, batchMean), runningVar = running(variance, batchVar)
            if k.opset >= 14 {
                return [y, floatTensor(T.dtype, shape: [c], runningMean), floatTensor(T.dtype, shape: [c], runningVar)]
            }
            // Opsets 6-9: also the saved batch mean and inverse standard deviation.
            return [y, floatTensor(T.dtype, shape: [c], runningMean), floatTensor(T.dtype, shape: [c], runningVar),
                    floatTensor(T.dtype, shape: [c], batchMean),
                    floatTensor(T.dtype, shape: [c], batchVar.map { 1 / ($0 + k.epsilon).squareRoot() })]
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        guard x.rank >= 1 else { throw KernelError("X must have rank >= 1") }
        let c = x.rank > 1 ? x.shape[1] : 1
        let scale = try channelValues(inputs.tensor(1), count: c, default: 1, name: "scale")
        let bias = try channelValues(inputs.tensor(2), count: c, default: 0, name: "B")
        let mean = try channelValues(inputs.tensor(3), count: c, default: 0, name: "input_mean")
        let variance = try channelValues(inputs.tensor(4), count: c, default: 1, name: "input_var")
        let meanType = try inputs.tensor(3).dtype
        let outs = try withFloatCompute([x]) { t in
            try dispatch(t[0]!.dtype, Op(k: self, x: t[0]!, scale: scale, bias: bias, mean: mean, variance: variance))
        }
        if passesStatisticsThrough { return [outs.first.flatMap { $0 }.map(Value.tensor), inputs.value(3), inputs.value(4)] }
        // Running statistics take the type of input_mean (opset 15 allows it to differ from X).
        return outs.enumerated().map { i, t in
            guard let t else { return nil }
            if i == 0 || t.dtype == meanType { return .tensor(t) }
            return .tensor(floatTensor(meanType, shape: t.shape, (0..<t.count).map { t.scalarDouble(at: $0) ?? 0 }))
        }
    }
}

/// dst[i] = src[i]·a + b over `count` values (a function of its own so the loop vectorizes).
func affineRow<T: FloatElement>(_ src: UnsafePointer<T>, _ dst: UnsafeMutablePointer<T>, _ count: Int, _ a: T, _ b: T) {
    for i in 0..<count { dst[i] = src[i] * a + b }
}

/// The gradient rule of BatchNormalization.
func batchNormalizationGradient(_ g: GradientContext) throws -> [String?] {
    let training = (g.node.int("training_mode") ?? 0) == 1 || (g.opset < 9 && g.node.outputs.count > 1)
    if training {
        throw GradientError("BatchNormalization in training mode is differentiated as com.microsoft BatchNormInternal (the artifact builder rewrites it)")
    }
    // Inference mode (frozen statistics): Y = (X - mean) * scale / sqrt(var + eps) + B, per channel.
    let dY = try g.requiredDY()
    let x = g.input(0)
    guard let rank = g.rank(x), rank >= 2 else { throw GradientError("BatchNormalization needs the rank of its input") }
    let channelAxes = [0] + Array(2..<rank)
    func perChannel(_ v: String) -> String { rank == 2 ? v : g.unsqueeze(v, axes: Array(1..<(rank - 1))) }
    let eps = try g.scalar(Double(g.node.float("epsilon") ?? 1e-5), like: x, name: "epsilon")
    let invStd = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [g.input(4), eps])])])
    var dX: String?, dScale: String?, dB: String?
    if g.needs(0) { dX = g.op("Mul", [dY, perChannel(g.op("Mul", [g.input(1), invStd]))]) }
    if g.needs(1) {
        let normalized = g.op("Mul", [g.op("Sub", [x, perChannel(g.input(3))]), perChannel(invStd)])
        dScale = g.reduceSum(g.op("Mul", [dY, normalized]), axes: channelAxes, keepdims: false)
    }
    if g.needs(2) { dB = g.reduceSum(dY, axes: channelAxes, keepdims: false) }
    return [dX, dScale, dB, nil, nil]
}
