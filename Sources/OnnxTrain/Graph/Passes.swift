#if canImport(Glibc)
import Glibc
#endif

/// A transformation of a whole model, run before a session compiles it or while artifacts are
/// built. Passes are small and composable; `PassPipeline` runs them in order.
public protocol GraphPass {
    /// A short name for messages and for switching a pass off while debugging.
    var name: String { get }
    func run(_ model: inout Model) throws
}

/// Passes in order; each one can be switched off by name (`ONNX_TRAIN_DISABLE_PASSES=a,b`).
public struct PassPipeline {
    public var passes: [GraphPass]
    public init(_ passes: [GraphPass]) { self.passes = passes }

    /// What every session runs before it compiles a model.
    public static var beforeCompile: PassPipeline { PassPipeline([InlineFunctions()]) }

    public func run(_ model: inout Model) throws {
        let disabled = Set((getenvString("ONNX_TRAIN_DISABLE_PASSES") ?? "").split(separator: ",").map(String.init))
        for pass in passes where !disabled.contains(pass.name) { try pass.run(&model) }
    }
}

func getenvString(_ name: String) -> String? {
    guard let p = getenv(name) else { return nil }
    return String(cString: p)
}

/// Expands calls to model-local functions into their bodies, in the main graph and in every
/// subgraph, and drops the function list.
public struct InlineFunctions: GraphPass {
    public var name: String { "inline-functions" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard !model.functions.isEmpty else { return }
        model.graph = try inline(model.graph, model.functions)
        for f in model.functions { for (d, v) in f.opsetImports where model.opsetImports[d] == nil { model.opsetImports[d] = v } }
        model.functions = []
    }

    private func inline(_ graph: Graph, _ functions: [Function]) throws -> Graph {
        var graph = graph
        graph.nodes = try inlineFunctions(graph.nodes, functions: functions).map { node in
            var node = node
            for (key, attribute) in node.attributes {
                switch attribute {
                case .graph(let g): node.attributes[key] = .graph(try inline(g, functions))
                case .graphs(let gs): node.attributes[key] = .graphs(try gs.map { try inline($0, functions) })
                default: break
                }
            }
            return node
        }
        return graph
    }
}

/// Removes nodes whose outputs reach no graph output (ops that write into their inputs stay),
/// and initializers nothing reads.
public struct DeadNodeElimination: GraphPass {
    public var name: String { "dead-nodes" }
    public var registry: OpRegistry
    public init(registry: OpRegistry = .standard) { self.registry = registry }

    public func run(_ model: inout Model) throws {
        let graph = model.graph
        let index = GraphIndex(graph)
        let (keep, needed) = index.ancestors(of: graph.outputs.map(\.name)) { i in
            !registry.mutatedInputs(domain: graph.nodes[i].domain, opType: graph.nodes[i].opType).isEmpty
        }
        model.graph.nodes = graph.nodes.indices.filter { keep[$0] }.map { graph.nodes[$0] }
        let inputs = index.graphInputs
        for name in graph.initializerNames where !needed.contains(name) && !inputs.contains(name) {
            model.graph.initializers[name] = nil
        }
        model.graph.initializerNames = graph.initializerNames.filter { model.graph.initializers[$0] != nil }
        let produced = Set(model.graph.nodes.flatMap(\.outputs))
        model.graph.valueInfo = graph.valueInfo.filter { produced.contains($0.name) }
    }
}

/// Replaces nodes whose inputs are all constants by their computed values (shape arithmetic:
/// Shape of a statically shaped value, Gather/Concat/Unsqueeze/Cast of constants, ...).
/// Random ops, ops with subgraphs or side effects, and results over `maxElements` stay.
public struct ConstantFolding: GraphPass {
    public var name: String { "constant-folding" }
    public var registry: OpRegistry
    public var maxElements: Int
    public init(registry: OpRegistry = .standard, maxElements: Int = 1 << 16) {
        self.registry = registry
        self.maxElements = maxElements
    }

    static let nondeterministic: Set<String> = [
        "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial", "Dropout",
    ]

    public func run(_ model: inout Model) throws {
        var graph = model.graph
        let index = GraphIndex(graph)
        guard !index.hasCycle else { return }
        let order = index.order
        var known: [String: Tensor] = [:]
        for name in graph.initializerNames where index.isConstant(name) { known[name] = graph.initializers[name] }
        let types = TypeInference(graph: graph, opsets: model.opsetImports)
        var folded = Set<Int>()
        for i in order {
            let node = graph.nodes[i]
            if ConstantFolding.nondeterministic.contains(node.opType) || !GraphExecutor.attributeGraphs(node).isEmpty { continue }
            if !registry.mutatedInputs(domain: node.domain, opType: node.opType).isEmpty { continue }
            var values: [String: Tensor] = [:]
            // Shape (and Size) of a value whose shape is static need no value at all.
            if node.domain.isEmpty, node.opType == "Shape" || node.opType == "Size", let x = node.input(0),
               let shape = types[x]?.staticShape, let out = node.output(0) {
                let r = shape.count
                let start = TypeInference.normalize(node.int("start") ?? 0, r, clamp: true)
                let end = TypeInference.normalize(node.int("end") ?? r, r, clamp: true)
                known[out] = node.opType == "Size" ? Tensor(scalar: Int64(shape.reduce(1, *)))
                    : Tensor(shape: [max(0, end - start)], scalars: shape[start..<max(start, end)].map(Int64.init))
                folded.insert(i)
                continue
            }
            guard node.inputs.allSatisfy({ $0.isEmpty || known[$0] != nil }), !node.outputs.isEmpty else { continue }
            for name in node.inputs where !name.isEmpty { values[name] = known[name] }
            var single = Graph()
            single.nodes = [node]
            single.inputs = values.keys.sorted().map { ValueInfo(name: $0, type: nil) }
            single.outputs = node.outputs.filter { !$0.isEmpty }.map { ValueInfo(name: $0, type: nil) }
            var m = Model(graph: single)
            m.opsetImports = model.opsetImports
            m.irVersion = model.irVersion
            var options = SessionOptions()
            options.registry = registry
            guard let session = try? InferenceSession(model: m, options: options),
                  let results = try? session.run(values.mapValues { .tensor($0) }) else { continue }
            let tensors = single.outputs.compactMap { results[$0.name]?.tensor }
            guard tensors.count == single.outputs.count, tensors.allSatisfy({ $0.count <= maxElements && $0.dtype != .string }) else { continue }
            for (o, t) in zip(single.outputs, tensors) { known[o.name] = t }
            folded.insert(i)
        }
        guard !folded.isEmpty else { return }
        graph.nodes = graph.nodes.indices.filter { !folded.contains($0) }.map { graph.nodes[$0] }
        for i in folded.sorted() {
            for o in model.graph.nodes[i].outputs where !o.isEmpty { if let t = known[o] { graph.setInitializer(o, t) } }
        }
        graph.valueInfo = graph.valueInfo.filter { graph.initializers[$0.name] == nil }
        model.graph = graph
        try DeadNodeElimination(registry: registry).run(&model)
    }
}
