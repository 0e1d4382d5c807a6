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
///
/// Then the projections (`packProjections`): where Q, K and V are Reshapes [B, T, H, D] of
/// the last axis of three MatMul + Add of one input x [B, T, E] by constant [E, H·D] weights and
/// [H·D] biases (BERT, ViT), one MatMul by the weights concatenated [E, 3·H·D] (made once here)
/// and one Add of the concatenated bias write the three side by side, and the FusedAttention reads
/// them from that one product (its `qkv_heads`): one GEMM instead of three (`MatMulAddToGemm` makes
/// it one MatMulBias), and the Reshapes go. Where they are Reshapes of the three equal parts of a
/// Split of a [B, T, 3·H·D] value along its last axis (GPT-2's c_attn), the FusedAttention reads
/// that value and the Split's copy goes. Each element of the product is the same sum as in its
/// own projection.
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
        try packProjections(&model)
    }

    /// Q, K and V of each FusedAttention from one packed [B, T, 3·H·D] value (see the type's comment).
    func packProjections(_ model: inout Model) throws {
        let c = FusionContext(model)
        let graph = c.graph
        var builder = GraphBuilder(graph)
        var removed = Set<Int>(), replacement: [Int: Node] = [:], initializers: [(String, Tensor)] = []
        /// The source y [B, T, H·D] of `value`, a Reshape [B, T, H, D] of y's last axis that only
        /// `reader` reads: the Reshape's index, y and (H, D). B and T stay when the types say the
        /// same number or symbol, or when the target's entries (`ShapeEntry`, the exporter's
        /// Shape → Gather → Unsqueeze → Concat) are 0, y's own size, or the size of that axis of
        /// y or of the input of the projection that writes y (the same first two axes).
        func heads(_ value: String, _ reader: Int) -> (node: Int, y: String, h: Int, d: Int)? {
            guard c.onlyRead(value, by: reader), let r = c.index.producer[value]?.node,
                  let reshape = c.plain(r, "Reshape", 2, allowing: ["allowzero"]), let y = reshape.input(0),
                  let inShape = c.types[y]?.shape, inShape.count == 3, case .value(let width) = inShape[2], width > 0 else { return nil }
            if let outShape = c.types[value]?.shape, outShape.count == 4, case .value(let h) = outShape[2], case .value(let d) = outShape[3],
               h > 0, h * d == width, (0..<2).allSatisfy({ a in
                   switch (inShape[a], outShape[a]) {
                   case (.value(let u), .value(let w)): return u == w
                   case (.symbol(let u), .symbol(let w)): return u == w
                   default: return false  // an unknown says nothing
                   }
               }) {
                return (r, y, h, d)
            }
            guard let target = ShapeEntry.resolve(reshape.inputs[1], c), target.count == 4 else { return nil }
            let same = sameLeading(y)
            let allowZero = reshape.int("allowzero") == 1
            for a in 0..<2 {
                switch target[a] {
                case .constant(0) where !allowZero: continue
                case .constant(let v) where v > 0 && inShape[a] == .value(v): continue
                case .size(let t, let axis) where axis == a && same.contains(t): continue
                default: return nil
                }
            }
            switch (target[2], target[3]) {
            case (.constant(let h), .constant(let d)) where h > 0 && d > 0 && h * d == width: return (r, y, h, d)
            case (.constant(-1), .constant(let d)) where d > 0 && width % d == 0: return (r, y, width / d, d)
            case (.constant(let h), .constant(-1)) where h > 0 && width % h == 0: return (r, y, h, width / h)
            default: return nil
            }
        }
        /// y and the values whose first two axes are y's: x when y is MatMul(x, W) + bias with x
        /// of rank 3, W 2-D and the bias at most 1-D; a Split's input and every piece when y is one
        /// piece of a Split of a rank-3 value along its last axis (GPT-2 reshapes V by K's sizes).
        func sameLeading(_ y: String) -> Set<String> {
            guard let p = c.index.producer[y]?.node else { return [y] }
            let n = graph.nodes[p]
            if n.domain.isEmpty, n.opType == "Split", let x = n.input(0), c.rank(x) == 3, let axis = n.int("axis"), axis == 2 || axis == -1 {
                return Set(n.outputs.filter { !$0.isEmpty } + [x])
            }
            guard let add = c.plain(p, "Add", 2) else { return [y] }
            for j in 0..<2 {
                guard let m = c.index.producer[add.inputs[j]]?.node, let mm = c.plain(m, "MatMul", 2), let x = mm.input(0),
                      c.rank(x) == 3, c.rank(mm.inputs[1]) == 2, let br = c.rank(add.inputs[1 - j]), br <= 1 else { continue }
                return [y, x]
            }
            return [y]
        }
        /// The nodes besides `reshape` that read y, when each is a Shape whose value only
        /// Gathers of index 0 or 1 read (the exporter's y.size(0), y.size(1)): those sizes are
        /// the packed value's too, so the Shapes can read it instead. nil when another node reads y.
        func shapeReaders(_ y: String, besides reshape: Int) -> [Int]? {
            guard !c.graphOutputs.contains(y) else { return nil }
            var out: [Int] = []
            for i in c.index.consumers[y] ?? [] where i != reshape {
                guard let shape = c.plain(i, "Shape", 1), let sv = shape.output(0), !c.graphOutputs.contains(sv) else { return nil }
                for j in c.index.consumers[sv] ?? [] {
                    guard let g = c.plain(j, "Gather", 2, allowing: ["axis"]), (g.int("axis") ?? 0) == 0, g.inputs[0] == sv,
                          let idx = c.constant(g.inputs[1])?.intValues(), idx.allSatisfy({ $0 == 0 || $0 == 1 }) else { return nil }
                }
                out.append(i)
            }
            return out
        }
        for (fi, f) in graph.nodes.enumerated() where f.domain == internalDomain && f.opType == "FusedAttention" {
            guard f.int("qkv_heads") == nil, f.inputs.count >= 3, Set(f.inputs.prefix(3)).count == 3, !f.inputs.prefix(3).contains(""),
                  let dtype = c.dtype(f.inputs[0]), dtype == .float32 || dtype == .float64,
                  let q = heads(f.inputs[0], fi), let k = heads(f.inputs[1], fi), let v = heads(f.inputs[2], fi),
                  q.h == k.h, q.h == v.h, q.d == k.d, q.d == v.d else { continue }
            let width = q.h * q.d
            let packed: String
            var gone = [q.node, k.node, v.node]
            var newNodes: [Int: Node] = [:]
            guard let sq = shapeReaders(q.y, besides: q.node), let sk = shapeReaders(k.y, besides: k.node),
                  let sv = shapeReaders(v.y, besides: v.node) else { continue }
            if let s = c.index.producer[q.y]?.node, c.index.producer[k.y]?.node == s, c.index.producer[v.y]?.node == s {
                // GPT-2: three equal parts of one Split along the last axis, in order.
                let split = graph.nodes[s]
                guard split.domain.isEmpty, split.opType == "Split", split.outputs == [q.y, k.y, v.y], let x = split.input(0),
                      let xShape = c.types[x]?.shape, xShape.count == 3, xShape[2] == .value(3 * width),
                      split.attributes.keys.allSatisfy({ ["axis", "split", "num_outputs"].contains($0) }),
                      let axis = split.int("axis") ?? Optional(0), axis == 2 || axis == -1 else { continue }
                // Sizes from the input (opset 13) or the attribute, or none: equal parts.
                let sizesInput = split.inputs.count > 1 && !split.inputs[1].isEmpty ? split.inputs[1] : nil
                let sizes = sizesInput.map { c.constant($0)?.intValues() } ?? split.ints("split")
                if sizesInput != nil && sizes == nil { continue }
                if let sizes, sizes != [width, width, width] { continue }
                packed = x
                gone.append(s)
            } else {
                // BERT, ViT: three MatMul + Add of one x by constant weights and biases.
                struct Projection { let mm: Int, add: Int, w: Tensor, b: Tensor }
                /// A constant [E, H·D] weight, or a 2-D Transpose of a constant [H·D, E] (PyTorch's
                /// Linear weight as the export writes it), transposed here.
                func weight(_ name: String) throws -> Tensor? {
                    if let w = c.constant(name) { return w }
                    guard let t = c.index.producer[name]?.node, let tr = c.plain(t, "Transpose", 1, allowing: ["perm"]),
                          (tr.ints("perm") ?? [1, 0]) == [1, 0], let w = c.constant(tr.inputs[0]), w.rank == 2 else { return nil }
                    return try transpose(w, perm: [1, 0])
                }
                func projection(_ y: String) throws -> (x: String, p: Projection)? {
                    guard let a = c.index.producer[y]?.node, let add = c.plain(a, "Add", 2),
                          let j = [0, 1].first(where: { c.index.producer[add.inputs[$0]].map { c.plain($0.node, "MatMul", 2) != nil } ?? false }),
                          let m = c.index.producer[add.inputs[j]]?.node, c.onlyRead(add.inputs[j], by: a), let mm = c.plain(m, "MatMul", 2),
                          let x = mm.input(0), c.rank(x) == 3, c.dtype(x) == dtype,
                          let w = try weight(mm.inputs[1]), w.dtype == dtype, w.rank == 2, w.shape[1] == width,
                          let b = c.constant(add.inputs[1 - j]), b.dtype == dtype, b.shape == [width] else { return nil }
                    return (x, Projection(mm: m, add: a, w: w, b: b))
                }
                guard let pq = try projection(q.y), let pk = try projection(k.y), let pv = try projection(v.y),
                      pq.x == pk.x, pq.x == pv.x, pq.p.w.shape == pk.p.w.shape, pq.p.w.shape == pv.p.w.shape,
                      Set([pq.p.mm, pk.p.mm, pv.p.mm, pq.p.add, pk.p.add, pv.p.add]).count == 6 else { continue }
                let ps = [pq.p, pk.p, pv.p]
                let w = try concatenate(ps.map(\.w), axis: 1, dtype: dtype), b = try concatenate(ps.map(\.b), axis: 0, dtype: dtype)
                let name = graph.nodes[pq.p.mm].name.isEmpty ? "qkv" : graph.nodes[pq.p.mm].name + "_qkv"
                let (wName, bName) = (builder.freshName(name + "_weight"), builder.freshName(name + "_bias"))
                let product = builder.freshName(name + "_product")
                packed = builder.freshName(name + "_output")
                initializers += [(wName, w), (bName, b)]
                // At the first of the products and of the Adds: before any reader of the three.
                let (mm, add) = (ps.map(\.mm).min() ?? pq.p.mm, ps.map(\.add).min() ?? pq.p.add)
                newNodes[mm] = Node(opType: "MatMul", name: builder.freshName(name), inputs: [pq.x, wName], outputs: [product])
                newNodes[add] = Node(opType: "Add", name: builder.freshName(name + "_add"), inputs: [product, bName], outputs: [packed])
                gone += ps.flatMap { [$0.mm, $0.add] }.filter { $0 != mm && $0 != add }
            }
            // The Shapes of the pieces read the packed value (the same first two sizes).
            for i in sq + sk + sv {
                let shape = graph.nodes[i]
                newNodes[i] = Node(opType: "Shape", name: shape.name, inputs: [packed], outputs: shape.outputs)
            }
            guard (gone + Array(newNodes.keys) + [fi]).allSatisfy({ !removed.contains($0) && replacement[$0] == nil }) else { continue }
            removed.formUnion(gone)
            replacement.merge(newNodes) { _, new in new }
            var attributes = f.attributes
            attributes["qkv_heads"] = .int(q.h)
            replacement[fi] = Node(opType: "FusedAttention", domain: internalDomain, name: f.name,
                                   inputs: [packed, "", ""] + f.inputs.dropFirst(3), outputs: f.outputs, attributes: attributes)
        }
        guard !replacement.isEmpty else { return }
        for (name, t) in initializers { model.graph.setInitializer(name, t) }
        model.graph.apply(removing: removed, replacing: replacement)
        model.graph.dropValueInfoOfRemovedValues()
    }
}

