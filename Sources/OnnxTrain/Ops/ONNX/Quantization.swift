/// QuantizeLinear, DequantizeLinear (per tensor, per axis, blocked; integer types down to 2 bits,
/// float8 and float4) and DynamicQuantizeLinear, and the quantization helpers QLinearMatMul
/// (QLinearMatMul.swift) and QLinearConv share.
///
/// Scaling runs in float32, as onnxruntime and the ONNX reference do (x / scale rounded half to
/// even), so ties land where theirs do.

// MARK: - Small float formats

/// An 8-bit or 4-bit float format: decode table and round-to-nearest-even encoding.
fileprivate struct SmallFloatCodec {
    let dtype: DType
    let bits: Int             // 8 or 4
    let nanCode: UInt8?       // nil: no NaN (float4e2m1)
    let infCode: UInt8?       // positive infinity, if the format has one (e5m2)
    let hasNegativeZero: Bool
    /// Non-negative finite values with their codes, ascending.
    let table: [(value: Float, code: UInt8)]
    let decode: [Float]       // every code -> value

    static func of(_ dtype: DType) -> SmallFloatCodec? {
        switch dtype {
        case .float8e4m3fn: return cache.e4m3fn
        case .float8e4m3fnuz: return cache.e4m3fnuz
        case .float8e5m2: return cache.e5m2
        case .float8e5m2fnuz: return cache.e5m2fnuz
        case .float4e2m1: return cache.e2m1
        default: return nil
        }
    }

    private struct Cache {
        let e4m3fn = SmallFloatCodec(.float8e4m3fn, exponentBits: 4, bias: 7)
        let e4m3fnuz = SmallFloatCodec(.float8e4m3fnuz, exponentBits: 4, bias: 8)
        let e5m2 = SmallFloatCodec(.float8e5m2, exponentBits: 5, bias: 15)
        let e5m2fnuz = SmallFloatCodec(.float8e5m2fnuz, exponentBits: 5, bias: 16)
        let e2m1 = SmallFloatCodec(.float4e2m1, exponentBits: 2, bias: 1)
    }
    private static let cache = Cache()

    private init(_ dtype: DType, exponentBits: Int, bias: Int) {
        self.dtype = dtype
        bits = dtype == .float4e2m1 ? 4 : 8
        let mantissaBits = bits - 1 - exponentBits
        let fnuz = dtype == .float8e4m3fnuz || dtype == .float8e5m2fnuz
        let signBit = 1 << (bits - 1)
        nanCode = dtype == .float4e2m1 ? nil : fnuz ? 0x80 : 0x7F
        infCode = dtype == .float8e5m2 ? 0x7C : nil
        hasNegativeZero = !fnuz
        var decode = [Float](repeating: 0, count: 1 << bits)
        var table: [(Float, UInt8)] = []
        for code in 0..<(1 << bits) {
            let sign: Float = code & signBit != 0 ? -1 : 1
            let e = (code >> mantissaBits) & ((1 << exponentBits) - 1), m = code & ((1 << mantissaBits) - 1)
            var v: Float
            if e == 0 {
                v = Float(m) / Float(1 << mantissaBits) * Float(sign: .plus, exponent: 1 - bias, significand: 1)
            } else {
                v = (1 + Float(m) / Float(1 << mantissaBits)) * Float(sign: .plus, exponent: e - bias, significand: 1)
            }
            switch dtype {
            case .float8e4m3fn where e == 15 && m == 7: v = .nan
            case .float8e5m2 where e == 31: v = m == 0 ? .infinity : .nan
            case .float8e4m3fnuz, .float8e5m2fnuz: if code == 0x80 { v = .nan }
            default: break
            }
            decode[code] = sign * v
            if code & signBit == 0 && v.isFinite { table.append((v, UInt8(code))) }
        }
        self.decode = decode
        self.table = table.sorted { $0.0 < $1.0 }
    }

    /// Encodes `x` rounding to nearest even; out-of-range values saturate to ±max when
    /// `saturate`, else become ±inf (e5m2) or NaN (as the ONNX Cast table states).
    func encode(_ x: Float, saturate: Bool) -> UInt8 {
        let signMask: UInt8 = bits == 8 ? 0x80 : 0x08
        if x.isNaN { return nanCode ?? 0x07 }
        let negative = x.sign == .minus
        let a = abs(x)
        var code: UInt8
        let maxEntry = table[table.count - 1]
        // Halfway between max and the next step up (one max-exponent ulp), ties to even.
        let ulp = table.count > 1 ? maxEntry.value - table[table.count - 2].value : 1
        let limit = maxEntry.value + ulp / 2
        if a > limit || (a == limit && maxEntry.code & 1 == 1) || a.isInfinite {
            if saturate || dtype == .float4e2m1 {
                if a.isInfinite && (dtype == .float8e4m3fnuz || dtype == .float8e5m2fnuz) { return nanCode! }
                code = maxEntry.code
            } else if let inf = infCode {
                code = inf
            } else {
                return nanCode ?? maxEntry.code
            }
        } else {
            // Binary search for the first value >= a.
            var lo = 0, hi = table.count - 1
            while lo < hi { let mid = (lo + hi) / 2; if table[mid].value < a { lo = mid + 1 } else { hi = mid } }
            if lo == 0 || table[lo].value == a {
                code = table[lo].code
            } else {
                let below = table[lo - 1], above = table[lo]
                let dBelow = a - below.value, dAbove = above.value - a
                if dBelow < dAbove { code = below.code } else if dAbove < dBelow { code = above.code } else {
                    code = below.code & 1 == 0 ? below.code : above.code
                }
            }
        }
        if negative && (code != 0 || hasNegativeZero) { code |= signMask }
        return code
    }
}

