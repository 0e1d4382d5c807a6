/// Fusions a session applies before it compiles a graph: Conv with BatchNormalization, Add and
/// an activation; MatMul with its bias Add; Transposes into matrix-product flags. Each leaves the
/// values the graph computes equal up to float rounding, keeps every value that a graph output
/// names or another node reads, and touches only what it can prove (static ranks, constant
/// weights), so training graphs, whose parameters are graph inputs, keep their Conv weights.

/// The facts the fusion passes share: who reads each value, types, and graph outputs.
struct FusionContext {
    let graph: Graph
    let index: GraphIndex
    let types: TypeInference
    let graphOutputs: Set<String>

    init(_ model: Model) {
        graph = model.graph
        index = GraphIndex(model.graph)
        types = TypeInference(graph: model.graph, opsets: model.opsetImports)
        graphOutputs = Set(model.graph.outputs.map(\.name))
    }

    /// The one node that reads `value`, when nothing else (no other node, no graph output) does.
    func soleConsumer(of value: String) -> Int? {
        guard !graphOutputs.contains(value), let users = index.consumers[value], users.count == 1 else { return nil }
        return users[0]
    }

    /// Whether nothing but node `user` reads `value` (so the node producing it may go).
    func onlyRead(_ value: String, by user: Int) -> Bool { soleConsumer(of: value) == user }

    /// The constant tensor named `name` (an initializer no caller can override).
    func constant(_ name: String?) -> Tensor? {
        guard let name, index.isConstant(name) else { return nil }
        return graph.initializers[name]
    }

    func dtype(_ name: String?) -> DType? { name.flatMap { types[$0]?.dtype } }
    func rank(_ name: String?) -> Int? { name.flatMap { types[$0]?.rank } }

    /// A float32 or float64 value (the types the fused kernels compute in).
    func isFloat(_ name: String?) -> Bool { dtype(name) == .float32 || dtype(name) == .float64 }

    /// Node `i` when it is the default-domain `type` with `arity` inputs and one output, none of
    /// them unnamed, and no attribute but those `allowing` names: one op of a function written out
    /// in elementary ops (GELU's). An attribute such as opset 6's `broadcast` changes what it means.
    func plain(_ i: Int?, _ type: String, _ arity: Int, allowing: Set<String> = []) -> Node? {
        guard let i else { return nil }
        let n = graph.nodes[i]
        guard n.domain.isEmpty, n.opType == type, n.inputs.count == arity, n.outputs.count == 1, !n.outputs[0].isEmpty,
              !n.inputs.contains(where: \.isEmpty), n.attributes.keys.allSatisfy(allowing.contains) else { return nil }
        return n
    }

    /// The input of binary node `n` other than `v`, when `n` reads `v` exactly once.
    func other(_ n: Node, _ v: String) -> String? {
        guard n.inputs.count == 2, n.inputs.filter({ $0 == v }).count == 1 else { return nil }
        return n.inputs[0] == v ? n.inputs[1] : n.inputs[0]
    }

    /// Whether `name` is a one-element float constant within float32 rounding of `value`.
    func isConstant(_ name: String?, _ value: Double) -> Bool {
        guard let t = constant(name), t.count == 1, t.dtype.isFloatingPoint, let v = t.scalarDouble() else { return false }
        return abs(v - value) <= 4e-7 * abs(value)
    }
}

extension Graph {
    /// Applies a rewrite: nodes in `removed` go, `replacement` nodes take the place of the node
    /// they are keyed by; initializers no node reads any more (and no output names) are dropped.
    mutating func apply(removing removed: Set<Int>, replacing replacement: [Int: Node]) {
        nodes = nodes.indices.compactMap { i in replacement[i] ?? (removed.contains(i) ? nil : nodes[i]) }
        var read = Set(outputs.map(\.name)).union(inputs.map(\.name))
        for n in nodes { read.formUnion(n.inputs); read.formUnion(GraphExecutor.subgraphReferences(n)) }
        for name in initializerNames where !read.contains(name) { initializers[name] = nil }
        initializerNames = initializerNames.filter { initializers[$0] != nil }
    }

    /// Drops the declared types (value_info) of values no node produces any more: a fusion's
    /// removed intermediates must not keep types a later pass or the executor would trust.
    mutating func dropValueInfoOfRemovedValues() {
        let produced = Set(nodes.flatMap(\.outputs))
        valueInfo = valueInfo.filter { produced.contains($0.name) }
    }
}

