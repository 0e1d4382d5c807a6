/// Keeps the activations of an inference CNN in oneDNN's blocked layout (nChw16c) from one
/// convolution to the next, so no convolution reorders its input and output (as onnxruntime's
/// NchwcTransformer does). Before it, every oneDNN convolution reordered nchw -> nChw16c and back
/// at its boundary (DnnlConv.swift), which cost what the stem gains at batch 32 and made the small
/// 1x1s lose.
///
/// A region of blocked values ([N, ceil(C/16), H, W, 16] float32, the padded lanes zero: the ops
/// of Nchwc.swift; kept only with two or more convolutions, one not 1x1, see `run`) grows from
/// the convolutions it takes: float32 Conv / FusedConv (activation one the epilogue applies, Z of
/// the output's channels), 2-D, group 1, weight a constant (an inference graph: training graphs'
/// weights are inputs). Their outputs are blocked (NchwcConv); a
/// MaxPool / AveragePool (2-D, no indices) of a blocked value is blocked (NchwcMaxPool /
/// NchwcAveragePool), so is a Concat on axis 1 of blocked values of whole blocks (16·k channels
/// each: the blocked tensors concatenated on their axis 1), a GlobalAveragePool of one reads it blocked and writes the plain
/// [N, C, 1, 1] (NchwcGlobalAveragePool). At the edges: a convolution reading a plain value of 16+
/// channels reads ReorderToNchwc of it (fewer: the convolution reads nchw itself, `plain_input`,
/// as oneDNN's kernels do for a stem of 3 channels); a blocked value that any other node, a
/// subgraph or a graph output reads is also written plain by ReorderFromNchwc, under its own
/// name (the blocked value takes a fresh one).
///
/// Only where oneDNN runs AVX-512 convolutions (`DnnlConv.available`; elsewhere the graph stays as
/// it is). Off with `ONNX_TRAIN_DISABLE_PASSES=nchwc`. Run after ConvFusion (its FusedConv epilogue
/// becomes NchwcConv's) and the other fusions.
public struct NchwcLayout: GraphPass {
    public var name: String { "nchwc" }
    public init() {}

    /// What a converted node reads blocked and writes.
    private struct Plan {
        var node: Node
        /// Input slots read blocked, with their channel counts.
        var blockedInputs: [Int: Int]
        /// Output 0 blocked (its channels), or nil (written plain).
        var blockedOutput: Int?
    }

