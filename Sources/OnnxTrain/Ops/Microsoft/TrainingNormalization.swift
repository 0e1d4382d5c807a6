#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Batch and layer normalization for training: BatchNormInternal, BatchNormalizationGrad,
/// LayerNormalizationGrad, SimplifiedLayerNormalizationGrad, InvertibleLayerNormalizationGrad
/// (com.microsoft v1) and the onnx-domain contrib forwards LayerNormalization v1 and
/// SimplifiedLayerNormalization v1. Layer-norm statistics and reductions are computed in Double;
/// the batch-norm kernels work in the input's float type (as onnxruntime does), summing each
/// contiguous row in it and adding the rows' sums in Double.

/// Views X [N, C, spatial…] as channels; returns (N, C, ∏spatial).
private func channelLayout(_ x: Tensor) throws -> (n: Int, c: Int, s: Int) {
    guard x.rank >= 2 else { throw KernelError("X must have rank >= 2 [N, C, ...], got \(x.shape)") }
    return (x.shape[0], x.shape[1], Tensor.elementCount(Array(x.shape[2...])))
}

private func channelVector(_ t: Tensor, _ name: String, _ c: Int) throws -> [Double] {
    guard t.count == c else { throw KernelError("\(name) \(t.shape) must hold \(c) values (one per channel)") }
    return try floatValues(t, name)
}

/// BatchNormInternal(X, scale, B, input_mean, input_var; epsilon 1e-5, momentum 0.9,
/// training_mode 1) → Y, running_mean, running_var, saved_mean, saved_inv_std.
/// Training: batch statistics with the biased variance; running stats
/// m·input + (1−m)·batch are written into input_mean / input_var's storage (outputs 1 and 2 alias
/// inputs 3 and 4, as in onnxruntime, so the checkpoint's frozen statistics update in place).
/// Inference (training_mode 0): normalizes with input_mean / input_var.
struct BatchNormInternalKernel: Kernel {
    let epsilon: Double, momentum: Double, training: Bool

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        let (n, c, s) = try channelLayout(x)
        let scale = try channelVector(try inputs.tensor(1), "scale", c)
        let bias = try channelVector(try inputs.tensor(2), "B", c)
        let meanT = try inputs.tensor(3), varT = try inputs.tensor(4)
        let inMean = try channelVector(meanT, "input_mean", c), inVar = try channelVector(varT, "input_var", c)
        guard x.dtype.isFloatingPoint else { throw KernelError("X must be a float tensor, got \(x.dtype)") }
        let op = BatchNormForward(x: x.widenedToFloat(), n: n, c: c, s: s, scale: scale, bias: bias,
                                  mean: inMean, variance: inVar, epsilon: epsilon, training: training)
        let (yWide, mean, variance) = try dispatch(op.x.dtype, op)
        let yT = yWide.narrowed(to: x.dtype)
        guard training else { return [.tensor(yT)] }
        let invStd = variance.map { 1 / ($0 + epsilon).squareRoot() }
        let running = (0..<c).map { momentum * inMean[$0] + (1 - momentum) * mean[$0] }
        let runningVar = (0..<c).map { momentum * inVar[$0] + (1 - momentum) * variance[$0] }
        try writeInPlace(meanT, running, "input_mean")
        try writeInPlace(varT, runningVar, "input_var")
        return [.tensor(yT), .tensor(meanT), .tensor(varT),
                .tensor(floatTensor(meanT.dtype, shape: [c], mean)), .tensor(floatTensor(meanT.dtype, shape: [c], invStd))]
    }
}

/// BatchNormInternal's pass over X [N, C, S] in its own float type, spread over the threads by
/// channel: in training the batch mean and biased variance (two passes: mean, then squared
/// deviations; each row of S summed in T, rows added in Double), then
/// Y = (X − mean)·(scale·invStd) + B. Returns Y and the statistics used.
struct BatchNormForward: ElementOperation {
    let x: Tensor, n: Int, c: Int, s: Int
    let scale: [Double], bias: [Double], mean: [Double], variance: [Double]
    let epsilon: Double, training: Bool

