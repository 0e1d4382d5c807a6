/// Activation functions. Attribute values are ONNX floats, widened to the input type once per
/// element loop (float64 inputs see the float32 attribute value, as the reference does).

/// Relu keeps NaN (x < 0 is false for NaN), like numpy's maximum(x, 0) and onnxruntime.
struct ReluFunction: NumericUnaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ x: T) -> T { x < 0 ? 0 as T : x }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { x.replacing(with: 0, where: x .< 0) }
}
struct LeakyReluFunction: FloatUnaryFunction {
    let alpha: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x < 0 ? T(alpha) * x : x }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { x.replacing(with: x * Float(alpha), where: x .< 0) }
}
struct PReluFunction: NumericBinaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ x: T, _ slope: T) -> T { x < 0 ? T.mul(slope, x) : x }
}
struct EluFunction: FloatUnaryFunction {
    let alpha: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x < 0 ? T(alpha) * T.expm1(x) : x }
}
struct SeluFunction: FloatUnaryFunction {
    let alpha: Double, gamma: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T {
        T(gamma) * (x <= 0 ? T(alpha) * T.expm1(x) : x)
    }
}
/// Celu: max(0, x) + min(0, alpha * (exp(x / alpha) - 1)).
struct CeluFunction: FloatUnaryFunction {
    let alpha: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T {
        x > 0 ? x : T(alpha) * T.expm1(x / T(alpha))
    }
}
/// Gelu, exact (erf) or with the tanh approximation.
struct GeluFunction: FloatUnaryFunction {
    let tanhApproximation: Bool
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T {
        tanhApproximation ? ActivationMath.fastGelu(x) : ActivationMath.gelu(x)
    }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> {
        tanhApproximation ? ActivationMath.fastGelu8(x) : ActivationMath.gelu8(x)
    }
}
struct HardSigmoidFunction: FloatUnaryFunction {
    let alpha: Double, beta: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T {
        Swift.max(0, Swift.min(1, T(alpha) * x + T(beta)))
    }
}
/// HardSwish: x * max(0, min(1, x / 6 + 1 / 2)).
struct HardSwishFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T {
        x * Swift.max(0, Swift.min(1, x / 6 + T(0.5)))
    }
}
/// The logistic function, in the form that cannot overflow exp for either sign; float32 is
/// VectorMath.sigmoid (2.4 ulps), float64 libm.
@inline(__always) func logistic<T: FloatElement>(_ x: T) -> T {
    float32Lane(x, VectorMath.sigmoid) { x in
        if x >= 0 { return 1 / (1 + T.exp(-x)) }
        let e = T.exp(x)
        return e / (1 + e)
    }
}
struct SigmoidFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { logistic(x) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { VectorMath.sigmoid(x) }
}
struct SwishFunction: FloatUnaryFunction {
    let alpha: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x * logistic(T(alpha) * x) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { x * VectorMath.sigmoid(x * Float(alpha)) }
}
/// float32: VectorMath.tanh (1.5 ulps); float64: libm.
struct TanhFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { float32Lane(x, VectorMath.tanh, else: T.tanh) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { VectorMath.tanh(x) }
}
/// log(1 + exp(x)) without overflow for large x.
@inline(__always) func softplus<T: FloatElement>(_ x: T) -> T {
    x > 0 ? x + T.log1p(T.exp(-x)) : T.log1p(T.exp(x))
}
struct SoftplusFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { softplus(x) }
}
struct SoftsignFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x / (1 + Swift.abs(x)) }
}
struct MishFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x * T.tanh(softplus(x)) }
}
struct ThresholdedReluFunction: FloatUnaryFunction {
    let alpha: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x > T(alpha) ? x : 0 }
}
/// Shrink: x + bias below -lambd, x - bias above lambd, 0 between; any numeric type.
struct ShrinkFunction: NumericUnaryFunction {
    let lambd: Double, bias: Double
    @inline(__always) func callAsFunction<T: NumericElement>(_ x: T) -> T {
        let v = x.doubleValue
        if v < -lambd { return T(fromDouble: v + bias) }
        if v > lambd { return T(fromDouble: v - bias) }
        return 0 as T
    }
}

