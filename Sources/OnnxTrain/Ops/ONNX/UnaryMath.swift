/// Unary elementwise math: Abs, Neg, Sign, Reciprocal, rounding, roots, exponentials,
/// trigonometry, Erf, IsNaN, IsInf and Clip.
struct AbsFunction: NumericUnaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ x: T) -> T { T.magnitude(x) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { VectorMath.abs(x) }
}
struct NegFunction: NumericUnaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ x: T) -> T { T.negate(x) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { -x }
}
struct SignFunction: NumericUnaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ x: T) -> T { T.signum(x) }
}

// One struct per float function, so each loop specialises (and vectorises where it can).
struct ReciprocalFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { 1 / x }
}
struct FloorFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x.rounded(.down) }
}
struct CeilFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x.rounded(.up) }
}
/// Round: halves go to even, like numpy and onnxruntime.
struct RoundFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x.rounded(.toNearestOrEven) }
}
struct SqrtFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.sqrt(x) }
}
/// float32: VectorMath.exp (1 ulp); float64: libm.
struct ExpFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { float32Lane(x, VectorMath.exp, else: T.exp) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { VectorMath.exp(x) }
}
struct LogFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.log(x) }
}
struct SinFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.sin(x) }
}
struct CosFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.cos(x) }
}
struct TanFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.tan(x) }
}
struct AsinFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.asin(x) }
}
struct AcosFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.acos(x) }
}
struct AtanFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.atan(x) }
}
struct SinhFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.sinh(x) }
}
struct CoshFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.cosh(x) }
}
struct AsinhFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.asinh(x) }
}
struct AcoshFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.acosh(x) }
}
struct AtanhFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { T.atanh(x) }
}
/// float32: VectorMath.erf (1.1 ulps); float64: libm.
struct ErfFunction: FloatUnaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { float32Lane(x, VectorMath.erf, else: T.erf) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { VectorMath.erf(x) }
}

/// Clip to [low, high]; NaN passes through. Bounds are kept as tensors of the input type.
struct ClipOperation: NumericOperation {
    let x: Tensor, low: Tensor?, high: Tensor?
    func numeric<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        func bound(_ t: Tensor?, _ name: String, _ fallback: T) throws -> T {
            guard let t else { return fallback }
            guard t.dtype == T.dtype else { throw KernelError("\(name) must have the input's type \(T.dtype), got \(t.dtype)") }
            guard t.count == 1 else { throw KernelError("\(name) must be a scalar, got shape \(t.shape)") }
            return try t.withUnsafeBufferPointer(as: T.self) { $0[0] }
        }
        let lo = try bound(low, "min", T.lowest), hi = try bound(high, "max", T.highest)
        return mapElements(x, to: T.dtype) { (v: T) -> T in clipValue(v, lo, hi) }
    }
}

/// Clip of one element: min(max(v, low), high); high wins when low > high, as in numpy, and NaN
/// passes through. The Clip kernel's function and ElementwiseChain's Clip step.
@inline(__always)
func clipValue<T: Comparable>(_ v: T, _ low: T, _ high: T) -> T {
    let raised = v < low ? low : v
    return raised > high ? high : raised
}

func clip(_ x: Tensor, low: Tensor?, high: Tensor?) throws -> Tensor {
    try computingHalfInFloat([x] + [low, high].compactMap { $0 }) { wide in
        var rest = wide.dropFirst().makeIterator()
        let lo = low == nil ? nil : rest.next(), hi = high == nil ? nil : rest.next()
        return try dispatch(wide[0].dtype, ClipOperation(x: wide[0], low: lo, high: hi))
    }
}

/// A bool tensor of `predicate(x)` for every float type (half and float8 types read through Float).
func classify(_ x: Tensor, _ predicate: @escaping (Double) -> Bool) throws -> Tensor {
    guard x.dtype.isFloatingPoint else { throw KernelError("a float input is expected, got \(x.dtype)") }
    if x.dtype == .float64 { return mapElements(x, to: .bool) { (v: Double) in predicate(v) } }
    let f = x.dtype == .float32 ? x : try x.cast(to: .float32)
    return mapElements(f, to: .bool) { (v: Float) in predicate(Double(v)) }
}

