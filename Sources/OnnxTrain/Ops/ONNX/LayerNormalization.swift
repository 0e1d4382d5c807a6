/// LayerNormalization (opset 17; registered in Normalization.swift's list; onnxruntime's contrib
/// LayerNormalization and SimplifiedLayerNormalization run the same kernel) and the layer norm
/// forward and backward kernels it shares with the three LayerNormalizationGrad forms, generic
/// over Float and Double, rows split across threads. Accumulator: T (float32 computes in float like
/// onnxruntime's CPU kernels; Sums.swift). Statistics are two-pass (mean, then mean of squared
/// deviations), which keeps rows with a large common offset accurate where onnxruntime's
/// E[x²] − E[x]² would cancel.

// The row loops are functions of their own, called from the Parallel.forRange closures: LLVM
// vectorises loops over plain pointer arguments but not the same loops inside those closures.

/// layernorm_forward: x, y [rows, cols]; scale, bias [cols] (bias optional); mean, invStd [rows].
/// `centered` false is the RMS form (SimplifiedLayerNormalization): no mean is subtracted
/// (mean holds 0), invStd = 1/√(mean(x²) + ε).
func layerNormForward<T: FloatElement>(x: UnsafePointer<T>, scale: UnsafePointer<T>, bias: UnsafePointer<T>?,
                      y: UnsafeMutablePointer<T>, mean: UnsafeMutablePointer<T>, invStd: UnsafeMutablePointer<T>,
                      rows: Int, cols: Int, epsilon: T, centered: Bool = true) {
    guard rows > 0, cols > 0 else { return }
    Parallel.forRange(rows, minimumChunk: max(1, 8192 / cols)) { range in
        for r in range {
            (mean[r], invStd[r]) = layerNormRow(x + r * cols, scale, bias, y + r * cols, cols, epsilon, centered)
        }
    }
}

/// One row of layernorm_forward; returns its mean (0 when not `centered`) and 1/std.
@inline(never)
func layerNormRow<T: FloatElement>(_ px: UnsafePointer<T>, _ scale: UnsafePointer<T>, _ bias: UnsafePointer<T>?,
                  _ py: UnsafeMutablePointer<T>, _ cols: Int, _ epsilon: T, _ centered: Bool) -> (T, T) {
    let m = centered ? rowSum(px, cols) / T(cols) : 0
    let v = squaredDeviationSum(px, cols, m) / T(cols)
    let s = 1 / (v + epsilon).squareRoot()
    if let bias {
        for j in 0..<cols { py[j] = (px[j] - m) * s * scale[j] + bias[j] }
    } else {
        for j in 0..<cols { py[j] = (px[j] - m) * s * scale[j] }
    }
    return (m, s)
}

/// layernorm_backward: dy, x, dx [rows, cols]; scale, dScale, dBias [cols]; mean, invStd [rows].
/// Per row, with x̂ = (x − mean)·invStd and b = dy·scale:
///   dx = invStd·(b − mean(b) − x̂·mean(b·x̂));  dScale = Σ_rows dy·x̂, dBias = Σ_rows dy.
/// A nil `mean` is the RMS form (SimplifiedLayerNormalizationGrad): x̂ = x·invStd and no mean(b)
/// term. One pass over the rows, in blocks of `layerNormGradBlockRows` rows: each block's dx rows,
/// and its column sums (rows in order) added into a partial row of its own while the block's dy and
/// x are in cache; the partials are then summed in block order. The blocks do not depend on the
/// thread count, so neither does the result. (A second pass over every column re-read dy and x:
/// 25 LayerNormalizationGrads of [1576, 192] per ViT-Tiny step at batch 8.)
func layerNormBackward<T: FloatElement>(dy: UnsafePointer<T>, x: UnsafePointer<T>, scale: UnsafePointer<T>,
                       mean: UnsafePointer<T>?, invStd: UnsafePointer<T>,
                       dx: UnsafeMutablePointer<T>, dScale: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>,
                       rows: Int, cols: Int) {
    guard cols > 0 else { return }
    dScale.update(repeating: 0, count: cols)
    dBias.update(repeating: 0, count: cols)
    guard rows > 0 else { return }
    let block = layerNormGradBlockRows(cols: cols)
    let blocks = (rows + block - 1) / block
    // Per block: its dScale partial, then its dBias partial.
    let partial = UnsafeMutablePointer<T>.allocate(capacity: blocks * 2 * cols)
    defer { partial.deallocate() }
    Parallel.forRange(blocks) { range in
        for b in range {
            let ps = partial + b * 2 * cols, pb = ps + cols
            ps.update(repeating: 0, count: cols)
            pb.update(repeating: 0, count: cols)
            for r in (b * block)..<min(rows, (b + 1) * block) {
                let m = mean?[r] ?? 0, s = invStd[r]
                layerNormGradRow(dy + r * cols, x + r * cols, scale, m, s, dx + r * cols, cols, centered: mean != nil)
                layerNormColumnSums(dy + r * cols, x + r * cols, m, s, ps, pb, cols)
            }
        }
    }
    for b in 0..<blocks {
        layerNormAddPartials(partial + b * 2 * cols, dScale, dBias, cols)
    }
}

