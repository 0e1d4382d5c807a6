/// ShuffledDepthwiseConv (onnx-train's internal domain, written only by the `ChannelShuffleFusion`
/// pass into a session's compiled graph, never into a saved model): a depthwise convolution
/// (group == C) of a channel shuffle of X, reading each shuffled channel where it lies in X
/// instead of a shuffled copy of X.
///
/// Inputs: X [N, C, d...], W [M, 1, k...], B [M]? (float types, as Conv's). Attributes: Conv's, and
/// `shuffle_groups` g (C a multiple of g). The shuffle is ShuffleNet's Reshape [N, g, C/g, d...],
/// Transpose (0, 2, 1, ...), Reshape [N, C, d...]: its channel j is X's channel (j mod g)·(C/g) +
/// j / g. Y = Conv(shuffle(X), W, B), the same products and sums in the same order as the Conv
/// of the shuffled copy, so bit for bit its values; the copy (ShuffleNet's 16 Transposes, ~8% of
/// its batch-32 inference) is not made.
struct ShuffledDepthwiseConvKernel: Kernel {
    let attributes: ConvAttributes
    let groups: Int

    init(_ ctx: NodeContext) throws {
        attributes = try ConvAttributes(ctx)
        groups = try ctx.int("shuffle_groups", default: 0)
        guard groups > 0 else { throw KernelError("ShuffledDepthwiseConv needs a positive shuffle_groups, got \(groups)") }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        try withFloatCompute([inputs.tensor(0), inputs.tensor(1), inputs.optionalTensor(2)]) { t in
            guard let x = t[0], let w = t[1] else { return [] }
            guard w.dtype == x.dtype, t[2].map({ $0.dtype == x.dtype }) ?? true else { throw KernelError("ShuffledDepthwiseConv inputs differ in type") }
            let g = try attributes.geometry(x: x, w: w)
            let c = x.shape[1]
            guard attributes.group == c, c % groups == 0 else {
                throw KernelError("ShuffledDepthwiseConv needs group == channels (\(c)), a multiple of shuffle_groups \(groups); got group \(attributes.group)")
            }
            return [try dispatch(x.dtype, Op(x: x, w: w, b: t[2], groups: groups, g: g))]
        }.map { $0.map(Value.tensor) }
    }

    struct Op: ElementOperation {
        let x: Tensor, w: Tensor, b: Tensor?, groups: Int, g: ConvGeometry

        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            let n = x.shape[0], c = x.shape[1], m = w.shape[0]
            guard let planes = DepthwisePlanes.layouts(g)?.forward, m == c, w.shape[1] == 1, b.map({ $0.count == m }) ?? true else {
                // Other geometries (rank != 2, a channel multiplier) take the shuffled copy and Conv.
                return try convolution(shuffled(T.self), w, bias: b, group: c, geometry: g, T.self)
            }
            var y = try Tensor(kernelUninitialized: T.dtype, shape: [n, m] + g.output, "ShuffledDepthwiseConv output")
            if y.count == 0 { return y }
            let per = c / groups, K = g.kernelSize, P = g.outputSize, I = g.inputSize
            let bias: [T]? = b?.scalars(as: T.self)
            x.uncheckedBufferPointer(as: T.self) { px in
                w.uncheckedBufferPointer(as: T.self) { pw in
                    y.uncheckedMutableBufferPointer(as: T.self) { py in
                        guard let X = px.baseAddress, let W = pw.baseAddress, let Y = py.baseAddress else { return }
                        // As depthwiseConvolution2D with one output per input plane; plane (b, j)
                        // reads X's channel (j mod g)·(C/g) + j / g.
                        Parallel.forRange(n * c, minimumChunk: max(1, 8_192 / max(P * K, 1))) { range in
                            let buffer = planes.allocate(T.self)
                            defer { buffer.deallocate() }
                            for u in range {
                                let image = u / c, j = u % c
                                planes.fill(buffer, from: X + (image * c + (j % groups) * per + j / groups) * I)
                                planes.correlate(buffer, weights: W + j * K, start: bias?[j] ?? T.zero, accumulate: false, into: Y + u * P)
                            }
                        }
                    }
                }
            }
            return y
        }

        /// X with its channels shuffled (the copy the graph made).
        func shuffled<T: FloatElement>(_: T.Type) throws -> Tensor {
            let n = x.shape[0], c = x.shape[1], per = c / groups, I = x.count / max(n * c, 1)
            var s = try Tensor(kernelUninitialized: T.dtype, shape: x.shape, "ShuffledDepthwiseConv shuffled input")
            if s.count == 0 { return s }
            x.uncheckedBufferPointer(as: T.self) { px in
                s.uncheckedMutableBufferPointer(as: T.self) { ps in
                    guard let X = px.baseAddress, let S = ps.baseAddress else { return }
                    for u in 0..<(n * c) {
                        let image = u / c, j = u % c
                        (S + u * I).update(from: X + (image * c + (j % groups) * per + j / groups) * I, count: I)
                    }
                }
            }
            return s
        }
    }
}

func registerShuffledDepthwiseConvOps(_ registry: OpRegistry) {
    registry.register("ShuffledDepthwiseConv", domain: internalDomain, since: [1]) { ctx in try ShuffledDepthwiseConvKernel(ctx) }
}
