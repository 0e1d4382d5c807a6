#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Gradient accumulation and optimizer updates (com.microsoft v1). These ops update their inputs
/// in place, as onnxruntime's do: the training runtime feeds parameters, gradient buffers and
/// optimizer state as graph inputs and never reads them back from outputs, so every write goes
/// through `withSharedMutableBufferPointer` into the caller's storage, and aliasing outputs
/// return the same tensors.

/// Runs `body` over a float32/float64 tensor's shared storage as Double-convertible elements.
struct InPlaceUpdate<Body: InPlaceBody>: FloatOperation {
    let target: Tensor
    let body: Body
    func callAsFunction<T: FloatElement>(_ type: T.Type) throws {
        try target.withSharedMutableBufferPointer(as: T.self) { try body($0) }
    }
}

protocol InPlaceBody {
    func callAsFunction<T: FloatElement>(_ p: UnsafeMutableBufferPointer<T>) throws
}

private func inPlace<Body: InPlaceBody>(_ target: Tensor, _ name: String, _ body: Body) throws {
    guard target.dtype == .float32 || target.dtype == .float64 else {
        throw KernelError("\(name) must be float or double to update in place, got \(target.dtype)")
    }
    try dispatchFloat(target.dtype, InPlaceUpdate(target: target, body: body))
}

/// buffer += value broadcast to buffer's shape (value's shape must broadcast into it), or
/// buffer = value when `overwrite`. A value of the buffer's type and size is read in place; any
/// other is widened to Double (and broadcast) first.
private struct Accumulate: InPlaceBody {
    let value: Tensor
    let shape: [Int]  // the buffer's
    let overwrite: Bool
    func callAsFunction<T: FloatElement>(_ p: UnsafeMutableBufferPointer<T>) throws {
        guard let base = p.baseAddress else { return }
        if value.dtype == T.dtype && value.count == p.count {
            // The common case (a gradient into its buffer): a plain copy or add in T.
            try value.withUnsafeBufferPointer(as: T.self) { v in
                guard let src = v.baseAddress else { return }
                Parallel.forRange(p.count, minimumChunk: 1 << 15) { r in
                    if overwrite {
                        (base + r.lowerBound).update(from: src + r.lowerBound, count: r.count)
                    } else {
                        addInto(base + r.lowerBound, src + r.lowerBound, r.count)
                    }
                }
            }
        } else {
            let values = overwrite ? try floatValues(value, "value") : try broadcastValues(value, to: shape)
            values.withUnsafeBufferPointer { Accumulate.loop(base, $0.baseAddress!, p.count, overwrite) }
        }
    }

    @inline(__always)
    static func loop<T: FloatElement, G: FloatElement>(_ p: UnsafeMutablePointer<T>, _ v: UnsafePointer<G>, _ n: Int, _ overwrite: Bool) {
        if overwrite {
            for i in 0..<n { p[i] = T(fromDouble: v[i].doubleValue) }
        } else {
            for i in 0..<n { p[i] = T(fromDouble: p[i].doubleValue + v[i].doubleValue) }
        }
    }
}

/// dst[0..<n] += src[0..<n] (a function of its own so the loop vectorises; it stays scalar inside
/// a Parallel.forRange closure).
@inline(never)
private func addInto<T: FloatElement>(_ dst: UnsafeMutablePointer<T>, _ src: UnsafePointer<T>, _ n: Int) {
    for i in 0..<n { dst[i] += src[i] }
}

/// Checks that value broadcasts *into* the buffer's shape (it must not enlarge it).
private func checkBroadcast(_ buffer: Tensor, _ value: Tensor) throws {
    guard try Broadcast.shape(buffer.shape, value.shape) == buffer.shape else {
        throw KernelError("value \(value.shape) does not broadcast to the buffer's shape \(buffer.shape)")
    }
}

