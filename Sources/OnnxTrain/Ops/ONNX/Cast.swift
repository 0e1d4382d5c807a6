import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Cast and CastLike, and `Tensor.cast(to:)` for every other kernel that needs a conversion.
///
/// Standard types convert directly (one specialised loop per type pair, generic code):
/// integer to integer wraps like C and numpy's astype, float to integer truncates toward zero,
/// float to float rounds to nearest even. The float8 / float4 types go through Float with the
/// ONNX rounding (nearest even) and `saturate` rules; int4 / uint4 / int2 / uint2 wrap into
/// their bits.

/// How float8e8m0 (a bare power of two) rounds: ONNX's `round_mode` attribute.
public enum E8M0Rounding: String, Sendable {
    case up, down, nearest
}

// MARK: - Standard type pairs

/// x converted elementwise from S to D (one specialised loop per type pair).
private struct ConvertTo<S: CastableElement>: CastableOperation {
    let x: Tensor
    func castable<D: CastableElement>(_ d: D.Type) -> Tensor? {
        mapElements(x, to: D.dtype) { (v: S) -> D in v.converted(to: D.self) }
    }
    func other<B>(_ dtype: DType, storedAs type: B.Type) -> Tensor? { nil }
}

/// x, whose element type is S, converted to `dtype` when that is a castable type.
private struct ConvertFrom: CastableOperation {
    let x: Tensor, dtype: DType
    func castable<S: CastableElement>(_ s: S.Type) throws -> Tensor? {
        try dispatch(dtype, ConvertTo<S>(x: x))
    }
    func other<B>(_ dtype: DType, storedAs type: B.Type) -> Tensor? { nil }
}

/// Converts between the standard (non-float8, non-4-bit, non-string) types; nil otherwise.
private func convertStandard(_ x: Tensor, to dtype: DType) throws -> Tensor? {
    try dispatch(x.dtype, ConvertFrom(x: x, dtype: dtype))
}

// MARK: - Small floats

/// A float8 or float4 encoding: sign, exponent and mantissa fields with ONNX's special values.
struct MiniFloatFormat {
    let exponentBits: Int, mantissaBits: Int, bias: Int
    /// Largest finite magnitude.
    let maxValue: Double
    /// Whether all-ones exponents are inf (0 mantissa) / NaN, as in IEEE (e5m2).
    let ieeeSpecials: Bool
    /// "uz" formats: no negative zero; the negative-zero code 0x80 is the only NaN.
    let unsignedZero: Bool
    /// The code for NaN without its sign, for formats other than uz.
    let nanCode: UInt8
    /// Whether a NaN keeps its sign bit.
    let nanSigned: Bool

    var bitCount: Int { 1 + exponentBits + mantissaBits }
    var signBit: UInt8 { UInt8(1 << (bitCount - 1)) }
    var maxCode: UInt8 { encodeFinite(maxValue) }

    static let e4m3fn = MiniFloatFormat(exponentBits: 4, mantissaBits: 3, bias: 7, maxValue: 448, ieeeSpecials: false,
                                        unsignedZero: false, nanCode: 0x7F, nanSigned: true)
    static let e4m3fnuz = MiniFloatFormat(exponentBits: 4, mantissaBits: 3, bias: 8, maxValue: 240, ieeeSpecials: false,
                                          unsignedZero: true, nanCode: 0x80, nanSigned: false)
    static let e5m2 = MiniFloatFormat(exponentBits: 5, mantissaBits: 2, bias: 15, maxValue: 57344, ieeeSpecials: true,
                                      unsignedZero: false, nanCode: 0x7E, nanSigned: true)
    static let e5m2fnuz = MiniFloatFormat(exponentBits: 5, mantissaBits: 2, bias: 16, maxValue: 57344, ieeeSpecials: false,
                                          unsignedZero: true, nanCode: 0x80, nanSigned: false)
    /// float4e2m1 has no inf or NaN; NaN becomes the negative-zero code, as the ONNX suite expects.
    static let e2m1 = MiniFloatFormat(exponentBits: 2, mantissaBits: 1, bias: 1, maxValue: 6, ieeeSpecials: false,
                                      unsignedZero: false, nanCode: 0x8, nanSigned: false)

