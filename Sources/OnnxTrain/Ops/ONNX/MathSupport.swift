#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Shared machinery of the math families: element protocols with the arithmetic ONNX defines
// (C-like integer division, both Mod flavours, wrapping integer overflow), dtype dispatch, and the
// unary / binary / comparison drivers every elementwise op is a few lines on.
// float16 and bfloat16 are computed through Float and rounded back once per op.

/// A numeric element with the arithmetic ONNX's elementwise ops define.
///
/// Integer arithmetic wraps like numpy and C (no traps); division by zero gives 0 instead of
/// trapping, since ONNX leaves it undefined and a kernel must not crash on input.
public protocol ArithmeticElement: NumericElement, ExpressibleByIntegerLiteral {
    static func add(_ a: Self, _ b: Self) -> Self
    static func sub(_ a: Self, _ b: Self) -> Self
    static func mul(_ a: Self, _ b: Self) -> Self
    /// Float division, or integer division truncating toward zero like C.
    static func div(_ a: Self, _ b: Self) -> Self
    /// The remainder with the sign of the dividend (C fmod / `%`).
    static func fmod(_ a: Self, _ b: Self) -> Self
    /// The remainder with the sign of the divisor (Python / numpy `mod`).
    static func floorMod(_ a: Self, _ b: Self) -> Self
    static func negate(_ a: Self) -> Self
    static func magnitude(_ a: Self) -> Self
    /// -1, 0 or 1 (NaN stays NaN).
    static func signum(_ a: Self) -> Self
    /// The smallest value of the type: -inf for floats, `.min` for integers.
    static var lowest: Self { get }
    /// The largest value of the type: +inf for floats, `.max` for integers.
    static var highest: Self { get }
    static var one: Self { get }
    var isNaNValue: Bool { get }
}

extension ArithmeticElement where Self: FixedWidthInteger {
    @inline(__always) public static func add(_ a: Self, _ b: Self) -> Self { a &+ b }
    @inline(__always) public static func sub(_ a: Self, _ b: Self) -> Self { a &- b }
    @inline(__always) public static func mul(_ a: Self, _ b: Self) -> Self { a &* b }
    @inline(__always) public static func div(_ a: Self, _ b: Self) -> Self {
        if b == 0 { return 0 }
        return a.dividedReportingOverflow(by: b).partialValue
    }
    @inline(__always) public static func fmod(_ a: Self, _ b: Self) -> Self {
        if b == 0 { return 0 }
        return a.remainderReportingOverflow(dividingBy: b).partialValue
    }
    @inline(__always) public static func floorMod(_ a: Self, _ b: Self) -> Self {
        let r = fmod(a, b)
        return r != 0 && ((r < 0) != (b < 0)) ? r &+ b : r
    }
    @inline(__always) public static func negate(_ a: Self) -> Self { 0 &- a }
    @inline(__always) public static func magnitude(_ a: Self) -> Self { a < 0 ? 0 &- a : a }
    @inline(__always) public static func signum(_ a: Self) -> Self { a > 0 ? 1 : (a < 0 ? 0 &- 1 : 0) }
    @inline(__always) public static var lowest: Self { .min }
    @inline(__always) public static var highest: Self { .max }
    @inline(__always) public static var one: Self { 1 }
    @inline(__always) public var isNaNValue: Bool { false }
}

