/// Tensor <-> [Double] for the cold kernels, which compute once in Double for every float type
/// (hot kernels are pointer loops generic over FloatElement instead).

/// A float tensor of `dtype` (float32/float64, or half through float32) from Doubles.
func floatTensor(_ dtype: DType, shape: [Int], _ values: [Double]) -> Tensor {
    switch dtype {
    case .float64: return Tensor(shape: shape, scalars: values)
    case .float16: return Tensor(shape: shape, scalars: values.map { Float16(Float($0)) })
    case .bfloat16: return Tensor(shape: shape, scalars: values.map { BFloat16(Float($0)) })
    default: return Tensor(shape: shape, scalars: values.map { Float($0) })
    }
}

/// Reads a float tensor (any float type) as [Double], naming it in the error otherwise.
func floatValues(_ t: Tensor, _ name: String) throws -> [Double] {
    guard t.dtype.isFloatingPoint else { throw KernelError("\(name) must be a float tensor, got \(t.dtype)") }
    return try t.doubles()
}

extension Tensor {
    /// The elements of a numeric (or bool) tensor as Double, for kernels that compute once for every type.
    func doubles() throws -> [Double] {
        switch dtype {
        case .float32: return try withUnsafeBufferPointer(as: Float.self) { $0.map(Double.init) }
        case .float64: return scalars(as: Double.self)
        case .float16: return try withUnsafeBufferPointer(as: Float16.self) { $0.map { Double(Float($0)) } }
        case .bfloat16: return try withUnsafeBufferPointer(as: BFloat16.self) { $0.map { Double($0.floatValue) } }
        case .bool: return try withUnsafeBufferPointer(as: Bool.self) { $0.map { $0 ? 1 : 0 } }
        default:
            guard dtype.isInteger, let v = intValues() else { throw KernelError("element type \(dtype) is not numeric") }
            if dtype == .uint64 { return try withUnsafeBufferPointer(as: UInt64.self) { $0.map { Double($0) } } }
            return v.map(Double.init)
        }
    }

    /// A tensor of numeric `dtype` from Double values (rounded to nearest for floats, truncated
    /// and saturated for integers, nonzero for bool).
    init(dtype: DType, shape: [Int], doubles: [Double]) throws {
        switch dtype {
        case .float32: self.init(shape: shape, scalars: doubles.map { Float($0) })
        case .float64: self.init(shape: shape, scalars: doubles)
        case .float16: self.init(shape: shape, scalars: doubles.map { Float16(Float($0)) })
        case .bfloat16: self.init(shape: shape, scalars: doubles.map { BFloat16(Float($0)) })
        case .bool: self.init(shape: shape, scalars: doubles.map { $0 != 0 })
        case .int8: self.init(shape: shape, scalars: doubles.map { Int8(fromDouble: $0) })
        case .int16: self.init(shape: shape, scalars: doubles.map { Int16(fromDouble: $0) })
        case .int32: self.init(shape: shape, scalars: doubles.map { Int32(fromDouble: $0) })
        case .int64: self.init(shape: shape, scalars: doubles.map { Int64(fromDouble: $0) })
        case .uint8: self.init(shape: shape, scalars: doubles.map { UInt8(fromDouble: $0) })
        case .uint16: self.init(shape: shape, scalars: doubles.map { UInt16(fromDouble: $0) })
        case .uint32: self.init(shape: shape, scalars: doubles.map { UInt32(fromDouble: $0) })
        case .uint64: self.init(shape: shape, scalars: doubles.map { UInt64(fromDouble: $0) })
        default: throw KernelError("element type \(dtype) is not supported here")
        }
    }
}

/// The values of a per-channel parameter as Doubles (any float type).
func channelValues(_ t: Tensor?, count: Int, default value: Double, name: String) throws -> [Double] {
    guard let t else { return Array(repeating: value, count: count) }
    guard t.count == count else { throw KernelError("\(name) has \(t.count) values, \(count) expected") }
    return try (0..<count).map { i in
        guard let v = t.scalarDouble(at: i) else { throw KernelError("\(name) has unsupported type \(t.dtype)") }
        return v
    }
}