/// Conv (+ BatchNormalization or ChannelAffine) (+ Add) (+ activation) as one node.
/// BatchNormalization in inference mode folds into the convolution's weights and bias when all of
/// them are constants (W'[m] = W[m]·s[m], B'[m] = (B[m] − mean[m])·s[m] + beta[m], s = scale /
/// sqrt(var + eps), in float64), and so does a ChannelAffine (`ChannelAffineFusion`: W[m]·scale[m],
/// B[m]·scale[m] + shift[m]), whose activation becomes FusedConv's; a following Add of another tensor and a Relu, LeakyRelu, Sigmoid, Tanh, HardSigmoid
/// or Clip (constant bounds) become com.microsoft FusedConv's Z input and activation, applied in
/// place on the convolution's output. So do Hardswish and Hardsigmoid as ops or written out in
/// elementary ops (`hardActivation`: MobileNetV3's x·relu6(x + 3)/6 and its squeeze-excite gate
/// relu6(x + 3)/6), which the convolution then applies to each tile of its output while it is in
/// cache (`ConvEpilogue`) instead of a pass over the whole output. Only float32 and float64 convolutions.
public struct ConvFusion: GraphPass {
    public var name: String { "conv-fusion" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard model.graph.nodes.contains(where: { $0.domain.isEmpty && $0.opType == "Conv" }) else { return }
        // Phase 1 decides every fusion from the graph as it is; phase 2 makes the folded weights
        // one convolution at a time, dropping each original as soon as its last reader is folded,
        // so the model's weights are not all alive twice (ResNet-18's 45 MB).
        var plans: [Plan] = []
        var removed = Set<Int>()
        var releasable: [String: [Int]] = [:]
        do {
            let c = FusionContext(model)
            let graph = c.graph
            var builder = GraphBuilder(graph)
            for (i, conv) in graph.nodes.enumerated() where conv.domain.isEmpty && conv.opType == "Conv" && !removed.contains(i) {
                guard let x = conv.input(0), let wName = conv.input(1), var y = conv.output(0), c.isFloat(x),
                      conv.outputs.count == 1 else { continue }
                var plan = Plan(conv: i, w: wName, b: conv.input(2))
                // BatchNormalization, or a ChannelAffine with its activation, folded into constant weights.
                if let j = c.soleConsumer(of: y), !removed.contains(j), let next = Optional(graph.nodes[j]), next.input(0) == y,
                   let (map, act) = channelMap(next, dtype: c.dtype(x), c),
                   canFold(map, w: c.constant(wName), b: conv.input(2).map { c.constant($0) }) {
                    let suffix = next.opType == "ChannelAffine" ? "affine" : "bn"
                    plan.fold = (map, builder.freshName("\(wName)_\(suffix)"), builder.freshName("\(conv.input(2) ?? wName)_\(suffix)_bias"))
                    y = next.outputs[0]
                    plan.activation = .standard(act)
                    plan.chain.append(j)
                }
                // Hardswish or Hardsigmoid, as an op or written out: before the Add below, which
                // would take the written-out form's Add of 3 for a Z.
                if plan.activation == .standard(.none), case let (act, nodes, out)? = hardActivation(after: y, removed: removed, dtype: c.dtype(x), rank: c.rank(x), c) {
                    plan.activation = act
                    y = out
                    plan.chain += nodes
                }
                // Add of another tensor: FusedConv's Z (added before the activation, so not after one).
                if plan.activation == .standard(.none), let j = c.soleConsumer(of: y), !removed.contains(j), let add = Optional(graph.nodes[j]),
                   add.domain.isEmpty, add.opType == "Add", add.inputs.count == 2, add.inputs[0] != add.inputs[1], let out = add.output(0) {
                    let other = add.inputs[0] == y ? add.inputs[1] : add.inputs[0]
                    if c.dtype(other) == c.dtype(x) {
                        plan.z = other
                        y = out
                        plan.chain.append(j)
                    }
                }
                if plan.activation == .standard(.none), let j = c.soleConsumer(of: y), !removed.contains(j),
                   let act = activationOf(graph.nodes[j], input: y, dtype: c.dtype(x), c), let out = graph.nodes[j].output(0) {
                    plan.activation = .standard(act)
                    y = out
                    plan.chain.append(j)
                } else if plan.activation == .standard(.none), case let (act, nodes, out)? = hardActivation(after: y, removed: removed, dtype: c.dtype(x),
                                                                                                       rank: c.rank(x), c) {
                    plan.activation = act
                    y = out
                    plan.chain += nodes
                }
                guard !plan.chain.isEmpty else { continue }
                plan.output = y
                removed.insert(i)
                removed.formUnion(plan.chain)
                plans.append(plan)
            }
            // An original weight or bias goes once every node reading it has been folded.
            let folding = Set(plans.filter { $0.fold != nil }.map(\.conv))
            for plan in plans where plan.fold != nil {
                for name in [plan.w] + (plan.b.map { [$0] } ?? []) where !c.graphOutputs.contains(name) {
                    if (c.index.consumers[name] ?? []).allSatisfy(folding.contains) { releasable[name, default: []].append(plan.conv) }
                }
            }
        }
        guard !plans.isEmpty else { return }
        var replacement: [Int: Node] = [:]
        var pending = releasable.mapValues { Set($0) }
        for plan in plans {
            let conv = model.graph.nodes[plan.conv]
            var w = plan.w, b = plan.b
            if let (map, wName, bName) = plan.fold {
                guard let folded = fold(map, w: model.graph.initializers[plan.w], b: plan.b.map { model.graph.initializers[$0] }) else {
                    throw OnnxTrainError(.invalidGraph, "\(conv.label): conv-fusion could not fold the weights it planned to fold")
                }
                model.graph.setInitializer(wName, folded.w)
                model.graph.setInitializer(bName, folded.b)
                for name in [plan.w] + (plan.b.map { [$0] } ?? []) where pending[name] != nil {
                    pending[name]?.remove(plan.conv)
                    if pending[name]?.isEmpty == true { model.graph.initializers[name] = nil }
                }
                (w, b) = (wName, bName)
            }
            var attributes = conv.attributes
            if plan.z == nil && plan.activation == .standard(.none) {
                replacement[plan.chain[plan.chain.count - 1]] = Node(opType: "Conv", name: conv.name, inputs: [conv.inputs[0], w] + (b.map { [$0] } ?? []),
                                                                     outputs: [plan.output], attributes: attributes)
            } else {
                attributes.merge(plan.activation.attributes) { _, new in new }
                replacement[plan.chain[plan.chain.count - 1]] = Node(opType: "FusedConv", domain: "com.microsoft", name: conv.name,
                                                                     inputs: [conv.inputs[0], w, b ?? ""] + (plan.z.map { [$0] } ?? []),
                                                                     outputs: [plan.output], attributes: attributes)
            }
        }
        model.graph.initializerNames.removeAll { model.graph.initializers[$0] == nil }
        model.graph.apply(removing: removed, replacing: replacement)
        model.graph.dropValueInfoOfRemovedValues()
        if replacement.values.contains(where: { $0.domain == "com.microsoft" }) && model.opsetImports["com.microsoft"] == nil {
            model.opsetImports["com.microsoft"] = 1
        }
    }

    /// One convolution's fusion: the nodes after it that go, the map folded into its weights
    /// (with the new weights' and bias's names), the Add's other operand and the activation.
    struct Plan {
        let conv: Int
        let w: String, b: String?
        var chain: [Int] = []
        var fold: (map: ChannelAffine, w: String, b: String)?
        var z: String?
        var activation = FusedConvActivation.standard(.none)
        var output = ""
        init(conv: Int, w: String, b: String?) {
            self.conv = conv
            self.w = w
            self.b = b
        }
    }

    /// The per-channel map (and activation) that `node` applies to its first input, when it is an
    /// inference-mode BatchNormalization or a ChannelAffine with constant parameters.
    func channelMap(_ node: Node, dtype: DType?, _ c: FusionContext) -> (ChannelAffine, ConvActivation)? {
        guard let dtype, node.outputs.filter({ !$0.isEmpty }).count == 1 else { return nil }
        if node.domain.isEmpty && node.opType == "BatchNormalization" {
            guard let channels = c.constant(node.input(1))?.count,
                  let map = ConvFusion.batchNormAffine(node, channels: channels, dtype: dtype, c) else { return nil }
            return (map, .none)
        }
        guard node.domain == internalDomain, node.opType == "ChannelAffine", node.inputs.count == 3,
              let s = c.constant(node.input(1)), let t = c.constant(node.input(2)), s.dtype == dtype, t.dtype == dtype,
              s.rank == 1, s.count == t.count, let scale = try? s.doubles(), let shift = try? t.doubles() else { return nil }
        var params: [Float] = []
        if case .floats(let p)? = node.attributes["activation_params"] { params = p }
        guard let act = try? ConvActivation(name: node.string("activation") ?? "", parameters: params) else { return nil }
        return (ChannelAffine(scale: scale, shift: shift), act)
    }