extension ArithmeticElement where Self: BinaryFloatingPoint {
    @inline(__always) public static func add(_ a: Self, _ b: Self) -> Self { a + b }
    @inline(__always) public static func sub(_ a: Self, _ b: Self) -> Self { a - b }
    @inline(__always) public static func mul(_ a: Self, _ b: Self) -> Self { a * b }
    @inline(__always) public static func div(_ a: Self, _ b: Self) -> Self { a / b }
    @inline(__always) public static func fmod(_ a: Self, _ b: Self) -> Self {
        a.truncatingRemainder(dividingBy: b)
    }
    @inline(__always) public static func floorMod(_ a: Self, _ b: Self) -> Self {
        let r = a.truncatingRemainder(dividingBy: b)
        return r != 0 && ((r < 0) != (b < 0)) ? r + b : r
    }
    @inline(__always) public static func negate(_ a: Self) -> Self { -a }
    @inline(__always) public static func magnitude(_ a: Self) -> Self { Swift.abs(a) }
    @inline(__always) public static func signum(_ a: Self) -> Self { a > 0 ? 1 : (a < 0 ? -1 : a) }
    @inline(__always) public static var lowest: Self { -.infinity }
    @inline(__always) public static var highest: Self { .infinity }
    @inline(__always) public static var one: Self { 1 }
    @inline(__always) public var isNaNValue: Bool { isNaN }
}

extension Float: ArithmeticElement {}
extension Double: ArithmeticElement {}
extension Int8: ArithmeticElement {}
extension Int16: ArithmeticElement {}
extension Int32: ArithmeticElement {}
extension Int64: ArithmeticElement {}
extension UInt8: ArithmeticElement {}
extension UInt16: ArithmeticElement {}
extension UInt32: ArithmeticElement {}
extension UInt64: ArithmeticElement {}

