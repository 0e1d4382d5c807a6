#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Element-wise activation gradients (com.microsoft v1) and the Gelu-family forwards that
// onnxruntime's fusions put into training graphs. Every kernel here computes in Double per
// element and rounds once, so float32 results sit within an ulp or two of onnxruntime's.

/// The derivatives, as functions of the forward's input x (or output y where the op takes y).
enum ActivationMath {
    static let sqrt2OverPi = (2.0 / Double.pi).squareRoot()
    static let gamma = 0.044715
    static let invSqrt2Pi = 1.0 / (2.0 * Double.pi).squareRoot()

    /// Gelu with erf: x·Φ(x).
    @inline(__always) static func gelu(_ x: Double) -> Double { 0.5 * x * (1 + erf(x / 2.0.squareRoot())) }
    /// d/dx of x·Φ(x) = Φ(x) + x·φ(x).
    @inline(__always) static func geluGrad(_ x: Double) -> Double {
        0.5 * (1 + erf(x / 2.0.squareRoot())) + x * exp(-0.5 * x * x) * invSqrt2Pi
    }
    /// The tanh approximation ½x(1+tanh(a(x+γx³))).
    @inline(__always) static func fastGelu(_ x: Double) -> Double {
        0.5 * x * (1 + tanh(sqrt2OverPi * (x + gamma * x * x * x)))
    }
    /// ½[1+t+(1−t²)(a·x+3aγ·x³)] with t = tanh(a(x+γx³)).
    @inline(__always) static func fastGeluGrad(_ x: Double) -> Double {
        let t = tanh(sqrt2OverPi * (x + gamma * x * x * x))
        return 0.5 * (1 + t + (1 - t * t) * (sqrt2OverPi * x + 3 * sqrt2OverPi * gamma * x * x * x))
    }
    @inline(__always) static func sigmoid(_ x: Double) -> Double { 1 / (1 + exp(-x)) }
    /// x·σ(αx).
    @inline(__always) static func quickGelu(_ x: Double, _ alpha: Double) -> Double { x * sigmoid(alpha * x) }
    /// s·(1+αx(1−s)) with s = σ(αx).
    @inline(__always) static func quickGeluGrad(_ x: Double, _ alpha: Double) -> Double {
        let s = sigmoid(alpha * x)
        return s * (1 + alpha * x * (1 - s))
    }
}

/// A gradient kernel dX = dY ⊙ f(second input), with dY and the second input of one shape.
private func gradKernel(_ secondName: String, _ derivative: @escaping (Double) -> Double) -> KernelFactory {
    { _ in
        AnyKernel { inputs, _ in
            let dy = try inputs.tensor(0), x = try inputs.tensor(1)
            try requireSameShape(dy, x, "dY", secondName)
            return [.tensor(try floatElementwise([dy, x], names: ["dY", secondName]) {
                FloatMap2(a: $0[0], b: $0[1]) { g, v in g * derivative(v) }
            })]
        }
    }
}

/// dX = dY ⊙ f(X + B) with B a 1-D bias along the last axis (BiasGeluGrad_dX, BiasFastGeluGrad_dX).
private func biasGradKernel(_ derivative: @escaping (Double) -> Double) -> KernelFactory {
    { _ in
        AnyKernel { inputs, _ in
            let dy = try inputs.tensor(0), x = try inputs.tensor(1), b = try inputs.tensor(2)
            try requireSameShape(dy, x, "dY", "X")
            try requireLastAxisBias(b, of: x)
            return [.tensor(try floatElementwise([dy, x, b], names: ["dY", "X", "B"]) {
                FloatMap3(a: $0[0], b: $0[1], c: $0[2]) { g, v, bias in g * derivative(v + bias) }
            })]
        }
    }
}

/// B must be 1-D with the length of X's last axis.
func requireLastAxisBias(_ b: Tensor, of x: Tensor, name: String = "B") throws {
    guard b.rank == 1, let last = x.shape.last, b.shape[0] == last else {
        throw KernelError("\(name) \(b.shape) must be 1-D with the length of the input's last axis (\(x.shape))")
    }
}

/// A forward kernel Y = f(X [+ bias]); the bias input (at `biasIndex`) is optional when `biasOptional`.
private func forwardKernel(biasIndex: Int?, biasOptional: Bool, _ f: @escaping (Double) -> Double) -> KernelFactory {
    { _ in
        AnyKernel { inputs, _ in
            let x = try inputs.tensor(0)
            var bias: Tensor?
            if let biasIndex { bias = try biasOptional ? inputs.optionalTensor(biasIndex) : inputs.tensor(biasIndex) }
            if let b = bias {
                try requireLastAxisBias(b, of: x)
                return [.tensor(try floatElementwise([x, b], names: ["X", "bias"]) {
                    FloatMap2(a: $0[0], b: $0[1]) { v, bias in f(v + bias) }
                })]
            }
            return [.tensor(try floatElementwise([x], names: ["X"]) { FloatMap1(a: $0[0], body: f) })]
        }
    }
}

func registerActivationGradOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    // ReluGrad(dY, X): dY where X > 0 (X == 0 gives 0).
    registry.register("ReluGrad", domain: ms, since: 1, gradKernel("X") { $0 > 0 ? 1 : 0 })
    // SigmoidGrad(dY, Y): dY·Y·(1−Y), from the forward output.
    registry.register("SigmoidGrad", domain: ms, since: 1, gradKernel("Y") { $0 * (1 - $0) })
    // TanhGrad(dY, Y): dY·(1−Y²), from the forward output.
    registry.register("TanhGrad", domain: ms, since: 1, gradKernel("Y") { 1 - $0 * $0 })
    registry.register("GeluGrad", domain: ms, since: 1, gradKernel("X", ActivationMath.geluGrad))
    registry.register("FastGeluGrad", domain: ms, since: 1, gradKernel("X", ActivationMath.fastGeluGrad))
    registry.register("QuickGeluGrad", domain: ms, since: 1) { ctx in
        let alpha = Double(try ctx.float("alpha", default: 1.702))
        return try gradKernel("X") { ActivationMath.quickGeluGrad($0, alpha) }(ctx)
    }
    registry.register("LeakyReluGrad", domain: ms, since: 1) { ctx in
        let alpha = Double(try ctx.float("alpha", default: 0.01))
        return try gradKernel("X") { $0 > 0 ? 1 : alpha }(ctx)
    }
    registry.register("BiasGeluGrad_dX", domain: ms, since: 1, biasGradKernel(ActivationMath.geluGrad))
    registry.register("BiasFastGeluGrad_dX", domain: ms, since: 1, biasGradKernel(ActivationMath.fastGeluGrad))

    // Forwards produced by onnxruntime's Gelu fusions.
    registry.register("Gelu", domain: ms, since: 1, forwardKernel(biasIndex: nil, biasOptional: false, ActivationMath.gelu))
    registry.register("BiasGelu", domain: ms, since: 1, forwardKernel(biasIndex: 1, biasOptional: false, ActivationMath.gelu))
    registry.register("FastGelu", domain: ms, since: 1, forwardKernel(biasIndex: 1, biasOptional: true, ActivationMath.fastGelu))
    registry.register("QuickGelu", domain: ms, since: 1) { ctx in
        let alpha = Double(try ctx.float("alpha", default: 1.702))
        return try forwardKernel(biasIndex: nil, biasOptional: false) { ActivationMath.quickGelu($0, alpha) }(ctx)
    }
}
