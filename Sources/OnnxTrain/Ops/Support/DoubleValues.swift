/// Tensor <-> [Double] for the cold kernels, which compute once in Double for every float type
/// (hot kernels are pointer loops generic over FloatElement instead).

/// A float tensor of `dtype` (float32/float64, or half through float32) from Doubles.
func floatTensor(_ dtype: DType, shape: [Int], _ values: [Double]) -> Tensor {
    let float = dtype == .float64 || dtype == .float16 || dtype == .bfloat16 ? dtype : .float32
    return (try? Tensor(dtype: float, shape: shape, doubles: values)) ?? Tensor(shape: shape, scalars: values.map { Float($0) })
}

/// Reads a float tensor (any float type) as [Double], naming it in the error otherwise.
func floatValues(_ t: Tensor, _ name: String) throws -> [Double] {
    guard t.dtype.isFloatingPoint else { throw KernelError("\(name) must be a float tensor, got \(t.dtype)") }
    return try t.doubles()
}

extension Tensor {
    /// The elements of a numeric (or bool) tensor as Double, for kernels that compute once for every type.
    func doubles() throws -> [Double] { try dispatch(dtype, ReadDoubles(tensor: self)) }

    /// A tensor of numeric `dtype` from Double values (rounded to nearest for floats, through
    /// Float for the half types; truncated and saturated for integers; nonzero for bool).
    init(dtype: DType, shape: [Int], doubles: [Double]) throws {
        self = try dispatch(dtype, TensorFromDoubles(values: doubles, shape: shape))
    }
}

private struct ReadDoubles: CastableOperation {
    let tensor: Tensor
    func castable<T: CastableElement>(_ type: T.Type) throws -> [Double] {
        try tensor.withUnsafeBufferPointer(as: T.self) { $0.map { $0.converted(to: Double.self) } }
    }
}

private struct TensorFromDoubles: ElementOperation {
    let values: [Double], shape: [Int]
    func float<T: FloatElement>(_ type: T.Type) -> Tensor { Tensor(shape: shape, scalars: values.map { T(fromDouble: $0) }) }
    func integer<T: IntegerElement>(_ type: T.Type) -> Tensor { Tensor(shape: shape, scalars: values.map { T(fromDouble: $0) }) }
    func half<T: CastableElement>(_ type: T.Type) -> Tensor { Tensor(shape: shape, scalars: values.map { T.fromFloat(Float($0)) }) }
    func bool() -> Tensor { Tensor(shape: shape, scalars: values.map { $0 != 0 }) }
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