func registerUnaryMathOps(_ registry: OpRegistry) {
    registry.registerNumericUnary("Abs", since: [1, 6, 13]) { _ in AbsFunction() }
    registry.registerNumericUnary("Neg", since: [1, 6, 13]) { _ in NegFunction() }
    registry.registerNumericUnary("Sign", since: [9, 13]) { _ in SignFunction() }

    registry.registerFloatUnary("Reciprocal", since: [1, 6, 13]) { _ in ReciprocalFunction() }
    registry.registerFloatUnary("Floor", since: [1, 6, 13]) { _ in FloorFunction() }
    registry.registerFloatUnary("Ceil", since: [1, 6, 13]) { _ in CeilFunction() }
    registry.registerFloatUnary("Round", since: [11, 22]) { _ in RoundFunction() }
    registry.registerFloatUnary("Sqrt", since: [1, 6, 13]) { _ in SqrtFunction() }
    registry.registerFloatUnary("Exp", since: [1, 6, 13]) { _ in ExpFunction() }
    registry.registerFloatUnary("Log", since: [1, 6, 13]) { _ in LogFunction() }
    registry.registerFloatUnary("Sin", since: [7, 22]) { _ in SinFunction() }
    registry.registerFloatUnary("Cos", since: [7, 22]) { _ in CosFunction() }
    registry.registerFloatUnary("Tan", since: [7, 22]) { _ in TanFunction() }
    registry.registerFloatUnary("Asin", since: [7, 22]) { _ in AsinFunction() }
    registry.registerFloatUnary("Acos", since: [7, 22]) { _ in AcosFunction() }
    registry.registerFloatUnary("Atan", since: [7, 22]) { _ in AtanFunction() }
    registry.registerFloatUnary("Sinh", since: [9, 22]) { _ in SinhFunction() }
    registry.registerFloatUnary("Cosh", since: [9, 22]) { _ in CoshFunction() }
    registry.registerFloatUnary("Asinh", since: [9, 22]) { _ in AsinhFunction() }
    registry.registerFloatUnary("Acosh", since: [9, 22]) { _ in AcoshFunction() }
    registry.registerFloatUnary("Atanh", since: [9, 22]) { _ in AtanhFunction() }
    registry.registerFloatUnary("Erf", since: [9, 13]) { _ in ErfFunction() }

    registry.register("IsNaN", since: [9, 13, 20], isNaNKernel)
    registry.register("IsInf", since: [10, 20], isInfKernel)

    // Clip before 11 takes float attributes; from 11 on optional scalar inputs of the input's type.
    registry.register("Clip", since: 1, clipKernel)
    registry.register("Clip", since: [11, 12, 13], clip2Kernel)

    // Gradient rules (GradientContext): dX = dY * f'(X), written with the forward output where that is cheaper.
    registry.registerGradient("Clip", clipGradient)
    registry.registerUnaryGradient("Neg") { g, dY, _, _ in g.op("Neg", [dY]) }
    registry.registerUnaryGradient("Abs") { g, dY, x, _ in g.op("Mul", [dY, g.op("Sign", [x])]) }
    registry.registerUnaryGradient("Exp") { g, dY, _, y in g.op("Mul", [dY, y]) }
    registry.registerUnaryGradient("Log") { g, dY, x, _ in g.op("Div", [dY, x]) }
    registry.registerUnaryGradient("Sqrt") { g, dY, _, y in g.op("Mul", [g.op("Div", [dY, y]), try g.scalar(0.5, like: y, name: "half")]) }
    registry.registerUnaryGradient("Reciprocal") { g, dY, _, y in g.op("Neg", [g.op("Mul", [dY, g.op("Mul", [y, y])])]) }
    registry.registerUnaryGradient("Sin") { g, dY, x, _ in g.op("Mul", [dY, g.op("Cos", [x])]) }
    registry.registerUnaryGradient("Cos") { g, dY, x, _ in g.op("Neg", [g.op("Mul", [dY, g.op("Sin", [x])])]) }
    registry.registerUnaryGradient("Tan") { g, dY, _, y in g.op("Mul", [dY, g.op("Add", [try g.scalar(1, like: y, name: "one"), g.op("Mul", [y, y])])]) }
    registry.registerUnaryGradient("Sinh") { g, dY, x, _ in g.op("Mul", [dY, g.op("Cosh", [x])]) }
    registry.registerUnaryGradient("Cosh") { g, dY, x, _ in g.op("Mul", [dY, g.op("Sinh", [x])]) }
    registry.registerUnaryGradient("Atan") { g, dY, x, _ in
        g.op("Div", [dY, g.op("Add", [try g.scalar(1, like: x, name: "one"), g.op("Mul", [x, x])])])
    }
    registry.registerUnaryGradient("Asin") { g, dY, x, _ in
        g.op("Div", [dY, g.op("Sqrt", [g.op("Sub", [try g.scalar(1, like: x, name: "one"), g.op("Mul", [x, x])])])])
    }
    registry.registerUnaryGradient("Acos") { g, dY, x, _ in
        g.op("Neg", [g.op("Div", [dY, g.op("Sqrt", [g.op("Sub", [try g.scalar(1, like: x, name: "one"), g.op("Mul", [x, x])])])])])
    }
    registry.registerUnaryGradient("Asinh") { g, dY, x, _ in
        g.op("Div", [dY, g.op("Sqrt", [g.op("Add", [g.op("Mul", [x, x]), try g.scalar(1, like: x, name: "one")])])])
    }
    registry.registerUnaryGradient("Acosh") { g, dY, x, _ in
        g.op("Div", [dY, g.op("Sqrt", [g.op("Sub", [g.op("Mul", [x, x]), try g.scalar(1, like: x, name: "one")])])])
    }
    registry.registerUnaryGradient("Atanh") { g, dY, x, _ in
        g.op("Div", [dY, g.op("Sub", [try g.scalar(1, like: x, name: "one"), g.op("Mul", [x, x])])])
    }
    registry.registerUnaryGradient("Erf") { g, dY, x, _ in
        // d erf(x) = 2/sqrt(pi) * exp(-x^2)
        let e = g.op("Exp", [g.op("Neg", [g.op("Mul", [x, x])])])
        return g.op("Mul", [dY, g.op("Mul", [e, try g.scalar(2 / Double.pi.squareRoot(), like: x, name: "two_over_sqrt_pi")])])
    }
    // Piecewise-constant ops: zero gradient almost everywhere (as PyTorch).
    for name in ["Floor", "Ceil", "Round", "Sign"] {
        registry.registerGradient(name) { g in [nil] }
    }
}

