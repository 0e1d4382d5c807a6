/// Conv, ConvTranspose, ConvInteger and QLinearConv: im2col + GEMM per image and group.

/// Forward convolution of float tensors.
///
/// x: [N, C, in...], w: [M, C/group, k...], bias: [M] or nil -> y: [N, M, out...].
/// Per image and group: Y_g [M/G, P] = W_g [M/G, C/G·K] · col_g [C/G·K, P] (+ bias, written into
/// Y first so the GEMM accumulates onto it). Each image's output positions are cut into tiles of
/// output rows (`convTiles`), and the (image, tile) pairs spread over the kernel threads: a
/// thread unfolds a tile's columns into its own buffer, small enough to stay in cache, and
/// multiplies them at once, so one image keeps both cores busy with no handoff between the
/// im2col and the GEMM. Three shapes take other kernels: float32 3×3 unit-stride convolutions
/// with enough channels and tiles run Winograd F(4×4, 3×3) (Winograd.swift, `winogradTile`);
/// depthwise convolutions (group == C) run direct loops, and small images (P < 256) put several
/// images' columns side by side in one GEMM (ConvKernels.swift), except large enough direct 1×1
/// products (`convDirectImageMinWork`).
/// `epilogue` (FusedConv's Z and activation) is applied to each tile right after its GEMM, while it is
/// in cache (by the blocked kernel to each output row as it is scattered; by the depthwise kernels
/// to each output plane as it is finished). `weightCache` (a node whose float32 weight is a
/// constant of its session) keeps the Winograd weights from one run to the next, which moves
/// the shapes that take Winograd (`winogradTile(cachedWeights:)`). `dnnl` (the same nodes, float32,
/// where oneDNN has AVX-512 kernels) runs the classes `DnnlConv.takes` names on oneDNN (DnnlConv.swift).
func convolution<T: FloatElement>(_ x: Tensor, _ w: Tensor, bias: Tensor?, group: Int, geometry g: ConvGeometry, _ type: T.Type,
                                  epilogue: ConvEpilogue<T>? = nil, weightCache: WinogradWeightCache? = nil,
                                  dnnl: DnnlConvCache? = nil) throws -> Tensor {
    let n = x.shape[0], c = x.shape[1], m = w.shape[0]
    guard group > 0, c % group == 0, m % group == 0, w.shape[1] == c / group else {
        throw KernelError("Conv weight \(w.shape) does not fit input \(x.shape) with group \(group)")
    }
    if let bias, bias.count != m { throw KernelError("Conv bias of shape \(bias.shape) does not fit \(m) output channels") }
    let cg = c / group, mg = m / group, K = g.kernelSize, P = g.outputSize, I = g.inputSize
    var y = try Tensor(kernelUninitialized: T.dtype, shape: [n, m] + g.output, "Conv output")
    if y.count == 0 { return y }
    // A 1×1 kernel with unit strides and no padding reads the image as its own column matrix.
    let direct = K == 1 && g.strides.allSatisfy { $0 == 1 } && g.padsBegin.allSatisfy { $0 == 0 } && g.padsEnd.allSatisfy { $0 == 0 }
    let depthwise = group == c && group > 1
    // A direct 1×1 product per image and group of 512K+ multiply-adds reads the image where it
    // lies: side by side, the images' columns would be gathered and the product scattered back,
    // two copies of the activations that cost more than the wider product saves (ShuffleNet's
    // grouped 1×1 layers at 14×14 and 7×7, batch 32: 0.79x and 0.76x the time per node).
    let block = depthwise || (direct && mg * cg * P >= convDirectImageMinWork) ? 1 : convImageBlock(images: n, rows: cg * K, positions: P)
    let lastOut = g.output[g.rank - 1], outer = P / lastOut
    let tiles = convTiles(images: n, rows: cg * K, outerRows: outer, width: lastOut, direct: direct)
    let tileCount = direct ? 0 : try Tensor.checkedElementCount([cg, K, (outer + tiles - 1) / tiles, lastOut], "Conv im2col buffer")
    try x.withUnsafeBufferPointer(as: T.self) { px in
        try w.withUnsafeBufferPointer(as: T.self) { pw in
            try y.uncheckedMutableBufferPointer(as: T.self) { py in
                guard let X = px.baseAddress, let W = pw.baseAddress, let Y = py.baseAddress else { return }
                let hasBias = bias != nil
                try (bias?.scalars(as: T.self) ?? []).withUnsafeBufferPointer { pb in
                    // (An empty array's buffer may still have an address: the bias pointer is explicit.)
                    let biasPointer = hasBias ? pb.baseAddress : nil
                    if T.self == Float.self, let dnnl,
                       dnnl.forward(BLAS.rebound(X), w, BLAS.rebound(W), bias: biasPointer.map(BLAS.rebound), BLAS.rebound(Y),
                                    images: n, channels: c, outputs: m, group: group, g, epilogue: epilogue.map { $0.asFloat() }) {
                        // oneDNN's convolution on the weight packed once (DnnlConv.swift).
                        return
                    }
                    if T.self == Float.self, let weightCache,
                       let tile = winogradTile(images: n, channels: c, outputs: m, group: group, g, cachedWeights: true),
                       let kept = try weightCache.weights(w, BLAS.rebound(W), tile: tile) {
                        // The weights' U kept by the session (Winograd.swift, `WinogradWeightCache`).
                        try withExtendedLifetime(kept) {
                            try winogradForward(tile: tile, BLAS.rebound(X), BLAS.rebound(W), bias: biasPointer.map(BLAS.rebound), BLAS.rebound(Y),
                                                images: n, channels: c, outputs: m, group: group, g,
                                                epilogue: epilogue.map { $0.asFloat() },
                                                transformed: UnsafePointer(kept.pointer))
                        }
                        return
                    }
                    if T.self == Float.self, let tile = winogradTile(images: n, channels: c, outputs: m, group: group, g),
                       winogradOverride != nil || n * ((g.output[0] + 3) / 4) * ((g.output[1] + 3) / 4) >= winogradUnkeptWeightsTiles {
                        // 3×3 unit-stride float32: Winograd F(tile×tile, 3×3), epilogue fused (Winograd.swift).
                        try winogradForward(tile: tile, BLAS.rebound(X), BLAS.rebound(W), bias: biasPointer.map(BLAS.rebound), BLAS.rebound(Y),
                                        images: n, channels: c, outputs: m, group: group, g,
                                        epilogue: epilogue.map { $0.asFloat() })
                        return
                    }
                    if !depthwise, group == 1, convSplitsOutputs(images: n, outputs: m, rows: cg * K, positions: P, direct: direct) {
                        // One image of few positions: the threads split the output channels (ConvKernels.swift).
                        convolutionSplittingOutputs(X, W, bias: biasPointer, Y, images: n, channels: c, outputs: m, g,
                                                    direct: direct, epilogue: epilogue)
                        return
                    }
                    if depthwise || block > 1 {
                        if depthwise {
                            depthwiseConvolution(X, W, bias: biasPointer, Y, images: n, channels: c, outputs: m, g, epilogue: epilogue)
                        } else {
                            convolutionBlocked(X, W, bias: biasPointer, Y, images: n, channels: c, outputs: m, group: group, g,
                                               block: block, epilogue: epilogue)
                        }
                        return
                    }
                    let taps = direct ? [] : ConvTapRows.all(g)
                    // Work items are (image, tile of output rows); a tile's columns are unfolded into
                    // the thread's own buffer and multiplied at once, while they are in cache.
                    Parallel.forRange(n * tiles) { items in
                        let col = UnsafeMutablePointer<T>.allocate(capacity: max(tileCount, 1))
                        defer { col.deallocate() }
                        for item in items {
                            let b = item / tiles, t = item % tiles
                            let rows = (outer * t / tiles)..<(outer * (t + 1) / tiles)
                            let p0 = rows.lowerBound * lastOut, width = rows.count * lastOut
                            if width == 0 { continue }
                            if hasBias {
                                for o in 0..<m { (Y + (b * m + o) * P + p0).update(repeating: pb[o], count: width) }
                            }
                            for gi in 0..<group {
                                let image = X + (b * c + gi * cg) * I
                                let columns: UnsafePointer<T>, ldb: Int
                                if direct {
                                    (columns, ldb) = (image + p0, P)
                                } else {
                                    im2col(image, channels: cg, g, col, taps: taps, rows: rows)
                                    (columns, ldb) = (UnsafePointer(col), width)
                                }
                                // Y_g[:, tile] [mg, width] (+)= W_g [mg, cg·K] · columns [cg·K, width]
                                convGemm(transA: false, transB: false, m: mg, n: width, k: cg * K,
                                     a: W + gi * mg * cg * K, lda: cg * K, b: columns, ldb: ldb,
                                     beta: hasBias ? 1 : 0, c: Y + (b * m + gi * mg) * P + p0, ldc: P)
                            }
                            if let epilogue {
                                if width == P {
                                    // Whole rows lie one after another: runs of about 4K elements
                                    // (an activation call per row of a 7×7 image was 576 calls an image).
                                    let together = max(1, convEpilogueRun / P)
                                    for o in stride(from: 0, to: m, by: together) { epilogue.apply(Y, (b * m + o) * P, min(together, m - o) * P) }
                                } else {
                                    for o in 0..<m { epilogue.apply(Y, (b * m + o) * P + p0, width) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    return y
}

/// Transposed convolution of float tensors: the adjoint of `convolution` in x.
///
/// x: [N, C, in...], w: [C, M/group, k...] -> y: [N, M, out...]; `g` maps y (its `input`) to x (its `output`).
/// Per image and group: col [M/G·K, P_in] = W_gᵀ · X_g, then col2im into Y.
func transposedConvolution<T: FloatElement>(_ x: Tensor, _ w: Tensor, bias: Tensor?, group: Int, geometry g: ConvGeometry, _ type: T.Type) throws -> Tensor {
    let n = x.shape[0], c = x.shape[1]
    guard group > 0, c % group == 0, w.shape[0] == c else {
        throw KernelError("ConvTranspose weight \(w.shape) does not fit input \(x.shape) with group \(group)")
    }
    let cg = c / group, mg = w.shape[1], m = mg * group, K = g.kernelSize
    let P = g.outputSize, O = g.inputSize   // P: input positions, O: output image size
    if let bias, bias.count != m { throw KernelError("ConvTranspose bias of shape \(bias.shape) does not fit \(m) output channels") }
    var y = try Tensor(kernelZeros: T.dtype, shape: [n, m] + g.input, "ConvTranspose output")
    if y.count == 0 { return y }
    var col = try [T](kernelScratch: [mg, K, P], "ConvTranspose column buffer")
    try x.withUnsafeBufferPointer(as: T.self) { px in
        try w.withUnsafeBufferPointer(as: T.self) { pw in
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                col.withUnsafeMutableBufferPointer { pc in
                    guard let X = px.baseAddress, let W = pw.baseAddress, let Y = py.baseAddress, let C = pc.baseAddress else { return }
                    for b in 0..<n {
                        for gi in 0..<group {
                            BLAS.gemm(transA: true, transB: false, m: mg * K, n: P, k: cg, alpha: 1,
                                 a: W + gi * cg * mg * K, lda: mg * K, b: X + (b * c + gi * cg) * P, ldb: P,
                                 beta: 0, c: C, ldc: P)
                            col2im(C, channels: mg, g, Y + (b * m + gi * mg) * O)
                        }
                    }
                    if let bias {
                        let bv = bias.scalars(as: T.self)
                        for b in 0..<n { for o in 0..<m {
                            let base = (b * m + o) * O
                            for p in 0..<O { Y[base + p] += bv[o] }
                        } }
                    }
                }
            }
        }
    }
    return y
}

/// Conv's attributes; the geometry is resolved per run from the input and weight shapes.
struct ConvAttributes {
    let window: WindowAttributes
    let group: Int

    init(_ ctx: NodeContext) throws {
        window = try WindowAttributes(ctx)
        group = try ctx.int("group", default: 1)
        guard group > 0 else { throw KernelError("group must be positive, got \(group)") }
    }

    func geometry(x: Tensor, w: Tensor) throws -> ConvGeometry {
        guard x.rank >= 3, w.rank == x.rank else { throw KernelError("Conv input \(x.shape) and weight \(w.shape) must have the same rank >= 3") }
        let kernel = Array(w.shape.dropFirst(2))
        if !window.kernelShape.isEmpty && window.kernelShape != kernel {
            throw KernelError("kernel_shape \(window.kernelShape) does not match weight \(w.shape)")
        }
        return try window.geometry(spatial: Array(x.shape.dropFirst(2)), kernel: kernel)
    }
}

struct ConvKernel: Kernel {
    let attributes: ConvAttributes
    /// The Winograd weights kept for the session, where the weight is one of its constants.
    let weightCache: WinogradWeightCache?
    /// oneDNN's packed weights and primitives, for the same nodes (DnnlConv.swift).
    let dnnlCache: DnnlConvCache?

    init(attributes: ConvAttributes, weightCache: WinogradWeightCache? = nil, dnnlCache: DnnlConvCache? = nil) {
        self.attributes = attributes
        self.weightCache = weightCache
        self.dnnlCache = dnnlCache
    }

    /// For a node of `ctx`: attributes, and weight caches where input 1 is a session constant.
    init(_ ctx: NodeContext) throws {
        self.init(attributes: try ConvAttributes(ctx), weightCache: ConvKernel.makeWeightCache(ctx), dnnlCache: DnnlConvCache.make(ctx))
    }

    /// A Winograd weight cache where the node's weight (input 1) is a constant of its session.
    static func makeWeightCache(_ ctx: NodeContext) -> WinogradWeightCache? {
        guard ctx.isConstantInput(1), let budget = ctx.cacheBudget else { return nil }
        return WinogradWeightCache(budget: budget)
    }

    /// The cache for a run with weight `w`: only float32 weights, read as they are (a float16
    /// weight is widened into a new tensor on every run).
    func cache(forWeight w: Tensor) -> WinogradWeightCache? { w.dtype == .float32 ? weightCache : nil }

    /// oneDNN's cache for a run with weight `w`: float32 weights only.
    func dnnl(forWeight w: Tensor) -> DnnlConvCache? { w.dtype == .float32 ? dnnlCache : nil }

    struct Op: ElementOperation {
        let x: Tensor, w: Tensor, b: Tensor?, group: Int, g: ConvGeometry
        var weightCache: WinogradWeightCache? = nil
        var dnnl: DnnlConvCache? = nil
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            try convolution(x, w, bias: b, group: group, geometry: g, T.self, weightCache: weightCache, dnnl: dnnl)
        }
    }
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let cache = self.cache(forWeight: try inputs.tensor(1)), dnnl = self.dnnl(forWeight: try inputs.tensor(1))
        return try withFloatCompute([inputs.tensor(0), inputs.tensor(1), inputs.optionalTensor(2)]) { t in
            guard let x = t[0], let w = t[1] else { return [] }
            guard w.dtype == x.dtype, t[2].map({ $0.dtype == x.dtype }) ?? true else { throw KernelError("Conv inputs differ in type") }
            let g = try attributes.geometry(x: x, w: w)
            return [try dispatch(x.dtype, Op(x: x, w: w, b: t[2], group: attributes.group, g: g, weightCache: cache, dnnl: dnnl))]
        }.map { $0.map(Value.tensor) }
    }
}

/// ConvTranspose: output_padding, output_shape and auto_pad as the ONNX spec states them.
struct ConvTransposeKernel: Kernel {
    let window: WindowAttributes
    let group: Int
    let outputPadding: [Int]
    let outputShape: [Int]

    init(_ ctx: NodeContext) throws {
        window = try WindowAttributes(ctx)
        group = try ctx.int("group", default: 1)
        outputPadding = try ctx.ints("output_padding", default: [])
        outputShape = try ctx.ints("output_shape", default: [])
        guard group > 0 else { throw KernelError("group must be positive, got \(group)") }
    }

    /// The geometry of the equivalent forward conv from the output image to the input image.
    func geometry(x: Tensor, w: Tensor) throws -> ConvGeometry {
        guard x.rank >= 3, w.rank == x.rank else { throw KernelError("ConvTranspose input \(x.shape) and weight \(w.shape) must have the same rank >= 3") }
        let r = x.rank - 2
        let input = Array(x.shape.dropFirst(2)), kernel = Array(w.shape.dropFirst(2))
        let s = window.strides.isEmpty ? Array(repeating: 1, count: r) : window.strides
        let d = window.dilations.isEmpty ? Array(repeating: 1, count: r) : window.dilations
        let op = outputPadding.isEmpty ? Array(repeating: 0, count: r) : outputPadding
        guard s.count == r, d.count == r, op.count == r else { throw KernelError("strides, dilations or output_padding do not fit \(r) spatial dims") }
        var outShape = outputShape
        if outShape.count == r + 2 { outShape = Array(outShape.dropFirst(2)) }
        var pb = Array(repeating: 0, count: r), pe = Array(repeating: 0, count: r), out = Array(repeating: 0, count: r)
        guard kernel.allSatisfy({ $0 > 0 }) else { throw KernelError("kernel shape \(kernel) must be positive") }
        // Attribute values up to Int.max reach here: the size arithmetic is overflow-checked.
        func checked(_ r: (partialValue: Int, overflow: Bool)) throws -> Int {
            guard !r.overflow else {
                throw KernelError("strides \(s), dilations \(d), pads \(window.pads), output_padding \(op) or output_shape \(outputShape) overflow Int for kernel \(kernel) and input \(input)")
            }
            return r.partialValue
        }
        var padsEnd = Array(repeating: 0, count: r)
        for i in 0..<r {
            let extent = try checked(checked((kernel[i] - 1).multipliedReportingOverflow(by: d[i])).addingReportingOverflow(1))
            let stridden = try checked(s[i].multipliedReportingOverflow(by: input[i] - 1))
            let full = try checked(checked(stridden.addingReportingOverflow(op[i])).addingReportingOverflow(extent))
            if !outShape.isEmpty || window.autoPad == .sameUpper || window.autoPad == .sameLower {
                let target: Int
                if !outShape.isEmpty {
                    guard outShape.count == r else { throw KernelError("output_shape \(outputShape) does not fit \(r) spatial dims") }
                    target = outShape[i]
                } else {
                    target = try checked(input[i].multipliedReportingOverflow(by: s[i]))
                }
                let total = max(0, try checked(full.subtractingReportingOverflow(target)))
                if window.autoPad == .sameUpper {
                    pb[i] = total / 2; pe[i] = total - total / 2
                } else {
                    pb[i] = total - total / 2; pe[i] = total / 2
                }
                out[i] = target
            } else {
                if !window.pads.isEmpty && window.autoPad == .notSet {
                    guard window.pads.count == 2 * r else { throw KernelError("pads \(window.pads) do not fit \(r) spatial dims") }
                    pb[i] = window.pads[i]; pe[i] = window.pads[i + r]
                }
                out[i] = try checked(checked(full.subtractingReportingOverflow(pb[i])).subtractingReportingOverflow(pe[i]))
            }
            guard out[i] >= 0 else { throw KernelError("ConvTranspose output size is negative") }
            padsEnd[i] = try checked(pe[i].subtractingReportingOverflow(op[i]))
        }
        _ = try Tensor.checkedElementCount(out, "ConvTranspose output spatial")
        _ = try Tensor.checkedElementCount(kernel, "ConvTranspose kernel")
        // Seen from the output image, the pads at the end include output_padding: the
        // forward conv over `out` must yield exactly `input` positions.
        return ConvGeometry(input: out, kernel: kernel, strides: s, dilations: d, padsBegin: pb,
                            padsEnd: padsEnd, output: input)
    }

    struct Op: ElementOperation {
        let x: Tensor, w: Tensor, b: Tensor?, group: Int, g: ConvGeometry
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            try transposedConvolution(x, w, bias: b, group: group, geometry: g, T.self)
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        try withFloatCompute([inputs.tensor(0), inputs.tensor(1), inputs.optionalTensor(2)]) { t in
            guard let x = t[0], let w = t[1] else { return [] }
            let g = try geometry(x: x, w: w)
            return [try dispatch(x.dtype, Op(x: x, w: w, b: t[2], group: group, g: g))]
        }.map { $0.map(Value.tensor) }
    }
}

func registerConvOps(_ registry: OpRegistry) {
    registry.register("Conv", since: 1) { ctx in try ConvKernel(ctx) }
    registry.register("ConvTranspose", since: 1) { ctx in try ConvTransposeKernel(ctx) }
    registry.register("DeformConv", since: 19) { ctx in try DeformConvKernel(ctx) }
    registry.register("ConvInteger", since: 10, convIntegerKernel)
    registry.register("QLinearConv", since: 10, qLinearConvKernel)
}

// MARK: - DeformConv

/// DeformConv (19+), 2-D: each kernel tap samples X bilinearly (zeros outside the image) at its
/// regular position plus a learned offset, scaled by an optional mask; the samples form a column
/// matrix and each group is one GEMM, as in `convolution`.
///
/// x [N, C, H, W], w [M, C/group, kh, kw], offset [N, og·kh·kw·2, oh, ow] (dy, dx per tap),
/// mask [N, og·kh·kw, oh, ow] -> y [N, M, oh, ow].
struct DeformConvKernel: Kernel {
    let attributes: ConvAttributes
    let offsetGroups: Int

    init(_ ctx: NodeContext) throws {
        attributes = try ConvAttributes(ctx)
        offsetGroups = try ctx.int("offset_group", default: 1)
        guard offsetGroups > 0 else { throw KernelError("offset_group must be positive") }
    }

    struct Op: ElementOperation {
        let x: Tensor, w: Tensor, offset: Tensor, bias: Tensor?, mask: Tensor?, group: Int, offsetGroups: Int, g: ConvGeometry
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            guard g.rank == 2 else { throw KernelError("DeformConv supports 2-D inputs only, got \(x.shape)") }
            let (n, c, ih, iw) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
            let (m, kh, kw) = (w.shape[0], g.kernel[0], g.kernel[1])
            let (oh, ow) = (g.output[0], g.output[1])
            let K = kh * kw, P = oh * ow
            guard group > 0, c % group == 0, m % group == 0, w.shape[1] == c / group, c % offsetGroups == 0 else {
                throw KernelError("weight \(w.shape) does not fit input \(x.shape) with group \(group) and offset_group \(offsetGroups)")
            }
            guard offset.shape == [n, offsetGroups * K * 2, oh, ow] else {
                throw KernelError("offset \(offset.shape) must be [\(n), \(offsetGroups * K * 2), \(oh), \(ow)]")
            }
            if let mask, mask.shape != [n, offsetGroups * K, oh, ow] { throw KernelError("mask \(mask.shape) must be [\(n), \(offsetGroups * K), \(oh), \(ow)]") }
            if let bias, bias.count != m { throw KernelError("bias must hold \(m) values") }
            let xs = try x.elements(as: T.self), ws = try w.elements(as: T.self), offs = try offset.elements(as: T.self)
            let ms = try mask?.elements(as: T.self), bs = try bias?.elements(as: T.self)
            let cg = c / group, mg = m / group, cPerOffset = c / offsetGroups
            var y = try [T](kernelScratch: [n, m, P], "DeformConv output")
            var col = try [T](kernelScratch: [c, K, P], "DeformConv column buffer")
            @inline(__always) func at(_ base: Int, _ r: Int, _ s: Int) -> Double {
                r >= 0 && r < ih && s >= 0 && s < iw ? xs[base + r * iw + s].doubleValue : 0
            }
            for b in 0..<n {
                // Deformable im2col: col[(ch·K + k), p]
                for ch in 0..<c {
                    let og = ch / cPerOffset, xBase = (b * c + ch) * ih * iw
                    for k in 0..<K {
                        let (ki, kj) = (k / kw, k % kw)
                        let oBase = ((b * offsetGroups + og) * K + k) * 2 * P
                        for p in 0..<P {
                            let (i, j) = (p / ow, p % ow)
                            let h = Double(i * g.strides[0] - g.padsBegin[0] + ki * g.dilations[0]) + offs[oBase + p].doubleValue
                            let wv = Double(j * g.strides[1] - g.padsBegin[1] + kj * g.dilations[1]) + offs[oBase + P + p].doubleValue
                            // A NaN, infinite or far-off offset samples only padding (Int(_:) would trap).
                            guard abs(h) < 1e15, abs(wv) < 1e15 else { col[(ch * K + k) * P + p] = 0; continue }
                            let h0 = Int(h.rounded(.down)), w0 = Int(wv.rounded(.down))
                            let dh = h - Double(h0), dw = wv - Double(w0)
                            var v = (1 - dh) * (1 - dw) * at(xBase, h0, w0) + (1 - dh) * dw * at(xBase, h0, w0 + 1)
                                + dh * (1 - dw) * at(xBase, h0 + 1, w0) + dh * dw * at(xBase, h0 + 1, w0 + 1)
                            if let ms { v *= ms[((b * offsetGroups + og) * K + k) * P + p].doubleValue }
                            col[(ch * K + k) * P + p] = T(fromDouble: v)
                        }
                    }
                }
                ws.withUnsafeBufferPointer { pw in col.withUnsafeBufferPointer { pc in y.withUnsafeMutableBufferPointer { py in
                    for gi in 0..<group {
                        BLAS.gemm(transA: false, transB: false, m: mg, n: P, k: cg * K, alpha: 1, a: pw.baseAddress! + gi * mg * cg * K, lda: cg * K,
                             b: pc.baseAddress! + gi * cg * K * P, ldb: P, beta: 0, c: py.baseAddress! + (b * m + gi * mg) * P, ldc: P)
                    }
                } } }
                if let bs { for o in 0..<m { for p in 0..<P { y[(b * m + o) * P + p] += bs[o] } } }
            }
            return Tensor(shape: [n, m, oh, ow], scalars: y)
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        try withFloatCompute([inputs.tensor(0), inputs.tensor(1), inputs.tensor(2), inputs.optionalTensor(3), inputs.optionalTensor(4)]) { t in
            let (x, w) = (t[0]!, t[1]!)
            let g = try attributes.geometry(x: x, w: w)
            return [try dispatch(x.dtype, Op(x: x, w: w, offset: t[2]!, bias: t[3], mask: t[4], group: attributes.group, offsetGroups: offsetGroups, g: g))]
        }.map { $0.map(Value.tensor) }
    }
}