/// One entry of a shape tensor a pass can follow without running the graph: a constant, or the
/// size of axis `axis` of tensor `of` (Shape → Gather of one index → Unsqueeze → Concat, as
/// PyTorch writes `x.size()[:-1] + (h, d)`).
enum ShapeEntry: Equatable {
    case constant(Int)
    case size(of: String, axis: Int)

    /// The entries of the 1-D integer value `name`, or nil where the chain is not one of those.
    static func resolve(_ name: String, _ c: FusionContext, depth: Int = 0) -> [ShapeEntry]? {
        if let t = c.constant(name) {
            guard t.rank <= 1, t.count <= 64, let v = t.intValues() else { return nil }
            return v.map { .constant($0) }
        }
        guard depth < 8, let p = c.index.producer[name]?.node else { return nil }
        let n = c.graph.nodes[p]
        guard n.domain.isEmpty, n.outputs.count == 1 else { return nil }
        switch n.opType {
        case "Concat":
            guard n.int("axis") == 0 || n.int("axis") == -1 else { return nil }
            var out: [ShapeEntry] = []
            for x in n.inputs {
                guard let e = resolve(x, c, depth: depth + 1) else { return nil }
                out += e
            }
            return out
        case "Unsqueeze":
            // A scalar made one entry (axes [0]: an input from opset 13, an attribute before).
            guard let x = n.input(0), c.rank(x) == 0, let e = resolve(x, c, depth: depth + 1), e.count == 1 else { return nil }
            let axes = n.inputs.count > 1 ? c.constant(n.inputs[1])?.intValues() : n.ints("axes")
            return axes == [0] || axes == [-1] ? e : nil
        case "Gather":
            // One index of a whole Shape: the size of that axis.
            guard let s = n.input(0), let i = c.constant(n.input(1))?.intValues(), i.count == 1, (n.int("axis") ?? 0) == 0,
                  let sp = c.index.producer[s]?.node, let shape = c.plain(sp, "Shape", 1), let t = shape.input(0),
                  let r = c.rank(t) else { return nil }
            let axis = i[0] < 0 ? i[0] + r : i[0]
            return axis >= 0 && axis < r ? [.size(of: t, axis: axis)] : nil
        default:
            return nil
        }
    }
}
