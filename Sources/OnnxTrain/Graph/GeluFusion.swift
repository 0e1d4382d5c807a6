/// In a training graph, GELU written out with Erf, as PyTorch exports `nn.GELU()` / Hugging
/// Face's "gelu" (BERT, ViT): `y = (h · (Erf(h / √2) + 1)) · 0.5`, becomes one com.microsoft
/// `Gelu(h)`, and the gradient the rules write for those five ops (dY·0.5 times the Erf term,
/// plus dY·0.5·h times Erf's derivative exp(-d²)·2/√π divided by √2, summed) one com.microsoft
/// `GeluGrad(dY, h)`. Forward, three passes over the activation and three stored tensors of its
/// size become one pass and none; backward, six passes (reading up to four tensors each) become
/// one reading dY and h. The fused kernels compute x·Φ(x) and dY·(Φ(x) + x·φ(x)) with
/// Φ(x) = ½(1 + erf(x/√2)), the same functions within float rounding (a multiplication by
/// 1/√2 in place of the division by √2, the 0.5 and 2/√π folded).
///
/// Fires only when the forward and backward patterns are complete and every value between the
/// ops is read by nothing but the ops of the pattern (and is no graph output). An inference
/// graph's GELU (no gradient) is left to `GeluIntoMatMul` (after a Linear layer) and to
/// `ElementwiseFusion`, whose chain computes the ops' own values in one pass. Constants are checked to float32 precision: √2, 1, 0.5 and 2/√π. Float32 and float64.
public struct GeluFusion: GraphPass {
    public var name: String { "gelu-fusion" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard (model.opset("") ?? 0) >= 9, model.graph.nodes.contains(where: { $0.domain.isEmpty && $0.opType == "Erf" }) else { return }
        let c = FusionContext(model)
        let graph = c.graph
        func producer(_ v: String) -> Int? { c.index.producer[v]?.node }
        /// The readers of `v` (nil when a graph output names it).
        func readers(_ v: String) -> Set<Int>? {
            guard !c.graphOutputs.contains(v) else { return nil }
            return Set(c.index.consumers[v] ?? [])
        }
        func only(_ v: String, _ users: Int...) -> Bool { readers(v) == Set(users) }
        let sqrt2 = 2.0.squareRoot(), twoOverSqrtPi = 2 / Double.pi.squareRoot()
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        var builder = GraphBuilder(graph)
        for (iE, erf) in graph.nodes.enumerated() {
            guard c.plain(iE, "Erf", 1) != nil, let d = erf.input(0), let e = erf.output(0),
                  let iD = producer(d), let div = c.plain(iD, "Div", 2), div.inputs[0] != div.inputs[1], c.isConstant(div.inputs[1], sqrt2),
                  let iA = readers(e).flatMap({ $0.count == 1 ? $0.first : nil }), let add = c.plain(iA, "Add", 2),
                  let one = c.other(add, e), c.isConstant(one, 1) else { continue }
            let h = div.inputs[0], a = add.outputs[0]
            guard let dtype = c.dtype(h), dtype == .float32 || dtype == .float64, let aReaders = readers(a) else { continue }
            // The forward product h·(erf + 1) among a's readers, then ·0.5.
            guard let iM = aReaders.first(where: { c.plain($0, "Mul", 2).flatMap { c.other($0, a) } == h }),
                  let m = graph.nodes[iM].output(0), let iY = readers(m).flatMap({ $0.count == 1 ? $0.first : nil }),
                  let mulHalf = c.plain(iY, "Mul", 2), c.isConstant(c.other(mulHalf, m), 0.5), let y = mulHalf.output(0) else { continue }
            // A training graph's: a's other reader is dY·0.5 times a (h's gradient through the product).
            guard aReaders.count == 2 else { continue }
            guard let iGA = aReaders.first(where: { $0 != iM }), let mulA = c.plain(iGA, "Mul", 2), let g1 = c.other(mulA, a), g1 != h,
                  let iG1 = producer(g1), let scale = c.plain(iG1, "Mul", 2),
                  let dY = scale.inputs.first(where: { !c.isConstant($0, 0.5) }), c.isConstant(c.other(scale, dY), 0.5),
                  let g1Readers = readers(g1), g1Readers.count == 2, g1Readers.contains(iGA),
                  // dY·0.5·h, the gradient reaching erf's output, times Erf's derivative.
                  let iGB = g1Readers.first(where: { $0 != iGA }), let mulH = c.plain(iGB, "Mul", 2), c.other(mulH, g1) == h,
                  let gB = mulH.output(0), let iGE = readers(gB).flatMap({ $0.count == 1 ? $0.first : nil }),
                  let mulE = c.plain(iGE, "Mul", 2), let eg = c.other(mulE, gB),
                  let iEG = producer(eg), let scaleE = c.plain(iEG, "Mul", 2), only(eg, iGE),
                  let ex = scaleE.inputs.first(where: { !c.isConstant($0, twoOverSqrtPi) }), c.isConstant(c.other(scaleE, ex), twoOverSqrtPi),
                  let iExp = producer(ex), let exp = c.plain(iExp, "Exp", 1), only(ex, iEG),
                  let iNeg = producer(exp.inputs[0]), let neg = c.plain(iNeg, "Neg", 1), only(exp.inputs[0], iExp),
                  let iSq = producer(neg.inputs[0]), let sq = c.plain(iSq, "Mul", 2), sq.inputs == [d, d], only(neg.inputs[0], iNeg),
                  only(d, iE, iSq),
                  // Divided by √2 (the Div's gradient), summed with the product's.
                  let gE = mulE.output(0), let iGD = readers(gE).flatMap({ $0.count == 1 ? $0.first : nil }),
                  let divE = c.plain(iGD, "Div", 2), divE.inputs[0] == gE, c.isConstant(divE.inputs[1], sqrt2),
                  let gD = divE.output(0), let gA = mulA.output(0), let iS = readers(gD).flatMap({ $0.count == 1 ? $0.first : nil }),
                  only(gA, iS), let sum = c.plain(iS, "Sum", 2) ?? c.plain(iS, "Add", 2), Set(sum.inputs) == [gA, gD], gA != gD,
                  let dH = sum.output(0) else { continue }
            guard only(m, iY), only(e, iA), only(g1, iGA, iGB) else { continue }
            let nodes: Set<Int> = [iD, iE, iA, iM, iY, iGA, iG1, iGB, iGE, iEG, iExp, iNeg, iSq, iGD, iS]
            let gradient = (node: iS, dY: dY, dH: dH)
            guard nodes.allSatisfy({ !removed.contains($0) && replacement[$0] == nil }) else { continue }
            removed.formUnion(nodes)
            replacement[iY] = Node(opType: "Gelu", domain: "com.microsoft", name: builder.freshName("fused_" + (erf.name.isEmpty ? "Gelu" : erf.name)),
                                   inputs: [h], outputs: [y])
            replacement[gradient.node] = Node(opType: "GeluGrad", domain: "com.microsoft",
                                              name: builder.freshName("fused_" + (erf.name.isEmpty ? "GeluGrad" : erf.name + "_grad")),
                                              inputs: [gradient.dY, h], outputs: [gradient.dH])
        }
        guard !replacement.isEmpty else { return }
        model.graph.apply(removing: removed, replacing: replacement)
        model.graph.dropValueInfoOfRemovedValues()
        if model.opsetImports["com.microsoft"] == nil { model.opsetImports["com.microsoft"] = 1 }
    }
}

