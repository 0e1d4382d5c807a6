import Synchronization

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
public struct RandomGenerator: Sendable {
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

/// State shared by the runs of one session and their subgraphs: the random generator.
///
/// A session may run on several threads at once, so the generator sits behind a lock: draw
/// numbers inside `withRandom`, which holds it for the whole draw (a copy taken through `random`
/// and written back later would hand two threads the same numbers).
public final class RunState: Sendable {
    private let generator: Mutex<RandomGenerator>
    public init(seed: UInt64) { generator = Mutex(RandomGenerator(seed: seed)) }

    /// Runs `body` with the generator, locked against other threads.
    public func withRandom<R>(_ body: (inout RandomGenerator) throws -> R) rethrows -> R {
        try generator.withLock { try body(&$0) }
    }

    /// Draws from `RandomGenerator(seed:)` when `seed` is given, else from the shared generator.
    public func withRandom<R>(seed: UInt64?, _ body: (inout RandomGenerator) throws -> R) rethrows -> R {
        guard let seed else { return try withRandom(body) }
        var own = RandomGenerator(seed: seed)
        return try body(&own)
    }

    /// A snapshot of the generator (reading it does not advance it); setting replaces it.
    public var random: RandomGenerator {
        get { generator.withLock { $0 } }
        set { generator.withLock { $0 = newValue } }
    }
}

/// What a kernel sees of the run it is part of: random numbers, and the enclosing scope from
/// which subgraphs (If/Loop/Scan bodies) read outer values.
public final class ExecutionContext {
    public let state: RunState
    let lookup: (String) -> Value?

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

/// The bytes the kernels of one compiled graph may keep of what they derive from its constant
/// inputs (`NodeContext.isConstantInput`: a convolution's weights in the Winograd domain), shared
/// by its nodes and the threads that run it. A kernel reserves the bytes before it builds a form
/// and releases them when the form is freed; a refused reservation leaves the kernel on its
/// per-call path, so the kept forms never lift the session's peak memory past `limit`.
public final class KernelCacheBudget: Sendable {
    public let limit: Int
    private let used = Atomic<Int>(0)
    public init(limit: Int) { self.limit = limit }

    /// Takes `bytes` from the budget if they fit; false (nothing taken) if not.
    public func reserve(_ bytes: Int) -> Bool {
        var current = used.load(ordering: .relaxed)
        while true {
            guard bytes >= 0, current <= limit - bytes else { return false }
            let (exchanged, original) = used.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    /// Gives back bytes from `reserve`.
    public func release(_ bytes: Int) { used.subtract(bytes, ordering: .relaxed) }

    /// The bytes reserved now.
    public var reserved: Int { used.load(ordering: .relaxed) }
}