/// Float and Double with the elementary functions of libm.
public protocol RealElement: FloatElement, ArithmeticElement {
    static func exp(_ x: Self) -> Self
    static func expm1(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
    static func log1p(_ x: Self) -> Self
    static func sqrt(_ x: Self) -> Self
    static func pow(_ x: Self, _ y: Self) -> Self
    static func sin(_ x: Self) -> Self
    static func cos(_ x: Self) -> Self
    static func tan(_ x: Self) -> Self
    static func asin(_ x: Self) -> Self
    static func acos(_ x: Self) -> Self
    static func atan(_ x: Self) -> Self
    static func sinh(_ x: Self) -> Self
    static func cosh(_ x: Self) -> Self
    static func tanh(_ x: Self) -> Self
    static func asinh(_ x: Self) -> Self
    static func acosh(_ x: Self) -> Self
    static func atanh(_ x: Self) -> Self
    static func erf(_ x: Self) -> Self
}

extension Float: RealElement {
    @inline(__always) public static func exp(_ x: Float) -> Float { expf(x) }
    @inline(__always) public static func expm1(_ x: Float) -> Float { expm1f(x) }
    @inline(__always) public static func log(_ x: Float) -> Float { logf(x) }
    @inline(__always) public static func log1p(_ x: Float) -> Float { log1pf(x) }
    @inline(__always) public static func sqrt(_ x: Float) -> Float { x.squareRoot() }
    @inline(__always) public static func pow(_ x: Float, _ y: Float) -> Float { powf(x, y) }
    @inline(__always) public static func sin(_ x: Float) -> Float { sinf(x) }
    @inline(__always) public static func cos(_ x: Float) -> Float { cosf(x) }
    @inline(__always) public static func tan(_ x: Float) -> Float { tanf(x) }
    @inline(__always) public static func asin(_ x: Float) -> Float { asinf(x) }
    @inline(__always) public static func acos(_ x: Float) -> Float { acosf(x) }
    @inline(__always) public static func atan(_ x: Float) -> Float { atanf(x) }
    @inline(__always) public static func sinh(_ x: Float) -> Float { sinhf(x) }
    @inline(__always) public static func cosh(_ x: Float) -> Float { coshf(x) }
    @inline(__always) public static func tanh(_ x: Float) -> Float { tanhf(x) }
    @inline(__always) public static func asinh(_ x: Float) -> Float { asinhf(x) }
    @inline(__always) public static func acosh(_ x: Float) -> Float { acoshf(x) }
    @inline(__always) public static func atanh(_ x: Float) -> Float { atanhf(x) }
    @inline(__always) public static func erf(_ x: Float) -> Float { erff(x) }
}

extension Double: RealElement {
    @inline(__always) public static func exp(_ x: Double) -> Double { Glibc.exp(x) }
    @inline(__always) public static func expm1(_ x: Double) -> Double { Glibc.expm1(x) }
    @inline(__always) public static func log(_ x: Double) -> Double { Glibc.log(x) }
    @inline(__always) public static func log1p(_ x: Double) -> Double { Glibc.log1p(x) }
    @inline(__always) public static func sqrt(_ x: Double) -> Double { x.squareRoot() }
    @inline(__always) public static func pow(_ x: Double, _ y: Double) -> Double { Glibc.pow(x, y) }
    @inline(__always) public static func sin(_ x: Double) -> Double { Glibc.sin(x) }
    @inline(__always) public static func cos(_ x: Double) -> Double { Glibc.cos(x) }
    @inline(__always) public static func tan(_ x: Double) -> Double { Glibc.tan(x) }
    @inline(__always) public static func asin(_ x: Double) -> Double { Glibc.asin(x) }
    @inline(__always) public static func acos(_ x: Double) -> Double { Glibc.acos(x) }
    @inline(__always) public static func atan(_ x: Double) -> Double { Glibc.atan(x) }
    @inline(__always) public static func sinh(_ x: Double) -> Double { Glibc.sinh(x) }
    @inline(__always) public static func cosh(_ x: Double) -> Double { Glibc.cosh(x) }
    @inline(__always) public static func tanh(_ x: Double) -> Double { Glibc.tanh(x) }
    @inline(__always) public static func asinh(_ x: Double) -> Double { Glibc.asinh(x) }
    @inline(__always) public static func acosh(_ x: Double) -> Double { Glibc.acosh(x) }
    @inline(__always) public static func atanh(_ x: Double) -> Double { Glibc.atanh(x) }
    @inline(__always) public static func erf(_ x: Double) -> Double { Glibc.erf(x) }
}

// MARK: - Dispatch

/// A computation generic over arithmetic element types (Swift has no generic closures).
protocol ArithmeticOperation {
    associatedtype Result
    func callAsFunction<T: ArithmeticElement>(_ type: T.Type) throws -> Result
}

/// A computation generic over Float and Double.
protocol RealOperation {
    associatedtype Result
    func callAsFunction<T: RealElement>(_ type: T.Type) throws -> Result
}

/// Runs `op` with the Swift type of `dtype`: every float and integer type (not half types:
/// callers widen those first).
func dispatchArithmetic<Op: ArithmeticOperation>(_ dtype: DType, _ op: Op) throws -> Op.Result {
    switch dtype {
    case .float32: return try op(Float.self)
    case .float64: return try op(Double.self)
    case .int8: return try op(Int8.self)
    case .int16: return try op(Int16.self)
    case .int32: return try op(Int32.self)
    case .int64: return try op(Int64.self)
    case .uint8: return try op(UInt8.self)
    case .uint16: return try op(UInt16.self)
    case .uint32: return try op(UInt32.self)
    case .uint64: return try op(UInt64.self)
    default: throw KernelError("element type \(dtype) is not supported here")
    }
}

/// Runs `op` with Float or Double.
func dispatchReal<Op: RealOperation>(_ dtype: DType, _ op: Op) throws -> Op.Result {
    switch dtype {
    case .float32: return try op(Float.self)
    case .float64: return try op(Double.self)
    default: throw KernelError("element type \(dtype) is not supported here (a float type expected)")
    }
}

/// Runs `body` on `inputs` widened to float32 when the first is float16/bfloat16 and rounds
/// tensor results back; other inputs pass through unchanged.
func computingHalfInFloat(_ inputs: [Tensor], _ body: ([Tensor]) throws -> Tensor) throws -> Tensor {
    guard let first = inputs.first, first.isHalf else { return try body(inputs) }
    // Cast converts in one pass (widening is exact; narrowing rounds to nearest even).
    let result = try body(inputs.map { $0.isHalf ? try $0.cast(to: .float32) : $0 })
    return result.dtype == .float32 ? try result.cast(to: first.dtype) : result
}

// MARK: - Unary drivers

/// An elementwise function defined for Float and Double (Exp, Sigmoid, ...).
protocol RealUnaryFunction {
    func callAsFunction<T: RealElement>(_ x: T) -> T
}

/// An elementwise function defined for every arithmetic type (Abs, Neg, Relu, ...).
protocol ArithmeticUnaryFunction {
    func callAsFunction<T: ArithmeticElement>(_ x: T) -> T
}

/// `out[i] = f(x[i])` for contiguous buffers; `x` and `out` have the same count.
@inline(__always)
func mapElements<T, R>(_ x: Tensor, to outDType: DType, _ f: (T) -> R) -> Tensor {
    var out = Tensor(uninitialized: outDType, shape: x.shape)
    x.uncheckedBufferPointer(as: T.self) { px in
        out.uncheckedMutableBufferPointer(as: R.self) { po in
            for i in 0..<po.count { po[i] = f(px[i]) }
        }
    }
    return out
}

struct MapReal<F: RealUnaryFunction>: RealOperation {
    let x: Tensor, f: F
    func callAsFunction<T: RealElement>(_ type: T.Type) throws -> Tensor {
        mapElements(x, to: T.dtype) { (v: T) -> T in f(v) }
    }
}

struct MapArithmetic<F: ArithmeticUnaryFunction>: ArithmeticOperation {
    let x: Tensor, f: F
    func callAsFunction<T: ArithmeticElement>(_ type: T.Type) throws -> Tensor {
        mapElements(x, to: T.dtype) { (v: T) -> T in f(v) }
    }
}

/// Applies a float function elementwise (float16/bfloat16 through Float).
func mapReal<F: RealUnaryFunction>(_ x: Tensor, _ f: F) throws -> Tensor {
    try computingHalfInFloat([x]) { try dispatchReal($0[0].dtype, MapReal(x: $0[0], f: f)) }
}

/// Applies a numeric function elementwise (float16/bfloat16 through Float).
func mapArithmetic<F: ArithmeticUnaryFunction>(_ x: Tensor, _ f: F) throws -> Tensor {
    try computingHalfInFloat([x]) { try dispatchArithmetic($0[0].dtype, MapArithmetic(x: $0[0], f: f)) }
}

// MARK: - Binary drivers

/// A binary function of two same-typed numeric elements (Add, Max, PRelu, ...).
protocol ArithmeticBinaryFunction {
    func callAsFunction<T: ArithmeticElement>(_ a: T, _ b: T) -> T
}

/// A binary function of two same-typed float elements (Pow).
protocol RealBinaryFunction {
    func callAsFunction<T: RealElement>(_ a: T, _ b: T) -> T
}

/// A predicate on two same-typed elements (Equal, Less, ...).
protocol ComparisonFunction {
    func callAsFunction<T: ArithmeticElement>(_ a: T, _ b: T) -> Bool
}

struct ZipArithmetic<F: ArithmeticBinaryFunction>: ArithmeticOperation {
    let a: Tensor, b: Tensor, f: F
    func callAsFunction<T: ArithmeticElement>(_ type: T.Type) throws -> Tensor {
        try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { f($0, $1) }
    }
}

struct ZipReal<F: RealBinaryFunction>: RealOperation {
    let a: Tensor, b: Tensor, f: F
    func callAsFunction<T: RealElement>(_ type: T.Type) throws -> Tensor {
        try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { f($0, $1) }
    }
}

struct ZipComparison<F: ComparisonFunction>: ArithmeticOperation {
    let a: Tensor, b: Tensor, f: F
    func callAsFunction<T: ArithmeticElement>(_ type: T.Type) throws -> Tensor {
        try broadcastBinary(a, b, T.self, T.self, Bool.self, outDType: .bool) { f($0, $1) }
    }
}

func requireSameType(_ a: Tensor, _ b: Tensor) throws {
    guard a.dtype == b.dtype else {
        throw KernelError("inputs must have the same element type, got \(a.dtype) and \(b.dtype)")
    }
}

/// `f(a, b)` elementwise with numpy broadcasting; both inputs of one numeric type.
func zipArithmetic<F: ArithmeticBinaryFunction>(_ a: Tensor, _ b: Tensor, _ f: F) throws -> Tensor {
    try requireSameType(a, b)
    return try computingHalfInFloat([a, b]) { try dispatchArithmetic($0[0].dtype, ZipArithmetic(a: $0[0], b: $0[1], f: f)) }
}

/// `f(a, b)` elementwise with numpy broadcasting; both inputs of one float type.
func zipReal<F: RealBinaryFunction>(_ a: Tensor, _ b: Tensor, _ f: F) throws -> Tensor {
    try requireSameType(a, b)
    return try computingHalfInFloat([a, b]) { try dispatchReal($0[0].dtype, ZipReal(a: $0[0], b: $0[1], f: f)) }
}

/// A bool tensor of `f(a, b)` with broadcasting; bool inputs compare as 0/1 bytes.
func zipComparison<F: ComparisonFunction>(_ a: Tensor, _ b: Tensor, _ f: F) throws -> Tensor {
    try requireSameType(a, b)
    if a.dtype == .bool {
        return try ZipComparison(a: a.reinterpreted(as: .uint8), b: b.reinterpreted(as: .uint8), f: f)(UInt8.self)
    }
    let wide = a.isHalf ? [a.widenedToFloat(), b.widenedToFloat()] : [a, b]
    return try dispatchArithmetic(wide[0].dtype, ZipComparison(a: wide[0], b: wide[1], f: f))
}

extension Tensor {
    /// The same bytes read as another type of the same size (bool as uint8, int4 as int8, ...).
    func reinterpreted(as dtype: DType) -> Tensor {
        precondition(dtype.byteSize == self.dtype.byteSize && dtype != .string && self.dtype != .string)
        return Tensor(dtype: dtype, shape: shape, storage: storage)
    }
}

// MARK: - Registration helpers

extension OpRegistry {
    /// Registers a float-only elementwise op at each since-version; `make` reads attributes once.
    func registerRealUnary<F: RealUnaryFunction>(_ opType: String, since versions: [Int],
                                                 _ make: @escaping (NodeContext) throws -> F) {
        for v in versions {
            register(opType, since: v) { ctx in
                let f = try make(ctx)
                return AnyKernel { inputs, _ in [.tensor(try mapReal(try inputs.tensor(0), f))] }
            }
        }
    }