/// In an inference graph, a GELU written out in ops whose input is a Linear layer's result
/// becomes that layer's `activation`: the internal MatMulBias (or a Gemm with a bias row, which
/// becomes one) applies it to each block of its result as soon as the block's product is done,
/// while it is in cache (BERT's and ViT's erf GELU after the intermediate dense layer, GPT-2's
/// tanh GELU after c_fc): the activation's own pass over the whole activation goes, and with it
/// one kernel call per layer. Two forms, each in the orders exporters write:
///
/// * erf, "Gelu": `h · (Erf(h / √2) + 1) · 0.5` (or `h · 0.5 · (Erf(h / √2) + 1)`, or Mul by
///   1/√2 for the Div);
/// * tanh, "FastGelu" (GPT-2's gelu_new): `h · 0.5 · (Tanh(√(2/π) · (h + 0.044715 · h³)) + 1)`,
///   h³ as Pow(h, 3) or, after `PowerToMul`, (h · h) · h; either product order.
///
/// A Reshape between the product and h (GPT-2's Conv1D layers run as Gemm over [B·T, K] rows)
/// stays, moved after the activation (an elementwise map commutes with it). Fires only when every
/// value of the pattern, h included, is read by nothing else and is no graph output, the constants
/// match to float32 precision, and the product is float32 or float64 with a bias of one row [N]
/// (a Gemm: transA 0, alpha and beta 1). The values are com.microsoft Gelu's and FastGelu's, equal
/// to float rounding to the ops' (a few roundings of the result: the ops round after each step).
public struct GeluIntoMatMul: GraphPass {
    public var name: String { "gelu-into-matmul" }
    public init() {}

