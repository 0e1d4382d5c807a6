#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// AdamWOptimizer (com.microsoft): both modes, in place, in the weights' type with float32
/// constants as onnxruntime's CPU kernel (TrainingOptimizers.swift registers it).

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

#if ONNX_TRAIN_X86_64_V3 && arch(x86_64)
// Builds for x86-64-v3 (the Makefile's) update 8 floats / 4 doubles per step: AdamW's two divisions
// and square root per element bound it (13.8% of the MLP's one-thread step with 4-wide vectors),
// and 256-bit vdivps / vsqrtps do twice the lanes in about the same time. Same operations, same
// rounding: only the width changes.
extension SIMD8: LaneSquareRoot where Scalar == Float {
    @inline(__always) func laneSquareRoot() -> Self { _mm256_sqrt_ps(self) }
}

extension SIMD4: LaneSquareRoot where Scalar == Double {
    @inline(__always) func laneSquareRoot() -> Self { _mm256_sqrt_pd(self) }
}

typealias AdamWFloatVector = SIMD8<Float>
typealias AdamWDoubleVector = SIMD4<Double>
#else
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

typealias AdamWFloatVector = SIMD4<Float>
typealias AdamWDoubleVector = SIMD2<Double>
#endif

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
                            adamWUpdate(w + i, g + i, m + i, v + i, r.count, constants, AdamWFloatVector.self)
                        }
                    } else if T.self == Double.self {
                        let (w, g, m, v) = (w.assumingMemoryBound(to: Double.self), g.assumingMemoryBound(to: Double.self),
                                            m.assumingMemoryBound(to: Double.self), v.assumingMemoryBound(to: Double.self))
                        let wide = AdamWConstants<Double>(widening: constants)
                        Parallel.forRange(count, minimumChunk: 1 << 14) { r in
                            let i = r.lowerBound
                            adamWUpdate(w + i, g + i, m + i, v + i, r.count, wide, AdamWDoubleVector.self)
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