    /// Registers a numeric elementwise op at each since-version.
    func registerArithmeticUnary<F: ArithmeticUnaryFunction>(_ opType: String, since versions: [Int],
                                                             _ make: @escaping (NodeContext) throws -> F) {
        for v in versions {
            register(opType, since: v) { ctx in
                let f = try make(ctx)
                return AnyKernel { inputs, _ in [.tensor(try mapArithmetic(try inputs.tensor(0), f))] }
            }
        }
    }

    /// Registers a numeric binary op with broadcasting at each since-version.
    func registerArithmeticBinary<F: ArithmeticBinaryFunction>(_ opType: String, since versions: [Int],
                                                               _ make: @escaping (NodeContext) throws -> F) {
        for v in versions {
            register(opType, since: v) { ctx in
                let f = try make(ctx)
                return AnyKernel { inputs, _ in [.tensor(try zipArithmetic(try inputs.tensor(0), try inputs.tensor(1), f))] }
            }
        }
    }

    /// Registers a comparison with broadcasting and a bool output at each since-version.
    func registerComparison<F: ComparisonFunction>(_ opType: String, since versions: [Int], _ f: F) {
        for v in versions {
            register(opType, since: v) { _ in
                AnyKernel { inputs, _ in [.tensor(try zipComparison(try inputs.tensor(0), try inputs.tensor(1), f))] }
            }
        }
    }
}
