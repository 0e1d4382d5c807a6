/// Element types that arithmetic kernels compute in directly. float16 and bfloat16 are not
/// among them: kernels widen them to Float, compute, and round back (`Tensor.widenedToFloat`).
public protocol NumericElement: TensorElement, Comparable {
    init(fromDouble value: Double)
    var doubleValue: Double { get }
}

/// Float and Double: the types floating-point kernels are generic over.
public protocol FloatElement: NumericElement, BinaryFloatingPoint {}

extension Float: FloatElement {
    @inline(__always) public init(fromDouble value: Double) { self = Float(value) }
    @inline(__always) public var doubleValue: Double { Double(self) }
}
extension Double: FloatElement {
    @inline(__always) public init(fromDouble value: Double) { self = value }
    @inline(__always) public var doubleValue: Double { self }
}

/// Integer element types; conversion from Double truncates toward zero and saturates.
public protocol IntegerElement: NumericElement, FixedWidthInteger {}
extension IntegerElement {
    @inline(__always) public init(fromDouble value: Double) {
        if value.isNaN { self = 0 } else if value >= Double(Self.max) { self = .max } else if value <= Double(Self.min) { self = .min } else { self = Self(value) }
    }
    @inline(__always) public var doubleValue: Double { Double(self) }
}
extension Int8: IntegerElement {}
extension Int16: IntegerElement {}
extension Int32: IntegerElement {}
extension Int64: IntegerElement {}
extension UInt8: IntegerElement {}
extension UInt16: IntegerElement {}
extension UInt32: IntegerElement {}
extension UInt64: IntegerElement {}

/// A computation generic over the element type, chosen at run time from a `DType`.
/// (Swift has no generic closures, so dispatch goes through a protocol method.)
public protocol NumericOperation {
    associatedtype Result
    func callAsFunction<T: NumericElement>(_ type: T.Type) throws -> Result
}

public protocol FloatOperation {
    associatedtype Result
    func callAsFunction<T: FloatElement>(_ type: T.Type) throws -> Result
}

/// Runs `op` with the Swift type of `dtype` (numeric types only).
public func dispatchNumeric<Op: NumericOperation>(_ dtype: DType, _ op: Op) throws -> Op.Result {
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
public func dispatchFloat<Op: FloatOperation>(_ dtype: DType, _ op: Op) throws -> Op.Result {
    switch dtype {
    case .float32: return try op(Float.self)
    case .float64: return try op(Double.self)
    default: throw KernelError("element type \(dtype) is not supported here (float or double expected)")
    }
}

extension Tensor {
    /// Whether this is a half-precision type kernels compute in float32.
    public var isHalf: Bool { dtype == .float16 || dtype == .bfloat16 }

    /// float16/bfloat16 widened to float32 (other tensors unchanged).
    public func widenedToFloat() -> Tensor {
        switch dtype {
        case .float16:
            return Tensor(shape: shape, scalars: uncheckedBufferPointer(as: Float16.self) { $0.map { Float($0) } })
        case .bfloat16:
            return Tensor(shape: shape, scalars: uncheckedBufferPointer(as: BFloat16.self) { $0.map { $0.floatValue } })
        default:
            return self
        }
    }

    /// A float32 tensor rounded to `dtype` (float16 or bfloat16); other targets unchanged.
    public func narrowed(to dtype: DType) -> Tensor {
        precondition(self.dtype == .float32 || dtype == self.dtype)
        switch dtype {
        case .float16:
            return Tensor(shape: shape, scalars: uncheckedBufferPointer(as: Float.self) { $0.map { Float16($0) } })
        case .bfloat16:
            return Tensor(shape: shape, scalars: uncheckedBufferPointer(as: Float.self) { $0.map { BFloat16($0) } })
        default:
            return self
        }
    }
}
