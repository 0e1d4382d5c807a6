/// MaxPoolGrad and AveragePoolGrad (onnx domain, since 9), the pooling gradients onnxruntime's
/// training graphs write as `ai.onnx::MaxPoolGrad` / `ai.onnx::AveragePoolGrad`.
///
/// onnxruntime takes dX's shape from the node's statically inferred output shape (training graphs
/// carry it in value_info). Here dX's spatial dims come from the output's declared shape where it
/// states them, and otherwise from the pooling geometry: the smallest input that gives dY's
/// output size, i = (o−1)·s + (k−1)·d + 1 − pads (floor mode; with ceil_mode the smallest i whose
/// ceil gives o; with SAME_* auto_pad, o·s). That guess is short when the forward input had
/// trailing rows no window read (e.g. 5 → 2 with k 2, s 2), hence the declared shape first.
/// N and C always come from dY (onnxruntime's MaxPoolGrad also takes dim 0 from dY).

/// The pooling attributes shared by both gradients.
struct PoolAttributes {
    let kernel: [Int]
    let strides: [Int]?
    let pads: [Int]?
    let dilations: [Int]?
    let autoPad: String
    let ceilMode: Bool

    /// dX's shape as the graph declares it, if it does.
    let declared: [Dim]?

    init(_ ctx: NodeContext) throws {
        declared = ctx.declaredOutputShape(0)
        guard let k = try ctx.ints("kernel_shape") else { throw KernelError("attribute 'kernel_shape' is required") }
        kernel = k
        strides = try ctx.ints("strides")
        pads = try ctx.ints("pads")
        dilations = try ctx.ints("dilations")
        autoPad = try ctx.string("auto_pad", default: "NOTSET")
        ceilMode = try ctx.int("ceil_mode", default: 0) != 0
    }

    /// Strides, dilations and [begin…, end…] pads for `r` spatial dims, checked.
    func resolved(_ r: Int) throws -> (s: [Int], d: [Int], p: [Int]) {
        let s = strides ?? Array(repeating: 1, count: r)
        let d = dilations ?? Array(repeating: 1, count: r)
        let p = pads ?? Array(repeating: 0, count: 2 * r)
        guard kernel.count == r, s.count == r, d.count == r, p.count == 2 * r, kernel.allSatisfy({ $0 > 0 }),
              s.allSatisfy({ $0 > 0 }), d.allSatisfy({ $0 > 0 }), p.allSatisfy({ $0 >= 0 }) else {
            throw KernelError("kernel_shape \(kernel), strides \(s), dilations \(d), pads \(p) do not fit \(r) spatial dims")
        }
        return (s, d, p)
    }

    /// The forward input's spatial shape for an output of spatial shape `output` (see the file comment).
    func inputShape(output: [Int]) throws -> [Int] {
        let r = output.count
        let (s, d, p) = try resolved(r)
        // Attribute values up to Int.max reach here: every step is overflow-checked.
        func checked(_ v: (partialValue: Int, overflow: Bool)) throws -> Int {
            guard !v.overflow else { throw KernelError("kernel_shape \(kernel), strides \(s), dilations \(d), pads \(p) overflow Int for output \(output)") }
            return v.partialValue
        }
        return try (0..<r).map { i in
            if let declared, declared.count == r + 2, case .value(let v) = declared[i + 2], v > 0 { return v }
            let extent = try checked(checked((kernel[i] - 1).multipliedReportingOverflow(by: d[i])).addingReportingOverflow(1))
            if autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER" { return try checked(output[i].multipliedReportingOverflow(by: s[i])) }
            let pad = autoPad == "VALID" ? 0 : try checked(p[i].addingReportingOverflow(p[i + r]))
            let steps = ceilMode ? try checked(checked(max(output[i] - 2, 0).multipliedReportingOverflow(by: s[i])).addingReportingOverflow(1))
                                 : try checked((output[i] - 1).multipliedReportingOverflow(by: s[i]))
            return max(try checked(steps.addingReportingOverflow(extent)) - pad, 1)
        }
    }
}

