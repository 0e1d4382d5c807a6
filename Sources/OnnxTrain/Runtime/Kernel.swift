/// A compiled operator instance: attributes are parsed once when it is built for a node, and
/// `run` maps input values to output values.
///
/// Inputs arrive in the node's input order; an omitted optional input is `nil`. The result has
/// one entry per node output (trailing optional outputs may be left off; `nil` means "not produced").
public protocol Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?]
}

/// A kernel made from a closure, for ops whose state is just their parsed attributes.
public struct AnyKernel: Kernel {
    let body: ([Value?], ExecutionContext) throws -> [Value?]
    public init(_ body: @escaping ([Value?], ExecutionContext) throws -> [Value?]) { self.body = body }
    public func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] { try body(inputs, context) }
}

/// Builds a kernel for one node, or throws if the node's attributes do not fit the op.
public typealias KernelFactory = (NodeContext) throws -> Kernel

/// Random numbers for Dropout, RandomNormal and the like: SplitMix64, seedable for reproducible runs.
public struct RandomGenerator {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 24 bits of precision.
    public mutating func nextFloat() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }
    /// Uniform in [0, 1) with 53 bits of precision.
    public mutating func nextDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
}

/// State shared by one run of a graph and its subgraphs.
public final class RunState {
    public var random: RandomGenerator
    public init(seed: UInt64) { random = RandomGenerator(seed: seed) }
}

/// What a kernel sees of the run it is part of: random numbers, and the enclosing scope from
/// which subgraphs (If/Loop/Scan bodies) read outer values.
public final class ExecutionContext {
    public let state: RunState
    let lookup: (String) -> Value?
    /// Bit i set: input i dies at the running node and no other value shares its storage.
    var overwritableInputs: UInt64 = 0

    /// Whether the running kernel may write its output into input `index`'s storage: the value is
    /// not used after this node, is not a graph input, initializer or fetched value, and no other
    /// tensor (a Reshape view, say) shares its bytes. The executor decides; kernels only ask.
    public func mayOverwrite(input index: Int) -> Bool {
        index < 64 && overwritableInputs & (1 << UInt64(index)) != 0
    }

    /// An output tensor of `dtype` and `shape`: input `index`'s storage when the kernel may
    /// overwrite it and it has exactly the bytes needed, else a new uninitialized tensor. Write it
    /// with `withSharedMutableBufferPointer` (a copy-on-write accessor would copy the shared bytes).
    /// Elementwise kernels that read element i before writing element i can run in place.
    public func output(reusing index: Int, of input: Tensor, dtype: DType, shape: [Int]) -> Tensor {
        if mayOverwrite(input: index), input.dtype == dtype, dtype != .string,
           input.storage.byteCount == Tensor.elementCount(shape) * dtype.byteSize {
            return Tensor(dtype: dtype, shape: shape, storage: input.storage)
        }
        return Tensor(uninitialized: dtype, shape: shape)
    }

    init(state: RunState, lookup: @escaping (String) -> Value?) {
        self.state = state
        self.lookup = lookup
    }

    /// A context for callers outside any graph (tests, one-off kernel calls).
    public convenience init(seed: UInt64 = 0) {
        self.init(state: RunState(seed: seed), lookup: { _ in nil })
    }
}

extension Array where Element == Value? {
    /// The tensor at `index`; throws if it is missing or not a tensor.
    public func tensor(_ index: Int) throws -> Tensor {
        guard index < count, let value = self[index] else { throw KernelError("input \(index) is required") }
        guard case .tensor(let t) = value else { throw KernelError("input \(index) must be a tensor, got \(value.summary)") }
        return t
    }

    /// The tensor at `index`, or nil when the optional input is omitted.
    public func optionalTensor(_ index: Int) throws -> Tensor? {
        guard index < count, let value = self[index] else { return nil }
        guard case .tensor(let t) = value else { throw KernelError("input \(index) must be a tensor, got \(value.summary)") }
        return t
    }

    /// The value at `index`, or nil when omitted.
    public func value(_ index: Int) -> Value? { index < count ? self[index] : nil }
}
