#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The one element-type layer of the kernels:
//
//   TensorElement                       every stored type (DType.swift)
//   └ CastableElement                   every type `Tensor.cast` converts directly (+ bool, halves)
//     └ NumericElement                  float32/64 and the eight integer types, with ONNX arithmetic
//       ├ IntegerElement                wrapping integer arithmetic
//       └ FloatElement                  Float and Double, with libm
//
// one dispatcher, `dispatch(dtype, op)`, the only switch from a DType to a Swift type: it calls
// the op's entry for the type's family (`float`, `integer`, `half`, `bool`, `other`) with the
// concrete type, so each kernel loop is specialised per type; `NumericOperation`,
// `CastableOperation` and `ElementMove` route several families to one generic entry. And one
// half-precision path (`computingHalfInFloat`): float16 and bfloat16 are never computed in
// directly; they widen to Float, which computes, and round back once per op.

// MARK: - Element protocols

/// An element type `Tensor.cast` converts between directly.
public protocol CastableElement: TensorElement {
    /// The unsigned integer of the element's width, which moves its bytes unchanged.
    associatedtype Bits
    static func fromInteger<I: BinaryInteger>(_ value: I) -> Self
    static func fromFloat<F: BinaryFloatingPoint>(_ value: F) -> Self
    func converted<D: CastableElement>(to type: D.Type) -> D
}

extension CastableElement where Self: FixedWidthInteger {
    @inline(__always) public static func fromInteger<I: BinaryInteger>(_ value: I) -> Self { Self(truncatingIfNeeded: value) }
    /// Truncates toward zero. NaN and out-of-range values follow onnxruntime on x86 (the
    /// cvttsd2si "integer indefinite" result, then truncation to the target width), since ONNX
    /// leaves them undefined and onnxruntime is the reference: NaN -> int32/int64 min, 0 for
    /// int8/int16/uint8/uint16; uint32/uint64 convert the upper half through the signed range.
    @inline(__always) public static func fromFloat<F: BinaryFloatingPoint>(_ value: F) -> Self {
        let v = Double(value)
        if Self.self == Int64.self { return Self(truncatingIfNeeded: x86Truncate64(v)) }
        if Self.self == UInt64.self {
            if v >= 9_223_372_036_854_775_808 { return Self(truncatingIfNeeded: UInt64(bitPattern: x86Truncate64(v - 9_223_372_036_854_775_808)) ^ (1 << 63)) }
            return Self(truncatingIfNeeded: UInt64(bitPattern: x86Truncate64(v)))
        }
        if Self.self == UInt32.self {
            if v >= 2_147_483_648 { return Self(truncatingIfNeeded: UInt32(bitPattern: x86Truncate32(v - 2_147_483_648)) ^ (1 << 31)) }
            return Self(truncatingIfNeeded: UInt32(bitPattern: x86Truncate32(v)))
        }
        return Self(truncatingIfNeeded: x86Truncate32(v))
    }
    @inline(__always) public func converted<D: CastableElement>(to type: D.Type) -> D { D.fromInteger(self) }
}

/// x86's cvttsd2si to 64 bits: truncation, or Int64.min for NaN and out-of-range values.
@inline(__always) private func x86Truncate64(_ v: Double) -> Int64 {
    if v.isNaN || v >= 9_223_372_036_854_775_808 || v < -9_223_372_036_854_775_808 { return .min }
    return Int64(v)
}

/// x86's cvttsd2si to 32 bits: truncation, or Int32.min for NaN and out-of-range values.
@inline(__always) private func x86Truncate32(_ v: Double) -> Int32 {
    if v.isNaN || v >= 2_147_483_648 || v <= -2_147_483_649 { return .min }
    return Int32(v)
}

extension CastableElement where Self: BinaryFloatingPoint {
    @inline(__always) public static func fromInteger<I: BinaryInteger>(_ value: I) -> Self { Self(value) }
    @inline(__always) public static func fromFloat<F: BinaryFloatingPoint>(_ value: F) -> Self { Self(value) }
    @inline(__always) public func converted<D: CastableElement>(to type: D.Type) -> D { D.fromFloat(self) }
}

extension Float: CastableElement { public typealias Bits = UInt32 }
extension Double: CastableElement { public typealias Bits = UInt64 }
extension Float16: CastableElement { public typealias Bits = UInt16 }
extension Int8: CastableElement { public typealias Bits = UInt8 }
extension Int16: CastableElement { public typealias Bits = UInt16 }
extension Int32: CastableElement { public typealias Bits = UInt32 }
extension Int64: CastableElement { public typealias Bits = UInt64 }
extension UInt8: CastableElement { public typealias Bits = UInt8 }
extension UInt16: CastableElement { public typealias Bits = UInt16 }
extension UInt32: CastableElement { public typealias Bits = UInt32 }
extension UInt64: CastableElement { public typealias Bits = UInt64 }

