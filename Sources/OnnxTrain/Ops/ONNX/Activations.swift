/// Activation functions. Attribute values are ONNX floats, widened to the input type once per
/// element loop (float64 inputs see the float32 attribute value, as the reference does).

/// Relu keeps NaN (x < 0 is false for NaN), like numpy's maximum(x, 0) and onnxruntime.
struct ReluFunction: NumericUnaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ x: T) -> T { x < 0 ? 0 as T : x }
}
struct LeakyReluFunction: FloatUnaryFunction {
    let alpha: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x < 0 ? T(alpha) * x : x }
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
/// The logistic function, in the form that cannot overflow exp for either sign.
@inline(__always) func logistic<T: FloatElement>(_ x: T) -> T {
    if x >= 0 { return 1 / (1 + T.exp(-x)) }
    let e = T.exp(x)
    return e / (1 + e)
}
struct SigmoidFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { logistic(x) }
}
struct SwishFunction: FloatUnaryFunction {
    let alpha: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x * logistic(T(alpha) * x) }
}
struct TanhFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.tanh(x) }
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
}
