import Foundation
import OnnxTrain

/// The recorded graph behind some tensors: its nodes in topological order, its leaves and
/// constants, and a key that is equal exactly when two traces are the same graph over leaves of
/// the same types (so a training loop reuses one compiled session for every step).
struct GraphTrace {
    /// Data, parameter and buffer leaves in first-use order (graph inputs or initializers).
    private(set) var leaves: [NNTensor] = []
    /// Constants in first-use order (always initializers; their values are part of the key).
    private(set) var constants: [NNTensor] = []
    /// Nodes in topological order.
    private(set) var records: [NodeRecord] = []
    private(set) var key = ""
    private var leafIndex: [ObjectIdentifier: Int] = [:]
    private var constantIndex: [ObjectIdentifier: Int] = [:]
    private var recordIndex: [ObjectIdentifier: Int] = [:]

    /// Traces everything `outputs` depend on.
    init(outputs: [NNTensor]) {
        var visited = Set<ObjectIdentifier>()
        // Iterative post-order walk: recorded graphs can be thousands of nodes deep (unrolled RNNs).
        var stack: [(NodeRecord, Bool)] = []
        for out in outputs {
            guard let (root, _) = out.producer else { continue }
            stack.append((root, false))
            while let (record, expanded) = stack.popLast() {
                let id = ObjectIdentifier(record)
                if expanded {
                    emit(record)
                    continue
                }
                guard visited.insert(id).inserted else { continue }
                stack.append((record, true))
                for input in record.inputs.reversed() {
                    if let (p, _) = input?.producer, !visited.contains(ObjectIdentifier(p)) { stack.append((p, false)) }
                }
            }
        }
        key += "out:" + outputs.map { reference($0) }.joined(separator: ",")
        // Leaves that are outputs themselves (a graph that returns its input) need registering.
        for out in outputs where out.producer == nil { _ = register(out) }
        key += "|leaves:" + leaves.map { "\($0.role)\($0.dtype)\($0.shape)\($0.requiresGrad ? "g" : "")" }.joined(separator: ";")
    }

    private mutating func emit(_ record: NodeRecord) {
        let refs = record.inputs.map { input -> String in
            guard let input else { return "_" }
            if input.producer == nil { return register(input) }
            return reference(input)
        }
        recordIndex[ObjectIdentifier(record)] = records.count
        records.append(record)
        key += "\(record.domain)|\(record.opType)|\(record.attributeKey)|\(refs.joined(separator: ","))|\(record.outputCount);"
    }

    /// Numbers a leaf or constant the first time it is seen; returns its reference in the key.
    private mutating func register(_ t: NNTensor) -> String {
        let id = ObjectIdentifier(t)
        if t.role == .constant {
            if let i = constantIndex[id] { return "C\(i)" }
            constantIndex[id] = constants.count
            constants.append(t)
            key += "C\(constants.count - 1)=\(Eager.tensorKey(t.value));"
            return "C\(constants.count - 1)"
        }
        if let i = leafIndex[id] { return "L\(i)" }
        leafIndex[id] = leaves.count
        leaves.append(t)
        return "L\(leaves.count - 1)"
    }

    private func reference(_ t: NNTensor) -> String {
        if let (record, k) = t.producer, let i = recordIndex[ObjectIdentifier(record)] { return "v\(i).\(k)" }
        let id = ObjectIdentifier(t)
        if let i = leafIndex[id] { return "L\(i)" }
        if let i = constantIndex[id] { return "C\(i)" }
        return "L\(leaves.count)"
    }

    /// The ONNX value name of `t` in `graph(...)`: `leafNames[i]` for leaves, `constant_i`, `v<node>_<output>`.
    func name(of t: NNTensor, leafNames: [String]) -> String? {
        if let (record, k) = t.producer, let i = recordIndex[ObjectIdentifier(record)] { return "v\(i)_\(k)" }
        let id = ObjectIdentifier(t)
        if let i = leafIndex[id] { return leafNames[i] }
        if let i = constantIndex[id] { return "constant_\(i)" }
        return nil
    }

