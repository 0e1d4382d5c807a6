/// A per-channel scale and shift: y[n, c, ...] = x[n, c, ...]·scale[c] + shift[c], composed in
/// float64 from the ops a graph writes it with.
struct ChannelAffine {
    var scale: [Double]
    var shift: [Double]

    init(scale: [Double], shift: [Double]) {
        self.scale = scale
        self.shift = shift
    }

    /// The identity map of `channels` channels.
    init(channels: Int) {
        scale = [Double](repeating: 1, count: channels)
        shift = [Double](repeating: 0, count: channels)
    }

    /// Follows the current map with y·s + t per channel.
    mutating func then(scale s: [Double], shift t: [Double]) {
        for c in scale.indices {
            scale[c] *= s[c]
            shift[c] = shift[c] * s[c] + t[c]
        }
    }
}

/// Chains of per-channel constant ops on one value (an inference BatchNormalization with constant
/// statistics; Mul, Add and Sub by a constant of shape [C, 1, ..., 1] or a scalar; Div of the value
/// by one), optionally ended by an activation FusedConv knows (Relu, LeakyRelu, Sigmoid, Tanh,
/// HardSigmoid, Clip with constant bounds), become one ChannelAffine node of onnx-train's internal
/// domain: one pass over the tensor instead of one per op. Inception v2 and DenseNet-121 (onnx's
/// zoo) write each BatchNormalization followed by Mul and Add of Unsqueezed constants and a Relu;
/// after a Conv, `ConvFusion` then folds the whole ChannelAffine into the convolution's weights and
/// bias. The scale and shift compose in float64 and round once, so the result differs from the
/// ops run one by one by float rounding (each of those rounds after every op).
///
/// Only float32 and float64 values of rank >= 3 (images and sequences: a rank-2 value's axis 1 is a
/// row, whose bias Add `MatMulAddToGemm` takes) whose channel count (axis 1) is static, and only
/// chains with a BatchNormalization or a true per-channel operand (a lone scalar Mul or Add stays
/// for `ElementwiseFusion`); values between the ops must have no other reader and not be graph
/// outputs. Run after constant folding (the Unsqueezes of the constants fold first).
public struct ChannelAffineFusion: GraphPass {
    public var name: String { "channel-affine" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard (model.opset("") ?? 0) >= 7 else { return }
        let c = FusionContext(model)
        let graph = c.graph
        var builder = GraphBuilder(graph)
        var claimed = Set<Int>(), removed = Set<Int>(), replacement: [Int: Node] = [:]
        for i in c.index.order where !claimed.contains(i) {
            let first = graph.nodes[i]
            guard let x = chainInput(first, c), let dtype = c.dtype(x), dtype == .float32 || dtype == .float64,
                  let shape = c.types[x]?.shape, shape.count >= 3, case .value(let channels) = shape[1], channels > 0 else { continue }
            var affine = ChannelAffine(channels: channels)
            var chain: [Int] = []
            var value = x
            var perChannel = false
            var node = first, k = i
            while !claimed.contains(k), !chain.contains(k), let step = self.step(node, reading: value, channels: channels, rank: shape.count, dtype: dtype, c) {
                affine.then(scale: step.scale, shift: step.shift)
                perChannel = perChannel || step.perChannel
                chain.append(k)
                value = node.outputs[0]
                guard let next = c.soleConsumer(of: value) else { break }
                k = next
                node = graph.nodes[next]
            }
            guard perChannel, !chain.isEmpty else { continue }
            var activation = ConvActivation.none
            if let j = c.soleConsumer(of: value), !claimed.contains(j), !chain.contains(j),
               let act = ConvFusion().activationOf(graph.nodes[j], input: value, dtype: dtype, c), let out = graph.nodes[j].output(0) {
                activation = act
                chain.append(j)
                value = out
            }
            claimed.formUnion(chain)
            removed.formUnion(chain)
            let base = first.name.isEmpty ? value : first.name
            let scale = builder.constant(floatTensor(dtype, shape: [channels], affine.scale), name: "\(base)_affine_scale")
            let shift = builder.constant(floatTensor(dtype, shape: [channels], affine.shift), name: "\(base)_affine_shift")
            replacement[chain[chain.count - 1]] = Node(opType: "ChannelAffine", domain: internalDomain, name: builder.freshName("affine_" + base),
                                                       inputs: [x, scale, shift], outputs: [value], attributes: activation.attributes)
        }
        guard !replacement.isEmpty else { return }
        var result = builder.graph
        result.apply(removing: removed, replacing: replacement)
        result.dropValueInfoOfRemovedValues()
        model.graph = result
        model.opsetImports[internalDomain] = 1
    }

