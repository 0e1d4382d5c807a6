/// An ONNX tensor element type; raw values are the `TensorProto.DataType` codes.
public enum DType: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case float32 = 1, uint8 = 2, int8 = 3, uint16 = 4, int16 = 5, int32 = 6, int64 = 7
    case string = 8, bool = 9, float16 = 10, float64 = 11, uint32 = 12, uint64 = 13
    case complex64 = 14, complex128 = 15, bfloat16 = 16
    case float8e4m3fn = 17, float8e4m3fnuz = 18, float8e5m2 = 19, float8e5m2fnuz = 20
    case uint4 = 21, int4 = 22, float4e2m1 = 23, float8e8m0 = 24, uint2 = 25, int2 = 26

    /// Bytes one element takes in memory. Sub-byte types (int4, uint4, float4e2m1) are kept
    /// unpacked, one element per byte, and only packed in files.
    public var byteSize: Int {
        switch self {
        case .bool, .uint8, .int8, .float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz,
             .uint4, .int4, .float4e2m1, .float8e8m0, .uint2, .int2: return 1
        case .float16, .bfloat16, .int16, .uint16: return 2
        case .float32, .int32, .uint32: return 4
        case .float64, .int64, .uint64, .complex64: return 8
        case .complex128: return 16
        case .string: return MemoryLayout<String>.stride
        }
    }

    /// True for types stored in files four bits per element.
    public var isPacked4Bit: Bool { self == .uint4 || self == .int4 || self == .float4e2m1 }

    /// Bits per element in files for sub-byte types (4 for int4/uint4/float4e2m1, 2 for
    /// int2/uint2), packed low bits first; nil for every other type.
    public var packedBits: Int? {
        switch self {
        case .uint4, .int4, .float4e2m1: return 4
        case .uint2, .int2: return 2
        default: return nil
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .float32, .float64, .float16, .bfloat16, .float8e4m3fn, .float8e4m3fnuz, .float8e5m2,
             .float8e5m2fnuz, .float4e2m1, .float8e8m0: return true
        default: return false
        }
    }

    public var isInteger: Bool {
        switch self {
        case .uint8, .int8, .uint16, .int16, .int32, .int64, .uint32, .uint64, .uint4, .int4, .uint2, .int2: return true
        default: return false
        }
    }

    /// ONNX's own spelling, as in `tensor(float)`.
    public var description: String {
        switch self {
        case .float32: return "float"
        case .float64: return "double"
        case .uint8: return "uint8"
        case .int8: return "int8"
        case .uint16: return "uint16"
        case .int16: return "int16"
        case .int32: return "int32"
        case .int64: return "int64"
        case .string: return "string"
        case .bool: return "bool"
        case .float16: return "float16"
        case .uint32: return "uint32"
        case .uint64: return "uint64"
        case .complex64: return "complex64"
        case .complex128: return "complex128"
        case .bfloat16: return "bfloat16"
        case .float8e4m3fn: return "float8e4m3fn"
        case .float8e4m3fnuz: return "float8e4m3fnuz"
        case .float8e5m2: return "float8e5m2"
        case .float8e5m2fnuz: return "float8e5m2fnuz"
        case .uint4: return "uint4"
        case .int4: return "int4"
        case .float4e2m1: return "float4e2m1"
        case .float8e8m0: return "float8e8m0"
        case .uint2: return "uint2"
        case .int2: return "int2"
        }
    }
}

extension DType {
    /// Whether elements of this type may be read as `T`: its own Swift type (Float for float32,
    /// Int64 for int64, Int8 also for the sign-extended int4/int2, String for string), or any
    /// other type of the same width (UInt8...UInt64 and plain structs), which data movement uses
    /// as containers for the raw element bits.
    @inline(__always)
    public func canBeRead<T>(as type: T.Type) -> Bool {
        if self == .string { return T.self == String.self }
        guard MemoryLayout<T>.stride == byteSize else { return false }
        guard let typed = DType.typedElement(T.self) else { return true }
        return typed == self || (typed == .int8 && (self == .int4 || self == .int2))
    }

    /// The element type whose values the Swift type `T` stands for, or nil for a raw container.
    @inline(__always)
    static func typedElement<T>(_ type: T.Type) -> DType? {
        if T.self == Float.self { return .float32 }
        if T.self == Double.self { return .float64 }
        if T.self == Float16.self { return .float16 }
        if T.self == BFloat16.self { return .bfloat16 }
        if T.self == Int64.self { return .int64 }
        if T.self == Int32.self { return .int32 }
        if T.self == Int16.self { return .int16 }
        if T.self == Int8.self { return .int8 }
        if T.self == Bool.self { return .bool }
        if T.self == String.self { return .string }
        return nil
    }
}

/// A Swift type that can be the element of a `Tensor`.
public protocol TensorElement {
    static var dtype: DType { get }
    static var zero: Self { get }
}

extension Float: TensorElement { public static var dtype: DType { .float32 } }
extension Double: TensorElement { public static var dtype: DType { .float64 } }
extension Float16: TensorElement { public static var dtype: DType { .float16 } }
extension Int8: TensorElement { public static var dtype: DType { .int8 } }
extension Int16: TensorElement { public static var dtype: DType { .int16 } }
extension Int32: TensorElement { public static var dtype: DType { .int32 } }
extension Int64: TensorElement { public static var dtype: DType { .int64 } }
extension UInt8: TensorElement { public static var dtype: DType { .uint8 } }
extension UInt16: TensorElement { public static var dtype: DType { .uint16 } }
extension UInt32: TensorElement { public static var dtype: DType { .uint32 } }
extension UInt64: TensorElement { public static var dtype: DType { .uint64 } }
extension Bool: TensorElement {
    public static var dtype: DType { .bool }
    public static var zero: Bool { false }
}

/// Brain floating point: the top 16 bits of an IEEE float32.
public struct BFloat16: TensorElement, Hashable, Sendable {
    public var bitPattern: UInt16
    public static var dtype: DType { .bfloat16 }
    public static var zero: BFloat16 { BFloat16(bitPattern: 0) }
    public init(bitPattern: UInt16) { self.bitPattern = bitPattern }
    /// Rounds to nearest even, as PyTorch and onnxruntime do; NaN stays a quiet NaN.
    public init(_ value: Float) {
        if value.isNaN { bitPattern = 0x7FC0; return }
        let bits = value.bitPattern
        let rounding = ((bits >> 16) & 1) &+ 0x7FFF
        bitPattern = UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }
    public var floatValue: Float { Float(bitPattern: UInt32(bitPattern) << 16) }
}
