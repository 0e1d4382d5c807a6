/// A dense, row-major tensor of one element type and any rank (rank 0 is a scalar).
///
/// A `Tensor` is a value: it holds a reference to its storage and copies it only when written
/// through `withUnsafeMutableBufferPointer` while shared. Reshaping shares storage.
public struct Tensor {
    public let dtype: DType
    public private(set) var shape: [Int]
    public private(set) var storage: TensorStorage

    /// A zero-filled tensor (empty strings for string tensors).
    public init(zeros dtype: DType, shape: [Int]) {
        self.dtype = dtype
        self.shape = shape
        let count = Tensor.elementCount(shape)
        if dtype == .string {
            storage = TensorStorage(strings: Array(repeating: "", count: count))
        } else {
            storage = TensorStorage(zeroedByteCount: count * dtype.byteSize)
        }
    }

    /// A zero-filled tensor whose shape comes from untrusted input (a file): throws instead of
    /// trapping when the element count overflows or the memory cannot be allocated.
    public init(checkedZeros dtype: DType, shape: [Int], label: String) throws {
        var count = 1
        for d in shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard d >= 0, !overflow else { throw OnnxTrainError.invalidModel("\(label): shape \(shape) has a negative or too large dimension") }
            count = p
        }
        if dtype == .string {
            guard count <= 1 << 32 else { throw OnnxTrainError.invalidModel("\(label): cannot allocate \(count) strings for shape \(shape)") }
            self.init(zeros: dtype, shape: shape)
            return
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, let storage = TensorStorage(failableZeroedByteCount: bytes) else {
            throw OnnxTrainError.invalidModel("\(label): cannot allocate \(overflow ? "more than Int.max" : String(bytes)) bytes for tensor(\(dtype)) \(shape)")
        }
        self.init(dtype: dtype, shape: shape, storage: storage)
    }

    /// A tensor whose bytes the caller fills completely before reading.
    public init(uninitialized dtype: DType, shape: [Int]) {
        precondition(dtype != .string, "string tensors are built from strings")
        self.dtype = dtype
        self.shape = shape
        storage = TensorStorage(uninitializedByteCount: Tensor.elementCount(shape) * dtype.byteSize, elementType: dtype)
    }

    /// Wraps existing storage; the storage must hold at least `count * byteSize` bytes.
    public init(dtype: DType, shape: [Int], storage: TensorStorage) {
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
    }

    public init<T: TensorElement>(shape: [Int], scalars: [T]) {
        precondition(Tensor.elementCount(shape) == scalars.count,
                     "shape \(shape) holds \(Tensor.elementCount(shape)) elements, got \(scalars.count)")
        self.init(uninitialized: T.dtype, shape: shape)
        scalars.withUnsafeBytes { source in
            if source.count > 0 { storage.bytes.copyMemory(from: source.baseAddress!, byteCount: source.count) }
        }
    }

    /// A rank-0 tensor holding `value`.
    public init<T: TensorElement>(scalar value: T) {
        self.init(shape: [], scalars: [value])
    }

    public init(shape: [Int], strings: [String]) {
        precondition(Tensor.elementCount(shape) == strings.count)
        dtype = .string
        self.shape = shape
        storage = TensorStorage(strings: strings)
    }

    public static func elementCount(_ shape: [Int]) -> Int {
        var n = 1
        for d in shape { n *= d }
        return n
    }

    public var rank: Int { shape.count }
    public var count: Int { Tensor.elementCount(shape) }
    public var byteCount: Int { dtype == .string ? 0 : count * dtype.byteSize }

    /// The elements as a Swift array, in row-major order; `T` must be the element type (traps
    /// otherwise: for callers that know the type, such as tests; kernels use `elements(as:)`).
    public func scalars<T: TensorElement>(as type: T.Type = T.self) -> [T] {
        precondition(dtype.canBeRead(as: T.self), "tensor(\(dtype)) read as \(T.self)")
        return uncheckedBufferPointer(as: T.self) { Array($0) }
    }

    /// The elements as a Swift array; throws a `KernelError` when `T` is not the element type.
    public func elements<T: TensorElement>(as type: T.Type = T.self) throws -> [T] {
        try withUnsafeBufferPointer(as: T.self) { Array($0) }
    }

    /// The elements of a string tensor.
    public var strings: [String] { storage.strings }

    /// Throws unless the elements can be read as `T`: the same element type (float32 as Float,
    /// int64 as Int64, ...), or an unsigned integer of the element's width (raw element bits, as
    /// data movement uses them). Every typed accessor checks this, so no kernel can read a
    /// float64 input as float32 (a trap) or an int32 one as float (garbage).
    @inline(__always)
    public func checkElementType<T>(_ type: T.Type) throws {
        guard dtype.canBeRead(as: T.self) else { throw elementTypeError(T.self) }
    }

    @inline(never)
    func elementTypeError<T>(_ type: T.Type) -> KernelError {
        let expected = DType.typedElement(T.self).map { "tensor(\($0))" } ?? "\(MemoryLayout<T>.stride)-byte elements"
        return KernelError("expected \(expected), got \(self)")
    }

    /// Reads the elements in place; throws a `KernelError` unless `T` fits `dtype` (see `checkElementType`).
    @inline(__always)
    public func withUnsafeBufferPointer<T, R>(as type: T.Type, _ body: (UnsafeBufferPointer<T>) throws -> R) throws -> R {
        try checkElementType(T.self)
        return try body(UnsafeBufferPointer(start: storage.bytes.assumingMemoryBound(to: T.self), count: count))
    }