    /// The value a chain starting at `node` transforms, if the node is a step of one.
    private func chainInput(_ node: Node, _ c: FusionContext) -> String? {
        guard node.domain.isEmpty, let x = node.input(0) else { return nil }
        switch node.opType {
        case "BatchNormalization": return x
        case "Mul", "Add", "Sub", "Div":
            guard node.inputs.count == 2 else { return nil }
            // The non-constant operand (Sub and Div also with the constant on the left for Sub).
            if c.constant(node.inputs[1]) != nil && c.constant(node.inputs[0]) == nil { return node.inputs[0] }
            if c.constant(node.inputs[0]) != nil && c.constant(node.inputs[1]) == nil && node.opType != "Div" { return node.inputs[1] }
            return nil
        default: return nil
        }
    }

    /// The per-channel map `node` applies to `value` (scale and shift per channel), or nil when it
    /// is not such a step. `perChannel` is false for a scalar operand.
    private func step(_ node: Node, reading value: String, channels: Int, rank: Int, dtype: DType,
                      _ c: FusionContext) -> (scale: [Double], shift: [Double], perChannel: Bool)? {
        guard node.domain.isEmpty, node.outputs.count == 1, node.input(0) != nil, c.dtype(node.outputs[0]) == dtype else { return nil }
        if node.opType == "BatchNormalization" {
            guard node.input(0) == value, let m = ConvFusion.batchNormAffine(node, channels: channels, dtype: dtype, c) else { return nil }
            return (m.scale, m.shift, true)
        }
        guard ["Mul", "Add", "Sub", "Div"].contains(node.opType), node.inputs.count == 2, node.inputs[0] != node.inputs[1] else { return nil }
        let valueLeft = node.inputs[0] == value
        guard valueLeft || node.inputs[1] == value else { return nil }
        if !valueLeft && node.opType == "Div" { return nil }
        guard let t = c.constant(valueLeft ? node.inputs[1] : node.inputs[0]), t.dtype == dtype, t.rank <= rank,
              let operand = ChannelAffineFusion.perChannel(t, channels: channels, rank: rank) else { return nil }
        let ones = [Double](repeating: 1, count: channels), zeros = [Double](repeating: 0, count: channels)
        let perChannel = t.count > 1 || (t.rank >= 2 && channels == 1)
        switch (node.opType, valueLeft) {
        case ("Mul", _): return (operand, zeros, perChannel)
        case ("Add", _): return (ones, operand, perChannel)
        case ("Sub", true): return (ones, operand.map { -$0 }, perChannel)
        case ("Sub", false): return (ones.map { -$0 }, operand, perChannel)
        default: return (operand.map { 1 / $0 }, zeros, perChannel)
        }
    }

    /// The values of `t` per channel, when `t` broadcast against a value of rank `rank` with
    /// `channels` channels is constant along every axis but the channel axis (1) and leaves the
    /// value's shape as it is; nil otherwise.
    static func perChannel(_ t: Tensor, channels: Int, rank: Int) -> [Double]? {
        guard t.rank <= rank, let values = try? t.doubles() else { return nil }
        let padded = [Int](repeating: 1, count: rank - t.rank) + t.shape
        for (axis, d) in padded.enumerated() where d != 1 && !(axis == 1 && d == channels) { return nil }
        if t.count == 1 { return [Double](repeating: values[0], count: channels) }
        return values
    }
}