    func float<T: FloatElement>(_ type: T.Type) throws -> (Tensor, [Double], [Double]) {
        var y = Tensor(uninitialized: T.dtype, shape: x.shape)
        var mean = self.mean, variance = self.variance
        let count = Double(n * s)
        try x.withUnsafeBufferPointer(as: T.self) { px in
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                mean.withUnsafeMutableBufferPointer { pm in
                    variance.withUnsafeMutableBufferPointer { pv in
                        guard let X = px.baseAddress, let Y = py.baseAddress else { return }
                        let (n, c, s, training) = (n, c, s, training)
                        Parallel.forRange(c) { channels in
                            for ch in channels {
                                if training {
                                    var sum = 0.0
                                    for b in 0..<n { sum += rowSum(X + (b * c + ch) * s, s).doubleValue }
                                    let mu = sum / count
                                    var sq = 0.0
                                    for b in 0..<n { sq += squaredDeviationSum(X + (b * c + ch) * s, s, T(fromDouble: mu)).doubleValue }
                                    pm[ch] = mu
                                    pv[ch] = sq / count
                                }
                                let a = T(fromDouble: scale[ch] / (pv[ch] + epsilon).squareRoot())
                                let mu = T(fromDouble: pm[ch]), beta = T(fromDouble: bias[ch])
                                for b in 0..<n {
                                    let src = X + (b * c + ch) * s, dst = Y + (b * c + ch) * s
                                    for i in 0..<s { dst[i] = (src[i] - mu) * a + beta }
                                }
                            }
                        }
                    }
                }
            }
        }
        return (y, mean, variance)
    }
}

/// Overwrites a float tensor's shared storage with `values` (onnxruntime's in-place aliasing).
func writeInPlace(_ t: Tensor, _ values: [Double], _ name: String) throws {
    guard t.count == values.count else { throw KernelError("\(name) holds \(t.count) values, expected \(values.count)") }
    guard t.dtype == .float32 || t.dtype == .float64 || t.isHalf else { throw KernelError("\(name) must be a float tensor, got \(t.dtype)") }
    try dispatch(t.dtype, WriteDoubles(t: t, values: values))
}

/// Writes `values` into `t`'s shared storage, rounded to its float type (the half types through Float).
private struct WriteDoubles: ElementOperation {
    let t: Tensor, values: [Double]
    func float<T: FloatElement>(_ type: T.Type) throws {
        try t.withSharedMutableBufferPointer(as: T.self) { p in for i in 0..<p.count { p[i] = T(fromDouble: values[i]) } }
    }
    func half<T: CastableElement>(_ type: T.Type) throws {
        try t.withSharedMutableBufferPointer(as: T.self) { p in for i in 0..<p.count { p[i] = T.fromFloat(Float(values[i])) } }
    }
}

/// BatchNormalizationGrad(dY, X, scale, mean = saved_mean, variance = saved_inv_std) → dX, dScale, dB.
/// With M = N·∏spatial and x̂ = (X − μ)·r: dB = Σ dY, dScale = Σ dY⊙x̂, dX = scale·r/M·(M·dY − dB − x̂·dScale).
struct BatchNormalizationGradKernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dyT = try inputs.tensor(0), x = try inputs.tensor(1)
        try requireSameShape(dyT, x, "dY", "X")
        let (n, c, s) = try channelLayout(x)
        let scaleT = try inputs.tensor(2)
        let scale = try channelVector(scaleT, "scale", c)
        let mean = try channelVector(try inputs.tensor(3), "mean", c)
        let inv = try channelVector(try inputs.tensor(4), "variance (saved inverse std)", c)
        _ = try commonElementType([dyT, x], names: ["dY", "X"], floatOnly: true)
        let op = BatchNormBackward(dy: dyT.widenedToFloat(), x: x.widenedToFloat(), n: n, c: c, s: s, scale: scale, mean: mean, inv: inv)
        let (dxWide, dScale, dB) = try dispatch(op.x.dtype, op)
        let dx = dxWide.narrowed(to: x.dtype)
        return [.tensor(dx), .tensor(floatTensor(scaleT.dtype, shape: scaleT.shape, dScale)),
                .tensor(floatTensor(scaleT.dtype, shape: scaleT.shape, dB))]
    }
}

/// BatchNormalizationGrad's passes over dY, X [N, C, S] in their own float type, spread over the
/// threads by channel: dB = Σ dY and Σ dY·(X − μ) (rows of S in T, rows added in Double), then
/// dX = k·dY − k·dB/M − (X − μ)·k·r·dScale/M with k = scale·r, M = N·S, dScale = r·Σ dY·(X − μ).
struct BatchNormBackward: ElementOperation {
    let dy: Tensor, x: Tensor, n: Int, c: Int, s: Int
    let scale: [Double], mean: [Double], inv: [Double]