/// MaxPoolGrad(dY, Indices) → dX: dX = 0, then dX.flat[Indices[i]] += dY.flat[i]. The indices are
/// MaxPool's flat indices into the whole input (batch and channel offsets included).
struct MaxPoolGradKernel: Kernel {
    let attributes: PoolAttributes
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dy = try inputs.tensor(0), indexTensor = try inputs.tensor(1)
        try requireSameShape(dy, indexTensor, "dY", "Indices")
        guard dy.rank >= 3 else { throw KernelError("dY must have rank >= 3 [N, C, ...], got \(dy.shape)") }
        let shape = Array(dy.shape[..<2]) + (try attributes.inputShape(output: Array(dy.shape[2...])))
        if indexTensor.dtype == .int64, dy.dtype.isFloatingPoint,
           let dx = try dispatch(dy.widenedToFloat().dtype, MaxPoolGradByChannel(dy: dy.widenedToFloat(), indices: indexTensor, shape: shape)) {
            return [.tensor(dx.narrowed(to: dy.dtype))]
        }
        let indices = try indexValues(indexTensor, "Indices")
        // An index beyond the inferred shape means the forward input had rows the geometry cannot
        // reveal; say so rather than write out of range.
        let count = try Tensor.checkedElementCount(shape, "MaxPoolGrad dX")
        if let top = indices.max(), top >= count, count > 0 {
            let perImage = Tensor.elementCount(Array(shape[2...]))
            throw KernelError("index \(top) is outside the inferred input shape \(shape) (\(perImage) elements per channel)")
        }
        var pairs: [(dst: Int, src: Int)] = []
        pairs.reserveCapacity(indices.count)
        for (i, idx) in indices.enumerated() {
            guard idx >= 0 else { throw KernelError("index \(idx) is negative") }
            pairs.append((idx, i))
        }
        return [.tensor(try scatterAdd(dy, shape: shape, pairs: pairs, block: 1))]
    }
}

/// MaxPoolGrad's usual case, spread over the threads by channel: indices from MaxPool point into
/// their own channel, so channel c of dX (zeroed, then scattered into) depends only on channel c
/// of dY and Indices. Returns nil (the caller takes the general, serial path and its error
/// messages) when the shapes are empty or any index falls outside its own channel.
struct MaxPoolGradByChannel: ElementOperation {
    let dy: Tensor, indices: Tensor, shape: [Int]

    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor? {
        let channels = shape[0] * shape[1]
        let count = try Tensor.checkedElementCount(shape, "MaxPoolGrad dX")
        guard channels > 0, count > 0, dy.count > 0 else { return nil }
        let I = count / channels, O = dy.count / channels
        var dx = try Tensor(kernelUninitialized: T.dtype, shape: shape, "MaxPoolGrad dX")
        let foreign = UnsafeMutablePointer<Bool>.allocate(capacity: channels)
        defer { foreign.deallocate() }
        foreign.initialize(repeating: false, count: channels)
        try dy.withUnsafeBufferPointer(as: T.self) { pdy in
            try indices.withUnsafeBufferPointer(as: Int64.self) { pidx in
                dx.uncheckedMutableBufferPointer(as: T.self) { pdx in
                    guard let G = pdy.baseAddress, let J = pidx.baseAddress, let D = pdx.baseAddress else { return }
                    Parallel.forRange(channels, minimumChunk: max(1, 8_192 / max(I, 1))) { range in
                        for ch in range {
                            let dst = D + ch * I, lo = Int64(ch * I)
                            dst.update(repeating: 0, count: I)
                            for o in (ch * O)..<((ch + 1) * O) {
                                let k = J[o] - lo
                                guard k >= 0 && k < Int64(I) else { foreign[ch] = true; break }
                                dst[Int(k)] += G[o]
                            }
                        }
                    }
                }
            }
        }
        for ch in 0..<channels where foreign[ch] { return nil }
        return dx
    }
}