/// InPlaceAccumulator(old_sum, value, update_signal?) → new_sum (aliases old_sum).
/// old_sum += value; with update_signal false, old_sum is left as it is (onnxruntime 1.19.2's pip
/// build returns old_sum then, not a copy of value).
struct InPlaceAccumulatorKernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let buffer = try inputs.tensor(0), value = try inputs.tensor(1)
        if try boolFlag(try inputs.optionalTensor(2), "update_signal") == false { return [.tensor(buffer)] }
        try checkBroadcast(buffer, value)
        try inPlace(buffer, "old_sum", Accumulate(value: value, shape: buffer.shape, overwrite: false))
        return [.tensor(buffer)]
    }
}

/// InPlaceAccumulatorV2(accumulation_buffer, value, overwrite_flag?) → updated_flag (bool [1],
/// true), accumulation_buffer_out? (aliases the buffer). overwrite true copies value (same
/// element count required); otherwise buffer += value (broadcast). This is how lazy_reset_grad
/// works: a reset is an overwrite on the next step.
struct InPlaceAccumulatorV2Kernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let buffer = try inputs.tensor(0), value = try inputs.tensor(1)
        let overwrite = try boolFlag(try inputs.optionalTensor(2), "overwrite_flag") ?? false
        if overwrite {
            guard value.count == buffer.count else { throw KernelError("value \(value.shape) must have the buffer's size \(buffer.shape) to overwrite it") }
            try inPlace(buffer, "accumulation_buffer", Accumulate(value: value, shape: buffer.shape, overwrite: true))
        } else {
            try checkBroadcast(buffer, value)
            try inPlace(buffer, "accumulation_buffer", Accumulate(value: value, shape: buffer.shape, overwrite: false))
        }
        return [.tensor(Tensor(shape: [1], scalars: [true])), .tensor(buffer)]
    }
}

/// Checks the optimizer sequences: equal non-zero counts and equal shapes per index.
private func checkGroups(_ groups: [(String, [Tensor])]) throws {
    guard let (name0, first) = groups.first, !first.isEmpty else { throw KernelError("\(groups.first?.0 ?? "weights") must not be empty") }
    for (name, seq) in groups.dropFirst() {
        guard seq.count == first.count else { throw KernelError("\(name) holds \(seq.count) tensors but \(name0) holds \(first.count)") }
        for (i, (t, w)) in zip(seq, first).enumerated() where t.shape != w.shape {
            throw KernelError("\(name)[\(i)] \(t.shape) does not match \(name0)[\(i)] \(w.shape)")
        }
    }
}

/// The learning rate: the one value of a float scalar or [1] tensor.
private func learningRate(_ t: Tensor, _ name: String) throws -> Double {
    guard t.dtype.isFloatingPoint, t.count == 1, let v = t.scalarDouble() else { throw KernelError("\(name) must hold one float, got \(t)") }
    return v
}

/// One AdamW step's constants, in the weights' type. onnxruntime's CPU kernel holds them in
/// float32 and so do we (the fixtures compare 30 steps with it).
struct AdamWConstants<T: BinaryFloatingPoint> {
    let lr: T, alpha: T, beta: T, epsilon: T, weightDecay: T
    /// 1 - α^t, 1 - β^t (1 without bias correction) and lr·√(1 - β^t)/(1 - α^t).
    let alphaCorrection: T, betaCorrection: T, lrCorrected: T
    let mode: Int

    /// onnxruntime: `1.f - static_cast<float>(std::pow(alpha_, step))` (pow in double since C++11,
    /// then rounded to float), `lr_corrected *= std::sqrt(beta_correction) / alpha_correction`.
    init(lr: Float, alpha: Float, beta: Float, epsilon: Float, weightDecay: Float, step: Int64, correctBias: Bool, mode: Int) {
        var ac: Float = 1, bc: Float = 1, lrc = lr
        if correctBias {
            ac = 1 - Float(pow(Double(alpha), Double(step)))
            bc = 1 - Float(pow(Double(beta), Double(step)))
            lrc *= bc.squareRoot() / ac
        }
        self.lr = T(lr); self.alpha = T(alpha); self.beta = T(beta); self.epsilon = T(epsilon); self.weightDecay = T(weightDecay)
        alphaCorrection = T(ac); betaCorrection = T(bc); lrCorrected = T(lrc)
        self.mode = mode
    }
}