    /// The per-channel map of an inference-mode BatchNormalization whose scale, bias, mean and
    /// variance are constants of `channels` values each (s = scale / sqrt(var + eps), y = x·s +
    /// bias − mean·s), or nil (training mode, per-activation statistics, not constant, shapes).
    static func batchNormAffine(_ bn: Node, channels: Int, dtype: DType, _ c: FusionContext) -> ChannelAffine? {
        guard bn.domain.isEmpty, bn.opType == "BatchNormalization", bn.outputs.filter({ !$0.isEmpty }).count == 1,
              (bn.int("training_mode") ?? 0) == 0, (bn.int("spatial") ?? 1) == 1, (bn.int("is_test") ?? 1) == 1 else { return nil }
        let params = (1...4).map { c.constant(bn.input($0)) }
        guard params.allSatisfy({ $0 != nil && $0!.dtype == dtype && $0!.count == channels && $0!.rank == 1 }),
              let p = try? params.map({ try $0!.doubles() }) else { return nil }
        let (scale, beta, mean, variance) = (p[0], p[1], p[2], p[3])
        let eps = Double(bn.float("epsilon") ?? 1e-5)
        var map = ChannelAffine(channels: channels)
        for o in 0..<channels {
            let s = scale[o] / (variance[o] + eps).squareRoot()
            map.scale[o] = s
            map.shift[o] = beta[o] - mean[o] * s
        }
        return map
    }

    /// Whether `fold` folds `map` into these weights and bias.
    func canFold(_ map: ChannelAffine, w: Tensor?, b: Tensor??) -> Bool {
        guard let w, w.dtype == .float32 || w.dtype == .float64, w.rank >= 3, w.shape[0] == map.scale.count else { return false }
        switch b {
        case .none: return true
        case .some(.none): return false  // a bias that is not a constant
        case .some(.some(let t)): return t.dtype == w.dtype && t.count == w.shape[0]
        }
    }

    /// New weights and bias with the per-channel map folded in (W'[m] = W[m]·scale[m],
    /// B'[m] = B[m]·scale[m] + shift[m], in float64, rounded once), or nil when the weights or
    /// bias are not constants of a float type with one output channel per map entry. Written
    /// straight into the new tensor, so only it and the original weights are alive.
    func fold(_ map: ChannelAffine, w: Tensor?, b: Tensor??) -> (w: Tensor, b: Tensor)? {
        guard canFold(map, w: w, b: b), let w else { return nil }
        let m = w.shape[0]
        guard let bias = b.map({ try? $0!.doubles() }) ?? [Double](repeating: 0, count: m), bias.count == m else { return nil }
        let per = w.count / max(m, 1)
        var newW = Tensor(uninitialized: w.dtype, shape: w.shape)
        func scaleRows<T: BinaryFloatingPoint>(_: T.Type) {
            w.uncheckedBufferPointer(as: T.self) { src in
                newW.uncheckedMutableBufferPointer(as: T.self) { dst in
                    for o in 0..<m {
                        let s = map.scale[o]
                        for k in o * per..<(o + 1) * per { dst[k] = T(Double(src[k]) * s) }
                    }
                }
            }
        }
        if w.dtype == .float32 { scaleRows(Float.self) } else { scaleRows(Double.self) }
        let newB = (0..<m).map { bias[$0] * map.scale[$0] + map.shift[$0] }
        return (newW, floatTensor(w.dtype, shape: [m], newB))
    }

    /// The Hardswish or Hardsigmoid that reads `y` and nothing else does, as FusedConv's activation,
    /// with the nodes it takes and the value it writes:
    ///   * HardSwish(y) (any type the kernel computes);
    ///   * Mul(y, HardSigmoid(y)) (HardSwish before opset 14);
    ///   * Div(Clip(Add(y, s), lo, hi), d), Div(Mul(y, Clip(Add(y, s), lo, hi)), d) and
    ///     Mul(y, Div(Clip(Add(y, s), lo, hi), d)) with one-element constants (PyTorch's relu6(x + 3) / 6
    ///     forms; float32, as the constants travel as float32 activation_params).
    /// Each value between the nodes is read only by the next (y by the Add or HardSigmoid and the Mul).
    func hardActivation(after y: String, removed: Set<Int>, dtype: DType?, rank: Int?, _ c: FusionContext)
        -> (FusedConvActivation, [Int], String)? {
        guard !c.graphOutputs.contains(y), let users = c.index.consumers[y], !users.contains(where: removed.contains) else { return nil }
        let graph = c.graph
        /// A one-element constant of y's type that broadcasts without growing y.
        func scalar(_ name: String) -> Double? {
            guard let t = c.constant(name), t.count == 1, t.dtype == dtype, t.rank <= (rank ?? 0), let v = t.scalarDouble() else { return nil }
            return v
        }
        /// The Mul among `users` that reads y and `other` once each.
        func mul(_ other: String) -> Int? {
            users.first { k in
                guard let m = c.plain(k, "Mul", 2) else { return false }
                return Set(m.inputs) == [y, other] && y != other
            }
        }
        if users.count == 1, let n = c.plain(users[0], "HardSwish", 1), n.inputs[0] == y {
            return (.hardSwish, [users[0]], n.outputs[0])
        }
        guard users.count <= 2, Set(users).count == users.count else { return nil }
        // Mul(y, HardSigmoid(y)).
        if users.count == 2, let h = users.first(where: { c.plain($0, "HardSigmoid", 1, allowing: ["alpha", "beta"]) != nil }),
           graph.nodes[h].inputs[0] == y, let m = mul(graph.nodes[h].outputs[0]), c.onlyRead(graph.nodes[h].outputs[0], by: m) {
            let n = graph.nodes[h]
            return (.hardSigmoidTimesInput(alpha: Double(n.float("alpha") ?? 0.2), beta: Double(n.float("beta") ?? 0.5)), [h, m], graph.nodes[m].outputs[0])
        }
        // The written-out forms: float32, Add(y, s) then a Clip with constant bounds.
        guard dtype == .float32, let a = users.first(where: { c.plain($0, "Add", 2) != nil }), let add = c.plain(a, "Add", 2),
              let sName = c.other(add, y), let shift = scalar(sName),
              let k = c.soleConsumer(of: add.outputs[0]), !removed.contains(k), graph.nodes[k].domain.isEmpty, graph.nodes[k].opType == "Clip",
              case .clip(let low, let high)? = activationOf(graph.nodes[k], input: add.outputs[0], dtype: dtype, c),
              let clipped = graph.nodes[k].output(0), let next = c.soleConsumer(of: clipped), !removed.contains(next) else { return nil }
        /// Div(value, d) with a constant d: the divisor.
        func divisor(_ i: Int, of value: String) -> Double? {
            guard let d = c.plain(i, "Div", 2), d.inputs[0] == value, d.inputs[1] != value else { return nil }
            return scalar(d.inputs[1])
        }
        func ratio(_ divisor: Double, _ form: FusedConvActivation.ClipRatio.Form) -> FusedConvActivation {
            .clipRatio(.init(shift: shift, low: low, high: high, divisor: divisor, form: form))
        }
        if users.count == 1, let d = divisor(next, of: clipped) {
            return (ratio(d, .ratio), [a, k, next], graph.nodes[next].outputs[0])
        }
        guard users.count == 2 else { return nil }
        if let m = mul(clipped), m == next, let j = c.soleConsumer(of: graph.nodes[m].outputs[0]), !removed.contains(j),
           let d = divisor(j, of: graph.nodes[m].outputs[0]) {
            return (ratio(d, .productRatio), [a, k, m, j], graph.nodes[j].outputs[0])
        }
        if let d = divisor(next, of: clipped), let m = mul(graph.nodes[next].outputs[0]), c.onlyRead(graph.nodes[next].outputs[0], by: m) {
            return (ratio(d, .timesRatio), [a, k, next, m], graph.nodes[m].outputs[0])
        }
        return nil
    }

