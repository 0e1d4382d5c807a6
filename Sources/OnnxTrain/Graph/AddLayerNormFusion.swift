/// A LayerNormalization of an Add of two tensors of one shape (a transformer's residual Add and the
/// norm after it: BERT's post-LN blocks, or GPT-2's and ViT's pre-LN blocks, where the sum also
/// goes on as the residual stream) becomes one internal `AddLayerNormalization` node: each row's
/// sum is normalized while it is in cache, instead of an Add's pass over the whole tensor and the
/// norm's pass over the Add's output (onnxruntime's SkipLayerNormalization). The sum stays a value
/// of the graph (the node's second output, under the Add's output name) when anything but the norm
/// reads it. The fused node computes both ops' arithmetic in their order, so the outputs are bit for
/// bit the ones of the ops it replaces.
///
/// Only float32 and float64 Adds without attributes of two values no initializer holds (a bias broadcasts) and whose
/// shapes are not known to differ (type inference does not follow every internal op the passes
/// before write, so a residual's shape is often unknown here: the kernel adds with broadcasting and
/// normalizes the sum, two passes, when the shapes it gets differ), normalized by an opset-17
/// LayerNormalization whose Mean and InvStdDev no one reads (a training graph's gradient reads them:
/// training graphs keep their ops) and whose Scale and B are initializers or graph inputs. Run last:
/// no later pass reads the internal node's types.
public struct AddLayerNormFusion: GraphPass {
    public var name: String { "add-layernorm" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard (model.opset("") ?? 0) >= 17, model.graph.nodes.contains(where: { $0.opType == "LayerNormalization" && $0.domain.isEmpty }) else { return }
        let c = FusionContext(model)
        let graph = c.graph
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        let known: Set<String> = ["axis", "epsilon", "stash_type"]
        for (i, ln) in graph.nodes.enumerated() where ln.domain.isEmpty && ln.opType == "LayerNormalization" {
            guard let x = ln.input(0), let scale = ln.input(1), !ln.outputs.isEmpty, !ln.outputs[0].isEmpty,
                  ln.attributes.keys.allSatisfy({ known.contains($0) }), (ln.int("stash_type") ?? 1) == 1,
                  ln.outputs.dropFirst().allSatisfy({ $0.isEmpty || (c.index.consumers[$0] ?? []).isEmpty && !c.graphOutputs.contains($0) }),
                  let j = c.index.producer[x]?.node, !removed.contains(j), replacement[j] == nil,
                  let add = c.plain(j, "Add", 2), c.isFloat(x) else { continue }
            let bias = ln.inputs.count > 2 && !ln.inputs[2].isEmpty ? ln.inputs[2] : nil
            let params = [scale] + (bias.map { [$0] } ?? [])
            guard params.allSatisfy({ c.index.producer[$0] == nil }), ln.inputs.count <= 3 else { continue }
            let a = add.inputs[0], b = add.inputs[1]
            // A constant operand is a bias (it broadcasts); operands known to differ in shape broadcast.
            guard c.constant(a) == nil, c.constant(b) == nil else { continue }
            if let sa = c.types[a]?.shape, let sb = c.types[b]?.shape, sa != sb || sa.isEmpty { continue }
            // The sum stays a value of the graph when anything but this norm reads it.
            let keepSum = c.soleConsumer(of: x) != i
            var attributes: [String: Attribute] = ["axis": .int(ln.int("axis") ?? -1)]
            if let e = ln.float("epsilon") { attributes["epsilon"] = .float(e) }
            removed.insert(j)
            replacement[i] = Node(opType: "AddLayerNormalization", domain: internalDomain, name: ln.name,
                                  inputs: [a, b, scale] + (bias.map { [$0] } ?? []),
                                  outputs: [ln.outputs[0]] + (keepSum ? [x] : []), attributes: attributes)
        }
        guard !replacement.isEmpty else { return }
        var result = graph
        result.apply(removing: removed, replacing: replacement)
        result.dropValueInfoOfRemovedValues()
        model.graph = result
        model.opsetImports[internalDomain] = 1
    }
}