/// A float vector whose lanes' square roots take one instruction. Swift's `SIMD.squareRoot()`
/// calls `sqrtf` lane by lane on Linux (errno semantics), which dominated AdamW; sqrtps /
/// sqrtpd round exactly like it, as Eigen's vectorised sqrt in onnxruntime does.
protocol LaneSquareRoot: SIMD where Scalar: BinaryFloatingPoint {
    func laneSquareRoot() -> Self
}

extension SIMD4: LaneSquareRoot where Scalar == Float {
    @inline(__always) func laneSquareRoot() -> Self {
        #if arch(x86_64)
        return _mm_sqrt_ps(self)
        #else
        return squareRoot()
        #endif
    }
}

extension SIMD2: LaneSquareRoot where Scalar == Double {
    @inline(__always) func laneSquareRoot() -> Self {
        #if arch(x86_64)
        return _mm_sqrt_pd(self)
        #else
        return squareRoot()
        #endif
    }
}

/// AdamW on `n` elements from w, g, m, v (w, m, v updated in place), `V.scalarCount` at a time;
/// the last partial vector is padded with zeros. The arithmetic follows onnxruntime's Eigen
/// expressions operation by operation (no fused multiply-adds), so float32 results match it.
@inline(__always)
func adamWUpdate<V: LaneSquareRoot>(_ w: UnsafeMutablePointer<V.Scalar>, _ g: UnsafePointer<V.Scalar>, _ m: UnsafeMutablePointer<V.Scalar>,
                          _ v: UnsafeMutablePointer<V.Scalar>, _ n: Int, _ c: AdamWConstants<V.Scalar>, _ vector: V.Type) {
    let width = V.scalarCount
    let oneMinusAlpha = 1 - c.alpha, oneMinusBeta = 1 - c.beta, lrDecay = c.lr * c.weightDecay
    @inline(__always) func step(_ wi: V, _ gi: V, _ mi: V, _ vi: V) -> (V, V, V) {
        let m1 = c.alpha * mi + oneMinusAlpha * gi
        let v1 = c.beta * vi + oneMinusBeta * gi * gi
        if c.mode == 0 {
            // PyTorch: decay (w - w·lr·wd), then w - lr·m / (bc1·(√(v/bc2) + ε)).
            let decayed = wi - wi * c.lr * c.weightDecay
            let denom = (v1 / c.betaCorrection).laneSquareRoot() + c.epsilon
            return (decayed - (c.lr * m1) / (c.alphaCorrection * denom), m1, v1)
        }
        // Hugging Face: w - lr_c·m / (√v + ε), then decay with the plain lr.
        let stepped = wi - c.lrCorrected * m1 / (v1.laneSquareRoot() + c.epsilon)
        return (stepped - lrDecay * stepped, m1, v1)
    }
    var i = 0
    while i + width <= n {
        let (w1, m1, v1) = step(UnsafeRawPointer(w + i).loadUnaligned(as: V.self), UnsafeRawPointer(g + i).loadUnaligned(as: V.self),
                                UnsafeRawPointer(m + i).loadUnaligned(as: V.self), UnsafeRawPointer(v + i).loadUnaligned(as: V.self))
        UnsafeMutableRawPointer(w + i).storeBytes(of: w1, as: V.self)
        UnsafeMutableRawPointer(m + i).storeBytes(of: m1, as: V.self)
        UnsafeMutableRawPointer(v + i).storeBytes(of: v1, as: V.self)
        i += width
    }
    if i < n {
        var wi = V(), gi = V(), mi = V(), vi = V()
        for j in 0..<(n - i) { wi[j] = w[i + j]; gi[j] = g[i + j]; mi[j] = m[i + j]; vi[j] = v[i + j] }
        let (w1, m1, v1) = step(wi, gi, mi, vi)
        for j in 0..<(n - i) { w[i + j] = w1[j]; m[i + j] = m1[j]; v[i + j] = v1[j] }
    }
}