/// AveragePoolGrad(dY) → dX (1-D/2-D/3-D and beyond). For each output cell the window is
/// [o·s − p_begin, +k) clipped to the input; each position in it receives dY/denominator, where
/// the denominator is ∏k with count_include_pad and the clipped window size otherwise.
struct AveragePoolGradKernel: Kernel {
    let attributes: PoolAttributes
    let countIncludePad: Bool

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dy = try inputs.tensor(0)
        guard dy.rank >= 3 else { throw KernelError("dY must have rank >= 3 [N, C, ...], got \(dy.shape)") }
        let outShape = Array(dy.shape[2...])
        let inShape = try attributes.inputShape(output: outShape)
        let r = outShape.count
        let (s, _, p) = try attributes.resolved(r)
        let k = attributes.kernel
        let channels = dy.shape[0] * dy.shape[1]
        _ = try Tensor.checkedElementCount([channels] + inShape, "AveragePoolGrad dX")
        let outSize = outShape.reduce(1, *), inSize = inShape.reduce(1, *)
        let kernelCount = Double(try Tensor.checkedElementCount(k, "kernel_shape"))
        let inStrides = contiguousStrides(inShape)
        // Window taps per output cell, computed once and reused for every channel.
        var windows: [[Int]] = []
        var weights: [Double] = []
        windows.reserveCapacity(outSize)
        var walk = Odometer(shape: outShape)
        for _ in 0..<outSize {
            let o = walk.index
            var lo = [Int](repeating: 0, count: r), hi = [Int](repeating: 0, count: r)
            for d in 0..<r {
                // Overflow here means a window far outside the input: an empty window.
                let (a, o1) = o[d].multipliedReportingOverflow(by: s[d])
                let start = o1 ? Int.max : a - p[d]
                let (end, o2) = start.addingReportingOverflow(k[d])
                lo[d] = max(start, 0)
                hi[d] = min(o2 ? Int.max : end, inShape[d])
            }
            var taps: [Int] = []
            if (0..<r).allSatisfy({ lo[$0] < hi[$0] }) {
                let start = (0..<r).reduce(0) { $0 + lo[$1] * inStrides[$1] }
                taps = stridedIndices(shape: (0..<r).map { hi[$0] - lo[$0] }, strides: inStrides, offset: start)
            }
            windows.append(taps)
            weights.append(countIncludePad ? 1 / kernelCount : (taps.isEmpty ? 0 : 1 / Double(taps.count)))
            walk.advance()
        }
        guard dy.dtype.isFloatingPoint else { throw KernelError("dY must be a float tensor, got \(dy.dtype)") }
        return [.tensor(try computingHalfInFloat([dy]) { w in
            try dispatch(w[0].dtype, AveragePoolGradChannels(dy: w[0], shape: Array(dy.shape[..<2]) + inShape, windows: windows,
                                                                  weights: weights, channels: channels, outSize: outSize, inSize: inSize))
        })]
    }
}

/// AveragePoolGrad's scatter in dY's float type (as onnxruntime), channels spread over the
/// threads: dX[c, t] += dY[c, cell]·weight[cell] for every tap t of every cell's window.
struct AveragePoolGradChannels: ElementOperation {
    let dy: Tensor, shape: [Int], windows: [[Int]], weights: [Double]
    let channels: Int, outSize: Int, inSize: Int

    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        var dx = try Tensor(kernelZeros: T.dtype, shape: shape, "AveragePoolGrad dX")
        let w = weights.map { T(fromDouble: $0) }
        let (windows, channels, outSize, inSize) = (windows, channels, outSize, inSize)
        try dy.withUnsafeBufferPointer(as: T.self) { pg in
            dx.uncheckedMutableBufferPointer(as: T.self) { pd in
                guard let G = pg.baseAddress, let D = pd.baseAddress else { return }
                Parallel.forRange(channels, minimumChunk: max(1, 8_192 / max(inSize, 1))) { range in
                    for c in range {
                        for cell in 0..<outSize {
                            let v = G[c * outSize + cell] * w[cell]
                            for t in windows[cell] { D[c * inSize + t] += v }
                        }
                    }
                }
            }
        }
        return dx
    }
}

func registerPoolGradOps(_ registry: OpRegistry) {
    registry.register("MaxPoolGrad", domain: "", since: 9) { ctx in MaxPoolGradKernel(attributes: try PoolAttributes(ctx)) }
    registry.register("AveragePoolGrad", domain: "", since: 9) { ctx in
        AveragePoolGradKernel(attributes: try PoolAttributes(ctx), countIncludePad: try ctx.int("count_include_pad", default: 0) != 0)
    }
}