    public func run(_ model: inout Model) throws {
        guard model.graph.nodes.contains(where: { isConv($0) }), DnnlConv.available else { return }
        let c = FusionContext(model)
        let graph = c.graph
        var builder = GraphBuilder(graph)
        // Values read by subgraphs stay plain (their readers cannot be rewired).
        var subgraphReads = Set<String>()
        for n in graph.nodes { subgraphReads.formUnion(GraphExecutor.subgraphReferences(n)) }
        var blocked: [String: Int] = [:]   // value -> its channels, for values written blocked
        var plans: [Int: Plan] = [:]
        for i in c.index.order {
            let node = graph.nodes[i]
            if let plan = convPlan(node, blocked, c) {
                plans[i] = plan
                blocked[node.outputs[0]] = plan.blockedOutput
                continue
            }
            if node.domain.isEmpty, node.opType == "Concat", node.outputs.count == 1, !node.outputs[0].isEmpty, node.int("axis") == 1,
               !node.inputs.isEmpty, node.inputs.allSatisfy({ v in blocked[v].map { $0 % Nchwc.lanes == 0 } ?? false }) {
                // Whole blocks along the channel axis: the blocked tensors concatenated on their axis 1.
                var reads: [Int: Int] = [:]
                for (slot, v) in node.inputs.enumerated() { reads[slot] = blocked[v] }
                let channels = node.inputs.reduce(0) { $0 + (blocked[$1] ?? 0) }
                plans[i] = Plan(node: node, blockedInputs: reads, blockedOutput: channels)
                blocked[node.outputs[0]] = channels
                continue
            }
            guard node.domain.isEmpty, node.inputs.count == 1, let x = node.input(0), let channels = blocked[x], !subgraphReads.contains(x) else { continue }
            switch node.opType {
            case "MaxPool", "AveragePool":
                guard node.outputs.count == 1, !node.outputs[0].isEmpty, let k = node.ints("kernel_shape"), k.count == 2,
                      (node.ints("strides") ?? [1, 1]).count == 2, (node.ints("pads") ?? [0, 0, 0, 0]).count == 4,
                      (node.ints("dilations") ?? [1, 1]).count == 2 else { continue }
                if node.opType == "AveragePool" {
                    // The divisor as Pooling.swift's: the taps inside the input, or with
                    // count_include_pad the whole window (no ceil_mode window past the pads).
                    guard (node.ints("dilations") ?? [1, 1]) == [1, 1],
                          (node.int("count_include_pad") ?? 0) == 0 || (node.int("ceil_mode") ?? 0) == 0 else { continue }
                }
                var n = node
                n.opType = "Nchwc" + node.opType
                n.domain = internalDomain
                n.attributes["storage_order"] = nil
                plans[i] = Plan(node: n, blockedInputs: [0: channels], blockedOutput: channels)
                blocked[node.outputs[0]] = channels
            case "GlobalAveragePool":
                guard node.outputs.count == 1, !node.outputs[0].isEmpty, node.attributes.isEmpty else { continue }
                let n = Node(opType: "NchwcGlobalAveragePool", domain: internalDomain, name: node.name, inputs: node.inputs, outputs: node.outputs,
                             attributes: ["channels": .int(channels)])
                plans[i] = Plan(node: n, blockedInputs: [0: channels], blockedOutput: nil)
            default:
                continue
            }
        }
        // Regions that stay as they were (measured per node, same binary, pass off and on, 2
        // threads): one convolution alone (it gains nothing from the layout: DnnlConv's reorders
        // at its boundary are the region's, and DnnlConv.takes keeps its choice of kernel); only
        // 1x1 convolutions (SE blocks and the pointwise pairs between MobileNet's depthwise
        // convolutions: the edges' reorders cost what the blocked 1x1s save). 3x3 unit-stride
        // convolutions run oneDNN's blocked Winograd (DnnlConv.swift), so a region of them is
        // kept (its direct kernel had lost to our Winograd: ResNet-18 b32 1.18x the time).
        var root = Dictionary(uniqueKeysWithValues: plans.keys.map { ($0, $0) })
        func find(_ i: Int) -> Int {
            var i = i
            while let r = root[i], r != i { root[i] = root[r]; i = root[r] ?? r }
            return i
        }
        for (i, plan) in plans {
            for slot in plan.blockedInputs.keys {
                guard let p = c.index.producer[plan.node.inputs[slot]]?.node, plans[p] != nil else { continue }
                let (a, b) = (find(i), find(p))
                if a != b { root[a] = b }
            }
        }
        var convs: [Int: Int] = [:], wide = Set<Int>()
        for (i, plan) in plans where plan.node.opType == "NchwcConv" {
            let r = find(i), node = graph.nodes[i]
            convs[r, default: 0] += 1
            guard let k = c.constant(node.input(1))?.shape, k.count == 4 else { continue }
            if k[2] * k[3] > 1 { wide.insert(r) }
        }
        func kept(_ r: Int) -> Bool {
            let n = convs[r] ?? 0
            return n >= 2 && wide.contains(r)
        }
        for i in Array(plans.keys) where !kept(find(i)) {
            plans[i] = nil
            for o in graph.nodes[i].outputs { blocked[o] = nil }
        }
        guard !plans.isEmpty else { return }
        // Names: a blocked value gets a fresh name; its plain name is written by a
        // ReorderFromNchwc where something still reads it plain.
        var blockedName: [String: String] = [:]
        for (value, _) in blocked { blockedName[value] = builder.freshName(value + "_nchwc") }
        var plainReaders = Set<String>(graph.outputs.map(\.name)).union(subgraphReads)
        for (i, node) in graph.nodes.enumerated() {
            for (slot, v) in node.inputs.enumerated() where !v.isEmpty && blocked[v] != nil {
                if plans[i]?.blockedInputs[slot] == nil { plainReaders.insert(v) }
            }
        }
        var nodes: [Node] = []
        var toBlocked: [String: String] = [:]
        for i in c.index.order {
            guard var plan = plans[i] else { nodes.append(graph.nodes[i]); continue }
            for (slot, channels) in plan.blockedInputs.sorted(by: { $0.key < $1.key }) {
                let v = plan.node.inputs[slot]
                if let b = blockedName[v] {
                    plan.node.inputs[slot] = b
                } else if let b = toBlocked[v] {
                    plan.node.inputs[slot] = b
                } else {
                    let b = builder.freshName(v + "_nchwc")
                    nodes.append(Node(opType: "ReorderToNchwc", domain: internalDomain, name: builder.freshName("reorder_" + v), inputs: [v], outputs: [b],
                                      attributes: ["channels": .int(channels)]))
                    toBlocked[v] = b
                    plan.node.inputs[slot] = b
                }
            }
            let y = graph.nodes[i].outputs[0]
            if let channels = plan.blockedOutput, let b = blockedName[y] {
                plan.node.outputs[0] = b
                nodes.append(plan.node)
                if plainReaders.contains(y) {
                    nodes.append(Node(opType: "ReorderFromNchwc", domain: internalDomain, name: builder.freshName("reorder_" + y), inputs: [b], outputs: [y],
                                      attributes: ["channels": .int(channels)]))
                }
            } else {
                nodes.append(plan.node)
            }
        }
        var result = builder.graph
        result.nodes = nodes
        result.dropValueInfoOfRemovedValues()
        model.graph = result
        model.opsetImports[internalDomain] = 1
    }

