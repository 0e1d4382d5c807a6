import Foundation
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// The normalization family's registration list, and its small ops: RMSNormalization,
/// LpNormalization, InstanceNormalization, GroupNormalization, LRN and MeanVarianceNormalization
/// (BatchNormalization.swift and LayerNormalization.swift hold the two large ones). Group and
/// instance statistics are the batch norms' (`meanVariance`, Sums.swift); the other small norms
/// accumulate in Double. The population (biased) variance is used throughout, as ONNX specifies.

// MARK: - RMSNormalization

/// Y = X / sqrt(mean(X² over the dims from `axis` on) + epsilon) · Scale (opset 23).
struct RMSNormOp: ElementOperation {
    let x: Tensor, scale: Tensor, axis: Int, epsilon: Double
    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        let normShape = Array(x.shape[axis...])
        let inner = Tensor.elementCount(normShape), outer = Tensor.elementCount(Array(x.shape[..<axis]))
        let s = try broadcastBinary(Tensor(zeros: T.dtype, shape: normShape), scale, T.self, T.self, T.self, outDType: T.dtype) { $1 }.scalars(as: T.self)
        guard s.count == inner else { throw KernelError("scale of shape \(scale.shape) does not broadcast to \(normShape)") }
        var y = Tensor(uninitialized: T.dtype, shape: x.shape)
        try x.withUnsafeBufferPointer(as: T.self) { px in
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                for o in 0..<outer {
                    let base = o * inner
                    var sumSq = 0.0
                    for i in base..<(base + inner) { let v = px[i].doubleValue; sumSq += v * v }
                    let r = 1 / (sumSq / Double(max(inner, 1)) + epsilon).squareRoot()
                    for i in 0..<inner { py[base + i] = T(fromDouble: px[base + i].doubleValue * r) * s[i] }
                }
            }
        }
        return y
    }
}

// MARK: - LpNormalization

/// Y = X / ‖X‖_p along `axis` (p = 1 or 2).
struct LpNormOp: ElementOperation {
    let x: Tensor, axis: Int, p: Int
    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        let dim = x.shape[axis], inner = Tensor.elementCount(Array(x.shape[(axis + 1)...]))
        let outer = Tensor.elementCount(Array(x.shape[..<axis]))
        var y = Tensor(uninitialized: T.dtype, shape: x.shape)
        try x.withUnsafeBufferPointer(as: T.self) { px in
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                for o in 0..<outer { for i in 0..<inner {
                    let base = o * dim * inner + i
                    var norm = 0.0
                    for d in 0..<dim { let v = px[base + d * inner].doubleValue; norm += p == 1 ? abs(v) : v * v }
                    if p == 2 { norm = norm.squareRoot() }
                    // A zero vector stays zero (as the ONNX reference and onnxruntime give).
                    for d in 0..<dim { py[base + d * inner] = norm == 0 ? 0 : T(fromDouble: px[base + d * inner].doubleValue / norm) }
                } }
            }
        }
        return y
    }
}

// MARK: - InstanceNormalization and GroupNormalization

/// Normalizes each (n, group) block of X [N, C, spatial...] where a group is `C / groups`
/// consecutive channels, then applies per-channel scale and bias.
func groupNormalize<T: FloatElement>(_ x: Tensor, groups: Int, scale: [Double], bias: [Double], epsilon: Double, _ type: T.Type) throws -> Tensor {
    let n = x.shape[0], c = x.shape[1]
    guard groups > 0, c % groups == 0 else { throw KernelError("\(c) channels do not split into \(groups) groups") }
    let inner = Tensor.elementCount(Array(x.shape.dropFirst(2))), cg = c / groups
    var y = Tensor(uninitialized: T.dtype, shape: x.shape)
    try x.withUnsafeBufferPointer(as: T.self) { px in
        y.uncheckedMutableBufferPointer(as: T.self) { py in
            guard let X = px.baseAddress else { return }
            for b in 0..<n {
                for g in 0..<groups {
                    let base = (b * c + g * cg) * inner
                    let (m, v) = meanVariance(X + base, rows: 1, stride: 0, length: cg * inner)
                    let r = 1 / (v + epsilon).squareRoot()
                    for ch in (g * cg)..<((g + 1) * cg) {
                        let a = T(fromDouble: r * scale[ch]), shift = T(fromDouble: bias[ch] - m * r * scale[ch])
                        let cb = (b * c + ch) * inner
                        for i in cb..<(cb + inner) { py[i] = px[i] * a + shift }
                    }
                }
            }
        }
    }
    return y
}