/// IsNaN, since opset 9, 13, 20.
func isNaNKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in [.tensor(try classify(try inputs.tensor(0)) { $0.isNaN })] }
}

/// IsInf, since opset 10, 20.
func isInfKernel(_ ctx: NodeContext) throws -> Kernel {
    let negative = try ctx.int("detect_negative", default: 1) != 0
    let positive = try ctx.int("detect_positive", default: 1) != 0
    return AnyKernel { inputs, _ in
        [.tensor(try classify(try inputs.tensor(0)) { $0.isInfinite && ($0 > 0 ? positive : negative) })]
    }
}

/// Clip, since opset 1.
func clipKernel(_ ctx: NodeContext) throws -> Kernel {
    let low = try ctx.float("min"), high = try ctx.float("max")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let lo = try low.map { try Tensor(scalar: $0).cast(to: x.dtype) }
        let hi = try high.map { try Tensor(scalar: $0).cast(to: x.dtype) }
        return [.tensor(try clip(x, low: lo, high: hi))]
    }
}

/// Clip, since opset 11, 12, 13.
func clip2Kernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        [.tensor(try clip(try inputs.tensor(0), low: try inputs.optionalTensor(1), high: try inputs.optionalTensor(2)))]
    }
}

/// The gradient rule of Clip.
func clipGradient(_ g: GradientContext) throws -> [String?] {
    // Passes where min <= X <= max (both bounds inclusive, as PyTorch's clamp).
    let dY = try g.requiredDY()
    let x = g.input(0)
    var lo: String?, hi: String?
    if g.opset < 11 {
        if let v = g.node.float("min") { lo = try g.scalar(Double(v), like: x, name: "min") }
        if let v = g.node.float("max") { hi = try g.scalar(Double(v), like: x, name: "max") }
    } else {
        lo = g.hasInput(1) ? g.input(1) : nil
        hi = g.hasInput(2) ? g.input(2) : nil
    }
    // Not(x < lo) and Not(x > hi): ops every opset that has Where (9) has.
    var mask: String?
    if let lo { mask = g.op("Not", [g.op("Less", [x, lo])]) }
    if let hi {
        let below = g.op("Not", [g.op("Greater", [x, hi])])
        mask = mask.map { g.op("And", [$0, below]) } ?? below
    }
    guard let mask else { return [dY] }
    return [g.op("Where", [mask, dY, try g.scalar(0, like: x, name: "zero")])]
}