    static func of(_ dtype: DType) -> MiniFloatFormat? {
        switch dtype {
        case .float8e4m3fn: return .e4m3fn
        case .float8e4m3fnuz: return .e4m3fnuz
        case .float8e5m2: return .e5m2
        case .float8e5m2fnuz: return .e5m2fnuz
        case .float4e2m1: return .e2m1
        default: return nil
        }
    }

    /// The value of every code (2^bitCount entries).
    func decodingTable() -> [Float] {
        (0..<(1 << bitCount)).map { decode(UInt8($0)) }
    }

    func decode(_ code: UInt8) -> Float {
        let negative = code & signBit != 0
        let field = Int(code >> mantissaBits) & ((1 << exponentBits) - 1)
        let mantissa = Int(code) & ((1 << mantissaBits) - 1)
        if unsignedZero && code == 0x80 { return .nan }
        if !unsignedZero && !ieeeSpecials && bitCount == 8 && code & 0x7F == 0x7F { return .nan }
        if ieeeSpecials && field == (1 << exponentBits) - 1 {
            return mantissa == 0 ? (negative ? -.infinity : .infinity) : .nan
        }
        let magnitude: Double
        if field == 0 {
            magnitude = Double(mantissa) * pow2(1 - bias - mantissaBits)
        } else {
            magnitude = (1 + Double(mantissa) / Double(1 << mantissaBits)) * pow2(field - bias)
        }
        return Float(negative ? -magnitude : magnitude)
    }

    /// Rounds `x` to nearest even; out of range (and infinities) saturate to ±max when
    /// `saturate`, otherwise become inf (IEEE formats) or NaN.
    func encode(_ x: Float, saturate: Bool) -> UInt8 {
        let sign: UInt8 = x.sign == .minus ? signBit : 0
        if x.isNaN { return nanSigned ? nanCode | sign : nanCode }
        let overflow: UInt8 = saturate ? (maxCode | sign) : (ieeeSpecials ? (infinityCode | sign) : (unsignedZero ? nanCode : nanCode | sign))
        if x.isInfinite { return overflow }
        let a = Double(x.magnitude)
        let minExponent = 1 - bias
        let e = a == 0 ? minExponent : max(Int(a.exponent), minExponent)
        let quantum = pow2(e - mantissaBits)
        let q = (a / quantum).rounded(.toNearestOrEven) * quantum
        if q > maxValue { return overflow }
        if q == 0 { return unsignedZero ? 0 : sign }
        return encodeFinite(q) | sign
    }

    private var infinityCode: UInt8 { UInt8(((1 << exponentBits) - 1) << mantissaBits) }

    /// The code of a positive value exactly representable in the format.
    private func encodeFinite(_ q: Double) -> UInt8 {
        let minExponent = 1 - bias
        let e = Int(q.exponent)
        if e < minExponent {
            return UInt8(q / pow2(minExponent - mantissaBits))
        }
        let mantissa = Int(q / pow2(e - mantissaBits)) - (1 << mantissaBits)
        return UInt8(((e + bias) << mantissaBits) | mantissa)
    }

    private func pow2(_ e: Int) -> Double { Double(sign: .plus, exponent: e, significand: 1) }
}

private let miniFloatTables: [DType: [Float]] = [
    .float8e4m3fn: MiniFloatFormat.e4m3fn.decodingTable(),
    .float8e4m3fnuz: MiniFloatFormat.e4m3fnuz.decodingTable(),
    .float8e5m2: MiniFloatFormat.e5m2.decodingTable(),
    .float8e5m2fnuz: MiniFloatFormat.e5m2fnuz.decodingTable(),
    .float4e2m1: MiniFloatFormat.e2m1.decodingTable(),
]

/// float8e8m0: the code is a biased exponent (2^(code - 127)); 0xFF is NaN.
private func decodeE8M0(_ code: UInt8) -> Float {
    code == 0xFF ? .nan : Float(sign: .plus, exponent: Int(code) - 127, significand: 1)
}