    /// The FusedConv activation for `node` applied to `input`, or nil if it is not one.
    func activationOf(_ node: Node, input: String, dtype: DType?, _ c: FusionContext) -> ConvActivation? {
        guard node.domain.isEmpty, node.input(0) == input, node.outputs.count == 1 else { return nil }
        switch node.opType {
        case "Relu": return .relu
        case "Sigmoid": return .sigmoid
        case "Tanh": return .tanh
        case "LeakyRelu": return .leakyRelu(alpha: Double(node.float("alpha") ?? 0.01))
        case "HardSigmoid": return .hardSigmoid(alpha: Double(node.float("alpha") ?? 0.2), beta: Double(node.float("beta") ?? 0.5))
        case "Clip":
            // Bounds travel as float32 activation_params: only float32 Clips fuse.
            guard dtype == .float32 else { return nil }
            var lo = -Double.infinity, hi = Double.infinity
            if node.inputs.count > 1 || node.attributes["min"] == nil && node.attributes["max"] == nil {
                for (k, name) in node.inputs.enumerated().dropFirst() where !name.isEmpty {
                    guard let t = c.constant(name), t.count == 1, let v = t.scalarDouble() else { return nil }
                    if k == 1 { lo = v } else { hi = v }
                }
            } else {
                lo = node.float("min").map(Double.init) ?? lo
                hi = node.float("max").map(Double.init) ?? hi
            }
            return .clip(min: lo, max: hi)
        default: return nil
        }
    }
}

/// MatMul of two 2-D values followed by an Add of a bias that broadcasts to the product's
/// [M, N] (a row [N] or [1, N], a scalar, or the whole [M, N]) becomes one Gemm, whose GEMM
/// accumulates onto the bias instead of a second pass over the product. A batch of rows
/// [..., M, K] (static rank 3 or more) times a 2-D weight [K, N] plus a bias [N] (a transformer's
/// Linear layer) becomes one internal `MatMulBias` in the same way.
public struct MatMulAddToGemm: GraphPass {
    public var name: String { "matmul-add-to-gemm" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard (model.opset("") ?? 0) >= 7, model.graph.nodes.contains(where: { $0.domain.isEmpty && $0.opType == "MatMul" }) else { return }
        let c = FusionContext(model)
        let graph = c.graph
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        for (i, mm) in graph.nodes.enumerated() where mm.domain.isEmpty && mm.opType == "MatMul" {
            guard let a = mm.input(0), let b = mm.input(1), let y = mm.output(0), let rank = c.rank(a), rank >= 2, c.rank(b) == 2, c.isFloat(a),
                  c.dtype(b) == c.dtype(a), let j = c.soleConsumer(of: y), replacement[j] == nil, !removed.contains(i) else { continue }
            let add = graph.nodes[j]
            guard add.domain.isEmpty, add.opType == "Add", add.inputs.count == 2, add.inputs[0] != add.inputs[1], let out = add.output(0) else { continue }
            let bias = add.inputs[0] == y ? add.inputs[1] : add.inputs[0]
            // The bias may be another MatMul's product, which then must stay a MatMul.
            if let p = c.index.producer[bias]?.node, removed.contains(p) || replacement[p] != nil { continue }
            guard c.dtype(bias) == c.dtype(a), let biasShape = c.types[bias]?.staticShape,
                  let n = c.types[b]?.staticShape?.last else { continue }
            if rank > 2 {
                // Rows times a weight: only a bias of one row of N, which adds to every row.
                guard biasShape == [n] else { continue }
                removed.insert(i)
                replacement[j] = Node(opType: "MatMulBias", domain: internalDomain, name: mm.name, inputs: [a, b, bias], outputs: [out])
                continue
            }
            let fits: Bool
            switch biasShape.count {
            case 0: fits = true
            case 1: fits = biasShape[0] == n || biasShape[0] == 1
            case 2: fits = biasShape[0] == 1 && (biasShape[1] == n || biasShape[1] == 1) || c.types[y]?.staticShape == biasShape
            default: fits = false
            }
            guard fits else { continue }
            removed.insert(i)
            replacement[j] = Node(opType: "Gemm", name: mm.name, inputs: [a, b, bias], outputs: [out])
        }
        guard !replacement.isEmpty else { return }
        model.graph.apply(removing: removed, replacing: replacement)
        model.graph.dropValueInfoOfRemovedValues()
        if replacement.values.contains(where: { $0.domain == internalDomain }) { model.opsetImports[internalDomain] = 1 }
    }
}