    private func isConv(_ n: Node) -> Bool {
        (n.domain.isEmpty && n.opType == "Conv") || (n.domain == "com.microsoft" && n.opType == "FusedConv")
    }

    /// The NchwcConv for a convolution the region takes.
    private func convPlan(_ node: Node, _ blocked: [String: Int], _ c: FusionContext) -> Plan? {
        guard isConv(node), node.outputs.count == 1, !node.outputs[0].isEmpty, node.inputs.count >= 2,
              let x = node.input(0),
              // X is float32 as W is (Conv's inputs share a type).
              let w = c.constant(node.input(1)), w.dtype == .float32, w.rank == 4, w.shape.allSatisfy({ $0 > 0 }),
              (node.int("group") ?? 1) == 1 else { return nil }
        let m = w.shape[0], channels = w.shape[1]
        if let b = node.input(2), let t = c.dtype(b), t != .float32 { return nil }
        var attributes = node.attributes
        if node.opType == "FusedConv" {
            var parameters: [Float] = []
            if case .floats(let p)? = node.attributes["activation_params"] { parameters = p }
            guard let activation = try? FusedConvActivation(name: node.string("activation") ?? "", parameters: parameters),
                  activation.runsInEpilogue else { return nil }
        }
        var blockedInputs: [Int: Int] = [:]
        var inputs = Array(node.inputs.prefix(3))
        if let z = node.input(3) {
            // Z of the output's M channels: blocked, or [*, M, *, *] (a Z that broadcasts takes
            // NchwcConv's plain path, the values FusedConv gives).
            if let zc = blocked[z] {
                guard zc == m else { return nil }
            } else {
                guard (c.dtype(z) ?? .float32) == .float32, let zs = c.types[z]?.shape, zs.count == 4, zs[1] == .value(m) else { return nil }
            }
            while inputs.count < 3 { inputs.append("") }
            inputs.append(z)
            blockedInputs[3] = m
        }
        if blocked[x] == nil && channels < Nchwc.lanes {
            attributes["plain_input"] = .int(1)
        } else {
            blockedInputs[0] = channels
        }
        attributes["group"] = nil
        return Plan(node: Node(opType: "NchwcConv", domain: internalDomain, name: node.name, inputs: inputs, outputs: node.outputs, attributes: attributes),
                    blockedInputs: blockedInputs, blockedOutput: m)
    }
}
