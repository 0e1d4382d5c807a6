/// A weight gradient's matrix product read only by the InPlaceAccumulatorV2 that adds it to its
/// accumulation buffer (every parameter of a training graph ends so) becomes one internal
/// `ProductAccumulator` node: the GEMM writes into the buffer (overwrite) or adds to it, instead of
/// into a new block that the accumulator then copies or adds (one pass over every weight
/// gradient per step, and the block's memory).
///
/// Products taken: Gemm without C (or with beta 0), MatMul, and com.microsoft FusedMatMul (or
/// TransposeMatMul) without batch transposes. The node takes the product's place in the graph
/// (its operands die as early as before), so the buffer must be read by the accumulator alone
/// and be no graph output: the write then moves past no other reader. The product's value must be
/// read by the accumulator alone (and be no graph output), and the buffer and the flag must be
/// made before the product (graph inputs in every training graph).
///
/// An embedding's gradient, com.microsoft GatherGrad, read only by its accumulator becomes one
/// internal `GatherGradAccumulator` in the same way: dY's rows are scattered into the buffer
/// instead of into a new table-sized tensor of zeros that the accumulator then copies.
public struct ProductIntoAccumulator: GraphPass {
    public var name: String { "product-into-accumulator" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard model.graph.nodes.contains(where: ProductIntoAccumulator.isAccumulator) else { return }
        let c = FusionContext(model)
        let graph = c.graph
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        for (j, acc) in graph.nodes.enumerated() where ProductIntoAccumulator.isAccumulator(acc) {
            guard acc.inputs.count <= 3, let buffer = acc.input(0), let value = acc.input(1), buffer != value,
                  c.soleConsumer(of: buffer) == j, c.soleConsumer(of: value) == j,
                  let i = c.index.producer[value]?.node, replacement[i] == nil, !removed.contains(i) else { continue }
            let p = graph.nodes[i]
            // The node runs where the producer ran, so the buffer and the flag must exist by then.
            let madeBefore = ([buffer] + (acc.input(2).map { [$0] } ?? [])).allSatisfy { (c.index.producer[$0]?.node ?? -1) < i }
            if canonicalDomain(p.domain) == "com.microsoft", p.opType == "GatherGrad", p.inputs.count == 3, p.outputs.count == 1,
               !p.inputs.contains(where: \.isEmpty), !p.inputs.contains(buffer), madeBefore {
                replacement[i] = Node(opType: "GatherGradAccumulator", domain: internalDomain, name: acc.name.isEmpty ? p.name : acc.name,
                                      inputs: [buffer] + p.inputs + (acc.input(2).map { [$0] } ?? []), outputs: acc.outputs,
                                      attributes: ["axis": .int(p.int("axis") ?? 0)])
                removed.insert(j)
                continue
            }
            guard let (product, attributes) = ProductIntoAccumulator.product(p), p.outputs.count == 1,
                  let a = p.input(0), let b = p.input(1), a != buffer, b != buffer else { continue }
            guard madeBefore else { continue }
            var inputs = [buffer, a, b]
            if let flag = acc.input(2) { inputs.append(flag) }
            var attrs = attributes
            attrs["product"] = .string(product)
            replacement[i] = Node(opType: "ProductAccumulator", domain: internalDomain, name: acc.name.isEmpty ? p.name : acc.name,
                                  inputs: inputs, outputs: acc.outputs, attributes: attrs)
            removed.insert(j)
        }
        guard !replacement.isEmpty else { return }
        model.graph.apply(removing: removed, replacing: replacement)
        model.opsetImports[internalDomain] = 1
    }

    static func isAccumulator(_ node: Node) -> Bool {
        canonicalDomain(node.domain) == "com.microsoft" && node.opType == "InPlaceAccumulatorV2"
    }

    /// The product kind and its attributes, for the ops the kernel takes.
    static func product(_ node: Node) -> (String, [String: Attribute])? {
        switch (canonicalDomain(node.domain), node.opType) {
        case ("", "Gemm"):
            // C is ignored with beta 0; otherwise it must be absent (it would be added).
            let beta = node.float("beta") ?? 1
            guard node.input(2) == nil || beta == 0 else { return nil }
            var attributes = node.attributes
            attributes["beta"] = .float(0)
            return ("Gemm", attributes)
        case ("", "MatMul"):
            return ("MatMul", [:])
        case ("com.microsoft", "FusedMatMul"), ("com.microsoft", "TransposeMatMul"):
            guard (node.int("transBatchA") ?? 0) == 0, (node.int("transBatchB") ?? 0) == 0 else { return nil }
            return ("FusedMatMul", node.attributes)
        default:
            return nil
        }
    }
}
