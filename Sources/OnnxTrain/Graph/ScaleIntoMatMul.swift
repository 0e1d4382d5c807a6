/// A Mul by a scalar constant whose result only batched products with an `alpha` read (FusedMatMul,
/// StridedMatMul) becomes their alpha: (c·X)·B = c·(X·B). Attention's backward pass writes its
/// scale so, SoftmaxGrad times 1/√d read by the two products giving dQ and dK: a pass reading and
/// writing the [B, H, T, T] scores (3.7 MB per layer in a ViT-Tiny step at batch 8) goes, and the
/// GEMMs apply the scale to their sums.
///
/// Fires when the constant has one element (rank 0, or every dimension 1 and at most X's rank, so
/// the Mul's result has X's shape), X and the constant are float32 or float64, no graph output
/// names the Mul's result and every reader reads it once, as one operand; the new alpha (old alpha
/// times c) must be exact in float32 (alpha is a float attribute), so a float64 graph keeps its
/// value (a constant like 0.1 stays a Mul). Results: the same products scaled once by the GEMM
/// (BLAS's alpha) instead of each operand element before it, equal to float rounding; bit for bit
/// when c is a power of two (attention's 1/√64 = 0.125).
public struct ScaleIntoMatMul: GraphPass {
    public var name: String { "scale-into-matmul" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard model.graph.nodes.contains(where: { $0.opType == "FusedMatMul" || $0.opType == "StridedMatMul" }) else { return }
        let c = FusionContext(model)
        let graph = c.graph
        func hasAlpha(_ n: Node) -> Bool {
            (canonicalDomain(n.domain) == "com.microsoft" && n.opType == "FusedMatMul")
                || (n.domain == internalDomain && n.opType == "StridedMatMul")
        }
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        for (i, mul) in graph.nodes.enumerated() {
            guard mul.domain.isEmpty, mul.opType == "Mul", mul.inputs.count == 2, mul.outputs.count == 1, let y = mul.output(0),
                  !c.graphOutputs.contains(y), mul.inputs[0] != mul.inputs[1] else { continue }
            // The scalar operand, and the tensor it scales.
            guard let k = [1, 0].first(where: { c.constant(mul.inputs[$0]) != nil }), let x = mul.input(1 - k),
                  let scalar = c.constant(mul.inputs[k]), scalar.count == 1, scalar.dtype == .float32 || scalar.dtype == .float64,
                  c.dtype(x) == scalar.dtype, let value = scalar.scalarDouble(), value.isFinite else { continue }
            if scalar.rank > 0 {
                guard let r = c.rank(x), scalar.rank <= r else { continue }
            }
            guard let readers = c.index.consumers[y], !readers.isEmpty,
                  readers.allSatisfy({ j in !removed.contains(j) && hasAlpha(replacement[j] ?? graph.nodes[j])
                      && graph.nodes[j].inputs.count == 2 && graph.nodes[j].inputs.filter({ $0 == y }).count == 1 }) else { continue }
            var updates: [Int: Node] = [:]
            for j in readers {
                var n = replacement[j] ?? graph.nodes[j]
                let alpha = Double(n.float("alpha") ?? 1) * value
                guard Double(Float(alpha)) == alpha, Float(alpha).isFinite else { break }
                n.attributes["alpha"] = .float(Float(alpha))
                n.inputs = n.inputs.map { $0 == y ? x : $0 }
                updates[j] = n
            }
            guard updates.count == readers.count else { continue }
            for (j, n) in updates { replacement[j] = n }
            removed.insert(i)
        }
        guard !removed.isEmpty else { return }
        model.graph.apply(removing: removed, replacing: replacement)
        model.graph.dropValueInfoOfRemovedValues()
    }
}