// MARK: - Element access for quantized types

/// The elements of an integer, float or small-float tensor as Floats.
func quantizedValues(_ t: Tensor) throws -> [Float] {
    if let f = SmallFloatCodec.of(t.dtype) {
        return try t.withUnsafeBufferPointer(as: UInt8.self) { p in p.map { f.decode[Int($0) & (f.bits == 8 ? 0xFF : 0x0F)] } }
    }
    switch t.dtype {
    case .int4, .int2: return try t.withUnsafeBufferPointer(as: Int8.self) { $0.map { Float($0) } }
    case .uint4, .uint2: return try t.withUnsafeBufferPointer(as: UInt8.self) { $0.map { Float($0) } }
    case .float32: return t.scalars(as: Float.self)
    default: return try t.doubles().map { Float($0) }
    }
}

/// Integer range of a quantized integer type.
func quantizedRange(_ dtype: DType) -> (Float, Float)? {
    switch dtype {
    case .uint8: return (0, 255)
    case .int8: return (-128, 127)
    case .uint16: return (0, 65535)
    case .int16: return (-32768, 32767)
    case .uint4: return (0, 15)
    case .int4: return (-8, 7)
    case .uint2: return (0, 3)
    case .int2: return (-2, 1)
    case .int32: return (-2147483648, 2147483647)
    default: return nil
    }
}

/// A tensor of quantized type `dtype` holding `values` (already rounded and in range; small
/// floats are encoded here).
func quantizedTensor(_ dtype: DType, shape: [Int], _ values: [Float], saturate: Bool) throws -> Tensor {
    if let f = SmallFloatCodec.of(dtype) {
        let bytes = values.map { f.encode($0, saturate: saturate) }
        return Tensor(dtype: dtype, shape: shape, storage: Tensor(shape: shape, scalars: bytes).storage)
    }
    switch dtype {
    case .uint8, .uint4, .uint2:
        return Tensor(dtype: dtype, shape: shape, storage: Tensor(shape: shape, scalars: values.map { UInt8($0) }).storage)
    case .int8, .int4, .int2:
        return Tensor(dtype: dtype, shape: shape, storage: Tensor(shape: shape, scalars: values.map { Int8($0) }).storage)
    case .uint16: return Tensor(shape: shape, scalars: values.map { UInt16($0) })
    case .int16: return Tensor(shape: shape, scalars: values.map { Int16($0) })
    case .int32: return Tensor(shape: shape, scalars: values.map { Int32($0) })
    default: throw KernelError("unsupported quantized type \(dtype)")
    }
}