struct GroupNormOp: ElementOperation {
    let x: Tensor, groups: Int, scale: [Double], bias: [Double], epsilon: Double
    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        try groupNormalize(x, groups: groups, scale: scale, bias: bias, epsilon: epsilon, T.self)
    }
}

// MARK: - LRN and MeanVarianceNormalization

struct LRNOp: ElementOperation {
    let x: Tensor, size: Int, alpha: Double, beta: Double, bias: Double
    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        guard x.rank >= 2 else { throw KernelError("LRN input must be [N, C, ...], got \(x.shape)") }
        let n = x.shape[0], c = x.shape[1], inner = Tensor.elementCount(Array(x.shape.dropFirst(2)))
        let before = (size - 1) / 2, after = size - 1 - before
        let (alpha, beta, bias, size) = (alpha, beta, bias, size)
        var y = Tensor(uninitialized: T.dtype, shape: x.shape)
        guard y.count > 0 else { return y }
        try x.withUnsafeBufferPointer(as: T.self) { px in
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                guard let px = px.baseAddress, let py = py.baseAddress else { return }
                // One (image, channel) plane per item: its window of channel planes summed row by
                // row (contiguous loops that vectorise), then the plane normalised.
                Parallel.forRange(n * c, minimumChunk: max(1, 16_384 / max(inner, 1))) { planes in
                    var sums = [Double](repeating: 0, count: inner)
                    sums.withUnsafeMutableBufferPointer { s in
                        for plane in planes {
                            let image = plane / c, ch = plane % c
                            let window = (image * c + max(0, ch - before))...(image * c + min(c - 1, ch + after))
                            lrnPlane(px, py, plane: plane, window: window, inner: inner, sums: s.baseAddress!,
                                     coefficient: alpha / Double(size), bias: bias, beta: beta)
                        }
                    }
                }
            }
        }
        return y
    }
}

/// One LRN output plane: y = x / (bias + coefficient * sum over the window's planes of x^2)^beta,
/// accumulated in Double (the sum in the window's channel order). beta = 0.75, AlexNet's and the
/// default, is sqrt(b)·sqrt(sqrt(b)) instead of pow, which does not vectorise; for float32 it is
/// `lrnFloatThreeQuarters` unless some b of the plane is outside its range.
@inline(never)
private func lrnPlane<T: FloatElement>(_ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, plane: Int, window: ClosedRange<Int>,
                                       inner: Int, sums: UnsafeMutablePointer<Double>, coefficient: Double, bias: Double, beta: Double) {
    for i in 0..<inner { sums[i] = 0 }
    for j in window {
        let row = x + j * inner
        for i in 0..<inner { let v = row[i].doubleValue; sums[i] += v * v }
    }
    let xs = x + plane * inner, ys = y + plane * inner
    if beta == 0.75 && T.self == Float.self
        && lrnFloatThreeQuarters(UnsafeRawPointer(xs).assumingMemoryBound(to: Float.self), UnsafeMutableRawPointer(ys).assumingMemoryBound(to: Float.self),
                                 sums: sums, inner: inner, coefficient: coefficient, bias: bias) {
        return
    }
    if beta == 0.75 {
        for i in 0..<inner {
            let b = bias + coefficient * sums[i], root = b.squareRoot()
            ys[i] = T(fromDouble: xs[i].doubleValue / (root * root.squareRoot()))
        }
    } else {
        for i in 0..<inner { ys[i] = T(fromDouble: xs[i].doubleValue / pow(bias + coefficient * sums[i], beta)) }
    }
}