/// The float32 exponent field of |x|, rounded by `mode`; saturates to 0xFE or gives NaN (0xFF).
private func encodeE8M0(_ x: Float, saturate: Bool, mode: E8M0Rounding) -> UInt8 {
    if x.isNaN { return 0xFF }
    if x.isInfinite { return saturate ? 0xFE : 0xFF }
    let bits = x.magnitude.bitPattern
    var exponent = Int(bits >> 23)
    let mantissa = bits & 0x7F_FFFF
    switch mode {
    case .up: if mantissa != 0 && !(exponent == 0 && mantissa <= 0x40_0000) { exponent += 1 }
    case .down: break
    case .nearest: if mantissa >= 0x40_0000 { exponent += 1 }
    }
    if exponent > 0xFE { return saturate ? 0xFE : 0xFF }
    return UInt8(exponent)
}

// MARK: - Strings

private func trimmed(_ s: String) -> String {
    String(s.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
}

/// Parses a number as onnxruntime does (C's strtod: decimal, scientific, hex, "INF", "NaN",
/// leading blanks), or nil when the string does not start with one.
private func parseNumber(_ s: String) -> Double? {
    s.withCString { start -> Double? in
        var end: UnsafeMutablePointer<CChar>? = nil
        let value = strtod(start, &end)
        guard let end, end != UnsafeMutablePointer(mutating: start) else { return nil }
        return value
    }
}

/// `printf("%.8g", v)`: onnxruntime's spelling of float and double values.
private func formatG8(_ v: Double) -> String {
    String(format: "%.8g", v)
}

/// Formats like onnxruntime: integers plainly, bool as 1/0, floats with "%.8g", "NaN", "INF", "-INF".
private func formatNumber(_ x: Tensor) throws -> [String] {
    func float(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v < 0 ? "-INF" : "INF" }
        return formatG8(v)
    }
    switch x.dtype {
    case .float64: return x.scalars(as: Double.self).map(float)
    case .bool: return x.scalars(as: Bool.self).map { $0 ? "1" : "0" }
    case .uint64: return x.scalars(as: UInt64.self).map { "\($0)" }
    default:
        if x.dtype.isInteger { return try x.cast(to: .int64).scalars(as: Int64.self).map { "\($0)" } }
        return try x.cast(to: .float32).scalars(as: Float.self).map { float(Double($0)) }
    }
}

extension Tensor {
    /// This tensor converted to `dtype`, with ONNX Cast semantics.
    ///
    /// - Parameters:
    ///   - saturate: for float8 targets, whether out-of-range values (and infinities) clamp
    ///     to the largest finite value instead of becoming inf/NaN.
    ///   - roundMode: how float8e8m0 targets round.
    public func cast(to dtype: DType, saturate: Bool = true, roundMode: E8M0Rounding = .up) throws -> Tensor {
        if dtype == self.dtype { return self }
        if let direct = try convertStandard(self, to: dtype) { return direct }

        // Sources that are not standard types: read them as one that is.
        switch self.dtype {
        case .int4, .int2: return try reinterpreted(as: .int8).cast(to: dtype, saturate: saturate, roundMode: roundMode)
        case .uint4, .uint2: return try reinterpreted(as: .uint8).cast(to: dtype, saturate: saturate, roundMode: roundMode)
        case .float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz, .float4e2m1:
            guard let table = miniFloatTables[self.dtype] else { break }
            let decoded = mapElements(self, to: .float32) { (c: UInt8) -> Float in table[Int(c) & (table.count - 1)] }
            return try decoded.cast(to: dtype, saturate: saturate, roundMode: roundMode)
        case .float8e8m0:
            return try mapElements(self, to: .float32) { (c: UInt8) in decodeE8M0(c) }.cast(to: dtype, saturate: saturate, roundMode: roundMode)
        case .string:
            var values = [Double]()
            values.reserveCapacity(count)
            for text in strings {
                guard let v = parseNumber(text) else { throw KernelError("cannot read '\(text)' as a number") }
                values.append(v)
            }
            if dtype.isInteger {
                // Integers parse exactly when they are integer literals (int64 beyond 2^53).
                let ints = strings.map { Int64(trimmed($0)) }
                if !ints.contains(nil) {
                    return try Tensor(shape: shape, scalars: ints.map { $0! }).cast(to: dtype)
                }
            }
            return try Tensor(shape: shape, scalars: values).cast(to: dtype, saturate: saturate, roundMode: roundMode)
        default: break
        }

        // Targets that are not standard types.
        switch dtype {
        case .string:
            return Tensor(shape: shape, strings: try formatNumber(self))
        case .int4, .uint4, .int2, .uint2:
            // Wrap into the low 4 or 2 bits (as the ONNX suite expects), sign-extended in the
            // stored byte for the signed types.
            let wide = try cast(to: .int64)
            let unused = UInt8(dtype == .int4 || dtype == .uint4 ? 4 : 6)
            if dtype == .int4 || dtype == .int2 {
                return mapElements(wide, to: dtype) { (v: Int64) -> Int8 in (Int8(truncatingIfNeeded: v) << unused) >> unused }
            }
            return mapElements(wide, to: dtype) { (v: Int64) -> UInt8 in (UInt8(truncatingIfNeeded: v) << unused) >> unused }
        case .float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz, .float4e2m1:
            guard let format = MiniFloatFormat.of(dtype) else { break }
            let f = try cast(to: .float32)
            return mapElements(f, to: dtype) { (v: Float) -> UInt8 in format.encode(v, saturate: saturate) }
        case .float8e8m0:
            let f = try cast(to: .float32)
            return mapElements(f, to: dtype) { (v: Float) -> UInt8 in encodeE8M0(v, saturate: saturate, mode: roundMode) }
        default: break
        }
        throw KernelError("cannot cast \(self.dtype) to \(dtype)")
    }
}

