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
/// graph's GELU (no gradient) is left to `ElementwiseFusion`, whose chain computes the ops' own
/// values in one pass already. Constants are checked to float32 precision: √2, 1, 0.5 and 2/√π. Float32 and float64.
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
        /// Node `i` when it is the plain default-domain `op` with `arity` inputs and one output.
        func op(_ i: Int?, _ type: String, _ arity: Int) -> Node? {
            guard let i else { return nil }
            let n = graph.nodes[i]
            guard n.domain.isEmpty, n.opType == type, n.inputs.count == arity, n.outputs.count == 1, n.attributes.isEmpty,
                  !n.inputs.contains(where: \.isEmpty) else { return nil }
            return n
        }
        /// The input of binary node `n` other than `v` (n reads v once).
        func other(_ n: Node, _ v: String) -> String? {
            guard n.inputs.count == 2, n.inputs.filter({ $0 == v }).count == 1 else { return nil }
            return n.inputs[0] == v ? n.inputs[1] : n.inputs[0]
        }
        /// Whether `name` is a one-element constant within float32 rounding of `value`.
        func isConstant(_ name: String?, _ value: Double) -> Bool {
            guard let t = c.constant(name), t.count == 1, t.dtype.isFloatingPoint, let v = t.scalarDouble() else { return false }
            return abs(v - value) <= 4e-7 * abs(value)
        }
        let sqrt2 = 2.0.squareRoot(), twoOverSqrtPi = 2 / Double.pi.squareRoot()
        var removed = Set<Int>(), replacement: [Int: Node] = [:]
        var builder = GraphBuilder(graph)
        for (iE, erf) in graph.nodes.enumerated() {
            guard op(iE, "Erf", 1) != nil, let d = erf.input(0), let e = erf.output(0),
                  let iD = producer(d), let div = op(iD, "Div", 2), div.inputs[0] != div.inputs[1], isConstant(div.inputs[1], sqrt2),
                  let iA = readers(e).flatMap({ $0.count == 1 ? $0.first : nil }), let add = op(iA, "Add", 2),
                  let one = other(add, e), isConstant(one, 1) else { continue }
            let h = div.inputs[0], a = add.outputs[0]
            guard let dtype = c.dtype(h), dtype == .float32 || dtype == .float64, let aReaders = readers(a) else { continue }
            // The forward product h·(erf + 1) among a's readers, then ·0.5.
            guard let iM = aReaders.first(where: { op($0, "Mul", 2).flatMap { other($0, a) } == h }),
                  let m = graph.nodes[iM].output(0), let iY = readers(m).flatMap({ $0.count == 1 ? $0.first : nil }),
                  let mulHalf = op(iY, "Mul", 2), isConstant(other(mulHalf, m), 0.5), let y = mulHalf.output(0) else { continue }
            // A training graph's: a's other reader is dY·0.5 times a (h's gradient through the product).
            guard aReaders.count == 2 else { continue }
            guard let iGA = aReaders.first(where: { $0 != iM }), let mulA = op(iGA, "Mul", 2), let g1 = other(mulA, a), g1 != h,
                  let iG1 = producer(g1), let scale = op(iG1, "Mul", 2),
                  let dY = scale.inputs.first(where: { !isConstant($0, 0.5) }), isConstant(other(scale, dY), 0.5),
                  let g1Readers = readers(g1), g1Readers.count == 2, g1Readers.contains(iGA),
                  // dY·0.5·h, the gradient reaching erf's output, times Erf's derivative.
                  let iGB = g1Readers.first(where: { $0 != iGA }), let mulH = op(iGB, "Mul", 2), other(mulH, g1) == h,
                  let gB = mulH.output(0), let iGE = readers(gB).flatMap({ $0.count == 1 ? $0.first : nil }),
                  let mulE = op(iGE, "Mul", 2), let eg = other(mulE, gB),
                  let iEG = producer(eg), let scaleE = op(iEG, "Mul", 2), only(eg, iGE),
                  let ex = scaleE.inputs.first(where: { !isConstant($0, twoOverSqrtPi) }), isConstant(other(scaleE, ex), twoOverSqrtPi),
                  let iExp = producer(ex), let exp = op(iExp, "Exp", 1), only(ex, iEG),
                  let iNeg = producer(exp.inputs[0]), let neg = op(iNeg, "Neg", 1), only(exp.inputs[0], iExp),
                  let iSq = producer(neg.inputs[0]), let sq = op(iSq, "Mul", 2), sq.inputs == [d, d], only(neg.inputs[0], iNeg),
                  only(d, iE, iSq),
                  // Divided by √2 (the Div's gradient), summed with the product's.
                  let gE = mulE.output(0), let iGD = readers(gE).flatMap({ $0.count == 1 ? $0.first : nil }),
                  let divE = op(iGD, "Div", 2), divE.inputs[0] == gE, isConstant(divE.inputs[1], sqrt2),
                  let gD = divE.output(0), let gA = mulA.output(0), let iS = readers(gD).flatMap({ $0.count == 1 ? $0.first : nil }),
                  only(gA, iS), let sum = op(iS, "Sum", 2) ?? op(iS, "Add", 2), Set(sum.inputs) == [gA, gD], gA != gD,
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