/// A Transpose that swaps the last two axes of a MatMul or FusedMatMul operand, or a 2-D
/// Transpose feeding Gemm (or the weight of an internal MatMulBias), becomes the product's
/// transA/transB flag (MatMul turns into com.microsoft FusedMatMul): BLAS reads the operand
/// transposed instead of a copy being made.
/// The Transpose stays when another node or a graph output reads its result.
///
/// A 2-D Transpose of a 2-D product's result that nothing else reads becomes the product with its
/// operands swapped, (op(A)·op(B))ᵀ = op(B)ᵀ·op(A)ᵀ: Gemm without C and FusedMatMul swap
/// A and B and turn transA = !transB, transB = !transA; MatMul becomes FusedMatMul with both flags.
/// A weight gradient of a Linear layer stored [out, in] is made [in, out] and transposed back; the
/// product then writes it [out, in] directly (and `ProductIntoAccumulator` can write it into the
/// accumulation buffer).
public struct TransposeIntoMatMul: GraphPass {
    public var name: String { "transpose-into-matmul" }
    public init() {}

    public func run(_ model: inout Model) throws {
        try foldOperandTransposes(&model)
        try foldResultTransposes(&model)
    }

    /// The 2-D Transposes of products' results, read by nothing else, as swapped operands.
    private func foldResultTransposes(_ model: inout Model) throws {
        guard model.graph.nodes.contains(where: { $0.domain.isEmpty && $0.opType == "Transpose" }) else { return }
        let c = FusionContext(model)
        let graph = c.graph
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        var addsMicrosoft = false
        for (j, t) in graph.nodes.enumerated() where t.domain.isEmpty && t.opType == "Transpose" {
            guard let y = t.input(0), let out = t.output(0), t.outputs.count == 1, c.rank(y) == 2, (t.ints("perm") ?? [1, 0]) == [1, 0],
                  let i = c.index.producer[y]?.node, c.onlyRead(y, by: j), replacement[i] == nil, !removed.contains(i) else { continue }
            let p = graph.nodes[i]
            // Gemm and FusedMatMul take the same types with their operands swapped; a MatMul becomes
            // FusedMatMul, which computes floats only.
            guard p.outputs.count == 1, p.inputs.count >= 2, let a = p.input(0), let b = p.input(1),
                  c.rank(a) == 2, c.rank(b) == 2, p.opType != "MatMul" || (c.isFloat(a) && c.dtype(b) == c.dtype(a)) else { continue }
            let transA = p.int("transA") ?? 0, transB = p.int("transB") ?? 0
            var swapped = p
            switch (canonicalDomain(p.domain), p.opType) {
            case ("", "Gemm"):
                // Without C the result is the product alone.
                guard p.inputs.count == 2 else { continue }
                swapped.inputs = [b, a]
            case ("com.microsoft", "FusedMatMul"):
                guard (p.int("transBatchA") ?? 0) == 0, (p.int("transBatchB") ?? 0) == 0, p.inputs.count == 2 else { continue }
                swapped.inputs = [b, a]
            case ("", "MatMul"):
                guard p.inputs.count == 2 else { continue }
                swapped = Node(opType: "FusedMatMul", domain: "com.microsoft", name: p.name, inputs: [b, a], outputs: [],
                               attributes: ["alpha": .float(1)])
                addsMicrosoft = true
            default:
                continue
            }
            swapped.attributes["transA"] = .int(transB == 0 ? 1 : 0)
            swapped.attributes["transB"] = .int(transA == 0 ? 1 : 0)
            swapped.outputs = [out]
            replacement[i] = swapped
            removed.insert(j)
        }
        guard !replacement.isEmpty else { return }
        model.graph.apply(removing: removed, replacing: replacement)
        model.graph.dropValueInfoOfRemovedValues()
        if addsMicrosoft && model.opsetImports["com.microsoft"] == nil { model.opsetImports["com.microsoft"] = 1 }
    }

    /// Transposes of products' operands as transA/transB flags.
    private func foldOperandTransposes(_ model: inout Model) throws {
        guard model.graph.nodes.contains(where: { $0.domain.isEmpty && $0.opType == "Transpose" }) else { return }
        let c = FusionContext(model)
        let graph = c.graph
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        var foldedReaders: [Int: Set<Int>] = [:]
        var addsMicrosoft = false
        for (i, node) in graph.nodes.enumerated() {
            let isMatMul = node.domain.isEmpty && node.opType == "MatMul"
            let isFused = node.domain == "com.microsoft" && node.opType == "FusedMatMul"
                && (node.int("transBatchA") ?? 0) == 0 && (node.int("transBatchB") ?? 0) == 0
            let isGemm = node.domain.isEmpty && node.opType == "Gemm"
            let isBias = node.domain == internalDomain && node.opType == "MatMulBias"
            // A MatMul becomes FusedMatMul, which computes floats only; the others take the flags
            // for every type they take.
            guard isMatMul || isFused || isGemm || isBias, node.inputs.count >= 2, !isMatMul || c.isFloat(node.input(0)) else { continue }
            var updated = node
            var changed = false
            for (k, flag) in isBias ? [(1, "transB")] : [(0, "transA"), (1, "transB")] {
                guard let operand = node.input(k), let p = c.index.producer[operand]?.node, !removed.contains(p) else { continue }
                let t = graph.nodes[p]
                guard t.domain.isEmpty, t.opType == "Transpose", let source = t.input(0), let r = c.rank(source), r >= 2,
                      isGemm || isBias ? r == 2 : true else { continue }
                let perm = t.ints("perm") ?? Array((0..<r).reversed())
                guard perm == Array(0..<(r - 2)) + [r - 1, r - 2] else { continue }
                updated.inputs[k] = source
                updated.attributes[flag] = .int((node.int(flag) ?? 0) == 0 ? 1 : 0)
                changed = true
                // The Transpose goes when this product was its only reader (reading it once).
                if c.onlyRead(operand, by: i) && !(node.inputs[0] == operand && node.inputs[1] == operand) { removed.insert(p) }
                foldedReaders[p, default: []].insert(i)
            }
            guard changed else { continue }
            if isMatMul {
                updated.opType = "FusedMatMul"
                updated.domain = "com.microsoft"
                updated.attributes["alpha"] = .float(1)
                addsMicrosoft = true
            }
            replacement[i] = updated
        }
        guard !replacement.isEmpty else { return }
        // A Transpose every reader of which now reads its source (a Linear weight read transposed
        // by the forward product and by the backward one) goes too.
        for (p, readers) in foldedReaders where !removed.contains(p) {
            guard let out = graph.nodes[p].output(0), !c.graphOutputs.contains(out),
                  (c.index.consumers[out] ?? []).allSatisfy({ readers.contains($0) && replacement[$0].map { !$0.inputs.contains(out) } ?? false })
            else { continue }
            removed.insert(p)
        }
        model.graph.apply(removing: removed, replacing: replacement)
        if addsMicrosoft && model.opsetImports["com.microsoft"] == nil { model.opsetImports["com.microsoft"] = 1 }
    }
}