/// A float32 LRN plane with beta 0.75: b^-3/4 from float32 square roots, refined by one Newton step
/// in Double, t·(5 - t^4·b^3)/4, which leaves ~1e-13 of the exact value, so y rounds as from the
/// exact formula; 4 lanes a step with AVX (the Double square roots and division it replaces took
/// most of the op's time, and Swift's scalar square roots do not vectorise). Returns false, and
/// the caller computes the plane exactly, when some b is not within [1e-30, 1e30] (float32's range
/// and the Newton step's b^3 in Double), NaN included.
private func lrnFloatThreeQuarters(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, sums: UnsafePointer<Double>, inner: Int,
                                   coefficient: Double, bias: Double) -> Bool {
    var i = 0, low = Double.infinity, high = -Double.infinity
    #if ONNX_TRAIN_X86_64_V3 && arch(x86_64)
    let rawSums = UnsafeRawPointer(sums), rawX = UnsafeRawPointer(x), rawY = UnsafeMutableRawPointer(y)
    var lows = SIMD4<Double>(repeating: .infinity), highs = SIMD4<Double>(repeating: -.infinity)
    while i + 4 <= inner {
        let b = bias + coefficient * rawSums.loadUnaligned(fromByteOffset: i * 8, as: SIMD4<Double>.self)
        lows = _mm256_min_pd(lows, b)
        highs = _mm256_max_pd(highs, b)
        let root = _mm_sqrt_ps(_mm256_cvtpd_ps(b))
        let t = _mm256_cvtps_pd(1 / (root * _mm_sqrt_ps(root))), t2 = t * t
        let xv = _mm256_cvtps_pd(rawX.loadUnaligned(fromByteOffset: i * 4, as: SIMD4<Float>.self))
        rawY.storeBytes(of: _mm256_cvtpd_ps(xv * (t * (1.25 - 0.25 * (t2 * t2) * (b * b * b)))), toByteOffset: i * 4, as: SIMD4<Float>.self)
        i += 4
    }
    for lane in 0..<4 {
        low = lows[lane] < low || lows[lane].isNaN ? lows[lane] : low
        high = highs[lane] > high || highs[lane].isNaN ? highs[lane] : high
    }
    #endif
    while i < inner {
        let b = bias + coefficient * sums[i], root = Float(b).squareRoot()
        low = b < low || b.isNaN ? b : low
        high = b > high || b.isNaN ? b : high
        let t = Double(1 / (root * root.squareRoot())), t2 = t * t
        y[i] = Float(Double(x[i]) * (t * (1.25 - 0.25 * (t2 * t2) * (b * b * b))))
        i += 1
    }
    return low >= 1e-30 && high <= 1e30
}

/// (X - E[X]) / (sqrt(E[(X - E[X])^2]) + 1e-9) over `axes`, as the op's function body states.
struct MVNOp: ElementOperation {
    let x: Tensor, axes: [Int]
    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        let axes = try Set(axes.map { try normalizeAxis($0, rank: x.rank) })
        let strides = contiguousStrides(x.shape)
        // Flat index -> index of its statistics group (the kept dims).
        var groupStrides = [Int](repeating: 0, count: x.rank), groups = 1
        for d in stride(from: x.rank - 1, through: 0, by: -1) where !axes.contains(d) { groupStrides[d] = groups; groups *= x.shape[d] }
        let n = x.count
        var group = [Int](repeating: 0, count: n)
        for i in 0..<n {
            var rem = i, gi = 0
            for d in 0..<x.rank { gi += (rem / strides[d]) * groupStrides[d]; rem %= strides[d] }
            group[i] = gi
        }
        var sum = [Double](repeating: 0, count: groups), sq = sum, cnt = sum
        var y = Tensor(uninitialized: T.dtype, shape: x.shape)
        try x.withUnsafeBufferPointer(as: T.self) { px in
            for i in 0..<n { let v = px[i].doubleValue; sum[group[i]] += v; cnt[group[i]] += 1 }
            for i in 0..<n { let d = px[i].doubleValue - sum[group[i]] / cnt[group[i]]; sq[group[i]] += d * d }
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                for i in 0..<n {
                    let g = group[i], mean = sum[g] / cnt[g]
                    py[i] = T(fromDouble: (px[i].doubleValue - mean) / ((sq[g] / cnt[g]).squareRoot() + 1e-9))
                }
            }
        }
        return y
    }
}