private func castAttributes(_ ctx: NodeContext) throws -> (saturate: Bool, roundMode: E8M0Rounding) {
    let saturate = try ctx.int("saturate", default: 1) != 0
    let mode = try ctx.string("round_mode", default: "up")
    guard let roundMode = E8M0Rounding(rawValue: mode) else {
        throw KernelError("attribute 'round_mode' must be up, down or nearest, got '\(mode)'")
    }
    return (saturate, roundMode)
}

func registerCastOps(_ registry: OpRegistry) {
    registry.register("Cast", since: [6, 9, 13, 19, 21, 23, 24, 25], castKernel)
    registry.register("CastLike", since: [15, 19, 21, 23, 24, 25], castLikeKernel)

    // Gradient rules (GradientContext):
    registry.registerGradient("Cast", castGradient)
    // CastLike (the dynamo exporter's scalar constants): dY cast back to the input's type; the
    // second input only supplies a type, so it gets none.
    registry.registerGradient("CastLike", castLikeGradient)
}

/// Cast, since opset 6, 9, 13, 19, 21, 23, 24, 25.
func castKernel(_ ctx: NodeContext) throws -> Kernel {
    let code = try ctx.requiredInt("to")
    guard let to = DType(rawValue: Int32(truncatingIfNeeded: code)) else {
        throw KernelError("attribute 'to' is not a known element type: \(code)")
    }
    let (saturate, roundMode) = try castAttributes(ctx)
    return AnyKernel { inputs, _ in
        [.tensor(try inputs.tensor(0).cast(to: to, saturate: saturate, roundMode: roundMode))]
    }
}

/// CastLike, since opset 15, 19, 21, 23, 24, 25.
func castLikeKernel(_ ctx: NodeContext) throws -> Kernel {
    let (saturate, roundMode) = try castAttributes(ctx)
    return AnyKernel { inputs, _ in
        let target = try inputs.tensor(1).dtype
        return [.tensor(try inputs.tensor(0).cast(to: target, saturate: saturate, roundMode: roundMode))]
    }
}

/// The gradient rule of Cast.
func castGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let dY = try g.requiredDY()
    guard let to = g.dtype(g.input(0)) else { throw GradientError("the element type of '\(g.input(0))' is unknown") }
    return [g.op("Cast", [dY], attributes: ["to": .int(Int(to.rawValue))])]
}

/// The gradient rule of CastLike.
func castLikeGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil] }
    let dY = try g.requiredDY()
    guard let to = g.dtype(g.input(0)) else { throw GradientError("the element type of '\(g.input(0))' is unknown") }
    return [g.op("Cast", [dY], attributes: ["to": .int(Int(to.rawValue))]), nil]
}