    func float<T: FloatElement>(_ type: T.Type) throws -> (Tensor, [Double], [Double]) {
        var dx = Tensor(uninitialized: T.dtype, shape: x.shape)
        var dScale = [Double](repeating: 0, count: c), dB = [Double](repeating: 0, count: c)
        let m = Double(n * s)
        try dy.withUnsafeBufferPointer(as: T.self) { pg in
            try x.withUnsafeBufferPointer(as: T.self) { px in
                dx.uncheckedMutableBufferPointer(as: T.self) { pd in
                    dScale.withUnsafeMutableBufferPointer { pds in
                        dB.withUnsafeMutableBufferPointer { pdb in
                            guard let G = pg.baseAddress, let X = px.baseAddress, let D = pd.baseAddress else { return }
                            let (n, c, s) = (n, c, s)
                            Parallel.forRange(c) { channels in
                                for ch in channels {
                                    let mu = T(fromDouble: mean[ch])
                                    var sumG = 0.0, sumGX = 0.0
                                    for b in 0..<n {
                                        let off = (b * c + ch) * s
                                        let (g, gx) = sumAndCrossDeviation(G + off, X + off, s, mu)
                                        sumG += g.doubleValue
                                        sumGX += gx.doubleValue
                                    }
                                    let dScale = sumGX * inv[ch]
                                    pdb[ch] = sumG
                                    pds[ch] = dScale
                                    let k = scale[ch] * inv[ch]
                                    let a = T(fromDouble: k), shift = T(fromDouble: -k * sumG / m)
                                    let slope = T(fromDouble: -k * inv[ch] * dScale / m)
                                    for b in 0..<n {
                                        let off = (b * c + ch) * s
                                        let g = G + off, xv = X + off, d = D + off
                                        for i in 0..<s { d[i] = a * g[i] + shift + (xv[i] - mu) * slope }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return (dx, dScale, dB)
    }
}

/// Rows of a layer norm: X flattened to [rows = ∏d[:axis], cols = ∏d[axis:]].
private func rowLayout(_ x: Tensor, axis: Int) throws -> (rows: Int, cols: Int, axis: Int) {
    let a = try normalizeAxis(axis, rank: x.rank)
    return (Tensor.elementCount(Array(x.shape[..<a])), Tensor.elementCount(Array(x.shape[a...])), a)
}

/// A per-column vector (scale or bias) of `cols` values.
private func columnVector(_ t: Tensor, _ name: String, _ cols: Int) throws -> [Double] {
    guard t.count == cols else { throw KernelError("\(name) \(t.shape) must hold \(cols) values (the normalized shape)") }
    return try floatValues(t, name)
}

/// A per-row statistic (mean or inverse std) of `rows` values.
private func rowVector(_ t: Tensor, _ name: String, _ rows: Int) throws -> [Double] {
    guard t.count == rows else { throw KernelError("\(name) \(t.shape) must hold \(rows) values (one per row)") }
    return try floatValues(t, name)
}

/// The statistics' shape: d[:axis] + [1]·(rank − axis).
private func statShape(_ shape: [Int], _ axis: Int) -> [Int] {
    Array(shape[..<axis]) + Array(repeating: 1, count: shape.count - axis)
}

/// The statistics' type: float for half inputs (stash_type 1), else the input's type.
private func statType(_ dtype: DType) -> DType { dtype == .float64 ? .float64 : .float32 }

/// LayerNormalization (contrib, onnx domain v1) and SimplifiedLayerNormalization (onnx domain v1).
/// Y = (X − μ)·r·scale + B, or X·r·scale for the simplified (RMS) form with r = 1/√(mean(X²)+ε).
struct ContribLayerNormKernel: Kernel {
    let axis: Int, epsilon: Double, simplified: Bool

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        let (rows, cols, a) = try rowLayout(x, axis: axis)
        let scale = try columnVector(try inputs.tensor(1), "scale", cols)
        var bias: [Double]?
        if !simplified, let b = try inputs.optionalTensor(2) { bias = try columnVector(b, "B", cols) }
        let xv = try floatValues(x, "X")
        var y = [Double](repeating: 0, count: xv.count)
        var means = [Double](repeating: 0, count: rows), invs = [Double](repeating: 0, count: rows)
        for r in 0..<rows {
            let base = r * cols
            var mu = 0.0
            if !simplified { for j in 0..<cols { mu += xv[base + j] }; mu /= Double(cols) }
            var sq = 0.0
            for j in 0..<cols { let d = xv[base + j] - mu; sq += d * d }
            let inv = 1 / (sq / Double(cols) + epsilon).squareRoot()
            means[r] = mu
            invs[r] = inv
            for j in 0..<cols { y[base + j] = (xv[base + j] - mu) * inv * scale[j] + (bias?[j] ?? 0) }
        }
        let st = statShape(x.shape, a), stType = statType(x.dtype)
        let yT = Value.tensor(floatTensor(x.dtype, shape: x.shape, y))
        if simplified { return [yT, .tensor(floatTensor(stType, shape: st, invs))] }
        return [yT, .tensor(floatTensor(stType, shape: st, means)), .tensor(floatTensor(stType, shape: st, invs))]
    }
}

/// LayerNormalizationGrad(dY, X, scale, mean, inv_std_dev) → dX, dScale, dBias;
/// SimplifiedLayerNormalizationGrad(dY, X, scale, inv_std_var) → dX, dScale;
/// InvertibleLayerNormalizationGrad(dY, Y, scale, bias, inv_std_var) → dX, dScale, dBias.
/// Per row, with x̂ the normalized input, B = dY⊙scale·r and C = B⊙x̂:
///   dX = B − mean(B) − x̂·mean(C)   (the simplified form drops mean(B)),
///   dScale = Σ_rows dY⊙x̂, dBias = Σ_rows dY.
struct LayerNormGradKernel: Kernel {
    enum Form { case standard, simplified, invertible }
    let axis: Int
    let form: Form

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dyT = try inputs.tensor(0), x = try inputs.tensor(1)
        try requireSameShape(dyT, x, "Y_grad", form == .invertible ? "Y" : "X")
        let (rows, cols, _) = try rowLayout(x, axis: axis)
        let scaleT = try inputs.tensor(2)
        let scale = try columnVector(scaleT, "scale", cols)
        _ = try commonElementType([dyT, x], names: ["Y_grad", form == .invertible ? "Y" : "X"], floatOnly: true)
        if form == .standard, let fast = try floatStandardGrad(inputs, dyT, x, scaleT, rows: rows, cols: cols) { return fast }
        // x̂ = (x − rowShift[r] − colShift[j]) · rowScale[r] · colScale[j] covers all three forms.
        var rowShift = [Double](repeating: 0, count: rows), rowScale = [Double](repeating: 1, count: rows)
        var colShift = [Double](repeating: 0, count: cols), colScale = [Double](repeating: 1, count: cols)
        let inv: [Double]
        switch form {
        case .standard:
            rowShift = try rowVector(try inputs.tensor(3), "mean", rows)
            inv = try rowVector(try inputs.tensor(4), "inv_std_dev", rows)
            rowScale = inv
        case .simplified:
            inv = try rowVector(try inputs.tensor(3), "inv_std_var", rows)
            rowScale = inv
        case .invertible:
            colShift = try columnVector(try inputs.tensor(3), "bias", cols)
            inv = try rowVector(try inputs.tensor(4), "inv_std_var", rows)
            for j in 0..<cols where scale[j] == 0 { throw KernelError("scale[\(j)] is 0, so Y cannot be inverted") }
            colScale = scale.map { 1 / $0 }
        }
        let rowsOp = LayerNormGradRows(dy: dyT.widenedToFloat(), x: x.widenedToFloat(), rows: rows, cols: cols, scale: scale, inv: inv,
                                       rowShift: rowShift, rowScale: rowScale, colShift: colShift, colScale: colScale,
                                       simplified: form == .simplified)
        let (dxWide, dScale, dBias) = try dispatch(rowsOp.x.dtype, rowsOp)
        let dx = dxWide.narrowed(to: x.dtype)
        var out: [Value?] = [.tensor(dx), .tensor(floatTensor(scaleT.dtype, shape: scaleT.shape, dScale))]
        if form != .simplified { out.append(.tensor(floatTensor(scaleT.dtype, shape: scaleT.shape, dBias))) }
        return out
    }
}

extension LayerNormGradKernel {
    /// LayerNormalizationGrad with every input of one type, float32 or float64: the pointer
    /// kernel layerNormBackward (LayerNormalization.swift, accumulator T, float32 in float like
    /// onnxruntime). nil otherwise (the general path above).
    func floatStandardGrad(_ inputs: [Value?], _ dyT: Tensor, _ x: Tensor, _ scaleT: Tensor,
                           rows: Int, cols: Int) throws -> [Value?]? {
        let meanT = try inputs.tensor(3), invT = try inputs.tensor(4)
        // Empty inputs take the general path (which also writes the zero sums).
        guard rows > 0, cols > 0, x.dtype == .float32 || x.dtype == .float64,
              [dyT, scaleT, meanT, invT].allSatisfy({ $0.dtype == x.dtype }) else { return nil }
        guard scaleT.count == cols else { throw KernelError("scale \(scaleT.shape) must hold \(cols) values (the normalized shape)") }
        guard meanT.count == rows else { throw KernelError("mean \(meanT.shape) must hold \(rows) values (one per row)") }
        guard invT.count == rows else { throw KernelError("inv_std_dev \(invT.shape) must hold \(rows) values (one per row)") }
        return try dispatch(x.dtype, StandardGrad(dy: dyT, x: x, scale: scaleT, mean: meanT, invStd: invT, rows: rows, cols: cols))
    }

    private struct StandardGrad: ElementOperation {
        let dy: Tensor, x: Tensor, scale: Tensor, mean: Tensor, invStd: Tensor, rows: Int, cols: Int
        func float<T: FloatElement>(_ type: T.Type) throws -> [Value?] {
            var dx = Tensor(uninitialized: T.dtype, shape: x.shape)
            var dScale = Tensor(uninitialized: T.dtype, shape: scale.shape), dBias = Tensor(uninitialized: T.dtype, shape: scale.shape)
            let (rows, cols) = (rows, cols)
            dy.uncheckedBufferPointer(as: T.self) { pg in
                x.uncheckedBufferPointer(as: T.self) { px in
                    scale.uncheckedBufferPointer(as: T.self) { ps in
                        mean.uncheckedBufferPointer(as: T.self) { pm in
                            invStd.uncheckedBufferPointer(as: T.self) { pi in
                                dx.uncheckedMutableBufferPointer(as: T.self) { po in
                                    dScale.uncheckedMutableBufferPointer(as: T.self) { pds in
                                        dBias.uncheckedMutableBufferPointer(as: T.self) { pdb in
                                            guard let g = pg.baseAddress, let xv = px.baseAddress, let sc = ps.baseAddress,
                                                  let ds = pds.baseAddress, let db = pdb.baseAddress else { return }
                                            guard let m = pm.baseAddress, let i = pi.baseAddress, let o = po.baseAddress else { return }
                                            layerNormBackward(dy: g, x: xv, scale: sc, mean: m, invStd: i, dx: o, dScale: ds, dBias: db,
                                                              rows: rows, cols: cols)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return [.tensor(dx), .tensor(dScale), .tensor(dBias)]
        }
    }
}

/// The row loop of the layer-norm gradients over dY, X: [rows, cols] in their own float type,
/// with per-row and per-column vectors (and the reductions) in Double.
struct LayerNormGradRows: ElementOperation {
    let dy: Tensor, x: Tensor
    let rows: Int, cols: Int
    let scale: [Double], inv: [Double]
    let rowShift: [Double], rowScale: [Double], colShift: [Double], colScale: [Double]
    let simplified: Bool

    func float<T: FloatElement>(_ type: T.Type) throws -> (Tensor, [Double], [Double]) {
        var dx = Tensor(uninitialized: T.dtype, shape: x.shape)
        var dScale = [Double](repeating: 0, count: cols), dBias = [Double](repeating: 0, count: cols)
        try dy.withUnsafeBufferPointer(as: T.self) { g in
            try x.withUnsafeBufferPointer(as: T.self) { xv in
                dx.uncheckedMutableBufferPointer(as: T.self) { o in
                    for r in 0..<rows {
                        let base = r * cols
                        var meanB = 0.0, meanC = 0.0
                        for j in 0..<cols {
                            let d = Double(g[base + j])
                            let xhat = (Double(xv[base + j]) - rowShift[r] - colShift[j]) * rowScale[r] * colScale[j]
                            let b = d * scale[j] * inv[r]
                            meanB += b
                            meanC += b * xhat
                            dScale[j] += d * xhat
                            dBias[j] += d
                        }
                        meanB = simplified ? 0 : meanB / Double(cols)
                        meanC /= Double(cols)
                        for j in 0..<cols {
                            let xhat = (Double(xv[base + j]) - rowShift[r] - colShift[j]) * rowScale[r] * colScale[j]
                            let b = Double(g[base + j]) * scale[j] * inv[r]
                            o[base + j] = T(b - meanB - xhat * meanC)
                        }
                    }
                }
            }
        }
        return (dx, dScale, dBias)
    }
}

func registerTrainingNormalizationOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    registry.register("BatchNormInternal", domain: ms, since: 1, batchNormInternalKernel)
    registry.register("BatchNormalizationGrad", domain: ms, since: 1) { _ in BatchNormalizationGradKernel() }
    registry.register("LayerNormalizationGrad", domain: ms, since: 1) { ctx in
        LayerNormGradKernel(axis: try ctx.int("axis", default: -1), form: .standard)
    }
    registry.register("SimplifiedLayerNormalizationGrad", domain: ms, since: 1) { ctx in
        LayerNormGradKernel(axis: try ctx.int("axis", default: -1), form: .simplified)
    }
    registry.register("InvertibleLayerNormalizationGrad", domain: ms, since: 1) { ctx in
        LayerNormGradKernel(axis: try ctx.int("axis", default: -1), form: .invertible)
    }
    // onnxruntime's contrib LayerNormalization (onnx domain v1, before ONNX's own since 17) and
    // SimplifiedLayerNormalization (onnx domain v1), as its fusions write them.
    registry.register("LayerNormalization", domain: "", since: 1, contribLayerNormKernel(simplified: false))
    registry.register("SimplifiedLayerNormalization", domain: "", since: 1, contribLayerNormKernel(simplified: true))

    // Gradient rules (GradientContext):
    registry.registerGradient("BatchNormInternal", domain: ms, batchNormInternalGradient)
    registry.registerGradient("SimplifiedLayerNormalization", simplifiedLayerNormalizationGradient)
}

/// The builder of onnxruntime's contrib LayerNormalization (`simplified`: RMS form, no mean).
func contribLayerNormKernel(simplified: Bool) -> KernelFactory {
    { ctx in
        ContribLayerNormKernel(axis: try ctx.int("axis", default: -1), epsilon: Double(try ctx.float("epsilon", default: 1e-5)),
                               simplified: simplified)
    }
}

/// BatchNormInternal (com.microsoft), since opset 1.
func batchNormInternalKernel(_ ctx: NodeContext) throws -> Kernel {
    BatchNormInternalKernel(epsilon: Double(try ctx.float("epsilon", default: 1e-5)),
                            momentum: Double(try ctx.float("momentum", default: 0.9)),
                            training: try ctx.int("training_mode", default: 1) != 0)
}

/// The gradient rule of BatchNormInternal (com.microsoft).
func batchNormInternalGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let savedMean = g.forwardOutput(3), savedInvStd = g.forwardOutput(4)
    let outs = g.ms("BatchNormalizationGrad", [dY, g.input(0), g.input(1), savedMean, savedInvStd], outputs: 3,
                    attributes: ["epsilon": .float(g.node.float("epsilon") ?? 1e-5)])
    return [g.needs(0) ? outs[0] : nil, g.needs(1) ? outs[1] : nil, g.needs(2) ? outs[2] : nil, nil, nil]
}

/// The gradient rule of SimplifiedLayerNormalization.
func simplifiedLayerNormalizationGradient(_ g: GradientContext) throws -> [String?] {
    let invStd = g.forwardOutput(1)
    let base = (g.node.name.isEmpty ? "SimplifiedLayerNormalization" : g.node.name) + "_Grad/"
    let outs = g.emit("SimplifiedLayerNormalizationGrad", domain: "com.microsoft", [try g.requiredDY(), g.input(0), g.input(1), invStd], outputs: 2,
                      attributes: ["axis": .int(g.node.int("axis") ?? -1), "epsilon": .float(g.node.float("epsilon") ?? 1e-5)],
                      names: [base + "dX", base + "dScale"])
    return [g.needs(0) ? outs[0] : nil, g.needs(1) ? outs[1] : nil]
}
