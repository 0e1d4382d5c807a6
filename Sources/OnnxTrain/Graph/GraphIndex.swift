/// Who produces and who reads each value of a graph, built once and shared by the passes, the
/// autodiff and the pruning code (none of them rebuilds a producer map of its own).
public struct GraphIndex {
    /// The node (index into `graph.nodes`) and output position that produce each value.
    public let producer: [String: (node: Int, output: Int)]
    /// The nodes that read each value, in node order (a node reading a value twice appears once).
    public let consumers: [String: [Int]]
    /// Names of the graph's inputs.
    public let graphInputs: Set<String>
    /// Names of the graph's initializers.
    public let initializers: Set<String>
    /// Node indices in a topological order, file order among ready nodes. Nodes on a cycle are
    /// missing from it (`hasCycle`).
    public let order: [Int]
    public var hasCycle: Bool { order.count < reads.count }
    /// Values that more than one node writes: (value, first writer, later writer).
    public let duplicates: [(value: String, first: Int, second: Int)]
    /// Names each node reads: its inputs and what its subgraphs capture from this scope.
    public let reads: [[String]]

    public init(_ graph: Graph) {
        var producer: [String: (node: Int, output: Int)] = [:]
        var duplicates: [(value: String, first: Int, second: Int)] = []
        for (i, node) in graph.nodes.enumerated() {
            for (k, o) in node.outputs.enumerated() where !o.isEmpty {
                if let first = producer[o] { duplicates.append((o, first.node, i)) } else { producer[o] = (i, k) }
            }
        }
        self.duplicates = duplicates
        var consumers: [String: [Int]] = [:]
        var reads: [[String]] = []
        reads.reserveCapacity(graph.nodes.count)
        for (i, node) in graph.nodes.enumerated() {
            var seen = Set<String>()
            var names: [String] = []
            for name in node.inputs + GraphExecutor.subgraphReferences(node) where !name.isEmpty && seen.insert(name).inserted {
                names.append(name)
                consumers[name, default: []].append(i)
            }
            reads.append(names)
        }
        self.producer = producer
        self.consumers = consumers
        self.reads = reads
        graphInputs = Set(graph.inputs.map(\.name))
        initializers = Set(graph.initializerNames)

        // Kahn's algorithm, keeping file order among ready nodes. A node reading its own output is
        // not a cycle here; the executor reports it by name.
        var pending = [Int](repeating: 0, count: graph.nodes.count)
        var next = [[Int]](repeating: [], count: graph.nodes.count)
        for (i, names) in reads.enumerated() {
            var deps = Set<Int>()
            for name in names { if let p = producer[name]?.node, p != i { deps.insert(p) } }
            pending[i] = deps.count
            for d in deps { next[d].append(i) }
        }
        var order: [Int] = []
        var ready = (0..<graph.nodes.count).filter { pending[$0] == 0 }
        var cursor = 0
        while cursor < ready.count {
            let i = ready[cursor]
            cursor += 1
            order.append(i)
            for c in next[i] {
                pending[c] -= 1
                if pending[c] == 0 { ready.append(c) }
            }
        }
        self.order = order
    }

    /// Whether `name` is a constant of the graph: an initializer that no caller can override
    /// (not also a graph input).
    public func isConstant(_ name: String) -> Bool { initializers.contains(name) && !graphInputs.contains(name) }

    /// The nodes that `outputs` depend on (marked true), walking producers backwards; also
    /// returns every value name those nodes read.
    public func ancestors(of outputs: [String], keepSideEffects: (Int) -> Bool = { _ in false }) -> (nodes: [Bool], values: Set<String>) {
        var keep = [Bool](repeating: false, count: reads.count)
        var needed = Set(outputs)
        var stack: [Int] = []
        for name in outputs { if let p = producer[name]?.node { stack.append(p) } }
        for i in reads.indices where keepSideEffects(i) { stack.append(i) }
        while let i = stack.popLast() {
            guard !keep[i] else { continue }
            keep[i] = true
            for name in reads[i] {
                needed.insert(name)
                if let p = producer[name]?.node, !keep[p] { stack.append(p) }
            }
        }
        return (keep, needed)
    }
}

extension Graph {
    /// The graph reduced to the nodes `outputs` depend on (subgraph captures included), and every
    /// value name those nodes read. Throws, naming `label`, for an output no node produces.
    public func pruned(to outputs: [String], label: String, outputsForHelp: [String]) throws -> (Graph, Set<String>) {
        let index = GraphIndex(self)
        for name in outputs where index.producer[name] == nil && !index.graphInputs.contains(name) && !index.initializers.contains(name) {
            throw OnnxTrainError.invalidInput("no value '\(name)' in \(label) (outputs: \(outputsForHelp.joined(separator: ", ")))")
        }
        let (keep, needed) = index.ancestors(of: outputs)
        var graph = self
        graph.nodes = nodes.indices.filter { keep[$0] }.map { nodes[$0] }
        return (graph, needed.union(outputs))
    }
}