    /// Reads the elements in place for code that switched on `dtype` or made the tensor: a wrong
    /// `T` is a programming error here (a trap), not bad input.
    @inline(__always)
    func uncheckedBufferPointer<T, R>(as type: T.Type, _ body: (UnsafeBufferPointer<T>) throws -> R) rethrows -> R {
        precondition(dtype.canBeRead(as: T.self), "tensor(\(dtype)) read as \(T.self)")
        return try body(UnsafeBufferPointer(start: storage.bytes.assumingMemoryBound(to: T.self), count: count))
    }

    /// Writes the elements, copying the storage first if another tensor shares it; throws a
    /// `KernelError` unless `T` fits `dtype`.
    @inline(__always)
    public mutating func withUnsafeMutableBufferPointer<T, R>(as type: T.Type, _ body: (UnsafeMutableBufferPointer<T>) throws -> R) throws -> R {
        try checkElementType(T.self)
        return try uncheckedMutableBufferPointer(as: T.self, body)
    }

    /// Writes the elements for code that switched on `dtype` or made the tensor (a wrong `T` traps).
    @inline(__always)
    mutating func uncheckedMutableBufferPointer<T, R>(as type: T.Type, _ body: (UnsafeMutableBufferPointer<T>) throws -> R) rethrows -> R {
        precondition(dtype.canBeRead(as: T.self), "tensor(\(dtype)) written as \(T.self)")
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
        return try body(UnsafeMutableBufferPointer(start: storage.bytes.assumingMemoryBound(to: T.self), count: count))
    }

    /// Writes the raw bytes, copying the storage first if another tensor shares it.
    @inline(__always)
    public mutating func withUnsafeMutableRawBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        precondition(dtype != .string, "string tensors have no raw bytes")
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
        return try body(UnsafeMutableRawBufferPointer(start: storage.bytes, count: byteCount))
    }

    /// Writes the shared storage in place, visible to every tensor that shares it.
    ///
    /// Only for onnxruntime's in-place training ops (InPlaceAccumulator, optimizer updates,
    /// BatchNorm running statistics), whose semantics are exactly this aliasing.
    @inline(__always)
    public func withSharedMutableBufferPointer<T, R>(as type: T.Type, _ body: (UnsafeMutableBufferPointer<T>) throws -> R) throws -> R {
        try checkElementType(T.self)
        return try body(UnsafeMutableBufferPointer(start: storage.bytes.assumingMemoryBound(to: T.self), count: count))
    }

    /// `withSharedMutableBufferPointer` for code that switched on `dtype` or made the tensor (a wrong `T` traps).
    @inline(__always)
    func uncheckedSharedMutableBufferPointer<T, R>(as type: T.Type, _ body: (UnsafeMutableBufferPointer<T>) throws -> R) rethrows -> R {
        precondition(dtype.canBeRead(as: T.self), "tensor(\(dtype)) written as \(T.self)")
        return try body(UnsafeMutableBufferPointer(start: storage.bytes.assumingMemoryBound(to: T.self), count: count))
    }

    /// The raw bytes (little-endian, row-major); not for string tensors.
    public var rawBytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: storage.bytes, count: byteCount) }

    /// The same elements under another shape with the same element count; shares storage.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(Tensor.elementCount(newShape) == count, "cannot reshape \(shape) to \(newShape)")
        var t = self
        t.shape = newShape
        return t
    }

    /// A copy that shares nothing with this tensor.
    public func copied() -> Tensor { Tensor(dtype: dtype, shape: shape, storage: storage.copy()) }

    /// Whether no other tensor holds this tensor's storage (the executor checks it before it
    /// offers a dying input's block to an in-place kernel).
    mutating func hasUniqueStorage() -> Bool { isKnownUniquelyReferenced(&storage) }

    /// Whether two tensors view the same storage.
    public func sharesStorage(with other: Tensor) -> Bool { storage === other.storage }

    /// The first element converted to Double (for scalar inputs such as ratios and learning rates).
    public func scalarDouble(at index: Int = 0) -> Double? {
        guard index < count else { return nil }
        return try? dispatch(dtype, ElementAsDouble(bytes: storage.bytes, index: index))
    }

    /// The elements of an integer tensor widened to Int (shapes, axes, indices).
    public func intValues() -> [Int]? {
        switch dtype {
        case .int64: return uncheckedBufferPointer(as: Int64.self) { $0.map { Int($0) } }
        case .int32: return uncheckedBufferPointer(as: Int32.self) { $0.map { Int($0) } }
        case .int16: return uncheckedBufferPointer(as: Int16.self) { $0.map { Int($0) } }
        case .int8: return uncheckedBufferPointer(as: Int8.self) { $0.map { Int($0) } }
        case .uint8: return uncheckedBufferPointer(as: UInt8.self) { $0.map { Int($0) } }
        case .uint16: return uncheckedBufferPointer(as: UInt16.self) { $0.map { Int($0) } }
        case .uint32: return uncheckedBufferPointer(as: UInt32.self) { $0.map { Int($0) } }
        case .uint64: return uncheckedBufferPointer(as: UInt64.self) { $0.map { Int(truncatingIfNeeded: $0) } }
        default: return nil
        }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String { "tensor(\(dtype)) \(shape)" }
}

/// One element, at `index` of `bytes`, converted to Double (numeric and bool types).
private struct ElementAsDouble: CastableOperation {
    let bytes: UnsafeMutableRawPointer, index: Int
    func castable<T: CastableElement>(_ type: T.Type) -> Double {
        bytes.load(fromByteOffset: index * MemoryLayout<T>.stride, as: T.self).converted(to: Double.self)
    }
}