extension Bool: CastableElement {
    public typealias Bits = UInt8
    @inline(__always) public static func fromInteger<I: BinaryInteger>(_ value: I) -> Bool { value != 0 }
    @inline(__always) public static func fromFloat<F: BinaryFloatingPoint>(_ value: F) -> Bool { value != 0 }
    @inline(__always) public func converted<D: CastableElement>(to type: D.Type) -> D { D.fromInteger(self ? 1 : 0) }
}

extension BFloat16: CastableElement {
    public typealias Bits = UInt16
    @inline(__always) public static func fromInteger<I: BinaryInteger>(_ value: I) -> BFloat16 { BFloat16(Float(value)) }
    @inline(__always) public static func fromFloat<F: BinaryFloatingPoint>(_ value: F) -> BFloat16 { BFloat16(Float(value)) }
    @inline(__always) public func converted<D: CastableElement>(to type: D.Type) -> D { D.fromFloat(floatValue) }
}


/// A numeric element with the arithmetic ONNX's elementwise ops define.
///
/// Integer arithmetic wraps like numpy and C (no traps); division by zero gives 0 instead of
/// trapping, since ONNX leaves it undefined and a kernel must not crash on input.
public protocol NumericElement: CastableElement, Comparable, ExpressibleByIntegerLiteral {
    init(fromDouble value: Double)
    var doubleValue: Double { get }
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

/// Integer element types; conversion from Double truncates toward zero and saturates.
public protocol IntegerElement: NumericElement, FixedWidthInteger {}

extension IntegerElement {
    @inline(__always) public init(fromDouble value: Double) {
        if value.isNaN { self = 0 } else if value >= Double(Self.max) { self = .max } else if value <= Double(Self.min) { self = .min } else { self = Self(value) }
    }
    @inline(__always) public var doubleValue: Double { Double(self) }
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

extension Int8: IntegerElement {}
extension Int16: IntegerElement {}
extension Int32: IntegerElement {}
extension Int64: IntegerElement {}
extension UInt8: IntegerElement {}
extension UInt16: IntegerElement {}
extension UInt32: IntegerElement {}
extension UInt64: IntegerElement {}

/// Float and Double: the types floating-point kernels are generic over, with libm.
///
/// The erf policy: `erf` is FloatMath.erf for Float (onnxruntime's MLAS algorithm, within 1 ulp,
/// branch-free so element loops vectorise) and libm's erf for Double (the Erf op); where erf only
/// enters as Φ(x) = ½(1 + erf(x/√2)) (both Gelus, GeluGrad, BiasGelu), `phi` is used, whose
/// float32 form is the rational erf of onnxruntime's GeluGrad (5e-7 absolute error, ~1 ulp of
/// Φ, a third of the cost). `fastExp` is the float32 exp for
/// arguments <= 88 (FloatMath.exp, vectorises); `exp` is libm's, defined on the whole line.
public protocol FloatElement: NumericElement, BinaryFloatingPoint, SIMDScalar, Codable {
    static func exp(_ x: Self) -> Self
    /// e^x for x <= 88 (larger arguments give e^88 for Float): vectorised in float32.
    static func fastExp(_ x: Self) -> Self
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
    /// Φ(x) = ½(1 + erf(x/√2)), the normal distribution function.
    static func phi(_ x: Self) -> Self
}

extension FloatElement {
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

extension Float: FloatElement {
    @inline(__always) public init(fromDouble value: Double) { self = Float(value) }
    @inline(__always) public var doubleValue: Double { Double(self) }
    @inline(__always) public static func exp(_ x: Float) -> Float { expf(x) }
    @inline(__always) public static func fastExp(_ x: Float) -> Float { FloatMath.exp(x) }
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
    @inline(__always) public static func erf(_ x: Float) -> Float { FloatMath.erf(x) }
    @inline(__always) public static func phi(_ x: Float) -> Float { 0.5 * (1 + FloatMath.erfRational(x * 0.707_106_781_186_547_5)) }
}

extension Double: FloatElement {
    @inline(__always) public init(fromDouble value: Double) { self = value }
    @inline(__always) public var doubleValue: Double { self }
    @inline(__always) public static func exp(_ x: Double) -> Double { Glibc.exp(x) }
    @inline(__always) public static func fastExp(_ x: Double) -> Double { Glibc.exp(x) }
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
    @inline(__always) public static func phi(_ x: Double) -> Double { 0.5 * (1 + Glibc.erf(x * 0.707_106_781_186_547_5)) }
}

// MARK: - Dispatch

/// Bytes of a 16-byte element (complex128), moved whole.
struct Bytes16 { var lo: UInt64 = 0, hi: UInt64 = 0 }

/// A computation generic over the element type, run by `dispatch` with the Swift type of a
/// `DType`. (Swift has no generic closures, so an op is a value whose methods are generic.)
///
/// There is one entry per family of element types, each generic over that family, so every
/// element type still gets its own specialised loop: `dispatch` is generic over the op and is
/// specialised per op type, so the entry it calls is a direct call. An op implements the
/// entries it supports; the others throw "element type X is not supported here". The refined
/// protocols route several entries to one: `NumericOperation` (float and integer to
/// `numeric`), `CastableOperation` (every typed entry to `castable`), `ElementMove` (every
/// type to the unsigned integer of its width, `move`).
public protocol ElementOperation {
    associatedtype Result
    /// float32 and float64.
    func float<T: FloatElement>(_ type: T.Type) throws -> Result
    /// The eight integer types.
    func integer<T: IntegerElement>(_ type: T.Type) throws -> Result
    /// float16 and bfloat16, which kernels do not compute in (`computingHalfInFloat` widens them).
    func half<T: CastableElement>(_ type: T.Type) throws -> Result
    func bool() throws -> Result
    /// The types without Swift arithmetic (float8, float4, int4/uint4, int2/uint2, complex,
    /// string), given with the Swift type that stores one element (UInt8, UInt64, Bytes16, String).
    func other<S>(_ dtype: DType, storedAs type: S.Type) throws -> Result
}

extension ElementOperation {
    public func float<T: FloatElement>(_ type: T.Type) throws -> Result { throw unsupportedElementType(T.dtype) }
    public func integer<T: IntegerElement>(_ type: T.Type) throws -> Result { throw unsupportedElementType(T.dtype) }
    public func half<T: CastableElement>(_ type: T.Type) throws -> Result { throw unsupportedElementType(T.dtype) }
    public func bool() throws -> Result { throw unsupportedElementType(.bool) }
    public func other<S>(_ dtype: DType, storedAs type: S.Type) throws -> Result { throw unsupportedElementType(dtype) }
}

/// The error of an op that does not run on `dtype`.
func unsupportedElementType(_ dtype: DType) -> KernelError {
    KernelError("element type \(dtype) is not supported here")
}

/// An op over float32/float64 and the integer types, written once for `NumericElement`.
public protocol NumericOperation: ElementOperation {
    associatedtype Result
    func numeric<T: NumericElement>(_ type: T.Type) throws -> Result
}

extension NumericOperation {
    public func float<T: FloatElement>(_ type: T.Type) throws -> Result { try numeric(type) }
    public func integer<T: IntegerElement>(_ type: T.Type) throws -> Result { try numeric(type) }
}

/// An op over every type `Tensor.cast` converts directly: the numeric types, the half types and bool.
protocol CastableOperation: ElementOperation {
    associatedtype Result
    func castable<T: CastableElement>(_ type: T.Type) throws -> Result
}

extension CastableOperation {
    func float<T: FloatElement>(_ type: T.Type) throws -> Result { try castable(type) }
    func integer<T: IntegerElement>(_ type: T.Type) throws -> Result { try castable(type) }
    func half<T: CastableElement>(_ type: T.Type) throws -> Result { try castable(type) }
    func bool() throws -> Result { try castable(Bool.self) }
}

/// An op that moves elements without looking at them (gathers, copies), run with the unsigned
/// integer type of the element's width (UInt8 ... UInt64, Bytes16), or String for strings.
protocol ElementMove: ElementOperation {
    associatedtype Result
    func move<S>(_ storage: S.Type) throws -> Result
}

extension ElementMove {
    func float<T: FloatElement>(_ type: T.Type) throws -> Result { try move(T.Bits.self) }
    func integer<T: IntegerElement>(_ type: T.Type) throws -> Result { try move(T.Bits.self) }
    func half<T: CastableElement>(_ type: T.Type) throws -> Result { try move(T.Bits.self) }
    func bool() throws -> Result { try move(Bool.Bits.self) }
    func other<S>(_ dtype: DType, storedAs type: S.Type) throws -> Result { try move(type) }
}

/// Runs `op` with the Swift type of `dtype`: the one switch from element types to Swift types.
public func dispatch<Op: ElementOperation>(_ dtype: DType, _ op: Op) throws -> Op.Result {
    switch dtype {
    case .float32: return try op.float(Float.self)
    case .float64: return try op.float(Double.self)
    case .int8: return try op.integer(Int8.self)
    case .int16: return try op.integer(Int16.self)
    case .int32: return try op.integer(Int32.self)
    case .int64: return try op.integer(Int64.self)
    case .uint8: return try op.integer(UInt8.self)
    case .uint16: return try op.integer(UInt16.self)
    case .uint32: return try op.integer(UInt32.self)
    case .uint64: return try op.integer(UInt64.self)
    case .float16: return try op.half(Float16.self)
    case .bfloat16: return try op.half(BFloat16.self)
    case .bool: return try op.bool()
    case .float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz, .float8e8m0, .float4e2m1,
         .uint4, .int4, .uint2, .int2:
        return try op.other(dtype, storedAs: UInt8.self)
    case .complex64: return try op.other(dtype, storedAs: UInt64.self)
    case .complex128: return try op.other(dtype, storedAs: Bytes16.self)
    case .string: return try op.other(dtype, storedAs: String.self)
    }
}

// MARK: - Half precision

extension Tensor {
    /// Whether this is a half-precision type kernels compute in float32.
    public var isHalf: Bool { dtype == .float16 || dtype == .bfloat16 }

