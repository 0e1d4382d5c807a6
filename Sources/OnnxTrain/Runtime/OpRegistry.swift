import Foundation

/// Maps (domain, op type) to kernel factories by since-version.
///
/// A node resolves to the factory with the highest since-version that is not above the model's
/// opset for the node's domain, as ONNX's versioning rules say.
///
/// Sessions on several threads read one registry (`standard`) while a caller may still register
/// ops: the tables sit behind a lock, so the registry is `Sendable`. (Unchecked: the factories and
/// gradient rules are plain closures, which kernels' builders are by construction.)
public final class OpRegistry: @unchecked Sendable {
    private struct Key: Hashable {
        let domain: String
        let opType: String
    }
    /// One registered version: its factory and the file that registered it.
    private struct Registration {
        let since: Int
        let factory: KernelFactory
        let file: String
    }
    private struct Tables {
        var table: [Key: [Registration]] = [:]
        var facts: [Key: OpFacts] = [:]
    }
    private var unlockedTables = Tables()
    private let lock = NSLock()

    /// Runs `body` on the tables, holding the lock.
    private func withTables<R>(_ body: (inout Tables) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&unlockedTables)
    }

    public init() {}

    /// The registry with every op onnx-train implements.
    public static let standard: OpRegistry = {
        let registry = OpRegistry()
        registerAllOps(registry)
        return registry
    }()

    /// Registers `factory` for `opType` in `domain` from opset `since` on.
    ///
    /// `file` (the caller's source file) is kept so `sourceFiles` can say where each op's
    /// kernel is registered; helpers that register for a family file pass their caller's on.
    public func register(_ opType: String, domain: String = "", since: Int, file: String = #filePath, _ factory: @escaping KernelFactory) {
        let key = Key(domain: canonicalDomain(domain), opType: opType)
        let entry = Registration(since: since, factory: factory, file: sourcePath(file))
        withTables { t in t.table[key] = OpRegistry.inserting(entry, into: t.table[key] ?? []) }
    }

    /// `list` (in since-version order) with `entry` in its place, replacing an entry of the same
    /// since-version. Plain loops, not inlined: Swift 6.3's release build left the specialised
    /// `removeAll(where:)` this replaced undefined at link time in the files that inlined it.
    @inline(never)
    private static func inserting(_ entry: Registration, into list: [Registration]) -> [Registration] {
        var out: [Registration] = []
        out.reserveCapacity(list.count + 1)
        var placed = false
        for e in list where e.since != entry.since {
            if !placed && e.since > entry.since { out.append(entry); placed = true }
            out.append(e)
        }
        if !placed { out.append(entry) }
        return out
    }

    /// The factory for `opType` at `opset`, with its since-version.
    public func resolve(domain: String, opType: String, opset: Int) -> (since: Int, factory: KernelFactory)? {
        guard let list = withTables({ $0.table[Key(domain: canonicalDomain(domain), opType: opType)] }) else { return nil }
        guard let entry = list.last(where: { $0.since <= opset }) else { return nil }
        return (entry.since, entry.factory)
    }

    /// Registers one kernel builder at several since-versions (it reads `NodeContext.sinceVersion`
    /// where they differ): the one-line form of every family's registration list.
    ///
    /// `inPlace` lists the inputs whose block the kernel's output may take over when the input
    /// dies at this node (see `BufferDonation`): declare only inputs of the output's element
    /// count that the kernel reads element by element before writing the same output element,
    /// with the output as its first `Tensor(uninitialized:)` of that size.
    public func register(_ opType: String, domain: String = "", since versions: [Int], mutates: [Int] = [], inPlace: [Int] = [],
                         file: String = #filePath, _ factory: @escaping KernelFactory) {
        for v in versions {
            if mutates.isEmpty {
                register(opType, domain: domain, since: v, file: file, factory)
            } else {
                register(opType, domain: domain, since: v, mutates: mutates, file: file, factory)
            }
        }
        if !inPlace.isEmpty {
            withTables { $0.facts[Key(domain: canonicalDomain(domain), opType: opType), default: OpFacts()].inPlaceInputs = inPlace }
        }
    }

    /// Registers `factory` and declares the inputs the op writes into (in-place training ops:
    /// the executor runs them for that effect even when no fetch needs their outputs).
    public func register(_ opType: String, domain: String = "", since: Int, mutates: [Int], file: String = #filePath, _ factory: @escaping KernelFactory) {
        register(opType, domain: domain, since: since, file: file, factory)
        withTables { $0.facts[Key(domain: canonicalDomain(domain), opType: opType), default: OpFacts()].mutatedInputs = mutates }
    }

    /// Declares the gradient rule of an op (all versions; the rule reads the opset it needs).
    public func registerGradient(_ opType: String, domain: String = "", file: String = #filePath, _ rule: @escaping GradientRule) {
        withTables { t in
            let key = Key(domain: canonicalDomain(domain), opType: opType)
            t.facts[key, default: OpFacts()].gradient = rule
            t.facts[key, default: OpFacts()].gradientFile = sourcePath(file)
        }
    }

    /// The inputs the op writes into ([] for ordinary ops).
    public func mutatedInputs(domain: String, opType: String) -> [Int] {
        withTables { $0.facts[Key(domain: canonicalDomain(domain), opType: opType)]?.mutatedInputs } ?? []
    }

    /// The inputs whose block the op's output may take over (`register(inPlace:)`; [] for most ops).
    public func inPlaceInputs(domain: String, opType: String) -> [Int] {
        withTables { $0.facts[Key(domain: canonicalDomain(domain), opType: opType)]?.inPlaceInputs } ?? []
    }

    /// The op's gradient rule, if it has one.
    public func gradientRule(domain: String, opType: String) -> GradientRule? {
        withTables { $0.facts[Key(domain: canonicalDomain(domain), opType: opType)]?.gradient }
    }

    /// Whether any version of the op is registered.
    public func knows(domain: String, opType: String) -> Bool {
        withTables { $0.table[Key(domain: canonicalDomain(domain), opType: opType)] != nil }
    }

    /// Every registered (domain, op type, since-versions), for `inspect` and the docs.
    public var entries: [(domain: String, opType: String, versions: [Int])] {
        withTables { $0.table.map { ($0.key.domain, $0.key.opType, $0.value.map(\.since)) } }
            .sorted { ($0.domain, $0.opType) < ($1.domain, $1.opType) }
    }

    /// Where every registered op's kernels and gradient rule are registered, as paths below
    /// `Sources/` (`OnnxTrain/Ops/ONNX/Pad.swift`): one row per op and registering file (an op
    /// whose versions are registered in two files has two), sorted by domain, op type and first
    /// version. The table docs/OPS.md shows, so a reader can find any op by name.
    public var sourceFiles: [(domain: String, opType: String, versions: [Int], registeredIn: String, gradientFile: String?)] {
        typealias Row = (domain: String, opType: String, versions: [Int], registeredIn: String, gradientFile: String?)
        var rows: [Row] = []
        withTables { t in
            for (key, list) in t.table {
                var files: [String] = []
                for entry in list where !files.contains(entry.file) { files.append(entry.file) }
                for file in files {
                    let versions: [Int] = list.filter { $0.file == file }.map { $0.since }
                    rows.append((key.domain, key.opType, versions, file, t.facts[key]?.gradientFile))
                }
            }
        }
        return rows.sorted { a, b in
            if a.domain != b.domain { return a.domain < b.domain }
            if a.opType != b.opType { return a.opType < b.opType }
            return (a.versions.first ?? 0) < (b.versions.first ?? 0)
        }
    }
}

