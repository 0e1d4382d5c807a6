/// Maps (domain, op type) to kernel factories by since-version.
///
/// A node resolves to the factory with the highest since-version that is not above the model's
/// opset for the node's domain, as ONNX's versioning rules say.
public final class OpRegistry {
    private struct Key: Hashable {
        let domain: String
        let opType: String
    }
    private var table: [Key: [(since: Int, factory: KernelFactory)]] = [:]
    private var facts: [Key: OpFacts] = [:]

    public init() {}

    /// The registry with every op onnx-train implements.
    public static let standard: OpRegistry = {
        let registry = OpRegistry()
        registerAllOps(registry)
        return registry
    }()

    /// Registers `factory` for `opType` in `domain` from opset `since` on.
    public func register(_ opType: String, domain: String = "", since: Int, _ factory: @escaping KernelFactory) {
        let key = Key(domain: canonicalDomain(domain), opType: opType)
        var list = table[key, default: []]
        list.removeAll { $0.since == since }
        list.append((since, factory))
        list.sort { $0.since < $1.since }
        table[key] = list
    }

    /// The factory for `opType` at `opset`, with its since-version.
    public func resolve(domain: String, opType: String, opset: Int) -> (since: Int, factory: KernelFactory)? {
        guard let list = table[Key(domain: canonicalDomain(domain), opType: opType)] else { return nil }
        return list.last { $0.since <= opset }
    }

    /// Registers `factory` and declares the inputs the op writes into (in-place training ops:
    /// the executor runs them for that effect even when no fetch needs their outputs).
    public func register(_ opType: String, domain: String = "", since: Int, mutates: [Int], _ factory: @escaping KernelFactory) {
        register(opType, domain: domain, since: since, factory)
        facts[Key(domain: canonicalDomain(domain), opType: opType), default: OpFacts()].mutatedInputs = mutates
    }

    /// Declares the gradient rule of an op (all versions; the rule reads the opset it needs).
    public func registerGradient(_ opType: String, domain: String = "", _ rule: @escaping GradientRule) {
        facts[Key(domain: canonicalDomain(domain), opType: opType), default: OpFacts()].gradient = rule
    }

    /// The inputs the op writes into ([] for ordinary ops).
    public func mutatedInputs(domain: String, opType: String) -> [Int] {
        facts[Key(domain: canonicalDomain(domain), opType: opType)]?.mutatedInputs ?? []
    }

    /// The op's gradient rule, if it has one.
    public func gradientRule(domain: String, opType: String) -> GradientRule? {
        facts[Key(domain: canonicalDomain(domain), opType: opType)]?.gradient
    }

    /// Whether any version of the op is registered.
    public func knows(domain: String, opType: String) -> Bool {
        table[Key(domain: canonicalDomain(domain), opType: opType)] != nil
    }

    /// Every registered (domain, op type, since-versions), for `inspect` and the docs.
    public var entries: [(domain: String, opType: String, versions: [Int])] {
        table.map { ($0.key.domain, $0.key.opType, $0.value.map(\.since)) }
            .sorted { ($0.domain, $0.opType) < ($1.domain, $1.opType) }
    }
}

/// What the graph layer knows about an op besides its kernel, declared where the op is registered.
struct OpFacts {
    /// Inputs the kernel writes into.
    var mutatedInputs: [Int] = []
    /// How to differentiate the op (see `GradientContext`).
    var gradient: GradientRule?
}
