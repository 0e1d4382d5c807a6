/// A channel shuffle read by a depthwise convolution becomes one internal ShuffledDepthwiseConv
/// that reads the shuffled channels where they lie. ShuffleNet writes its shuffle as Reshape
/// X to [N, g, C/g, H, W], Transpose (0, 2, 1, 3, 4), Reshape back to [N, C, H, W], and every
/// one of its 16 shuffles feeds a depthwise Conv (group == C): the shuffled copy (at batch 32 one
/// 13-27 MB tensor written and read per block, ~8% of the inference) is not made. X is read as
/// [N, C, H, W] through a Reshape (a view, no copy), so whatever X's declared shape; the
/// convolution computes each output from the same elements in the same order, so the values are
/// bit for bit the Conv's of the copy.
///
/// Only the default-domain Conv (ConvFusion has already folded a BatchNormalization into its
/// weights; a depthwise FusedConv with an activation or a Z stays as it is), float32 or float64;
/// the Reshapes' shapes constants that resolve to [N, g, C/g, H, W] and [N, C, H, W] (0 and -1
/// as Reshape reads them; where X's shape is unknown, only N may be 0 or -1, the same in both),
/// and the values between the shuffle's nodes read by nothing else (a shuffled value read
/// elsewhere, or fetched, keeps the graph as written). Run after ConvFusion.
public struct ChannelShuffleFusion: GraphPass {
    public var name: String { "channel-shuffle" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard model.graph.nodes.contains(where: { $0.domain.isEmpty && $0.opType == "Transpose" }) else { return }
        let c = FusionContext(model)
        let graph = c.graph
        var builder = GraphBuilder(graph)
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        func producer(_ v: String) -> Int? { c.index.producer[v]?.node }
        for (i, conv) in graph.nodes.enumerated() where conv.domain.isEmpty && conv.opType == "Conv" {
            guard conv.outputs.count == 1, let shuffled = conv.input(0), c.isFloat(shuffled), c.onlyRead(shuffled, by: i),
                  let iBack = producer(shuffled), let back = c.plain(iBack, "Reshape", 2, allowing: ["allowzero"]),
                  let t = back.input(0), c.onlyRead(t, by: iBack),
                  let iT = producer(t), let transpose = c.plain(iT, "Transpose", 1, allowing: ["perm"]),
                  transpose.ints("perm") == [0, 2, 1, 3, 4],
                  let split = transpose.input(0), c.onlyRead(split, by: iT),
                  let iSplit = producer(split), let reshape = c.plain(iSplit, "Reshape", 2, allowing: ["allowzero"]),
                  let x = reshape.input(0), x != shuffled,
                  let shape = convInput(split: reshape, back: back, x: x, c),
                  conv.int("group") == shape.channels, shape.channels > 1 else { continue }
            // X read as [N, C, H, W] (a fresh value: the shuffled value's name keeps its meaning).
            let viewShape = builder.constant(Tensor(shape: [4], scalars: shape.view.map { Int64($0) }), name: "\(x)_unshuffled_shape")
            let view = builder.freshName("\(x)_unshuffled")
            replacement[iBack] = Node(opType: "Reshape", name: back.name, inputs: [x, viewShape], outputs: [view])
            var attributes = conv.attributes
            attributes["shuffle_groups"] = .int(shape.groups)
            replacement[i] = Node(opType: "ShuffledDepthwiseConv", domain: internalDomain, name: conv.name,
                                  inputs: [view] + conv.inputs.dropFirst(), outputs: conv.outputs, attributes: attributes)
            removed.formUnion([iT, iSplit])
        }
        guard !replacement.isEmpty else { return }
        var result = builder.graph
        result.apply(removing: removed, replacing: replacement)
        result.dropValueInfoOfRemovedValues()
        model.graph = result
        model.opsetImports[internalDomain] = 1
    }

    /// The shape X is read as by the convolution, [N, C, H, W] (N may stay 0 or -1, as in both
    /// Reshapes, when X's shape is unknown), C, and the shuffle's g, when `split` and `back`
    /// reshape X to [N, g, C/g, H, W] and the transposed [N, C/g, g, H, W] to [N, C, H, W].
    private func convInput(split: Node, back: Node, x: String, _ c: FusionContext) -> (view: [Int], channels: Int, groups: Int)? {
        guard let splitSpec = c.constant(split.input(1))?.intValues(), splitSpec.count == 5,
              let backSpec = c.constant(back.input(1))?.intValues(), backSpec.count == 4 else { return nil }
        let splitZero = (split.int("allowzero") ?? 0) != 0, backZero = (back.int("allowzero") ?? 0) != 0
        guard let xShape = c.types[x]?.staticShape else {
            // X's shape unknown (a FusedConv's output): the batch entry the same in both (a size,
            // 0 copying X's first dimension, or -1), the others sizes that match.
            guard !splitZero, !backZero, splitSpec[1...].allSatisfy({ $0 > 0 }), backSpec[1...].allSatisfy({ $0 > 0 }),
                  splitSpec[0] >= -1, splitSpec[0] == backSpec[0],
                  let channels = product([splitSpec[1], splitSpec[2]]), backSpec[1] == channels, backSpec[2] == splitSpec[3], backSpec[3] == splitSpec[4] else { return nil }
            return (backSpec, backSpec[1], splitSpec[1])
        }
        // Resolved as the Reshape kernel resolves them (`reshapeTarget`); a declared shape too
        // large to count is left alone.
        guard (try? Tensor.checkedElementCount(xShape)) != nil,
              let s = try? reshapeTarget(xShape, splitSpec, allowZero: splitZero), s.count == 5 else { return nil }
        let (n, g, per, h, w) = (s[0], s[1], s[2], s[3], s[4])
        guard g > 0, per > 0, let channels = product([g, per]),
              let input = try? reshapeTarget([n, per, g, h, w], backSpec, allowZero: backZero),
              input == [n, channels, h, w] else { return nil }
        return (input, channels, g)
    }

    /// The product of positive `dims`, or nil when it overflows.
    private func product(_ dims: [Int]) -> Int? { try? Tensor.checkedElementCount(dims) }
}