func registerNormalizationOps(_ registry: OpRegistry) {
    registry.register("BatchNormalization", since: 6) { ctx in try BatchNormKernel(ctx) }
    registry.register("BatchNormalization", since: 14) { ctx in try BatchNormKernel(ctx) }
    registry.register("LayerNormalization", since: 17) { ctx in try LayerNormKernel(ctx) }
    registry.register("LpNormalization", since: 1, lpNormalizationKernel)
    registry.register("RMSNormalization", since: 23, rmsNormalizationKernel)
    registry.register("InstanceNormalization", since: 6, instanceNormalizationKernel)
    // Opset 18: scale and bias per group; opset 21: per channel (either is accepted by its size).
    registry.register("GroupNormalization", since: [18, 21], groupNormalizationKernel)
    registry.register("LRN", since: 1, lrnKernel)
    registry.register("MeanVarianceNormalization", since: 9, meanVarianceNormalizationKernel)
    registerAddLayerNormOps(registry) // Ops/Internal/AddLayerNorm.swift: AddLayerNormFusion's residual Add and LayerNormalization

    // Gradient rules (GradientContext):
    registry.registerGradient("BatchNormalization", batchNormalizationGradient)
    registry.registerGradient("LayerNormalization", layerNormalizationGradient)
    registry.registerGradient("LayerNormalization", domain: "com.microsoft", layerNormalizationGradient)
    registry.registerGradient("GroupNormalization") { g in try groupNormGradient(g, instance: false) }
    registry.registerGradient("InstanceNormalization") { g in try groupNormGradient(g, instance: true) }
}

/// LpNormalization, since opset 1.
func lpNormalizationKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis", default: -1), p = try ctx.int("p", default: 2)
    guard p == 1 || p == 2 else { throw KernelError("p must be 1 or 2, got \(p)") }
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let a = try normalizeAxis(axis, rank: x.rank)
        return try withFloatCompute([x]) { t in [try dispatch(t[0]!.dtype, LpNormOp(x: t[0]!, axis: a, p: p))] }.map { $0.map(Value.tensor) }
    }
}

/// RMSNormalization, since opset 23.
func rmsNormalizationKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis", default: -1)
    let epsilon = Double(try ctx.float("epsilon", default: 1e-5))
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let a = try normalizeAxis(axis, rank: x.rank)
        return try withFloatCompute([x, inputs.tensor(1)]) { t in
            [try dispatch(t[0]!.dtype, RMSNormOp(x: t[0]!, scale: t[1]!, axis: a, epsilon: epsilon))]
        }.map { $0.map(Value.tensor) }
    }
}

/// InstanceNormalization, since opset 6.
func instanceNormalizationKernel(_ ctx: NodeContext) throws -> Kernel {
    let epsilon = Double(try ctx.float("epsilon", default: 1e-5))
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.rank >= 3 else { throw KernelError("input must be [N, C, spatial...], got \(x.shape)") }
        let c = x.shape[1]
        let scale = try channelValues(inputs.tensor(1), count: c, default: 1, name: "scale")
        let bias = try channelValues(inputs.tensor(2), count: c, default: 0, name: "B")
        return try withFloatCompute([x]) { t in
            [try dispatch(t[0]!.dtype, GroupNormOp(x: t[0]!, groups: c, scale: scale, bias: bias, epsilon: epsilon))]
        }.map { $0.map(Value.tensor) }
    }
}

/// GroupNormalization, since opset 18, 21.
func groupNormalizationKernel(_ ctx: NodeContext) throws -> Kernel {
    let since = ctx.sinceVersion
    let epsilon = Double(try ctx.float("epsilon", default: 1e-5))
    let groups = try ctx.requiredInt("num_groups")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.rank >= 2 else { throw KernelError("input must be [N, C, ...], got \(x.shape)") }
        let c = x.shape[1]
        guard groups > 0, c % groups == 0 else { throw KernelError("\(c) channels do not split into \(groups) groups") }
        let st = try inputs.tensor(1), bt = try inputs.tensor(2)
        var scale: [Double], bias: [Double]
        if st.count == groups && groups != c && since < 21 {
            let cg = c / groups
            let s = try channelValues(st, count: groups, default: 1, name: "scale")
            let b = try channelValues(bt, count: groups, default: 0, name: "bias")
            scale = (0..<c).map { s[$0 / cg] }; bias = (0..<c).map { b[$0 / cg] }
        } else {
            scale = try channelValues(st, count: c, default: 1, name: "scale")
            bias = try channelValues(bt, count: c, default: 0, name: "bias")
        }
        return try withFloatCompute([x]) { t in
            [try dispatch(t[0]!.dtype, GroupNormOp(x: t[0]!, groups: groups, scale: scale, bias: bias, epsilon: epsilon))]
        }.map { $0.map(Value.tensor) }
    }
}

