/// ArrayFeatureExtractor (ai.onnx.ml 1): selects elements of the last axis.
///
/// X [..., D], Y int64 indices (any shape, K elements) -> Z [..., K]; a 1-D X gives [1, K]
/// (onnxruntime's and the reference's choice). Indices must lie in [0, D).
func registerArrayFeatureExtractor(_ registry: OpRegistry) {
    registry.register("ArrayFeatureExtractor", domain: mlDomain, since: 1, arrayFeatureExtractorKernel)
}

/// ArrayFeatureExtractor (ai.onnx.ml), since opset 1.
func arrayFeatureExtractorKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0), y = try inputs.tensor(1)
        guard x.rank >= 1 else { throw KernelError("input X must have rank >= 1, got \(x)") }
        guard let picks = y.intValues() else { throw KernelError("input Y must be an integer tensor, got \(y)") }
        let d = x.shape[x.rank - 1]
        if let bad = picks.first(where: { $0 < 0 || $0 >= d }) {
            throw KernelError("index \(bad) in Y is out of range for the last axis of X (size \(d))")
        }
        let rows = d == 0 ? x.shape.dropLast().reduce(1, *) : x.count / d
        var indices: [Int] = []
        indices.reserveCapacity(rows * picks.count)
        for r in 0..<rows { for p in picks { indices.append(r * d + p) } }
        let shape = x.rank == 1 ? [1, picks.count] : Array(x.shape.dropLast()) + [picks.count]
        return [.tensor(try mlGather(x, indices, shape: shape))]
    }
}