/// A registering caller's `#filePath` from its `Sources/` folder on (the whole path when it has
/// none, as for a test's own registrations).
private func sourcePath(_ filePath: String) -> String {
    guard let range = filePath.range(of: "/Sources/", options: .backwards) else { return filePath }
    return String(filePath[range.upperBound...])
}

/// What the graph layer knows about an op besides its kernel, declared where the op is registered.
struct OpFacts {
    /// Inputs the kernel writes into.
    var mutatedInputs: [Int] = []
    /// Inputs whose dying block the kernel's output may take over (all versions of the op).
    var inPlaceInputs: [Int] = []
    /// How to differentiate the op (see `GradientContext`).
    var gradient: GradientRule?
    /// The source file (below Sources/) that registers the gradient rule.
    var gradientFile: String?
}

extension OpRegistry {
    /// Builds the kernel for one node outside any graph, as eager front ends need it (the Swift
    /// model API runs each recorded node at once so its value can be printed).
    ///
    /// - Parameters:
    ///   - node: the node; its attributes are parsed here, once.
    ///   - opsets: opset version per domain ("" for ai.onnx); a custom domain defaults to 1.
    /// - Throws: `OnnxTrainError.unsupported` when no kernel fits the op at that opset, and the
    ///   factory's error (naming the node) when the attributes do not fit; subgraph attributes
    ///   (If/Loop/Scan bodies) are refused, since there is no enclosing graph to run them in.
    public func kernel(for node: Node, opsets: [String: Int]) throws -> Kernel {
        let domain = canonicalDomain(node.domain)
        let opset = opsets[domain] ?? (domain.isEmpty ? 18 : 1)
        guard let (since, factory) = resolve(domain: domain, opType: node.opType, opset: opset) else {
            throw OnnxTrainError.unsupported("no kernel for \(node.opType) (domain \(domain.isEmpty ? "ai.onnx" : domain), opset \(opset))")
        }
        let context = NodeContext(node: node, opset: opset, sinceVersion: since) { _ in
            throw KernelError("\(node.label): subgraph attributes need a graph to run in")
        }
        do {
            return try factory(context)
        } catch let error as KernelError {
            throw OnnxTrainError(.kernel, "\(node.label): \(error.message)")
        }
    }
}