    /// float16/bfloat16 widened to float32 (exact, `cast`); other tensors unchanged.
    public func widenedToFloat() -> Tensor {
        guard isHalf, let wide = try? cast(to: .float32) else { return self }
        return wide
    }

    /// A float32 tensor rounded to nearest even in `dtype` (float16 or bfloat16, `cast`); a tensor
    /// that already has `dtype`, or any other target, is returned unchanged.
    public func narrowed(to dtype: DType) -> Tensor {
        guard self.dtype == .float32, dtype == .float16 || dtype == .bfloat16, let narrow = try? cast(to: dtype) else { return self }
        return narrow
    }
}

/// Checks that `inputs` share one element type (naming the input that differs), and for float
/// kernels (`floatOnly`) that it is a float type; returns it.
func commonElementType(_ inputs: [Tensor], names: [String]? = nil, floatOnly: Bool = false) throws -> DType {
    guard let first = inputs.first else { throw KernelError("no inputs") }
    func name(_ i: Int) -> String { names.flatMap { i < $0.count ? $0[i] : nil } ?? "input \(i)" }
    for (i, t) in inputs.enumerated() {
        if floatOnly { guard t.dtype.isFloatingPoint else { throw KernelError("\(name(i)) must be a float tensor, got \(t.dtype)") } }
        guard t.dtype == first.dtype else { throw KernelError("\(name(i)) is \(t.dtype) but \(name(0)) is \(first.dtype)") }
    }
    return first.dtype
}

/// The one half-precision path: checks that `inputs` share one element type (`names` name them
/// in errors; `floatOnly` also requires a float type), runs `body` on them with float16/bfloat16
/// widened to float32, and rounds a float32 result back to the inputs' half type.
/// Inputs past `checked` (indices, masks) are passed through unchecked and unwidened.
func computingHalfInFloat(_ inputs: [Tensor], names: [String]? = nil, floatOnly: Bool = false,
                          checked: Int? = nil, _ body: ([Tensor]) throws -> Tensor) throws -> Tensor {
    let n = checked ?? inputs.count
    let dtype = try commonElementType(Array(inputs.prefix(n)), names: names, floatOnly: floatOnly)
    return try widening(dtype, inputs, upTo: n, { try body($0.compactMap { $0 }) }, narrow: { $0.narrowed(to: dtype) })
}

/// The same path for float kernels with optional inputs and several outputs (Conv, RNNs,
/// normalizations, attention): the compute type is that of the first present input, which must
/// be a float type, and every other float input must have it too (integer and bool inputs, such
/// as sequence lengths and masks, pass through); every half input widens, and float32 outputs
/// round back (indices and other non-float outputs pass through).
func withFloatCompute(_ inputs: [Tensor?], _ body: ([Tensor?]) throws -> [Tensor?]) throws -> [Tensor?] {
    guard let firstIndex = inputs.firstIndex(where: { $0 != nil }), let first = inputs[firstIndex] else { return try body(inputs) }
    let dtype = first.dtype
    guard dtype == .float32 || dtype == .float64 || first.isHalf else {
        throw KernelError("element type \(dtype) is not supported here (a float type is expected)")
    }
    for (i, t) in inputs.enumerated() {
        guard let t, t.dtype.isFloatingPoint, t.dtype != dtype else { continue }
        throw KernelError("input \(i) must be tensor(\(dtype)) like input \(firstIndex), got tensor(\(t.dtype))")
    }
    return try widening(dtype, inputs, upTo: inputs.count, body, narrow: { $0.map { $0?.narrowed(to: dtype) } })
}

/// Runs `body` on `inputs` with the half-typed ones among the first `n` widened to float32 when
/// `dtype` is a half type (then `narrow` rounds the result back); otherwise on `inputs` as they are.
private func widening<R>(_ dtype: DType, _ inputs: [Tensor?], upTo n: Int, _ body: ([Tensor?]) throws -> R,
                         narrow: (R) -> R) rethrows -> R {
    guard dtype == .float16 || dtype == .bfloat16 else { return try body(inputs) }
    return narrow(try body(inputs.enumerated().map { $0.offset < n ? $0.element?.widenedToFloat() : $0.element }))
}
