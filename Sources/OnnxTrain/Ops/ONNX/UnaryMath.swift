/// Unary elementwise math: Abs, Neg, Sign, Reciprocal, rounding, roots, exponentials,
/// trigonometry, Erf, IsNaN, IsInf and Clip.
struct AbsFunction: ArithmeticUnaryFunction {
    @inline(__always) func callAsFunction<T: ArithmeticElement>(_ x: T) -> T { T.magnitude(x) }
}
struct NegFunction: ArithmeticUnaryFunction {
    @inline(__always) func callAsFunction<T: ArithmeticElement>(_ x: T) -> T { T.negate(x) }
}
struct SignFunction: ArithmeticUnaryFunction {
    @inline(__always) func callAsFunction<T: ArithmeticElement>(_ x: T) -> T { T.signum(x) }
}

/// A float function named by its libm counterpart, so each op is one line to register.
struct RealFunction: RealUnaryFunction {
    enum Kind {
        case reciprocal, floor, ceil, round, sqrt, exp, log, sin, cos, tan, asin, acos, atan
        case sinh, cosh, asinh, acosh, atanh, erf
    }
    let kind: Kind
    @inline(__always) func callAsFunction<T: RealElement>(_ x: T) -> T {
        switch kind {
        case .reciprocal: return 1 / x
        case .floor: return x.rounded(.down)
        case .ceil: return x.rounded(.up)
        case .round: return x.rounded(.toNearestOrEven)  // ONNX rounds halves to even, like numpy
        case .sqrt: return T.sqrt(x)
        case .exp: return T.exp(x)
        case .log: return T.log(x)
        case .sin: return T.sin(x)
        case .cos: return T.cos(x)
        case .tan: return T.tan(x)
        case .asin: return T.asin(x)
        case .acos: return T.acos(x)
        case .atan: return T.atan(x)
        case .sinh: return T.sinh(x)
        case .cosh: return T.cosh(x)
        case .asinh: return T.asinh(x)
        case .acosh: return T.acosh(x)
        case .atanh: return T.atanh(x)
        case .erf: return T.erf(x)
        }
    }
}

/// Clip to [low, high]; NaN passes through. Bounds are kept as tensors of the input type.
struct ClipOperation: ArithmeticOperation {
    let x: Tensor, low: Tensor?, high: Tensor?
    func callAsFunction<T: ArithmeticElement>(_ type: T.Type) throws -> Tensor {
        func bound(_ t: Tensor?, _ name: String, _ fallback: T) throws -> T {
            guard let t else { return fallback }
            guard t.dtype == T.dtype else { throw KernelError("\(name) must have the input's type \(T.dtype), got \(t.dtype)") }
            guard t.count == 1 else { throw KernelError("\(name) must be a scalar, got shape \(t.shape)") }
            return t.withUnsafeBufferPointer(as: T.self) { $0[0] }
        }
        let lo = try bound(low, "min", T.lowest), hi = try bound(high, "max", T.highest)
        return mapElements(x, to: T.dtype) { (v: T) -> T in
            let raised = v < lo ? lo : v  // min(max(x, low), high): high wins when low > high, as in numpy
            return raised > hi ? hi : raised
        }
    }
}

func clip(_ x: Tensor, low: Tensor?, high: Tensor?) throws -> Tensor {
    try computingHalfInFloat([x] + [low, high].compactMap { $0 }) { wide in
        var rest = wide.dropFirst().makeIterator()
        let lo = low == nil ? nil : rest.next(), hi = high == nil ? nil : rest.next()
        return try dispatchArithmetic(wide[0].dtype, ClipOperation(x: wide[0], low: lo, high: hi))
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
    registry.registerArithmeticUnary("Abs", since: [6, 13]) { _ in AbsFunction() }
    registry.registerArithmeticUnary("Neg", since: [6, 13]) { _ in NegFunction() }
    registry.registerArithmeticUnary("Sign", since: [9, 13]) { _ in SignFunction() }

    let real: [(String, RealFunction.Kind, [Int])] = [
        ("Reciprocal", .reciprocal, [6, 13]), ("Floor", .floor, [6, 13]), ("Ceil", .ceil, [6, 13]),
        ("Round", .round, [11, 22]), ("Sqrt", .sqrt, [6, 13]), ("Exp", .exp, [6, 13]), ("Log", .log, [6, 13]),
        ("Sin", .sin, [7, 22]), ("Cos", .cos, [7, 22]), ("Tan", .tan, [7, 22]), ("Asin", .asin, [7, 22]),
        ("Acos", .acos, [7, 22]), ("Atan", .atan, [7, 22]), ("Sinh", .sinh, [9, 22]), ("Cosh", .cosh, [9, 22]),
        ("Asinh", .asinh, [9, 22]), ("Acosh", .acosh, [9, 22]), ("Atanh", .atanh, [9, 22]), ("Erf", .erf, [9, 13]),
    ]
    for (op, kind, versions) in real {
        registry.registerRealUnary(op, since: versions) { _ in RealFunction(kind: kind) }
    }

    for v in [9, 13, 20] {
        registry.register("IsNaN", since: v) { _ in AnyKernel { inputs, _ in [.tensor(try classify(try inputs.tensor(0)) { $0.isNaN })] } }
    }
    for v in [10, 20] {
        registry.register("IsInf", since: v) { ctx in
            let negative = try ctx.int("detect_negative", default: 1) != 0
            let positive = try ctx.int("detect_positive", default: 1) != 0
            return AnyKernel { inputs, _ in
                [.tensor(try classify(try inputs.tensor(0)) { $0.isInfinite && ($0 > 0 ? positive : negative) })]
            }
        }
    }

    // Clip before 11 takes float attributes; from 11 on optional scalar inputs of the input's type.
    registry.register("Clip", since: 6) { ctx in
        let low = try ctx.float("min"), high = try ctx.float("max")
        return AnyKernel { inputs, _ in
            let x = try inputs.tensor(0)
            let lo = try low.map { try Tensor(scalar: $0).cast(to: x.dtype) }
            let hi = try high.map { try Tensor(scalar: $0).cast(to: x.dtype) }
            return [.tensor(try clip(x, low: lo, high: hi))]
        }
    }
    for v in [11, 12, 13] {
        registry.register("Clip", since: v) { _ in
            AnyKernel { inputs, _ in
                [.tensor(try clip(try inputs.tensor(0), low: try inputs.optionalTensor(1), high: try inputs.optionalTensor(2)))]
            }
        }
    }
}