/// Transposes of rank 3 and more around batched products (attention's heads: Q, K and V
/// [B, T, H, D] read as [B, H, T, D] or [B, H, D, T], the context [B, H, T, D] written back as
/// [B, T, H, D], and the same in the backward pass) become an internal `StridedMatMul`, whose GEMMs
/// read and write the stored tensors at their strides instead of copies. An operand's Transpose
/// goes when every reader is such a product; a result's Transpose when it is the product's only
/// reader. Taken for MatMul and FusedMatMul (no batch transposes) of operands of one rank,
/// and permutations that keep the stored last axis among the matrix axes (other layouts would
/// copy inside the kernel anyway). Swaps of the last two axes alone are `TransposeIntoMatMul`'s.
public struct StridedMatMulFusion: GraphPass {
    public var name: String { "strided-matmul" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard model.graph.nodes.contains(where: { $0.domain.isEmpty && $0.opType == "Transpose" }) else { return }
        let c = FusionContext(model)
        let graph = c.graph
        func isProduct(_ n: Node) -> Bool {
            let matMul = n.domain.isEmpty && n.opType == "MatMul"
            let fused = canonicalDomain(n.domain) == "com.microsoft" && n.opType == "FusedMatMul"
                && (n.int("transBatchA") ?? 0) == 0 && (n.int("transBatchB") ?? 0) == 0
            // Any element type: the kernel computes floats in place and others as the node did.
            guard matMul || fused, n.inputs.count == 2, n.outputs.count == 1, let a = n.input(0), let b = n.input(1),
                  let r = c.rank(a), r >= 3, c.rank(b) == r else { return false }
            return true
        }
        /// A Transpose's permutation when the product can read it (`result` false: the stored last
        /// axis becomes one of the logical matrix axes) or write it (`result`: the stored last axis
        /// is one of them) in place: rank 3 or more, not the identity or a swap of the last two.
        func foldablePerm(_ t: Node, rankOf value: String?, result: Bool) -> [Int]? {
            guard t.domain.isEmpty, t.opType == "Transpose", t.inputs.count == 1, t.outputs.count == 1, let r = c.rank(value), r >= 3 else { return nil }
            let perm = t.ints("perm") ?? Array((0..<r).reversed())
            guard perm.count == r, Set(perm) == Set(0..<r), perm != Array(0..<r), perm != Array(0..<(r - 2)) + [r - 1, r - 2] else { return nil }
            let fits = result ? perm[r - 1] >= r - 2 : (perm[r - 1] == r - 1 || perm[r - 2] == r - 1)
            return fits ? perm : nil
        }
        var products: [Int: Node] = [:]
        for (i, n) in graph.nodes.enumerated() where isProduct(n) { products[i] = n }
        guard !products.isEmpty else { return }
        func strided(_ n: Node) -> Node {
            var attributes: [String: Attribute] = ["transA": .int(n.int("transA") ?? 0), "transB": .int(n.int("transB") ?? 0),
                                                   "alpha": .float(n.float("alpha") ?? 1)]
            if n.opType == "MatMul" { attributes["alpha"] = .float(1) }
            return Node(opType: "StridedMatMul", domain: internalDomain, name: n.name, inputs: n.inputs, outputs: n.outputs, attributes: attributes)
        }
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        // Operands: a Transpose all of whose readers are products.
        for (j, t) in graph.nodes.enumerated() {
            guard let out = t.output(0), let source = t.input(0), let perm = foldablePerm(t, rankOf: source, result: false), !c.graphOutputs.contains(out),
                  let readers = c.index.consumers[out], !readers.isEmpty, readers.allSatisfy({ products[$0] != nil }) else { continue }
            for i in readers {
                let original = products[i]!
                var n = replacement[i] ?? strided(original)
                for (k, key) in [(0, "permA"), (1, "permB")] where original.inputs[k] == out {
                    n.inputs[k] = source
                    n.attributes[key] = .ints(perm)
                }
                replacement[i] = n
            }
            removed.insert(j)
        }
        // Results: a product read by nothing but one Transpose.
        for (i, original) in products {
            guard let y = original.output(0), let j = c.soleConsumer(of: y), !removed.contains(j) else { continue }
            let t = graph.nodes[j]
            guard let out = t.output(0), let perm = foldablePerm(t, rankOf: y, result: true) else { continue }
            var n = replacement[i] ?? strided(original)
            n.attributes["permY"] = .ints(perm)
            n.outputs = [out]
            replacement[i] = n
            removed.insert(j)
        }
        guard !replacement.isEmpty else { return }
        model.graph.apply(removing: removed, replacing: replacement)
        model.graph.dropValueInfoOfRemovedValues()
        model.opsetImports[internalDomain] = 1
    }
}

/// Chains of elementwise ops (Add, Sub, Mul, Div, Clip with scalar bounds and the unary ops
/// `ElementwiseChainKernel` knows) whose values between the ops have no other reader become one
/// ElementwiseChain node of onnx-train's internal domain: one pass over the elements instead of
/// one per op (Hardswish written out, Add 3 / Clip 0..6 / Mul / Div 6, is one); a last-axis
/// Softmax that alone reads the chain's value joins it. A chain stops before a step that
/// broadcasts its value up to a larger result. Only float32 and float64 chains whose
/// every value's element type is known; valid in training graphs too, as no value another node
/// or a graph output reads is removed.
public struct ElementwiseFusion: GraphPass {
    public var name: String { "elementwise-fusion" }
    public var registry: OpRegistry
    public init(registry: OpRegistry = .standard) { self.registry = registry }

