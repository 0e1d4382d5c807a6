/// Scaled dot-product attention as PyTorch exports it (BERT, GPT-2, ViT):
///
///   Transpose(q, [0,2,1,3]) · Transpose(k, [0,2,3,1]) → Mul or Div by a scalar constant →
///   [Add mask] → Softmax(last axis) → [Casts to its own type] → · Transpose(v, [0,2,1,3]) →
///   Transpose([0,2,1,3])
///
/// with q, k, v [B, T, H, D] becomes one `FusedAttention` (onnx-train's internal domain) reading q,
/// k, v and the mask where they are and writing the context [B, Tq, H, Dv] the output projection's
/// Reshape reads: the [B, H, Tq, Tk] scores and probabilities (two writes and three reads of
/// them, 24% of a GPT-2 run at batch 32 with the Transposes and Softmax around them) stay in a
/// per-thread block, and a causal mask's masked half of both products is skipped.
///
/// Fires only when every value in between has no reader but the next op of the pattern and is no
/// graph output (a training graph's backward pass reads the probabilities: it keeps its ops), the
/// ranks are 4, every type is the scores' (float32 or float64) and the scale is exact as a float
/// attribute (a float64 graph's 1/√d that is not keeps its ops). The input Transposes go when the
/// products were their only readers. Results equal to float rounding (`FusedAttentionKernel`).
public struct AttentionFusion: GraphPass {
    public var name: String { "attention-fusion" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard model.graph.nodes.contains(where: { $0.domain.isEmpty && $0.opType == "Softmax" }) else { return }
        let softmaxOpset = model.opset("") ?? 0
        let c = FusionContext(model)
        let graph = c.graph
        /// The source of Transpose `value` with permutation `perm` of a rank-4 tensor.
        func transposed(_ value: String, _ perm: [Int]) -> (node: Int, source: String)? {
            guard let p = c.index.producer[value]?.node, let t = c.plain(p, "Transpose", 1, allowing: ["perm"]),
                  t.ints("perm") == perm, let x = t.input(0), c.rank(x) == 4 else { return nil }
            return (p, x)
        }
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        for (si, softmax) in graph.nodes.enumerated() {
            guard softmax.domain.isEmpty, softmax.opType == "Softmax", softmax.inputs.count == 1, softmax.outputs.count == 1,
                  let logits = softmax.input(0), var p = softmax.output(0), let dtype = c.dtype(logits),
                  dtype == .float32 || dtype == .float64, c.rank(logits) == 4,
                  let axis = softmax.int("axis") ?? (softmaxOpset >= 13 ? -1 : nil), axis == -1 || axis == 3 else { continue }
            var chain = [si]
            // Forward: Casts to the same type, then the product with V, then the Transpose back.
            var next = c.soleConsumer(of: p)
            while let j = next, let cast = c.plain(j, "Cast", 1, allowing: ["to"]), cast.int("to") == Int(dtype.rawValue) {
                chain.append(j)
                p = cast.outputs[0]
                next = c.soleConsumer(of: p)
            }
            guard let pvIndex = next, let pv = c.plain(pvIndex, "MatMul", 2), pv.inputs[0] == p, pv.inputs[1] != p,
                  let (vt, v) = transposed(pv.inputs[1], [0, 2, 1, 3]), c.dtype(v) == dtype,
                  let ti = c.soleConsumer(of: pv.outputs[0]), let back = c.plain(ti, "Transpose", 1, allowing: ["perm"]),
                  back.ints("perm") == [0, 2, 1, 3] else { continue }
            chain += [pvIndex, ti]
            // Backward: the optional mask Add, the optional scale, the product of Q and Kᵀ.
            /// A Mul by (or Div by) a one-element constant of the scores' type: its node, the
            /// factor and the value it scales.
            func scaling(_ value: String) -> (node: Int, scale: Double, x: String)? {
                guard let i = c.index.producer[value]?.node, graph.nodes[i].opType == "Mul" || graph.nodes[i].opType == "Div",
                      let n = c.plain(i, graph.nodes[i].opType, 2), n.inputs[0] != n.inputs[1] else { return nil }
                let k = n.opType == "Div" ? 1 : ([1, 0].first { c.constant(n.inputs[$0]) != nil } ?? 1)
                guard let t = c.constant(n.inputs[k]), t.count == 1, t.dtype == dtype, let v = t.scalarDouble(), v.isFinite, v != 0 else { return nil }
                return (i, n.opType == "Div" ? 1 / v : v, n.inputs[1 - k])
            }
            guard c.onlyRead(logits, by: si), var pi = c.index.producer[logits]?.node else { continue }
            var s = logits, mask: String? = nil
            if let add = c.plain(pi, "Add", 2), add.inputs[0] != add.inputs[1] {
                // The scores are the operand a scale or the product writes; the other is the mask.
                guard let j = [0, 1].first(where: { j in
                          let x = add.inputs[j]
                          guard c.onlyRead(x, by: pi), let w = c.index.producer[x]?.node else { return false }
                          return scaling(x) != nil || c.plain(w, "MatMul", 2) != nil
                      }),
                      c.dtype(add.inputs[1 - j]) == dtype, (c.rank(add.inputs[1 - j]) ?? 4) <= 4 else { continue }
                mask = add.inputs[1 - j]
                chain.append(pi)
                s = add.inputs[j]
                guard let w = c.index.producer[s]?.node else { continue }
                pi = w
            }
            var scale = 1.0, scores = s
            if let (i, factor, x) = scaling(s) {
                guard c.onlyRead(x, by: i), let w = c.index.producer[x]?.node else { continue }
                chain.append(i)
                (scale, scores, pi) = (factor, x, w)
            }
            guard Float(scale).isFinite, Float(scale) != 0, dtype == .float32 || Double(Float(scale)) == scale else { continue }
            let qkIndex = pi
            guard let qk = c.plain(qkIndex, "MatMul", 2), qk.outputs[0] == scores,
                  let (qt, q) = transposed(qk.inputs[0], [0, 2, 1, 3]), let (kt, kSource) = transposed(qk.inputs[1], [0, 2, 3, 1]),
                  c.dtype(q) == dtype, c.dtype(kSource) == dtype else { continue }
            chain.append(qkIndex)
            guard chain.allSatisfy({ !removed.contains($0) }) else { continue }
            // The input Transposes go when these products were all that read them.
            for (t, value, reader) in [(qt, qk.inputs[0], qkIndex), (kt, qk.inputs[1], qkIndex), (vt, pv.inputs[1], pvIndex)]
                where c.onlyRead(value, by: reader) && !removed.contains(t) {
                removed.insert(t)
            }
            removed.formUnion(chain)
            removed.remove(ti)
            replacement[ti] = Node(opType: "FusedAttention", domain: internalDomain, name: softmax.name.isEmpty ? back.name : softmax.name,
                                   inputs: [q, kSource, v] + (mask.map { [$0] } ?? []), outputs: back.outputs,
                                   attributes: ["scale": .float(Float(scale))])
        }
        guard !replacement.isEmpty else { return }
        model.graph.apply(removing: removed, replacing: replacement)
        model.graph.dropValueInfoOfRemovedValues()
        model.opsetImports[internalDomain] = 1
    }
}