func registerActivationOps(_ registry: OpRegistry) {
    registry.registerNumericUnary("Relu", since: [1, 6, 13, 14]) { _ in ReluFunction() }
    registry.registerFloatUnary("LeakyRelu", since: [1, 6, 16]) { ctx in LeakyReluFunction(alpha: Double(try ctx.float("alpha", default: 0.01))) }
    registry.registerNumericBinary("PRelu", since: [1, 6, 7, 9, 16]) { _ in PReluFunction() }
    registry.registerFloatUnary("Elu", since: [1, 6, 22]) { ctx in EluFunction(alpha: Double(try ctx.float("alpha", default: 1))) }
    registry.registerFloatUnary("Selu", since: [1, 6, 22]) { ctx in
        SeluFunction(alpha: Double(try ctx.float("alpha", default: 1.67326319217681884765625)),
                     gamma: Double(try ctx.float("gamma", default: 1.05070102214813232421875)))
    }
    registry.registerFloatUnary("Celu", since: [12]) { ctx in CeluFunction(alpha: Double(try ctx.float("alpha", default: 1))) }
    registry.registerFloatUnary("Gelu", since: [20]) { ctx in
        let approximate = try ctx.string("approximate", default: "none")
        guard approximate == "none" || approximate == "tanh" else {
            throw KernelError("attribute 'approximate' must be none or tanh, got '\(approximate)'")
        }
        return GeluFunction(tanhApproximation: approximate == "tanh")
    }
    registry.registerFloatUnary("HardSigmoid", since: [1, 6, 22]) { ctx in
        HardSigmoidFunction(alpha: Double(try ctx.float("alpha", default: 0.2)), beta: Double(try ctx.float("beta", default: 0.5)))
    }
    registry.registerFloatUnary("HardSwish", since: [14, 22]) { _ in HardSwishFunction() }
    registry.registerFloatUnary("Sigmoid", since: [1, 6, 13]) { _ in SigmoidFunction() }
    registry.registerFloatUnary("Swish", since: [24]) { ctx in SwishFunction(alpha: Double(try ctx.float("alpha", default: 1))) }
    registry.registerFloatUnary("Tanh", since: [1, 6, 13]) { _ in TanhFunction() }
    registry.registerFloatUnary("Softplus", since: [1, 22]) { _ in SoftplusFunction() }
    registry.registerFloatUnary("Softsign", since: [1, 22]) { _ in SoftsignFunction() }
    registry.registerFloatUnary("Mish", since: [18, 22]) { _ in MishFunction() }
    registry.registerFloatUnary("ThresholdedRelu", since: [10, 22]) { ctx in ThresholdedReluFunction(alpha: Double(try ctx.float("alpha", default: 1))) }
    registry.registerNumericUnary("Shrink", since: [9]) { ctx in
        ShrinkFunction(lambd: Double(try ctx.float("lambd", default: 0.5)), bias: Double(try ctx.float("bias", default: 0)))
    }

    // Gradient rules (GradientContext): dX = dY * f'(X), written with the forward output where that is cheaper.
    registry.registerGradient("PRelu", pReluGradient)
    registry.registerUnaryGradient("Tanh") { g, dY, _, y in g.ms("TanhGrad", [dY, y])[0] }
    registry.registerUnaryGradient("Sigmoid") { g, dY, _, y in g.ms("SigmoidGrad", [dY, y])[0] }
    registry.registerUnaryGradient("Relu") { g, dY, _, y in g.ms("ReluGrad", [dY, y])[0] }
    registry.registerUnaryGradient("Softplus") { g, dY, x, _ in g.op("Mul", [dY, g.op("Sigmoid", [x])]) }
    registry.registerUnaryGradient("Softsign") { g, dY, x, _ in
        let d = g.op("Add", [try g.scalar(1, like: x, name: "one"), g.op("Abs", [x])])
        return g.op("Div", [dY, g.op("Mul", [d, d])])
    }
    registry.registerUnaryGradient("Elu") { g, dY, x, y in
        let alpha = Double(g.node.float("alpha") ?? 1)
        let positive = g.op("Greater", [x, try g.scalar(0, like: x, name: "zero")])
        return g.op("Where", [positive, dY, g.op("Mul", [dY, g.op("Add", [y, try g.scalar(alpha, like: x, name: "alpha")])])])
    }
    registry.registerUnaryGradient("Selu") { g, dY, x, y in
        let alpha = Double(g.node.float("alpha") ?? 1.67326319217681884765625)
        let gamma = Double(g.node.float("gamma") ?? 1.05070102214813232421875)
        let positive = g.op("Greater", [x, try g.scalar(0, like: x, name: "zero")])
        let negative = g.op("Add", [y, try g.scalar(gamma * alpha, like: x, name: "gamma_alpha")])
        return g.op("Mul", [dY, g.op("Where", [positive, try g.scalar(gamma, like: x, name: "gamma"), negative])])
    }
    registry.registerUnaryGradient("Celu") { g, dY, x, y in
        // y = max(0,x) + min(0, alpha*(exp(x/alpha)-1)); below 0 the slope is exp(x/alpha) = y/alpha + 1.
        let alpha = Double(g.node.float("alpha") ?? 1)
        let positive = g.op("Greater", [x, try g.scalar(0, like: x, name: "zero")])
        let slope = g.op("Add", [g.op("Div", [y, try g.scalar(alpha, like: x, name: "alpha")]), try g.scalar(1, like: x, name: "one")])
        return g.op("Where", [positive, dY, g.op("Mul", [dY, slope])])
    }
    registry.registerUnaryGradient("LeakyRelu") { g, dY, x, _ in
        g.ms("LeakyReluGrad", [dY, x], attributes: ["alpha": .float(g.node.float("alpha") ?? 0.01)])[0]
    }
    registry.registerUnaryGradient("ThresholdedRelu") { g, dY, x, _ in
        let alpha = Double(g.node.float("alpha") ?? 1)
        return g.op("Where", [g.op("Greater", [x, try g.scalar(alpha, like: x, name: "alpha")]), dY, try g.scalar(0, like: x, name: "zero")])
    }
    registry.registerUnaryGradient("HardSigmoid") { g, dY, x, _ in
        let alpha = Double(g.node.float("alpha") ?? 0.2), beta = Double(g.node.float("beta") ?? 0.5)
        let z = g.op("Add", [g.op("Mul", [x, try g.scalar(alpha, like: x, name: "alpha")]), try g.scalar(beta, like: x, name: "beta")])
        let inside = g.op("And", [g.op("Greater", [z, try g.scalar(0, like: x, name: "zero")]), g.op("Less", [z, try g.scalar(1, like: x, name: "one")])])
        return g.op("Where", [inside, g.op("Mul", [dY, try g.scalar(alpha, like: x, name: "alpha")]), try g.scalar(0, like: x, name: "zero")])
    }
    registry.registerUnaryGradient("HardSwish") { g, dY, x, _ in
        // y = x * clip(x/6 + 1/2, 0, 1): slope 0 below -3, 1 above 3, (2x + 3)/6 between (PyTorch's convention at +-3).
        let slope = g.op("Add", [g.op("Div", [x, try g.scalar(3, like: x, name: "three")]), try g.scalar(0.5, like: x, name: "half")])
        let below = g.op("Less", [x, try g.scalar(-3, like: x, name: "minus_three")])
        let above = g.op("Greater", [x, try g.scalar(3, like: x, name: "three")])
        let clipped = g.op("Where", [below, try g.scalar(0, like: x, name: "zero"), g.op("Where", [above, try g.scalar(1, like: x, name: "one"), slope])])
        return g.op("Mul", [dY, clipped])
    }
    registry.registerUnaryGradient("Mish") { g, dY, x, _ in
        // y = x tanh(sp(x)): y' = tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)
        let t = g.op("Tanh", [g.op("Softplus", [x])])
        let one = try g.scalar(1, like: x, name: "one")
        let rest = g.op("Mul", [g.op("Mul", [x, g.op("Sigmoid", [x])]), g.op("Sub", [one, g.op("Mul", [t, t])])])
        return g.op("Mul", [dY, g.op("Add", [t, rest])])
    }
    registry.registerUnaryGradient("Gelu") { g, dY, x, _ in
        let tanh = g.node.string("approximate") == "tanh"
        return g.ms(tanh ? "FastGeluGrad" : "GeluGrad", [dY, x])[0]
    }
}

/// The gradient rule of PRelu.
func pReluGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let x = g.input(0)
    let positive = g.op("Greater", [x, try g.scalar(0, like: x, name: "zero")])
    let zero = try g.scalar(0, like: x, name: "zero")
    return [g.needs(0) ? g.reduced(g.op("Where", [positive, dY, g.op("Mul", [dY, g.input(1)])]), toInput: 0) : nil,
            g.needs(1) ? g.reduced(g.op("Where", [positive, zero, g.op("Mul", [dY, x])]), toInput: 1) : nil]
}
