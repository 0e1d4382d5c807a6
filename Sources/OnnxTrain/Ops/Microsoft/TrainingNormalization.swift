#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Batch and layer normalization for training: BatchNormInternal, BatchNormalizationGrad,
/// LayerNormalizationGrad, SimplifiedLayerNormalizationGrad, InvertibleLayerNormalizationGrad
/// (com.microsoft v1), and the registration of the onnx-domain contrib forwards LayerNormalization
/// v1 and SimplifiedLayerNormalization v1 (whose kernel is LayerNormalization.swift's). Every
/// kernel works in the input's float type (float32 for the half types), as onnxruntime does:
/// the layer norms through LayerNormalization.swift's pointer kernels, the batch norms summing
/// each contiguous row in T and adding the rows' sums in Double (`meanVariance`, Sums.swift).

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
/// channel: in training the batch mean and biased variance (`meanVariance`: each row of S summed
/// in T, rows added in Double), then
/// Y = (X − mean)·(scale·invStd) + B. Returns Y and the statistics used.
struct BatchNormForward: ElementOperation {
    let x: Tensor, n: Int, c: Int, s: Int
    let scale: [Double], bias: [Double], mean: [Double], variance: [Double]
    let epsilon: Double, training: Bool

    func float<T: FloatElement>(_ type: T.Type) throws -> (Tensor, [Double], [Double]) {
        var y = Tensor(uninitialized: T.dtype, shape: x.shape)
        var mean = self.mean, variance = self.variance
        try x.withUnsafeBufferPointer(as: T.self) { px in
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                mean.withUnsafeMutableBufferPointer { pm in
                    variance.withUnsafeMutableBufferPointer { pv in
                        guard let X = px.baseAddress, let Y = py.baseAddress else { return }
                        let (n, c, s, training) = (n, c, s, training)
                        Parallel.forRange(c) { channels in
                            for ch in channels {
                                if training {
                                    (pm[ch], pv[ch]) = meanVariance(X + ch * s, rows: n, stride: c * s, length: s)
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

/// LayerNormalizationGrad(dY, X, scale, mean, inv_std_dev) → dX, dScale, dBias;
/// SimplifiedLayerNormalizationGrad(dY, X, scale, inv_std_var) → dX, dScale;
/// InvertibleLayerNormalizationGrad(dY, Y, scale, bias, inv_std_var) → dX, dScale, dBias.
/// With x̂ the normalized input and b = dY⊙scale, per row:
///   dX = r·(b − mean(b) − x̂·mean(b⊙x̂))   (the simplified form drops mean(b)),
///   dScale = Σ_rows dY⊙x̂, dBias = Σ_rows dY.
/// All three run layerNormBackward (LayerNormalization.swift; accumulator T, float32 for half
/// inputs, as onnxruntime computes): the simplified form without a mean, the invertible form on
/// X' = (Y − bias)/(scale·r) with zero means, since X'·r is its normalized input.
struct LayerNormGradKernel: Kernel {
    enum Form { case standard, simplified, invertible }
    let axis: Int
    let form: Form

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let xName = form == .invertible ? "Y" : "X"
        let dy = try inputs.tensor(0), x = try inputs.tensor(1)
        try requireSameShape(dy, x, "Y_grad", xName)
        let a = try normalizeAxis(axis, rank: x.rank)
        let rows = Tensor.elementCount(Array(x.shape[..<a])), cols = Tensor.elementCount(Array(x.shape[a...]))
        _ = try commonElementType([dy, x], names: ["Y_grad", xName], floatOnly: true)
        guard x.dtype == .float32 || x.dtype == .float64 || x.isHalf else { throw unsupportedElementType(x.dtype) }
        let compute: DType = x.dtype == .float64 ? .float64 : .float32
        /// Input i, a float vector of `count` values, in the compute type.
        func vector(_ i: Int, _ name: String, _ count: Int, _ what: String) throws -> Tensor {
            let t = try inputs.tensor(i)
            guard t.count == count else { throw KernelError("\(name) \(t.shape) must hold \(count) values (\(what))") }
            guard t.dtype.isFloatingPoint else { throw KernelError("\(name) must be a float tensor, got \(t.dtype)") }
            return try t.cast(to: compute)
        }
        let scaleT = try inputs.tensor(2)
        let scale = try vector(2, "scale", cols, "the normalized shape")
        let row = "one per row", normalized = "the normalized shape"
        let op: LayerNormGradOperation
        switch form {
        case .standard:
            op = LayerNormGradOperation(dy: try dy.cast(to: compute), x: try x.cast(to: compute), scale: scale,
                                        mean: try vector(3, "mean", rows, row), invStd: try vector(4, "inv_std_dev", rows, row),
                                        bias: nil, rows: rows, cols: cols, scaleShape: scaleT.shape)
        case .simplified:
            op = LayerNormGradOperation(dy: try dy.cast(to: compute), x: try x.cast(to: compute), scale: scale,
                                        mean: nil, invStd: try vector(3, "inv_std_var", rows, row),
                                        bias: nil, rows: rows, cols: cols, scaleShape: scaleT.shape)
        case .invertible:
            op = LayerNormGradOperation(dy: try dy.cast(to: compute), x: try x.cast(to: compute), scale: scale,
                                        mean: nil, invStd: try vector(4, "inv_std_var", rows, row),
                                        bias: try vector(3, "bias", cols, normalized), rows: rows, cols: cols, scaleShape: scaleT.shape)
        }
        let (dx, dScale, dBias) = try dispatch(compute, op)
        var out: [Value?] = [.tensor(dx.narrowed(to: x.dtype)), .tensor(try dScale.cast(to: scaleT.dtype))]
        if form != .simplified { out.append(.tensor(try dBias.cast(to: scaleT.dtype))) }
        return out
    }
}

/// layerNormBackward over one float type; every tensor has it. `bias` set: the invertible form
/// (x holds Y). dScale and dBias have `scaleShape`.
private struct LayerNormGradOperation: ElementOperation {
    let dy: Tensor, x: Tensor, scale: Tensor, mean: Tensor?, invStd: Tensor, bias: Tensor?
    let rows: Int, cols: Int, scaleShape: [Int]

    func float<T: FloatElement>(_ type: T.Type) throws -> (Tensor, Tensor, Tensor) {
        var dx = Tensor(uninitialized: T.dtype, shape: x.shape)
        // Zeros: with no rows the column sums are all there is.
        var dScale = Tensor(zeros: T.dtype, shape: scaleShape), dBias = Tensor(zeros: T.dtype, shape: scaleShape)
        let input = try bias.map { try normalizedInput($0, T.self) } ?? x
        let mean = bias == nil ? self.mean : Tensor(zeros: T.dtype, shape: [rows])
        let (rows, cols) = (rows, cols)
        dy.uncheckedBufferPointer(as: T.self) { pg in
            input.uncheckedBufferPointer(as: T.self) { px in
                scale.uncheckedBufferPointer(as: T.self) { ps in
                    withOptionalPointer(mean, T.self) { pm in
                        invStd.uncheckedBufferPointer(as: T.self) { pi in
                            dx.uncheckedMutableBufferPointer(as: T.self) { po in
                                dScale.uncheckedMutableBufferPointer(as: T.self) { pds in
                                    dBias.uncheckedMutableBufferPointer(as: T.self) { pdb in
                                        guard let g = pg.baseAddress, let xv = px.baseAddress, let sc = ps.baseAddress,
                                              let i = pi.baseAddress, let o = po.baseAddress,
                                              let ds = pds.baseAddress, let db = pdb.baseAddress else { return }
                                        layerNormBackward(dy: g, x: xv, scale: sc, mean: pm, invStd: i, dx: o, dScale: ds, dBias: db,
                                                          rows: rows, cols: cols)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return (dx, dScale, dBias)
    }

    /// The invertible form's input: X' = (Y − bias)/(scale·r), whose X'·r is the normalized input.
    private func normalizedInput<T: FloatElement>(_ bias: Tensor, _ type: T.Type) throws -> Tensor {
        let s = scale.scalars(as: T.self), b = bias.scalars(as: T.self), r = invStd.scalars(as: T.self)
        if let j = s.firstIndex(of: 0) { throw KernelError("scale[\(j)] is 0, so Y cannot be inverted") }
        let y = x.scalars(as: T.self)
        var out = [T](repeating: 0, count: y.count)
        for row in 0..<rows {
            for j in 0..<cols { out[row * cols + j] = (y[row * cols + j] - b[j]) / (s[j] * r[row]) }
        }
        return Tensor(shape: x.shape, scalars: out)
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