    /// The traced graph. Leaves listed in `initializerLeaves` become initializers holding their
    /// current values; the others are typed graph inputs. Output `k` is renamed `outputNames[k]`
    /// through an Identity when one is given.
    func graph(outputs: [NNTensor], leafNames: [String], initializerLeaves: Set<Int> = [], outputNames: [String]? = nil,
               graphName: String = "nn") -> Graph {
        var graph = Graph()
        graph.name = graphName
        for (i, leaf) in leaves.enumerated() {
            if initializerLeaves.contains(i) {
                // A copy: optimizer steps update parameters in place, and a written or returned
                // model must keep the values it was exported with.
                graph.setInitializer(leafNames[i], leaf.value.copied())
            } else {
                graph.inputs.append(ValueInfo(name: leafNames[i], type: .tensor(leaf.dtype, shape: leaf.shape.map { .value($0) })))
            }
        }
        for (i, c) in constants.enumerated() { graph.setInitializer("constant_\(i)", c.value) }
        for (i, record) in records.enumerated() {
            let inputs = record.inputs.map { input in input.flatMap { name(of: $0, leafNames: leafNames) } ?? "" }
            graph.nodes.append(Node(opType: record.opType, domain: record.domain, name: "\(record.opType)_\(i)", inputs: inputs,
                                    outputs: (0..<record.outputCount).map { "v\(i)_\($0)" }, attributes: record.attributes))
        }
        for (k, out) in outputs.enumerated() {
            let inner = name(of: out, leafNames: leafNames) ?? "?"
            let type = ValueType.tensor(out.dtype, shape: out.shape.map { .value($0) })
            if let outputNames, outputNames[k] != inner {
                graph.nodes.append(Node(opType: "Identity", name: outputNames[k] + "_identity", inputs: [inner], outputs: [outputNames[k]]))
                graph.outputs.append(ValueInfo(name: outputNames[k], type: type))
            } else {
                graph.outputs.append(ValueInfo(name: inner, type: type))
            }
        }
        return graph
    }

    /// A model around `graph` importing the recorded opsets.
    static func model(_ graph: Graph) -> Model {
        var model = Model(graph: graph)
        model.irVersion = 9
        model.producerName = "onnx-train"
        model.producerVersion = "nn"
        model.opsetImports = Eager.opsets
        return model
    }

    /// Turns the forward nodes of a differentiated `graph` into fed values: every forward node
    /// the gradient rules left unchanged is dropped, and those of its outputs that remaining nodes
    /// read become graph inputs, fed with the eager values (computed already, bit for bit what
    /// the node would compute again). Nodes a rule gave an extra output (MaxPool's indices,
    /// LayerNormalization's statistics) stay and run.
    /// - Returns: the fed values as (node, output, input name).
    static func feedForwardValues(_ graph: inout Graph, forward: Graph, trace: GraphTrace) -> [(record: Int, output: Int, name: String)] {
        let count = forward.nodes.count
        var removed: [String: (record: Int, output: Int)] = [:]
        var kept: [Node] = []
        for (i, node) in graph.nodes.enumerated() {
            if i < count, node.outputs == forward.nodes[i].outputs {
                for (k, name) in node.outputs.enumerated() where !name.isEmpty { removed[name] = (i, k) }
            } else {
                kept.append(node)
            }
        }
        var read = Set<String>()
        for node in kept { read.formUnion(node.inputs) }
        for output in graph.outputs { read.insert(output.name) }
        var fed: [(record: Int, output: Int, name: String)] = []
        for name in read.sorted() {
            guard let (record, output) = removed[name], let value = trace.records[record].outputValues[output] else { continue }
            graph.inputs.append(ValueInfo(name: name, type: .tensor(value.dtype, shape: value.shape.map { .value($0) })))
            fed.append((record, output, name))
        }
        graph.nodes = kept
        return fed
    }
}