    public func run(_ model: inout Model) throws {
        guard (model.opset("") ?? 0) >= 7 else { return }
        let c = FusionContext(model)
        let graph = c.graph
        var mutated = Set<String>()
        for node in graph.nodes {
            for k in registry.mutatedInputs(domain: node.domain, opType: node.opType) { if let v = node.input(k) { mutated.insert(v) } }
        }
        let opset = model.opset("") ?? 0
        /// A Clip (opset 11+) with both bounds given as scalars of known shape: its min and max
        /// inputs become operands of the chain (Hardswish and Hardsigmoid written out as clamps).
        func boundedClip(_ node: Node) -> Bool {
            guard node.opType == "Clip", opset >= 11, node.inputs.count == 3 else { return false }
            return node.inputs.dropFirst().allSatisfy { c.types[$0]?.staticShape.map(Tensor.elementCount) == 1 }
        }
        /// A ClipGradient (`ClipGradientFusion`) with both bounds and a fill of one element: the
        /// chain's value is its dY, x an operand.
        func clipGradient(_ node: Node) -> DType? {
            guard node.domain == internalDomain, node.opType == "ClipGradient", node.inputs.count == 5, node.outputs.count == 1,
                  !node.inputs.contains(where: \.isEmpty), !node.inputs.contains(where: { mutated.contains($0) }),
                  node.inputs[2...].allSatisfy({ c.types[$0]?.staticShape.map(Tensor.elementCount) == 1 }),
                  let dtype = c.dtype(node.inputs[0]), dtype == .float32 || dtype == .float64,
                  node.inputs.allSatisfy({ c.dtype($0) == dtype }) else { return nil }
            return dtype
        }
        func fusible(_ node: Node) -> DType? {
            if node.domain == internalDomain { return clipGradient(node) }
            guard node.domain.isEmpty, node.outputs.count == 1, let out = node.output(0) else { return nil }
            let binary = ElementwiseChainKernel.binaryOps.contains(node.opType), clip = boundedClip(node)
            guard binary || clip || ElementwiseChainKernel.unaryOps.contains(node.opType), node.inputs.count == (binary ? 2 : clip ? 3 : 1),
                  node.attributes.keys.allSatisfy({ $0 == "alpha" && node.opType == "LeakyRelu" }),
                  let dtype = c.dtype(out), dtype == .float32 || dtype == .float64,
                  node.inputs.allSatisfy({ !$0.isEmpty && c.dtype($0) == dtype && !mutated.contains($0) }) else { return nil }
            return dtype
        }
        /// A Softmax of `value` alone along its last axis, in `dtype` (since opset 13 along one axis;
        /// before, over the axes from `axis` on, the same rows when `axis` is the last). Axis -1
        /// needs no known rank (GPT-2's scores have none after its computed reshapes).
        func lastAxisSoftmax(_ node: Node, reading value: String, _ dtype: DType) -> Bool {
            guard node.domain.isEmpty, node.opType == "Softmax", node.inputs == [value], node.outputs.count == 1,
                  let out = node.output(0), c.dtype(out) == dtype, node.attributes.keys.allSatisfy({ $0 == "axis" }) else { return false }
            let axis = node.int("axis") ?? (opset >= 13 ? -1 : 1)
            if axis == -1 { return true }
            guard let rank = c.rank(value), rank >= 1 else { return false }
            return (axis < 0 ? axis + rank : axis) == rank - 1
        }
        /// Whether `value` broadcasts up to a larger `result` (a squeeze-excite scale [N, C, 1, 1]
        /// times [N, C, H, W]): the chain stops before that step, as every step before it would
        /// run once per element of the larger result, where alone it runs once per element of
        /// `value` and the broadcasting product is one pass anyway.
        /// Shapes with a symbolic batch ([batch, C, 1, 1] times [batch, C, H, W], as exported
        /// models have) are compared axis by axis: an axis of 1 against a known larger one grows.
        func grows(_ value: String, to result: String) -> Bool {
            if let a = c.types[value]?.staticShape, let b = c.types[result]?.staticShape {
                return Tensor.elementCount(a) < Tensor.elementCount(b)
            }
            guard let a = c.types[value]?.shape, let b = c.types[result]?.shape, a.count <= b.count else { return false }
            return b.indices.contains { k in
                guard case .value(let size) = b[k], size > 1 else { return false }
                let j = k - (b.count - a.count)
                return j < 0 || a[j] == .value(1)
            }
        }
        var claimed = Set<Int>(), removed = Set<Int>(), replacement: [Int: Node] = [:]
        var builder = GraphBuilder(graph)
        for i in c.index.order where !claimed.contains(i) {
            let first = graph.nodes[i]
            guard let dtype = fusible(first) else { continue }
            var chain = [i]
            var value = first.outputs[0]
            while let j = c.soleConsumer(of: value), !claimed.contains(j), !chain.contains(j), fusible(graph.nodes[j]) == dtype,
                  graph.nodes[j].inputs.filter({ $0 == value }).count == 1, !grows(value, to: graph.nodes[j].outputs[0]),
                  graph.nodes[j].domain.isEmpty || graph.nodes[j].inputs[0] == value {
                chain.append(j)
                value = graph.nodes[j].outputs[0]
            }
            // A Softmax along the last axis that alone reads the chain's value (attention scores
            // scaled and masked) joins it, even after a single op.
            var softmax: Int?
            if let j = c.soleConsumer(of: value), !claimed.contains(j), !chain.contains(j), lastAxisSoftmax(graph.nodes[j], reading: value, dtype) {
                softmax = j
            }
            guard chain.count >= 2 || softmax != nil else { continue }
            claimed.formUnion(chain)
            var inputs = [first.inputs[0]]
            var ops: [String] = [], operands: [Int] = [], left: [Int] = [], alphas: [Float] = []
            var carried = ""
            for (position, k) in chain.enumerated() {
                let node = graph.nodes[k]
                ops.append(node.opType)
                alphas.append(node.opType == "LeakyRelu" ? node.float("alpha") ?? 0.01 : 0)
                if node.domain == internalDomain {
                    // ClipGradient: the chain's value is dY; x, min, max and fill follow each other.
                    inputs.append(contentsOf: node.inputs.dropFirst())
                    operands.append(inputs.count - 4)
                    left.append(1)
                } else if node.opType == "Clip" {
                    // The bounds follow each other: the step's operand is min, the next input max.
                    inputs.append(contentsOf: node.inputs.dropFirst())
                    operands.append(inputs.count - 2)
                    left.append(1)
                } else if node.inputs.count == 2 {
                    // The first node's left input starts the chain; later nodes read the carried value.
                    let chainLeft = position == 0 || node.inputs[0] == carried
                    inputs.append(chainLeft ? node.inputs[1] : node.inputs[0])
                    operands.append(inputs.count - 1)
                    left.append(chainLeft ? 1 : 0)
                } else {
                    operands.append(-1)
                    left.append(1)
                }
                carried = node.outputs[0]
            }
            var attributes: [String: Attribute] = ["ops": .strings(ops), "operands": .ints(operands), "chain_left": .ints(left), "alphas": .floats(alphas)]
            if let softmax {
                chain.append(softmax)
                claimed.insert(softmax)
                value = graph.nodes[softmax].outputs[0]
                attributes["softmax"] = .int(1)
            }
            let last = chain[chain.count - 1]
            removed.formUnion(chain)
            replacement[last] = Node(opType: "ElementwiseChain", domain: internalDomain,
                                     name: builder.freshName("fused_" + (first.name.isEmpty ? first.opType : first.name)),
                                     inputs: inputs, outputs: [value], attributes: attributes)
        }
        guard !replacement.isEmpty else { return }
        model.graph.apply(removing: removed, replacing: replacement)
        model.graph.dropValueInfoOfRemovedValues()
        model.opsetImports[internalDomain] = 1
    }
}