/// The AdamW update of one float32 or float64 tensor, in place on w, m and v. A gradient of
/// another float type is converted to the weights' type first.
private struct AdamWStep: InPlaceBody {
    let g: Tensor
    let m: Tensor, v: Tensor
    let constants: AdamWConstants<Float>

    func callAsFunction<T: FloatElement>(_ w: UnsafeMutableBufferPointer<T>) throws {
        guard m.dtype == T.dtype, v.dtype == T.dtype else { throw KernelError("momentums must have the weights' type \(T.dtype)") }
        guard let pw = w.baseAddress else { return }
        let count = w.count
        guard g.dtype.isFloatingPoint else { throw KernelError("gradients must be float tensors, got \(g.dtype)") }
        let grad = g.dtype == T.dtype ? g : try g.converted(toFloat: T.dtype)
        try m.withSharedMutableBufferPointer(as: T.self) { pm in
            try v.withSharedMutableBufferPointer(as: T.self) { pv in
                try grad.withUnsafeBufferPointer(as: T.self) { pg in
                    let (w, g, m, v) = (UnsafeMutableRawPointer(pw), UnsafeRawPointer(pg.baseAddress!),
                                        UnsafeMutableRawPointer(pm.baseAddress!), UnsafeMutableRawPointer(pv.baseAddress!))
                    // Elementwise, so any split gives the same result; 16k elements per chunk at least.
                    if T.self == Float.self {
                        let (w, g, m, v) = (w.assumingMemoryBound(to: Float.self), g.assumingMemoryBound(to: Float.self),
                                            m.assumingMemoryBound(to: Float.self), v.assumingMemoryBound(to: Float.self))
                        Parallel.forRange(count, minimumChunk: 1 << 14) { r in
                            let i = r.lowerBound
                            adamWUpdate(w + i, g + i, m + i, v + i, r.count, constants, SIMD4<Float>.self)
                        }
                    } else if T.self == Double.self {
                        let (w, g, m, v) = (w.assumingMemoryBound(to: Double.self), g.assumingMemoryBound(to: Double.self),
                                            m.assumingMemoryBound(to: Double.self), v.assumingMemoryBound(to: Double.self))
                        let wide = AdamWConstants<Double>(widening: constants)
                        Parallel.forRange(count, minimumChunk: 1 << 14) { r in
                            let i = r.lowerBound
                            adamWUpdate(w + i, g + i, m + i, v + i, r.count, wide, SIMD2<Double>.self)
                        }
                    }
                }
            }
        }
    }
}

extension AdamWConstants where T == Double {
    /// float32 constants widened, for float64 weights (onnxruntime has no float64 AdamW).
    init(widening c: AdamWConstants<Float>) {
        lr = Double(c.lr); alpha = Double(c.alpha); beta = Double(c.beta); epsilon = Double(c.epsilon)
        weightDecay = Double(c.weightDecay); alphaCorrection = Double(c.alphaCorrection)
        betaCorrection = Double(c.betaCorrection); lrCorrected = Double(c.lrCorrected); mode = c.mode
    }
}