/// Rows per block of layernorm_backward's pass: about 4096 elements, at least 32 rows (the
/// partial sums then take at most 1/16 of dy's size).
func layerNormGradBlockRows(cols: Int) -> Int { max(32, 4096 / max(cols, 1)) }

/// dx of one row of layernorm_backward.
@inline(never)
func layerNormGradRow<T: FloatElement>(_ pg: UnsafePointer<T>, _ px: UnsafePointer<T>, _ scale: UnsafePointer<T>, _ m: T, _ s: T,
                      _ po: UnsafeMutablePointer<T>, _ cols: Int, centered: Bool) {
    let mv = SIMD8<T>(repeating: m), sv = SIMD8<T>(repeating: s)
    var accB = SIMD8<T>(), accC = SIMD8<T>(), j = 0
    while j + 8 <= cols {
        let b = load8(pg + j) * load8(scale + j)
        accB += b
        accC += b * ((load8(px + j) - mv) * sv)
        j += 8
    }
    var sumB = accB.sum(), sumC = accC.sum()
    while j < cols {
        let b = pg[j] * scale[j]
        sumB += b
        sumC += b * ((px[j] - m) * s)
        j += 1
    }
    let meanB = centered ? sumB / T(cols) : 0, meanC = sumC / T(cols)
    for j in 0..<cols {
        let xhat = (px[j] - m) * s
        po[j] = s * (pg[j] * scale[j] - meanB - xhat * meanC)
    }
}

/// One row's terms of the column sums: ds[j] += dy[j]·x̂[j], db[j] += dy[j], x̂[j] = (x[j] − m)·s.
@inline(never)
func layerNormColumnSums<T: FloatElement>(_ pg: UnsafePointer<T>, _ px: UnsafePointer<T>, _ m: T, _ s: T,
                                          _ ds: UnsafeMutablePointer<T>, _ db: UnsafeMutablePointer<T>, _ cols: Int) {
    for j in 0..<cols {
        ds[j] += pg[j] * ((px[j] - m) * s)
        db[j] += pg[j]
    }
}

/// dScale += a block's dScale partial (`partial[0..<cols]`), dBias += its dBias partial (`partial[cols...]`).
@inline(never)
func layerNormAddPartials<T: FloatElement>(_ partial: UnsafePointer<T>, _ dScale: UnsafeMutablePointer<T>,
                                           _ dBias: UnsafeMutablePointer<T>, _ cols: Int) {
    for j in 0..<cols {
        dScale[j] += partial[j]
        dBias[j] += partial[cols + j]
    }
}

// MARK: - LayerNormalization (opset 17) and its gradient rule

/// Normalizes over the dims from `axis` on: Y = (X - mean) * invStdDev * Scale + B, with Mean and
/// InvStdDev of shape X.shape[..<axis] + [1, ...]. Statistics in float (stash_type 1) for float,
/// float16 and bfloat16 inputs (which compute in float32), in double for double. The same kernel
/// runs onnxruntime's contrib LayerNormalization and SimplifiedLayerNormalization (onnx domain
/// v1): `simplified` is the RMS form (Y = X·invStdDev·Scale, outputs Y and InvStdDev) and
/// `mixedTypes` lets Scale and B have another float type than X (their type V).
struct LayerNormKernel: Kernel {
    let axis: Int, epsilon: Double, simplified: Bool, mixedTypes: Bool

    init(_ ctx: NodeContext, simplified: Bool = false, mixedTypes: Bool = false) throws {
        axis = try ctx.int("axis", default: -1)
        epsilon = Double(try ctx.float("epsilon", default: 1e-5))
        self.simplified = simplified
        self.mixedTypes = mixedTypes
    }