/// LRN, since opset 1.
func lrnKernel(_ ctx: NodeContext) throws -> Kernel {
    let size = try ctx.requiredInt("size")
    guard size > 0 else { throw KernelError("size must be positive") }
    let alpha = Double(try ctx.float("alpha", default: 1e-4)), beta = Double(try ctx.float("beta", default: 0.75))
    let bias = Double(try ctx.float("bias", default: 1))
    return AnyKernel { inputs, _ in
        try withFloatCompute([inputs.tensor(0)]) { t in
            [try dispatch(t[0]!.dtype, LRNOp(x: t[0]!, size: size, alpha: alpha, beta: beta, bias: bias))]
        }.map { $0.map(Value.tensor) }
    }
}

/// MeanVarianceNormalization, since opset 9.
func meanVarianceNormalizationKernel(_ ctx: NodeContext) throws -> Kernel {
    let axes = try ctx.ints("axes", default: [0, 2, 3])
    return AnyKernel { inputs, _ in
        try withFloatCompute([inputs.tensor(0)]) { t in
            [try dispatch(t[0]!.dtype, MVNOp(x: t[0]!, axes: axes))]
        }.map { $0.map(Value.tensor) }
    }
}

/// GroupNormalization (scale and bias per channel from opset 21, per group at 18) and
/// InstanceNormalization (one group per channel): with x̂ = (x - μ)·r over each group,
/// dx̂ = dY·scale and dX = r·(dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂)).
func groupNormGradient(_ g: GradientContext, instance: Bool) throws -> [String?] {
    let dY = try g.requiredDY()
    let x = g.input(0)
    guard let shape = g.shapeInfo(x), shape.count >= 3, case .value(let channels) = shape[1] else {
        throw GradientError("\(g.node.opType) needs its input's rank and channel count")
    }
    let r = shape.count
    let groups = instance ? channels : (g.node.int("num_groups") ?? 1)
    let perChannelAffine = instance || g.opset >= 21
    let eps = try g.scalar(Double(g.node.float("epsilon") ?? 1e-5), like: x, name: "epsilon")
    // [N, G, C/G * spatial] views; statistics over the last axis.
    let grouped = g.ints([0, groups, -1], name: "grouped")
    let xg = g.op("Reshape", [x, grouped])
    let mean = g.reduceMean(xg, axes: [2])
    let centered = g.op("Sub", [xg, mean])
    let variance = g.reduceMean(g.op("Mul", [centered, centered]), axes: [2])
    let invStd = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [variance, eps])])])
    let normalized = g.op("Mul", [centered, invStd])                         // x̂ [N, G, K]
    let xHat = g.reshape(normalized, like: x)                                 // x̂ in X's shape
    // The affine parameters broadcast per channel [1, C, 1, ...].
    let channelShape = g.ints([1, channels] + Array(repeating: 1, count: r - 2), name: "channel_shape")
    var scale = g.input(1)
    if !perChannelAffine {
        // Opset 18: one scale per group, repeated over the group's channels.
        let perGroup = g.op("Reshape", [scale, g.ints([groups, 1], name: "group_column")])
        scale = g.op("Reshape", [g.op("Expand", [perGroup, g.ints([groups, channels / groups], name: "group_channels")]), g.ints([channels], name: "channels")])
    }
    let spatialAxes = [0] + Array(2..<r)
    var dScale: String?, dBias: String?, dX: String?
    if g.needs(1) || g.needs(2) {
        if g.needs(1) {
            let perChannel = g.reduceSum(g.op("Mul", [dY, xHat]), axes: spatialAxes, keepdims: false)
            dScale = perChannelAffine ? perChannel : g.reduceSum(g.op("Reshape", [perChannel, g.ints([groups, channels / groups], name: "per_group")]), axes: [1], keepdims: false)
        }
        if g.needs(2) {
            let perChannel = g.reduceSum(dY, axes: spatialAxes, keepdims: false)
            dBias = perChannelAffine ? perChannel : g.reduceSum(g.op("Reshape", [perChannel, g.ints([groups, channels / groups], name: "per_group")]), axes: [1], keepdims: false)
        }
    }
    if g.needs(0) {
        let dXHat = g.op("Reshape", [g.op("Mul", [dY, g.op("Reshape", [scale, channelShape])]), grouped])
        let meanD = g.reduceMean(dXHat, axes: [2])
        let meanDX = g.reduceMean(g.op("Mul", [dXHat, normalized]), axes: [2])
        let inner = g.op("Sub", [g.op("Sub", [dXHat, meanD]), g.op("Mul", [normalized, meanDX])])
        dX = g.reshape(g.op("Mul", [inner, invStd]), like: x)
    }
    return [dX, dScale, dBias]
}