/// For each element of a tensor of `shape`, the index of its scale / zero point: per tensor
/// (one value), per axis (1-D of shape[axis]) or blocked (same rank, `blockSize` along axis).
func quantizationParameterIndex(shape: [Int], parameterShape: [Int], axis: Int, blockSize: Int) throws -> [Int] {
    let n = Tensor.elementCount(shape), pCount = Tensor.elementCount(parameterShape)
    if pCount == 1 && parameterShape.count <= 1 { return Array(repeating: 0, count: n) }
    let a = try normalizeAxis(axis, rank: shape.count)
    var full = Array(repeating: 1, count: shape.count)
    var block = 1
    if parameterShape.count == 1 && blockSize == 0 {
        guard parameterShape[0] == shape[a] else { throw KernelError("scale of \(parameterShape[0]) values does not fit axis \(a) of \(shape)") }
        full[a] = shape[a]
    } else {
        guard parameterShape.count == shape.count, blockSize > 0 else {
            throw KernelError("scale of shape \(parameterShape) does not fit input \(shape) (block_size \(blockSize))")
        }
        for d in 0..<shape.count where d != a {
            guard parameterShape[d] == shape[d] else { throw KernelError("blocked scale \(parameterShape) does not fit input \(shape)") }
        }
        guard parameterShape[a] == (shape[a] + blockSize - 1) / blockSize else {
            throw KernelError("blocked scale \(parameterShape) does not fit input \(shape) with block_size \(blockSize)")
        }
        full = parameterShape
        block = blockSize
    }
    let pStrides = contiguousStrides(full)
    var result = [Int](repeating: 0, count: n)
    var walk = Odometer(shape: shape)
    for i in 0..<n {
        var p = 0
        for d in 0..<shape.count where full[d] > 1 { p += (d == a ? walk.index[d] / block : walk.index[d]) * pStrides[d] }
        result[i] = p
        walk.advance()
    }
    return result
}

// MARK: - Kernels

struct QuantizeLinearKernel: Kernel {
    let axis: Int, blockSize: Int, saturate: Bool, outputDType: DType?

    init(_ ctx: NodeContext) throws {
        axis = try ctx.int("axis", default: 1)
        blockSize = try ctx.int("block_size", default: 0)
        saturate = try ctx.int("saturate", default: 1) != 0
        let code = try ctx.int("output_dtype", default: 0)
        if code != 0 {
            guard let d = DType(rawValue: Int32(code)) else { throw KernelError("output_dtype \(code) is not a known type") }
            outputDType = d
        } else {
            outputDType = nil
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0), scaleT = try inputs.tensor(1), zpT = try inputs.optionalTensor(2)
        let outType = zpT?.dtype ?? outputDType ?? .uint8
        let xs = try quantizedValues(x), scales = try quantizedValues(scaleT)
        let zps = try zpT.map(quantizedValues) ?? [0]
        let index = try quantizationParameterIndex(shape: x.shape, parameterShape: scaleT.shape, axis: axis, blockSize: blockSize)
        let zpIndex = zpT == nil ? Array(repeating: 0, count: x.count) : index
        if let zpT, zpT.count != scaleT.count { throw KernelError("y_zero_point has \(zpT.count) values, y_scale \(scaleT.count)") }
        var out = [Float](repeating: 0, count: x.count)
        if let range = quantizedRange(outType) {
            for i in 0..<x.count {
                let v = (xs[i] / scales[index[i]]).rounded(.toNearestOrEven) + zps[zpIndex[i]]
                out[i] = v.isNaN ? 0 : min(max(v, range.0), range.1)
            }
        } else {
            for i in 0..<x.count { out[i] = xs[i] / scales[index[i]] + zps[zpIndex[i]] }
        }
        return [.tensor(try quantizedTensor(outType, shape: x.shape, out, saturate: saturate))]
    }
}