    /// One float type's pass: Scale and B broadcast to the normalized shape once, then the
    /// pointer kernel above (accumulator T). Mean and InvStdDev are T.
    struct Op: ElementOperation {
        let x: Tensor, scale: Tensor, bias: Tensor?, axis: Int, epsilon: Double, simplified: Bool
        func float<T: FloatElement>(_ type: T.Type) throws -> [Tensor] {
            let normShape = Array(x.shape[axis...])
            let cols = Tensor.elementCount(normShape), rows = Tensor.elementCount(Array(x.shape[..<axis]))
            func covering(_ t: Tensor) throws -> Tensor {
                if t.count == cols && (try? Broadcast.shape(normShape, t.shape)) == normShape { return t }
                let spread = try broadcastBinary(Tensor(zeros: T.dtype, shape: normShape), t, T.self, T.self, T.self, outDType: T.dtype) { $1 }
                guard spread.count == cols else { throw KernelError("Scale or B does not broadcast to \(normShape)") }
                return spread
            }
            let scale = try covering(self.scale), bias = try self.bias.map(covering)
            let statShape = Array(x.shape[..<axis]) + Array(repeating: 1, count: x.rank - axis)
            var y = Tensor(uninitialized: T.dtype, shape: x.shape)
            var mean = Tensor(uninitialized: T.dtype, shape: statShape), invStd = Tensor(uninitialized: T.dtype, shape: statShape)
            let epsilon = T(fromDouble: epsilon), centered = !simplified
            x.uncheckedBufferPointer(as: T.self) { px in
                scale.uncheckedBufferPointer(as: T.self) { ps in
                    withOptionalPointer(bias, T.self) { pb in
                        y.uncheckedMutableBufferPointer(as: T.self) { py in
                            mean.uncheckedMutableBufferPointer(as: T.self) { pm in
                                invStd.uncheckedMutableBufferPointer(as: T.self) { pi in
                                    guard cols > 0 else {
                                        // Statistics of empty rows are NaN, as numpy's mean of nothing.
                                        pm.update(repeating: .nan); pi.update(repeating: .nan)
                                        return
                                    }
                                    guard let x = px.baseAddress, let s = ps.baseAddress, let y = py.baseAddress,
                                          let m = pm.baseAddress, let i = pi.baseAddress else { return }
                                    layerNormForward(x: x, scale: s, bias: pb, y: y, mean: m, invStd: i,
                                                     rows: rows, cols: cols, epsilon: epsilon, centered: centered)
                                }
                            }
                        }
                    }
                }
            }
            return simplified ? [y, invStd] : [y, mean, invStd]
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        let a = try normalizeAxis(axis, rank: x.rank)
        let scale = try inputs.tensor(1), bias = simplified ? nil : try inputs.optionalTensor(2)
        if mixedTypes {
            for (t, name) in [(scale as Tensor?, "Scale"), (bias, "B")] {
                if let t, !(t.dtype == .float32 || t.dtype == .float64 || t.isHalf) {
                    throw KernelError("\(name) must be a float tensor, got \(t.dtype)")
                }
            }
        } else {
            guard scale.dtype == x.dtype, bias.map({ $0.dtype == x.dtype }) ?? true else {
                throw KernelError("Scale (\(scale.dtype)) and B (\(bias.map { "\($0.dtype)" } ?? "absent")) must have X's type \(x.dtype)")
            }
        }
        guard x.dtype == .float32 || x.dtype == .float64 || x.isHalf else {
            throw unsupportedElementType(x.dtype)
        }
        // Half inputs compute in float32; Mean and InvStdDev stay float32 (stash_type 1).
        let compute: DType = x.dtype == .float64 ? .float64 : .float32
        var outs = try dispatch(compute, Op(x: x.cast(to: compute), scale: scale.cast(to: compute), bias: bias?.cast(to: compute),
                                            axis: a, epsilon: epsilon, simplified: simplified))
        outs[0] = outs[0].narrowed(to: x.dtype)
        return outs.map(Value.tensor)
    }
}

/// The builder of onnxruntime's contrib LayerNormalization and SimplifiedLayerNormalization (onnx
/// domain v1, before ONNX's own LayerNormalization 17; its fusions write them).
func contribLayerNormKernel(simplified: Bool) -> KernelFactory {
    { ctx in try LayerNormKernel(ctx, simplified: simplified, mixedTypes: true) }
}

/// The gradient rule of LayerNormalization (ai.onnx.preview.training).
func layerNormalizationGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let mean = g.forwardOutput(1), invStd = g.forwardOutput(2)
    var attributes: [String: Attribute] = ["axis": .int(g.node.int("axis") ?? -1), "epsilon": .float(g.node.float("epsilon") ?? 1e-5)]
    if let stash = g.node.int("stash_type") { attributes["stash_type"] = .int(stash) }
    let hasBias = g.hasInput(2)
    let base = (g.node.name.isEmpty ? "LayerNormalization" : g.node.name) + "_Grad/"
    let outs = g.emit("LayerNormalizationGrad", domain: "com.microsoft", [dY, g.input(0), g.input(1), mean, invStd],
                      outputs: 3, attributes: attributes,
                      names: [base + "dX", base + "dScale", hasBias ? base + "dBias" : ""])
    return [g.needs(0) ? outs[0] : nil, g.needs(1) ? outs[1] : nil, hasBias && g.needs(2) ? outs[2] : nil]
}
