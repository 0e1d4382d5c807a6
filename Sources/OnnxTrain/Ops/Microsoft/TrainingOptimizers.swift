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
struct InPlaceUpdate<Body: InPlaceBody>: ElementOperation {
    let target: Tensor
    let body: Body
    func float<T: FloatElement>(_ type: T.Type) throws {
        try target.withSharedMutableBufferPointer(as: T.self) { try body($0) }
    }
}

protocol InPlaceBody {
    func callAsFunction<T: FloatElement>(_ p: UnsafeMutableBufferPointer<T>) throws
}

func inPlace<Body: InPlaceBody>(_ target: Tensor, _ name: String, _ body: Body) throws {
    guard target.dtype == .float32 || target.dtype == .float64 else {
        throw KernelError("\(name) must be float or double to update in place, got \(target.dtype)")
    }
    try dispatch(target.dtype, InPlaceUpdate(target: target, body: body))
}

/// Checks the optimizer sequences: equal non-zero counts and equal shapes per index.
func checkGroups(_ groups: [(String, [Tensor])]) throws {
    guard let (name0, first) = groups.first, !first.isEmpty else { throw KernelError("\(groups.first?.0 ?? "weights") must not be empty") }
    for (name, seq) in groups.dropFirst() {
        guard seq.count == first.count else { throw KernelError("\(name) holds \(seq.count) tensors but \(name0) holds \(first.count)") }
        for (i, (t, w)) in zip(seq, first).enumerated() where t.shape != w.shape {
            throw KernelError("\(name)[\(i)] \(t.shape) does not match \(name0)[\(i)] \(w.shape)")
        }
    }
}

/// The learning rate: the one value of a float scalar or [1] tensor.
func learningRate(_ t: Tensor, _ name: String) throws -> Double {
    guard t.dtype.isFloatingPoint, t.count == 1, let v = t.scalarDouble() else { throw KernelError("\(name) must hold one float, got \(t)") }
    return v
}

/// w ← w·k, the product rounded once from Double.
private struct ScaleStep: InPlaceBody {
    let k: Double
    func callAsFunction<T: FloatElement>(_ w: UnsafeMutableBufferPointer<T>) throws {
        for i in 0..<w.count { w[i] = T(fromDouble: w[i].doubleValue * k) }
    }
}

/// InplaceClipGradNorm(gradients; max_norm 1.0, norm_type "fro") → clipped gradients (in place).
/// total = √Σg²; coef = max_norm/(total + 1e-6); when coef < 1 every gradient is scaled by coef.
struct InplaceClipGradNormKernel: Kernel {
    let maxNorm: Double
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let grads = try sequenceTensors(inputs, 0, "gradients")
        var total = 0.0
        for (i, g) in grads.enumerated() {
            guard g.dtype == .float32 || g.dtype == .float64 else {
                throw KernelError("gradients[\(i)] must be float or double to update in place, got \(g.dtype)")
            }
            total += try sumOfSquares(g)
        }
        let coef = maxNorm / (total.squareRoot() + 1e-6)
        if coef < 1 {
            for (i, g) in grads.enumerated() { try inPlace(g, "gradients[\(i)]", ScaleStep(k: coef)) }
        }
        return [inputs[0]]
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