    public func run(_ model: inout Model) throws {
        guard (model.opset("") ?? 0) >= 7,
              model.graph.nodes.contains(where: { $0.domain.isEmpty && ($0.opType == "Erf" || $0.opType == "Tanh") }) else { return }
        let c = FusionContext(model)
        let graph = c.graph
        func producer(_ v: String) -> Int? { c.index.producer[v]?.node }
        /// The one reader of `v` (nil when another node or a graph output reads it too).
        func sole(_ v: String) -> Int? { c.soleConsumer(of: v) }
        /// The scalar-constant operand of binary `n` (index 0 or 1) when it is `value`, and the other input.
        func scaled(_ n: Node?, by value: Double) -> String? {
            guard let n, n.inputs.count == 2 else { return nil }
            if c.isConstant(n.inputs[1], value) { return n.inputs[0] }
            if c.isConstant(n.inputs[0], value) { return n.inputs[1] }
            return nil
        }
        /// The last two steps: `tail` (Erf + 1 or Tanh + 1) times h times 0.5, in either order.
        /// Returns (nodes, y).
        func halfProduct(_ tail: String, _ h: String) -> (nodes: [Int], y: String)? {
            guard let iM = sole(tail), let mul = c.plain(iM, "Mul", 2), let o = c.other(mul, tail) else { return nil }
            if o == h {
                // (h · tail) · 0.5
                guard let iY = sole(mul.outputs[0]), let half = c.plain(iY, "Mul", 2), scaled(half, by: 0.5) == mul.outputs[0] else { return nil }
                return ([iM, iY], half.outputs[0])
            }
            // (h · 0.5) · tail
            guard let iH = producer(o), let half = c.plain(iH, "Mul", 2), scaled(half, by: 0.5) == h, sole(o) == iM else { return nil }
            return ([iH, iM], mul.outputs[0])
        }
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        for (i, node) in graph.nodes.enumerated() where node.domain.isEmpty && (node.opType == "Erf" || node.opType == "Tanh") {
            guard c.plain(i, node.opType, 1) != nil, let arg = node.input(0), let out = node.output(0), let iArg = producer(arg),
                  sole(arg) == i else { continue }
            var pattern: [Int] = [i, iArg]
            let h: String
            let activation: ProductActivation
            if node.opType == "Erf" {
                // h / √2 or h · (1/√2).
                let a = graph.nodes[iArg]
                if let div = c.plain(iArg, "Div", 2), c.isConstant(div.inputs[1], 2.0.squareRoot()) {
                    h = div.inputs[0]
                } else if let x = scaled(c.plain(iArg, "Mul", 2), by: 1 / 2.0.squareRoot()) {
                    h = x
                } else { continue }
                guard a.inputs.filter({ $0 == h }).count == 1 else { continue }
                activation = .gelu
            } else {
                // √(2/π) · (h + 0.044715 · h³)
                guard let s = scaled(c.plain(iArg, "Mul", 2), by: (2 / Double.pi).squareRoot()), let iS = producer(s), sole(s) == iArg,
                      let add = c.plain(iS, "Add", 2) else { continue }
                var found: (h: String, nodes: [Int])?
                for (k, cubed) in add.inputs.enumerated() {
                    let x = add.inputs[1 - k]
                    guard let iC = producer(cubed), sole(cubed) == iS, let cube = scaled(c.plain(iC, "Mul", 2), by: 0.044715),
                          let iP = producer(cube), sole(cube) == iC else { continue }
                    if let pow = c.plain(iP, "Pow", 2), pow.inputs[0] == x, c.isConstant(pow.inputs[1], 3) || c.constant(pow.inputs[1])?.intValues() == [3] {
                        found = (x, [iS, iC, iP])
                    } else if let mul = c.plain(iP, "Mul", 2), let sq = c.other(mul, x), let iQ = producer(sq), sole(sq) == iP,
                              let square = c.plain(iQ, "Mul", 2), square.inputs == [x, x] {
                        found = (x, [iS, iC, iP, iQ])
                    }
                    if found != nil { break }
                }
                guard let found else { continue }
                h = found.h
                pattern += found.nodes
                activation = .fastGelu
            }
            // (Erf or Tanh) + 1, then the half product with h.
            guard let iOne = sole(out), let one = c.plain(iOne, "Add", 2), scaled(one, by: 1) == out,
                  let tail = halfProduct(one.outputs[0], h) else { continue }
            pattern += [iOne] + tail.nodes
            let y = tail.y
            // h read by the pattern alone.
            guard !c.graphOutputs.contains(h), let hReaders = c.index.consumers[h], Set(hReaders).isSubset(of: Set(pattern)),
                  c.isFloat(h), let iProduct = producer(h) else { continue }
            // The product, directly or through a Reshape.
            var reshape: (index: Int, node: Node)?
            var productIndex = iProduct
            if let r = c.plain(iProduct, "Reshape", 2, allowing: ["allowzero"]) {
                guard let g = r.input(0), let iG = producer(g), sole(g) == iProduct else { continue }
                reshape = (iProduct, r)
                productIndex = iG
            }
            let product = graph.nodes[productIndex]
            let productOutput = reshape == nil ? y : product.outputs[0]
            var fused: Node
            if product.domain == internalDomain && product.opType == "MatMulBias" && product.attributes["activation"] == nil
                && product.outputs.count == 1 {
                fused = product
            } else if product.domain.isEmpty && product.opType == "Gemm", product.inputs.count == 3, product.outputs.count == 1,
                      (product.int("transA") ?? 0) == 0, (product.float("alpha") ?? 1) == 1, (product.float("beta") ?? 1) == 1,
                      let b = product.input(1), c.rank(b) == 2, let n = c.types[b]?.staticShape.map({ $0[(product.int("transB") ?? 0) == 1 ? 0 : 1] }),
                      let bias = product.input(2), c.types[bias]?.staticShape == [n], c.dtype(bias) == c.dtype(h), c.dtype(b) == c.dtype(h) {
                fused = Node(opType: "MatMulBias", domain: internalDomain, name: product.name, inputs: product.inputs, outputs: product.outputs)
                if product.int("transB") == 1 { fused.attributes["transB"] = .int(1) }
            } else { continue }
            let touched = pattern + [productIndex] + (reshape.map { [$0.index] } ?? [])
            guard touched.allSatisfy({ !removed.contains($0) && replacement[$0] == nil }) else { continue }
            fused.attributes["activation"] = .string(activation.rawValue)
            fused.outputs = [productOutput]
            replacement[productIndex] = fused
            if let reshape {
                var r = reshape.node
                r.outputs = [y]
                replacement[reshape.index] = r
            }
            removed.formUnion(pattern)
        }
        guard !replacement.isEmpty else { return }
        model.graph.apply(removing: removed, replacing: replacement)
        model.graph.dropValueInfoOfRemovedValues()
        model.opsetImports[internalDomain] = 1
    }
}
