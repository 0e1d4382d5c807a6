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

    /// What a session must run before it compiles a model (also with `SessionOptions.optimize` off).
    public static var beforeCompile: PassPipeline { PassPipeline([InlineFunctions()]) }

    /// What every session runs before it compiles a model: function inlining, then the graph
    /// optimisations (`SessionOptions.memoryPlan` is the executor's, switched off by the name `memory-plan`). Each keeps the graph's outputs equal up to float rounding, keeps every value
    /// a graph output names or another node reads, and leaves parameters that are graph inputs
    /// (training graphs) alone.
    public static func optimizing(registry: OpRegistry = .standard) -> PassPipeline {
        PassPipeline([
            InlineFunctions(),
            OldInitializersAsConstants(),
            IdentityElimination(registry: registry),
            ConstantFolding(registry: registry, foldInputSized: true),
            SumAsAdd(),
            AttentionFusion(),
            ChannelAffineFusion(),
            ConvFusion(),
            MatMulAddToGemm(),
            TransposeIntoMatMul(),
            StridedMatMulFusion(),
            ScaleIntoMatMul(),
            PowerToMul(),
            GeluFusion(),
            GeluIntoMatMul(),
            ClipGradientFusion(),
            ElementwiseFusion(registry: registry),
            ProductIntoAccumulator(),
            ChannelShuffleFusion(),
            AddLayerNormFusion(),
            NchwcLayout(),
        ])
    }

    /// The names of the passes switched off through `ONNX_TRAIN_DISABLE_PASSES` (comma-separated;
    /// `all` switches off every optimisation, leaving what a session must run: `inline-functions`
    /// runs whatever the list says).
    public static var disabledNames: Set<String> {
        Set((getenvString("ONNX_TRAIN_DISABLE_PASSES") ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
    }

    public func run(_ model: inout Model) throws {
        let disabled = PassPipeline.disabledNames
        let all = disabled.contains("all")
        var checked = false
        // Inlining is not an optimisation (the executor runs no function calls): no name switches it off.
        for pass in passes where pass.name == "inline-functions" || !(all || disabled.contains(pass.name)) {
            if pass.name != "inline-functions" && !checked {
                // The optimisations walk producers and consumers and assume a graph they can order:
                // a cycle, a node reading its own output or a value written twice leaves the graph
                // as it is, for the executor to report by node name.
                guard PassPipeline.canOptimize(model.graph) else { return }
                checked = true
            }
            try pass.run(&model)
        }
    }

    /// Whether `graph`'s nodes can be put in an order where every value is written once, before
    /// it is read.
    static func canOptimize(_ graph: Graph) -> Bool {
        let index = GraphIndex(graph)
        guard !index.hasCycle, index.duplicates.isEmpty else { return false }
        return index.reads.indices.allSatisfy { i in index.reads[i].allSatisfy { index.producer[$0]?.node != i } }
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
        model.graph.dropValueInfoOfRemovedValues()
    }
}

/// Initializers of a model older than IR version 4 are constants even though they are listed among
/// the graph inputs (IR 3 required every initializer to be listed so; onnxruntime refuses a feed
/// for one): they leave the inputs, so the passes after this one can fold and fuse them (onnx's
/// zoo "light" models, IR 3, make every weight from such initializers).
public struct OldInitializersAsConstants: GraphPass {
    public var name: String { "ir3-initializers" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard (1..<4).contains(model.irVersion) else { return }
        model.graph.inputs.removeAll { model.graph.initializers[$0.name] != nil }
    }
}

/// Identity, and Dropout in inference (opset 7 and later, no mask output, no training_mode input
/// or a constant false one), pass their input through: their readers read the input instead and
/// the node goes. The zoo's SqueezeNet, Inception v1, AlexNet and VGG-19 keep their Dropouts in
/// the inference graph; in between a Conv's activation and the next op they also stopped fusions.
/// In training graphs a Dropout of constant ratio 0 (PyTorch exports of BERT, GPT-2 and ViT with
/// dropout off still train through Dropout nodes) passes its input through too, and so do the
/// com.microsoft DropoutGrads of constant ratio 0 that read its mask (they return dy unchanged): the
/// mask, a bool per element made every step and held until the backward pass, is no longer made.
/// A node whose output is a graph output or is read by a subgraph stays (the name must live on),
/// and so does one whose output an op writes into (it would then write into the input).
public struct IdentityElimination: GraphPass {
    public var name: String { "identity-elimination" }
    public var registry: OpRegistry
    public init(registry: OpRegistry = .standard) { self.registry = registry }

    public func run(_ model: inout Model) throws {
        let opset = model.opset("") ?? 0
        let graph = model.graph
        guard graph.nodes.contains(where: { $0.domain.isEmpty && ($0.opType == "Identity" || $0.opType == "Dropout") }) else { return }
        var keep = Set(graph.outputs.map(\.name)).union(graph.nodes.flatMap(GraphExecutor.subgraphReferences))
        for node in graph.nodes {
            for k in registry.mutatedInputs(domain: node.domain, opType: node.opType) { if let v = node.input(k) { keep.insert(v) } }
        }
        let index = GraphIndex(graph)
        /// The value of a constant scalar input.
        func constantScalar(_ name: String) -> Double? {
            guard index.isConstant(name), let t = graph.initializers[name], t.count == 1 else { return nil }
            return t.scalarDouble()
        }
        // A com.microsoft DropoutGrad with ratio 0 returns dy as it is and ignores the mask (so
        // does its kernel); its mask may then have no reader left.
        func gradientPassesThrough(_ node: Node) -> Bool {
            guard canonicalDomain(node.domain) == "com.microsoft", node.opType == "DropoutGrad", node.input(0) != nil, node.input(1) != nil,
                  let y = node.output(0), !keep.contains(y), node.outputs.count == 1, let ratio = node.input(2) else { return false }
            return constantScalar(ratio) == 0
        }
        let passingGradients = Set(graph.nodes.indices.filter { gradientPassesThrough(graph.nodes[$0]) })
        /// Whether a Dropout's mask is unused: no output, or read only by DropoutGrads that pass dy through.
        func maskUnused(_ node: Node) -> Bool {
            guard let mask = node.output(1) else { return true }
            return !keep.contains(mask) && (index.consumers[mask] ?? []).allSatisfy(passingGradients.contains)
        }
        func passesThrough(_ node: Node) -> Bool {
            guard node.domain.isEmpty, node.input(0) != nil, let y = node.output(0), !keep.contains(y), node.outputs.count <= 2 else { return false }
            switch node.opType {
            case "Identity": return node.inputs.count == 1 && node.outputs.count == 1
            case "Dropout":
                guard opset >= 7, maskUnused(node) else { return false }
                guard let training = node.input(2) else { return true }
                guard let t = constantScalar(training) else { return false }
                // In training mode a ratio of 0 keeps every element and scales by 1/(1 - 0).
                return t == 0 || node.input(1).flatMap(constantScalar) == 0
            default: return false
            }
        }
        var alias: [String: String] = [:]
        var removed = Set<Int>()
        for (i, node) in graph.nodes.enumerated() where passesThrough(node) || passingGradients.contains(i) {
            alias[node.outputs[0]] = node.inputs[0]
            removed.insert(i)
        }
        // Through chains of such nodes (a cycle of them, an invalid graph, is left to the executor to report).
        func resolve(_ name: String) -> String {
            var name = name
            for _ in 0...alias.count { guard let a = alias[name] else { return name }; name = a }
            return name
        }
        var nodes: [Node] = []
        for (i, node) in graph.nodes.enumerated() where !removed.contains(i) {
            var node = node
            node.inputs = node.inputs.map { $0.isEmpty ? $0 : resolve($0) }
            nodes.append(node)
        }
        guard !alias.isEmpty else { return }
        model.graph.nodes = nodes
        model.graph.valueInfo.removeAll { alias[$0.name] != nil }
        model.graph.apply(removing: [], replacing: [:])
    }
}

/// Sum of two inputs becomes Add, so the fusions that look for Add (a Conv's residual Add as
/// FusedConv's Z, elementwise chains) see it: onnx's zoo ResNet-50 and ShuffleNet write every
/// residual connection as a two-input Sum. From opset 8 both broadcast the same (multidirectional);
/// Sum 6 requires equal shapes, where Add 7 computes the same sum. Same element-wise rounding: one
/// addition per element either way.
public struct SumAsAdd: GraphPass {
    public var name: String { "sum-as-add" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard (model.opset("") ?? 0) >= 7 else { return }
        for (i, node) in model.graph.nodes.enumerated()
        where node.domain.isEmpty && node.opType == "Sum" && node.inputs.count == 2 && !node.inputs.contains("") {
            model.graph.nodes[i] = Node(opType: "Add", name: node.name, inputs: node.inputs, outputs: node.outputs)
        }
    }
}

/// Replaces nodes whose inputs are all constants by their computed values (shape arithmetic:
/// Shape of a statically shaped value, Gather/Concat/Unsqueeze/Cast of constants, ...).
/// Random ops, ops with subgraphs or side effects, and results over `maxElements` stay (with
/// `foldInputSized`, a result no larger than the node's constant inputs folds at any size: a
/// Transpose or Cast of a weight, which a session would otherwise compute on every run).
public struct ConstantFolding: GraphPass {
    public var name: String { "constant-folding" }
    public var registry: OpRegistry
    public var maxElements: Int
    public var foldInputSized: Bool
    public init(registry: OpRegistry = .standard, maxElements: Int = 1 << 16, foldInputSized: Bool = false) {
        self.registry = registry
        self.maxElements = maxElements
        self.foldInputSized = foldInputSized
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
        // An initializer an op writes into (in place) is not a constant across runs.
        var mutated = Set<String>()
        for node in graph.nodes {
            for k in registry.mutatedInputs(domain: node.domain, opType: node.opType) { if let v = node.input(k) { mutated.insert(v) } }
        }
        for name in graph.initializerNames where index.isConstant(name) && !mutated.contains(name) { known[name] = graph.initializers[name] }
        let types = TypeInference(graph: graph, opsets: model.opsetImports)
        let declared = Dictionary((graph.valueInfo + graph.outputs).map { ($0.name, $0.type) }, uniquingKeysWith: { a, _ in a })
        var folded = Set<Int>()
        for i in order {
            let node = graph.nodes[i]
            if ConstantFolding.nondeterministic.contains(node.opType) || !GraphExecutor.attributeGraphs(node).isEmpty { continue }
            if !registry.mutatedInputs(domain: node.domain, opType: node.opType).isEmpty { continue }
            // A node writing over an initializer's name (not valid SSA) stays: a folded value never
            // takes an existing initializer's name (InferenceSession relies on it).
            if node.outputs.contains(where: { graph.initializers[$0] != nil }) { continue }
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
            // Declared output types go along: some kernels take their output shape from them
            // (AveragePoolGrad, MaxPoolGrad), as onnxruntime takes it from static inference.
            single.outputs = node.outputs.filter { !$0.isEmpty }.map { ValueInfo(name: $0, type: declared[$0] ?? nil) }
            var m = Model(graph: single)
            m.opsetImports = model.opsetImports
            m.irVersion = model.irVersion
            var options = SessionOptions()
            options.registry = registry
            options.optimize = false
            guard let session = try? InferenceSession(model: m, options: options),
                  let results = try? session.run(values.mapValues { .tensor($0) }) else { continue }
            let tensors = single.outputs.compactMap { results[$0.name]?.tensor }
            // ConstantOfShape of a constant shape is a weight in disguise (onnx's zoo "light" models
            // make every weight so): it folds at any size, as in onnxruntime, so it is not filled
            // again on every run and ConvFusion sees it, unless an op writes into it in place.
            let weight = node.domain.isEmpty && node.opType == "ConstantOfShape" && !node.outputs.contains(where: mutated.contains)
            let limit = foldInputSized ? (weight ? Int.max : max(maxElements, values.values.reduce(0) { $0 + $1.count })) : maxElements
            guard tensors.count == single.outputs.count, tensors.allSatisfy({ $0.count <= limit && $0.dtype != .string }) else { continue }
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

/// A SplitToSequence whose every use is a SequenceAt at a constant position becomes one Split,
/// each SequenceAt an Identity of (or, with keepdims 0 and no split, a Squeeze of) its piece.
/// torch.onnx's dynamo exporter writes torch.split/chunk this way when its optimiser is off; as a
/// Split the autodiff needs no gradients of sequence values. Needs the split input and positions
/// as initializers (run it after constant folding) and the split axis's size statically known.
public struct SplitToSequenceAsSplit: GraphPass {
    public var name: String { "split-to-sequence-as-split" }
    public init() {}

    public func run(_ model: inout Model) throws {
        let graph = model.graph
        let opset = model.opset("") ?? 17
        guard opset >= 11, graph.nodes.contains(where: { $0.domain.isEmpty && $0.opType == "SplitToSequence" }) else { return }
        let index = GraphIndex(graph)
        let types = TypeInference(graph: graph, opsets: model.opsetImports)
        let graphOutputs = Set(graph.outputs.map(\.name))
        var builder = GraphBuilder(graph)
        var replacement: [Int: [Node]] = [:]
        for (i, node) in graph.nodes.enumerated() where node.domain.isEmpty && node.opType == "SplitToSequence" {
            guard let sequence = node.output(0), !graphOutputs.contains(sequence), let x = node.input(0),
                  let shape = types[x]?.staticShape, !shape.isEmpty else { continue }
            let users = index.consumers[sequence] ?? []
            guard !users.isEmpty, users.allSatisfy({ u in
                let n = graph.nodes[u]
                return n.domain.isEmpty && n.opType == "SequenceAt" && n.input(0) == sequence && n.inputs.count == 2 && n.output(0) != nil
            }) else { continue }
            let axis = TypeInference.normalize(node.int("axis") ?? 0, shape.count, clamp: false)
            guard axis >= 0 && axis < shape.count else { continue }
            let size = shape[axis]
            var sizes: [Int]
            var squeeze = false
            if let s = node.input(1) {
                guard let t = graph.initializers[s], index.isConstant(s), let v = t.intValues(), !v.isEmpty else { continue }
                if t.rank == 0 {
                    guard v[0] > 0 else { continue }
                    sizes = stride(from: 0, to: size, by: v[0]).map { min(v[0], size - $0) }
                } else {
                    sizes = v
                }
            } else {
                sizes = Array(repeating: 1, count: size)
                squeeze = (node.int("keepdims") ?? 1) == 0
            }
            guard !sizes.isEmpty, sizes.allSatisfy({ $0 >= 0 }), sizes.reduce(0, +) == size else { continue }
            var positions: [Int] = []
            for u in users {
                guard let p = graph.nodes[u].input(1), index.isConstant(p), let v = graph.initializers[p]?.intValues(), v.count == 1 else { break }
                let k = v[0] < 0 ? v[0] + sizes.count : v[0]
                guard k >= 0 && k < sizes.count else { break }
                positions.append(k)
            }
            guard positions.count == users.count else { continue }
            let pieces = sizes.indices.map { builder.freshName("\(sequence)_\($0)") }
            let sizesName = builder.constant(Tensor(shape: [sizes.count], scalars: sizes.map(Int64.init)), name: "\(sequence)_sizes")
            let split = opset >= 13
                ? Node(opType: "Split", name: builder.freshName(node.name.isEmpty ? "split" : node.name), inputs: [x, sizesName], outputs: pieces,
                       attributes: ["axis": .int(axis)])
                : Node(opType: "Split", name: builder.freshName(node.name.isEmpty ? "split" : node.name), inputs: [x], outputs: pieces,
                       attributes: ["axis": .int(axis), "split": .ints(sizes)])
            replacement[i] = [split]
            var axesName: String?
            for (u, k) in zip(users, positions) {
                let user = graph.nodes[u]
                if squeeze {
                    if opset >= 13 && axesName == nil { axesName = builder.constant(Tensor(shape: [1], scalars: [Int64(axis)]), name: "\(sequence)_axis") }
                    replacement[u] = [opset >= 13
                        ? Node(opType: "Squeeze", name: user.name, inputs: [pieces[k], axesName!], outputs: [user.outputs[0]])
                        : Node(opType: "Squeeze", name: user.name, inputs: [pieces[k]], outputs: [user.outputs[0]], attributes: ["axes": .ints([axis])])]
                } else {
                    replacement[u] = [Node(opType: "Identity", name: user.name, inputs: [pieces[k]], outputs: [user.outputs[0]])]
                }
            }
        }
        guard !replacement.isEmpty else { return }
        var result = builder.graph
        result.nodes = graph.nodes.indices.flatMap { replacement[$0] ?? [graph.nodes[$0]] }
        model.graph = result
    }
}