/// AdamWOptimizer(lr, step, weights, gradients, momentums_1, momentums_2, update_signal?) →
/// updated_flag (bool, step's shape), updated_weights?, updated_momentums_1?, updated_momentums_2?
/// (aliases). Attributes: alpha (β1) 0.9, beta (β2) 0.999, epsilon 1e-8, weight_decay 0.01 (the
/// schema default, which onnxruntime fills in), correct_bias 1, adam_mode 0 (PyTorch) or 1 (HF).
struct AdamWOptimizerKernel: Kernel {
    let alpha: Float, beta: Float, epsilon: Float, weightDecay: Float
    let correctBias: Bool
    let mode: Int

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let lr = try learningRate(try inputs.tensor(0), "lr")
        let stepT = try inputs.tensor(1)
        guard stepT.dtype == .int64, stepT.count == 1, let step = stepT.intValues()?.first else { throw KernelError("step must be one int64") }
        let weights = try sequenceTensors(inputs, 2, "weights"), grads = try sequenceTensors(inputs, 3, "gradients")
        let m1 = try sequenceTensors(inputs, 4, "momentums_1"), m2 = try sequenceTensors(inputs, 5, "momentums_2")
        try checkGroups([("weights", weights), ("gradients", grads), ("momentums_1", m1), ("momentums_2", m2)])
        let outputs = { (flag: Bool) -> [Value?] in
            [.tensor(Tensor(shape: stepT.shape, scalars: [flag])), inputs[2], inputs[4], inputs[5]]
        }
        if try boolFlag(try inputs.optionalTensor(6), "update_signal") == false { return outputs(false) }
        let constants = AdamWConstants<Float>(lr: Float(lr), alpha: alpha, beta: beta, epsilon: epsilon, weightDecay: weightDecay,
                                              step: Int64(step), correctBias: correctBias, mode: mode)
        for i in 0..<weights.count {
            try inPlace(weights[i], "weights[\(i)]", AdamWStep(g: grads[i], m: m1[i], v: m2[i], constants: constants))
        }
        return outputs(true)
    }
}

/// w ← w − lr·g (or w + delta for any precomputed delta).
private struct AxpyStep: InPlaceBody {
    let g: [Double]
    let scale: Double
    func callAsFunction<T: FloatElement>(_ w: UnsafeMutableBufferPointer<T>) throws {
        for i in 0..<w.count { w[i] = T(Double(w[i]) + scale * g[i]) }
    }
}

/// w ← w + (−lr)·g in the weights' type, as onnxruntime's Eigen expression rounds it (the product
/// first, then the sum); a gradient of another float type is converted first.
private struct SGDStep: InPlaceBody {
    let g: Tensor
    let lr: Float
    func callAsFunction<T: FloatElement>(_ w: UnsafeMutableBufferPointer<T>) throws {
        guard let pw = w.baseAddress else { return }
        guard g.dtype.isFloatingPoint else { throw KernelError("gradients must be float tensors, got \(g.dtype)") }
        let grad = g.dtype == T.dtype ? g : try g.converted(toFloat: T.dtype)
        let scale = T(-lr)
        try grad.withUnsafeBufferPointer(as: T.self) { pg in
            guard let pg = pg.baseAddress else { return }
            Parallel.forRange(w.count, minimumChunk: 1 << 15) { r in
                sgdUpdate(pw + r.lowerBound, pg + r.lowerBound, r.count, scale)
            }
        }
    }
}

/// w[0..<n] += scale·g[0..<n] (a function of its own so the loop vectorises).
@inline(never)
private func sgdUpdate<T: FloatElement>(_ w: UnsafeMutablePointer<T>, _ g: UnsafePointer<T>, _ n: Int, _ scale: T) {
    for i in 0..<n { w[i] = w[i] + scale * g[i] }
}

/// SGDOptimizerV2(lr, weights, gradients, update_signal?) → update_completed (bool, lr's shape),
/// updated_weights? (alias). w ← w − lr·g unless update_signal is false.
struct SGDOptimizerV2Kernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let lrT = try inputs.tensor(0)
        let lr = try learningRate(lrT, "lr")
        let weights = try sequenceTensors(inputs, 1, "weights"), grads = try sequenceTensors(inputs, 2, "gradients")
        try checkGroups([("weights", weights), ("gradients", grads)])
        if try boolFlag(try inputs.optionalTensor(3), "update_signal") == false {
            return [.tensor(Tensor(shape: lrT.shape, scalars: [false])), inputs[1]]
        }
        for i in 0..<weights.count {
            try inPlace(weights[i], "weights[\(i)]", SGDStep(g: grads[i], lr: Float(lr)))
        }
        return [.tensor(Tensor(shape: lrT.shape, scalars: [true])), inputs[1]]
    }
}

