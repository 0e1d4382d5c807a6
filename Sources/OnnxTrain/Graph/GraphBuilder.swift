/// Adds nodes, constants and inputs to a graph under fresh, unique names.
///
/// Every name already in the graph (values, nodes, initializers, subgraph values) is reserved, so
/// what the builder adds never collides with what the exporter wrote.
public struct GraphBuilder {
    public private(set) var graph: Graph
    private var used: Set<String>

    public init(_ graph: Graph) {
        self.graph = graph
        var used = Set<String>()
        func reserve(_ g: Graph) {
            for v in g.inputs { used.insert(v.name) }
            for v in g.outputs { used.insert(v.name) }
            for v in g.valueInfo { used.insert(v.name) }
            used.formUnion(g.initializerNames)
            for n in g.nodes {
                used.insert(n.name)
                used.formUnion(n.inputs)
                used.formUnion(n.outputs)
                for sub in GraphExecutor.attributeGraphs(n) { reserve(sub) }
            }
        }
        reserve(graph)
        self.used = used
    }

    /// `base` itself when it is free, else `base_1`, `base_2`, ...; the name is reserved.
    public mutating func freshName(_ base: String) -> String {
        var name = base
        var k = 1
        while used.contains(name) {
            name = "\(base)_\(k)"
            k += 1
        }
        used.insert(name)
        return name
    }

    /// Appends a node; its outputs get fresh names from `outputNames` (or `<name>_output_k`);
    /// an empty name in `outputNames` leaves that optional output off.
    @discardableResult
    public mutating func add(_ opType: String, domain: String = "", name: String? = nil, inputs: [String],
                             outputs: Int = 1, outputNames: [String]? = nil,
                             attributes: [String: Attribute] = [:]) -> [String] {
        let nodeName = freshName(name ?? opType)
        let names = (0..<outputs).map { k -> String in
            let wanted = outputNames.map { $0[k] } ?? "\(nodeName)_output_\(k)"
            return wanted.isEmpty ? "" : freshName(wanted)
        }
        // Trailing omitted outputs are left off the node, as ONNX writes optional outputs.
        var written = names
        while written.last == "" { written.removeLast() }
        graph.nodes.append(Node(opType: opType, domain: domain, name: nodeName, inputs: inputs, outputs: written, attributes: attributes))
        return names
    }

    /// Appends a one-output node and returns its output.
    public mutating func op(_ opType: String, domain: String = "", name: String? = nil, _ inputs: [String],
                            output: String? = nil, attributes: [String: Attribute] = [:]) -> String {
        add(opType, domain: domain, name: name, inputs: inputs, outputs: 1, outputNames: output.map { [$0] }, attributes: attributes)[0]
    }

    /// Adds `tensor` as an initializer under a fresh name based on `name`.
    public mutating func constant(_ tensor: Tensor, name: String) -> String {
        let fresh = freshName(name)
        graph.setInitializer(fresh, tensor)
        return fresh
    }

    /// Adds a graph input under exactly `name` (which must be free).
    public mutating func addInput(_ info: ValueInfo) {
        used.insert(info.name)
        graph.inputs.append(info)
    }

    /// Replaces the graph being built (for passes that rewrite it wholesale); names stay reserved.
    public mutating func update(_ body: (inout Graph) throws -> Void) rethrows {
        try body(&graph)
        for n in graph.nodes { used.insert(n.name); used.formUnion(n.outputs) }
        used.formUnion(graph.initializerNames)
    }

    /// Gives node `index` an output at position `position` (fresh name from `base`) if it has none
    /// there yet, and returns that output's name (the autodiff asks forward nodes for the
    /// statistics or masks their gradients need: MaxPool's indices, LayerNorm's mean).
    public mutating func ensureOutput(node index: Int, position: Int, base: String) -> String {
        var node = graph.nodes[index]
        if position < node.outputs.count, !node.outputs[position].isEmpty { return node.outputs[position] }
        while node.outputs.count <= position { node.outputs.append("") }
        let name = freshName(base)
        node.outputs[position] = name
        graph.nodes[index] = node
        return name
    }
}