struct DequantizeLinearKernel: Kernel {
    let axis: Int, blockSize: Int, outputDType: DType?

    init(_ ctx: NodeContext) throws {
        axis = try ctx.int("axis", default: 1)
        blockSize = try ctx.int("block_size", default: 0)
        let code = try ctx.int("output_dtype", default: 0)
        outputDType = code != 0 ? DType(rawValue: Int32(code)) : nil
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0), scaleT = try inputs.tensor(1), zpT = try inputs.optionalTensor(2)
        let xs = try quantizedValues(x), scales = try quantizedValues(scaleT)
        let zps = try zpT.map(quantizedValues) ?? [0]
        let index = try quantizationParameterIndex(shape: x.shape, parameterShape: scaleT.shape, axis: axis, blockSize: blockSize)
        if let zpT, zpT.count != scaleT.count { throw KernelError("x_zero_point has \(zpT.count) values, x_scale \(scaleT.count)") }
        let zpIndex = zpT == nil ? Array(repeating: 0, count: x.count) : index
        var out = [Float](repeating: 0, count: x.count)
        for i in 0..<x.count { out[i] = (xs[i] - zps[zpIndex[i]]) * scales[index[i]] }
        let outType = outputDType ?? scaleT.dtype
        return [.tensor(floatTensor(outType, shape: x.shape, out.map(Double.init)))]
    }
}

/// y = saturate(round(x / scale) + zero_point) into uint8, with scale and zero point from the
/// range of x widened to include 0.
func dynamicQuantize(_ x: Tensor) throws -> [Value?] {
    let xs = try quantizedValues(x)
    let lo = min(0, xs.min() ?? 0), hi = max(0, xs.max() ?? 0)
    let scale = (hi - lo) / 255
    let zp = scale == 0 ? 0 : min(max((0 - lo / scale).rounded(.toNearestOrEven), 0), 255)
    let y = xs.map { v -> Float in
        let q = scale == 0 ? 0 : (v / scale).rounded(.toNearestOrEven) + zp
        return min(max(q, 0), 255)
    }
    return [.tensor(try quantizedTensor(.uint8, shape: x.shape, y, saturate: true)),
            .tensor(Tensor(scalar: scale)), .tensor(try quantizedTensor(.uint8, shape: [], [zp], saturate: true))]
}

/// The rescale factor a_scale·b_scale / y_scale computed in the scales' own type (float16
/// scales round at each step, as the ONNX reference does).
func requantizationMultiplier(_ a: Tensor, _ b: Tensor, _ y: Tensor) throws -> Double {
    if a.dtype == .float16 && b.dtype == .float16 && y.dtype == .float16 {
        let (av, bv, yv) = try (quantizedValues(a)[0], quantizedValues(b)[0], quantizedValues(y)[0])
        return Double(Float(Float16(Float(Float16(av) * Float16(bv))) / Float16(yv)))
    }
    let (av, bv, yv) = try (quantizedValues(a)[0], quantizedValues(b)[0], quantizedValues(y)[0])
    return Double(av * bv / yv)
}

func registerQuantizationOps(_ registry: OpRegistry) {
    registry.register("QuantizeLinear", since: 10) { ctx in try QuantizeLinearKernel(ctx) }
    registry.register("DequantizeLinear", since: 10) { ctx in try DequantizeLinearKernel(ctx) }
    registry.register("DynamicQuantizeLinear", since: 11, dynamicQuantizeLinearKernel)
    registry.register("QLinearMatMul", since: 10, qLinearMatMulKernel)
}

/// DynamicQuantizeLinear, since opset 11.
func dynamicQuantizeLinearKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in try dynamicQuantize(inputs.tensor(0)) }
}