/// InplaceClipGradNorm(gradients; max_norm 1.0, norm_type "fro") → clipped gradients (in place).
/// total = √Σg²; coef = max_norm/(total + 1e-6); when coef < 1 every gradient is scaled by coef.
struct InplaceClipGradNormKernel: Kernel {
    let maxNorm: Double
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let grads = try sequenceTensors(inputs, 0, "gradients")
        var total = 0.0
        let values = try grads.enumerated().map { try floatValues($0.element, "gradients[\($0.offset)]") }
        for v in values { for x in v { total += x * x } }
        let coef = maxNorm / (total.squareRoot() + 1e-6)
        if coef < 1 {
            for (i, g) in grads.enumerated() {
                try inPlace(g, "gradients[\(i)]", AxpyStep(g: values[i], scale: coef - 1))
            }
        }
        return [inputs[0]]
    }
}

/// Legacy SGDOptimizer(ETA, W, G) → NW = W − η·G, NG = −η·G (both optional, new tensors).
struct SGDOptimizerKernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let eta = try learningRate(try inputs.tensor(0), "ETA")
        let w = try inputs.tensor(1), g = try inputs.tensor(2)
        try requireSameShape(w, g, "W", "G")
        _ = try commonElementType([w, g], names: ["W", "G"], floatOnly: true)
        let nw = try zipFloat(w, g, AddScaledFunction(scale: -eta))
        let ng = try mapFloat(g, ScaleFunction(factor: -eta))
        return [.tensor(nw), .tensor(ng)]
    }
}

/// Legacy AdamOptimizer(R, T, weights, gradients, moment_1, moment_2, …) → new_T = T+1,
/// new_moment_1, new_moment_2, new_weights?, new_gradients? (the applied delta).
/// Attributes alpha 0.9, beta 0.999, lambda 0, epsilon 1e-8, do_bias_correction 1,
/// weight_decay_mode 0 (decay inside the step) or 1 (decay after the step, Hugging Face style).
/// The mixed-precision, loss-scale and gradient-norm inputs are not supported.
struct AdamOptimizerKernel: Kernel {
    let alpha: Double, beta: Double, lambda: Double, epsilon: Double
    let biasCorrection: Bool
    let weightDecayMode: Int

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let eta = try learningRate(try inputs.tensor(0), "R")
        let stepT = try inputs.tensor(1)
        guard stepT.dtype == .int64, stepT.count == 1, let step = stepT.intValues()?.first else { throw KernelError("T must be one int64") }
        let wT = try inputs.tensor(2), gT = try inputs.tensor(3), m1T = try inputs.tensor(4), m2T = try inputs.tensor(5)
        for (t, n) in [(gT, "gradients"), (m1T, "moment_1"), (m2T, "moment_2")] { try requireSameShape(wT, t, "weights", n) }
        for i in 6...8 where inputs.value(i) != nil {
            throw KernelError("input \(i) (mixed-precision weights, loss scale or gradient norm) is not supported")
        }
        if try boolFlag(try inputs.optionalTensor(9), "update_signal") == false {
            return [.tensor(stepT), .tensor(m1T), .tensor(m2T), .tensor(wT), .tensor(Tensor(zeros: gT.dtype, shape: gT.shape))]
        }
        let w = try floatValues(wT, "weights"), g = try floatValues(gT, "gradients")
        let m1 = try floatValues(m1T, "moment_1"), m2 = try floatValues(m2T, "moment_2")
        let bc1 = biasCorrection ? Double(1 - powf(Float(alpha), Float(step))) : 1
        let bc2 = biasCorrection ? Double(1 - powf(Float(beta), Float(step))) : 1
        var nm1 = m1, nm2 = m2, delta = w
        for i in 0..<w.count {
            nm1[i] = alpha * m1[i] + (1 - alpha) * g[i]
            nm2[i] = beta * m2[i] + (1 - beta) * g[i] * g[i]
            if weightDecayMode == 0 {
                delta[i] = -eta * ((nm1[i] / bc1) / ((nm2[i] / bc2).squareRoot() + epsilon) + lambda * w[i])
            } else {
                let stepSize = eta * bc2.squareRoot() / bc1
                let update = stepSize * nm1[i] / (nm2[i].squareRoot() + epsilon)
                delta[i] = -update - eta * lambda * (w[i] - update)
            }
        }
        let dtype = wT.dtype
        return [.tensor(Tensor(shape: stepT.shape, scalars: [Int64(step + 1)])),
                .tensor(floatTensor(m1T.dtype, shape: m1T.shape, nm1)), .tensor(floatTensor(m2T.dtype, shape: m2T.shape, nm2)),
                .tensor(floatTensor(dtype, shape: wT.shape, (0..<w.count).map { w[$0] + delta[$0] })),
                .tensor(floatTensor(gT.dtype, shape: gT.shape, delta))]
    }
}

func registerOptimizerOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    registry.register("InPlaceAccumulator", domain: ms, since: 1, mutates: [0]) { _ in InPlaceAccumulatorKernel() }
    registry.register("InPlaceAccumulatorV2", domain: ms, since: 1, mutates: [0]) { _ in InPlaceAccumulatorV2Kernel() }
    registry.register("AdamWOptimizer", domain: ms, since: 1, mutates: [2, 4, 5], adamWOptimizerKernel)
    registry.register("SGDOptimizerV2", domain: ms, since: 1, mutates: [1]) { _ in SGDOptimizerV2Kernel() }
    registry.register("InplaceClipGradNorm", domain: ms, since: 1, mutates: [0], inplaceClipGradNormKernel)
    registry.register("SGDOptimizer", domain: ms, since: 1) { _ in SGDOptimizerKernel() }
    registry.register("AdamOptimizer", domain: ms, since: 1, adamOptimizerKernel)
}

/// AdamWOptimizer (com.microsoft), since opset 1.
func adamWOptimizerKernel(_ ctx: NodeContext) throws -> Kernel {
    let correctBias = try ctx.int("correct_bias", default: 1) != 0
    let mode = try ctx.int("adam_mode", default: 0)
    guard mode == 0 || mode == 1 else { throw KernelError("adam_mode \(mode) must be 0 or 1") }
    guard mode == 1 || correctBias else { throw KernelError("adam_mode 0 requires correct_bias 1") }
    return AdamWOptimizerKernel(alpha: try ctx.float("alpha", default: 0.9), beta: try ctx.float("beta", default: 0.999),
                                epsilon: try ctx.float("epsilon", default: 1e-8),
                                weightDecay: try ctx.float("weight_decay", default: 0.01),
                                correctBias: correctBias, mode: mode)
}

/// InplaceClipGradNorm (com.microsoft), since opset 1.
func inplaceClipGradNormKernel(_ ctx: NodeContext) throws -> Kernel {
    let norm = try ctx.string("norm_type", default: "fro")
    guard norm == "fro" else { throw KernelError("norm_type '\(norm)' is not supported (only \"fro\")") }
    return InplaceClipGradNormKernel(maxNorm: Double(try ctx.float("max_norm", default: 1)))
}

/// AdamOptimizer (com.microsoft), since opset 1.
func adamOptimizerKernel(_ ctx: NodeContext) throws -> Kernel {
    AdamOptimizerKernel(alpha: Double(try ctx.float("alpha", default: 0.9)), beta: Double(try ctx.float("beta", default: 0.999)),
                        lambda: Double(try ctx.float("lambda", default: 0)), epsilon: Double(try ctx.float("epsilon", default: 1e-8)),
                        biasCorrection: try ctx.int("do_bias_correction", default: 1) != 0,
                        weightDecayMode: try ctx.int("weight_decay_mode", default: 0))
}