/// Pow(x, 2) and Pow(x, 3) with a constant scalar exponent become Mul(x, x) and
/// Mul(Mul(x, x), x): a GELU written out (GPT-2's `0.044715 * x^3`) otherwise calls powf for
/// every element, a fifth of GPT-2 tiny's inference time. onnxruntime's Pow computes these
/// exponents by multiplying too. x·x is exactly powf(x, 2) (both round the exact square once);
/// the cube rounds twice, within an ulp of powf's. Float32 and float64 bases only (a half base
/// would round after each product).
public struct PowerToMul: GraphPass {
    public var name: String { "pow-to-mul" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard (model.opset("") ?? 0) >= 7, model.graph.nodes.contains(where: { $0.domain.isEmpty && $0.opType == "Pow" }) else { return }
        let c = FusionContext(model)
        var taken = Set(model.graph.nodes.flatMap(\.outputs)).union(model.graph.inputs.map(\.name)).union(model.graph.initializerNames)
        var nodes: [Node] = []
        var changed = false
        for node in model.graph.nodes {
            guard node.domain.isEmpty, node.opType == "Pow", node.inputs.count == 2, let x = node.input(0), let y = node.output(0),
                  c.isFloat(x), let e = c.constant(node.input(1)), e.count == 1, e.dtype.isFloatingPoint || e.dtype.isInteger,
                  e.rank == 0 || (c.rank(x) ?? 0) >= e.rank, let power = e.scalarDouble(), power == 2 || power == 3 else {
                nodes.append(node)
                continue
            }
            changed = true
            if power == 2 {
                nodes.append(Node(opType: "Mul", name: node.name, inputs: [x, x], outputs: [y]))
                continue
            }
            var square = y + "/square"
            while taken.contains(square) { square += "_" }
            taken.insert(square)
            nodes.append(Node(opType: "Mul", name: node.name + "/square", inputs: [x, x], outputs: [square]))
            nodes.append(Node(opType: "Mul", name: node.name, inputs: [square, x], outputs: [y]))
        }
        guard changed else { return }
        model.graph.nodes = nodes
        model.graph.apply(removing: [], replacing: [:])
    }
}

/// Clip's gradient as the rule writes it, Where(And(Not(Less(x, min)), Not(Greater(x, max))), dY,
/// 0) (or with one bound: Where(Not(Less(x, min)), dY, 0)), becomes one ClipGradient node of
/// onnx-train's internal domain: one pass over x and dY instead of six passes and four bool
/// tensors (a tenth of MobileNetV3-Small's training step, where every Hardswish and Hardsigmoid is
/// written out with a Clip). The same selection per element, so the same values, NaN included (a
/// NaN x passes dY, as Not(Less) and Not(Greater) are both true), broadcast as those ops
/// broadcast. Only float32 and float64, x of the type of dY.
public struct ClipGradientFusion: GraphPass {
    public var name: String { "clip-gradient-fusion" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard (model.opset("") ?? 0) >= 9, model.graph.nodes.contains(where: { $0.domain.isEmpty && $0.opType == "Where" }) else { return }
        let c = FusionContext(model)
        let graph = c.graph
        /// `value` = Not(Less(x, bound)) (lower) or Not(Greater(x, bound)) (upper), each value read
        /// only by the next node: x, the bound, which one, and the two nodes.
        func bound(_ value: String, readBy user: Int) -> (x: String, bound: String, lower: Bool, nodes: [Int])? {
            guard c.onlyRead(value, by: user), let n = c.index.producer[value]?.node else { return nil }
            let not = graph.nodes[n]
            guard not.domain.isEmpty, not.opType == "Not", not.inputs.count == 1, let compared = not.input(0), c.onlyRead(compared, by: n),
                  let k = c.index.producer[compared]?.node else { return nil }
            let test = graph.nodes[k]
            guard test.domain.isEmpty, test.opType == "Less" || test.opType == "Greater", test.inputs.count == 2,
                  let x = test.input(0), let b = test.input(1) else { return nil }
            return (x, b, test.opType == "Less", [n, k])
        }
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        var builder = GraphBuilder(graph)
        for (i, node) in graph.nodes.enumerated() where node.domain.isEmpty && node.opType == "Where" && node.inputs.count == 3 {
            guard let mask = node.input(0), let dY = node.input(1), let fill = node.input(2), let out = node.output(0),
                  let m = c.index.producer[mask]?.node else { continue }
            var lower: String?, upper: String?, x: String?, nodes: [Int] = []
            let maker = graph.nodes[m]
            let parts: [(x: String, bound: String, lower: Bool, nodes: [Int])]
            if maker.domain.isEmpty && maker.opType == "And" && maker.inputs.count == 2 && c.onlyRead(mask, by: i) {
                guard let a = bound(maker.inputs[0], readBy: m), let b = bound(maker.inputs[1], readBy: m), a.lower != b.lower else { continue }
                parts = [a, b]
                nodes = [m]
            } else if let a = bound(mask, readBy: i) {
                parts = [a]
            } else {
                continue
            }
            for p in parts {
                if p.lower { lower = p.bound } else { upper = p.bound }
                x = p.x
                nodes += p.nodes
            }
            // The comparisons take x and the bounds of one type, Where dY and the fill of one
            // type: a type known for either side of each (the bounds and fill are usually
            // constants; gradients of com.microsoft ops may have none inferred) must be float32
            // or float64, and the same for both.
            guard let x, parts.allSatisfy({ $0.x == x }), nodes.allSatisfy({ !removed.contains($0) && replacement[$0] == nil }),
                  let compared = c.dtype(x) ?? c.dtype(lower) ?? c.dtype(upper), compared == .float32 || compared == .float64,
                  (c.dtype(dY) ?? c.dtype(fill)) == compared else { continue }
            removed.formUnion(nodes)
            replacement[i] = Node(opType: "ClipGradient", domain: internalDomain,
                                  name: builder.freshName("fused_" + (node.name.isEmpty ? "ClipGradient" : node.name)),
                                  inputs: [dY, x, lower ?? "", upper ?? "", fill], outputs: [out])
        }
        guard !replacement.isEmpty else { return }
        model.graph.apply(removing: removed, replacing: replacement)
        model.graph.dropValueInfoOfRemovedValues()
        model.opsetImports[internalDomain] = 1
    }
}
