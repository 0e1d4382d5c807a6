/// Einsum: any equation (implicit or explicit output, ellipsis with broadcasting, repeated
/// labels as diagonals). Each operand first loses its diagonals and the labels only it uses;
/// operands are then contracted pairwise, left to right, as one batched GEMM each.

/// A parsed equation; labels are Ints (letters by their code, ellipsis dims as 1000 + k).
struct EinsumEquation {
    var inputs: [[Int]]
    var output: [Int]

    init(_ equation: String, ranks: [Int]) throws {
        let text = equation.filter { !$0.isWhitespace }
        let parts = text.components(separatedBy: "->")
        guard parts.count <= 2 else { throw KernelError("equation '\(equation)' has more than one '->'") }
        let terms = parts[0].components(separatedBy: ",")
        guard terms.count == ranks.count else { throw KernelError("equation '\(equation)' has \(terms.count) operands, \(ranks.count) inputs given") }
        // First pass: letters per term and the ellipsis rank.
        func letters(_ term: String) throws -> (before: [Int], after: [Int], hasEllipsis: Bool) {
            let pieces = term.components(separatedBy: "...")
            guard pieces.count <= 2 else { throw KernelError("term '\(term)' has more than one ellipsis") }
            func codes(_ s: String) throws -> [Int] {
                try s.map { c in
                    guard c.isLetter, c.isASCII, let v = c.asciiValue else { throw KernelError("'\(c)' is not a label letter in '\(equation)'") }
                    return Int(v)
                }
            }
            return (try codes(pieces[0]), pieces.count == 2 ? try codes(pieces[1]) : [], pieces.count == 2)
        }
        let parsed = try terms.map(letters)
        var ellipsisRank = 0
        for (i, p) in parsed.enumerated() {
            let named = p.before.count + p.after.count
            if p.hasEllipsis {
                guard ranks[i] >= named else { throw KernelError("operand \(i) of rank \(ranks[i]) has fewer dims than term '\(terms[i])'") }
                ellipsisRank = max(ellipsisRank, ranks[i] - named)
            } else {
                guard ranks[i] == named else { throw KernelError("operand \(i) of rank \(ranks[i]) does not fit term '\(terms[i])'") }
            }
        }
        inputs = parsed.enumerated().map { i, p in
            guard p.hasEllipsis else { return p.before }
            let e = ranks[i] - p.before.count - p.after.count
            return p.before + (0..<e).map { 1000 + ellipsisRank - e + $0 } + p.after
        }
        let ellipsisLabels = (0..<ellipsisRank).map { 1000 + $0 }
        if parts.count == 2 {
            let out = try letters(parts[1])
            output = out.before + (out.hasEllipsis ? ellipsisLabels : []) + out.after
            let all = Set(inputs.joined())
            for l in output where !all.contains(l) { throw KernelError("output label '\(Character(UnicodeScalar(UInt8(l))))' is not in any input") }
            guard Set(output).count == output.count else { throw KernelError("output of '\(equation)' repeats a label") }
        } else {
            // Implicit output: ellipsis dims, then letters used exactly once, alphabetically.
            var counts: [Int: Int] = [:]
            for l in inputs.joined() where l < 1000 { counts[l, default: 0] += 1 }
            output = ellipsisLabels + counts.filter { $0.value == 1 }.keys.sorted()
        }
    }
}

/// A dense operand with one label per dim.
struct LabeledArray<T: FloatElement> {
    var values: [T]
    var shape: [Int]
    var labels: [Int]

    /// Keeps only the diagonal of every label that appears more than once.
    func diagonalized() -> LabeledArray {
        guard Set(labels).count != labels.count else { return self }
        var newLabels: [Int] = [], newShape: [Int] = []
        for (l, d) in zip(labels, shape) where !newLabels.contains(l) { newLabels.append(l); newShape.append(d) }
        let strides = contiguousStrides(shape)
        // Stride in the source for each new dim: the sum over its repeated positions.
        let srcStrides = newLabels.map { l in labels.indices.filter { labels[$0] == l }.reduce(0) { $0 + strides[$1] } }
        return LabeledArray(values: gatherStrided(values, shape: newShape, strides: srcStrides), shape: newShape, labels: newLabels)
    }

    /// Sums out every dim whose label is not in `keep`.
    func summed(keeping keep: Set<Int>) -> LabeledArray {
        let kept = labels.indices.filter { keep.contains(labels[$0]) }
        guard kept.count != labels.count else { return self }
        let newShape = kept.map { shape[$0] }
        let newStrides = contiguousStrides(newShape)
        var dstStride = [Int](repeating: 0, count: shape.count)
        for (j, d) in kept.enumerated() { dstStride[d] = newStrides[j] }
        var out = [T](repeating: 0, count: Tensor.elementCount(newShape))
        var walk = Odometer(shape: shape, strides: [dstStride])
        for i in 0..<values.count {
            out[walk.offsets[0]] += values[i]
            walk.advance()
        }
        return LabeledArray(values: out, shape: newShape, labels: kept.map { labels[$0] })
    }

    /// The operand with dims reordered to `order` (labels), size-1 dims broadcast to `sizes`.
    func arranged(_ order: [Int], sizes: [Int: Int]) -> [T] {
        let strides = contiguousStrides(shape)
        let outShape = order.map { sizes[$0]! }
        let src = order.map { l -> Int in
            guard let d = labels.firstIndex(of: l), shape[d] != 1 else { return 0 }
            return strides[d]
        }
        return gatherStrided(values, shape: outShape, strides: src)
    }
}

/// Contracts two operands, keeping the labels in `keep`: [batch, aOnly, bOnly] via batched GEMM.
func einsumContract<T: FloatElement>(_ a: LabeledArray<T>, _ b: LabeledArray<T>, keep: Set<Int>) throws -> LabeledArray<T> {
    var sizes: [Int: Int] = [:]
    for x in [a, b] {
        for (l, d) in zip(x.labels, x.shape) {
            if let s = sizes[l], s != d, s != 1, d != 1 { throw KernelError("label dims differ: \(s) and \(d)") }
            if sizes[l] == nil || sizes[l] == 1 { sizes[l] = d }
        }
    }
    let inB = Set(b.labels), inA = Set(a.labels)
    let batch = a.labels.filter { inB.contains($0) && keep.contains($0) }
    let contracted = a.labels.filter { inB.contains($0) && !keep.contains($0) }
    let aOnly = a.labels.filter { !inB.contains($0) }
    let bOnly = b.labels.filter { !inA.contains($0) }
    let av = a.arranged(batch + aOnly + contracted, sizes: sizes)
    let bv = b.arranged(batch + contracted + bOnly, sizes: sizes)
    let nb = batch.reduce(1) { $0 * sizes[$1]! }, m = aOnly.reduce(1) { $0 * sizes[$1]! }
    let k = contracted.reduce(1) { $0 * sizes[$1]! }, n = bOnly.reduce(1) { $0 * sizes[$1]! }
    var out = [T](repeating: 0, count: nb * m * n)
    av.withUnsafeBufferPointer { pa in bv.withUnsafeBufferPointer { pb in out.withUnsafeMutableBufferPointer { po in
        guard let A = pa.baseAddress, let B = pb.baseAddress, let C = po.baseAddress else { return }
        for i in 0..<nb {
            BLAS.gemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: A + i * m * k, lda: max(k, 1),
                 b: B + i * k * n, ldb: max(n, 1), beta: 0, c: C + i * m * n, ldc: max(n, 1))
        }
    } } }
    let labels = batch + aOnly + bOnly
    return LabeledArray(values: out, shape: labels.map { sizes[$0]! }, labels: labels)
}

struct EinsumOp: ElementOperation {
    let equation: String, operands: [Tensor]
    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        let eq = try EinsumEquation(equation, ranks: operands.map(\.rank))
        let outSet = Set(eq.output)
        var arrays = try zip(operands, eq.inputs).map { LabeledArray(values: try $0.elements(as: T.self), shape: $0.shape, labels: $1).diagonalized() }
        // Sum out labels that no other operand and not the output uses.
        for i in arrays.indices {
            var needed = outSet
            for (j, x) in arrays.enumerated() where j != i { needed.formUnion(x.labels) }
            arrays[i] = arrays[i].summed(keeping: needed)
        }
        var result = arrays[0]
        for i in 1..<max(arrays.count, 1) {
            var keep = outSet
            for x in arrays[(i + 1)...] { keep.formUnion(x.labels) }
            result = try einsumContract(result, arrays[i], keep: keep)
        }
        result = result.summed(keeping: outSet)
        var sizes: [Int: Int] = [:]
        for (l, d) in zip(result.labels, result.shape) { sizes[l] = d }
        for l in eq.output where sizes[l] == nil { sizes[l] = 1 }
        let values = result.arranged(eq.output, sizes: sizes)
        return Tensor(shape: eq.output.map { sizes[$0]! }, scalars: values)
    }
}

func registerEinsumOps(_ registry: OpRegistry) {
    registry.register("Einsum", since: 12, einsumKernel)
    registry.registerGradient("Einsum", einsumGradient)
}

/// Einsum, since opset 12.
func einsumKernel(_ ctx: NodeContext) throws -> Kernel {
    let equation = try ctx.string("equation") ?? ""
    guard !equation.isEmpty else { throw KernelError("attribute 'equation' is required") }
    return AnyKernel { inputs, _ in
        let operands = try (0..<inputs.count).map { try inputs.tensor($0) }
        guard let first = operands.first else { throw KernelError("Einsum needs at least one input") }
        guard operands.allSatisfy({ $0.dtype == first.dtype }) else { throw KernelError("Einsum inputs differ in type") }
        switch first.dtype {
        case .float32, .float64, .float16, .bfloat16:
            return try withFloatCompute(operands) { t in [try dispatch(t[0]!.dtype, EinsumOp(equation: equation, operands: t.map { $0! }))] }
                .map { $0.map(Value.tensor) }
        default:
            // Integers through float64: exact while sums stay below 2^53.
            let wide = try operands.map { try $0.converted(toFloat: .float64) }
            let y = try EinsumOp(equation: equation, operands: wide).float(Double.self)
            let values = y.scalars(as: Double.self)
            return [.tensor(try Tensor(dtype: first.dtype, shape: y.shape, doubles: values))]
        }
    }
}

/// Einsum: the gradient of operand i is an einsum of dY with the other operands, written to
/// operand i's subscripts; labels only operand i has (summed away) come back by broadcasting,
/// and ellipsis dimensions broadcast in the forward are summed back.
func einsumGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    guard let equation = g.node.string("equation") else { throw GradientError("Einsum has no equation") }
    let compact = equation.replacingOccurrences(of: " ", with: "")
    let sides = compact.components(separatedBy: "->")
    func tokens(_ term: Substring) -> [String] {
        var out: [String] = []
        var rest = term[...]
        while !rest.isEmpty {
            if rest.hasPrefix("...") { out.append("..."); rest = rest.dropFirst(3) } else { out.append(String(rest.first!)); rest = rest.dropFirst() }
        }
        return out
    }
    let terms = sides[0].split(separator: ",", omittingEmptySubsequences: false).map(tokens)
    guard terms.count == g.node.inputs.count else { throw GradientError("Einsum's equation has \(terms.count) operands, the node \(g.node.inputs.count)") }
    var output: [String]
    if sides.count == 2 {
        output = tokens(Substring(sides[1]))
    } else {
        // Implicit output: the ellipsis, then the labels that appear once, in alphabetical order.
        var counts: [String: Int] = [:]
        for t in terms.joined() where t != "..." { counts[t, default: 0] += 1 }
        output = (terms.joined().contains("...") ? ["..."] : []) + counts.filter { $0.value == 1 }.keys.sorted()
    }
    func text(_ t: [String]) -> String { t.joined() }
    var grads: [String?] = []
    for (i, term) in terms.enumerated() {
        guard g.needs(i) else { grads.append(nil); continue }
        guard Set(term).count == term.count else { throw GradientError("Einsum with a repeated label in one operand ('\(text(term))') is not differentiated") }
        let others = terms.enumerated().filter { $0.offset != i }
        var available = Set(output)
        for (_, t) in others { available.formUnion(t) }
        let target = term.filter { available.contains($0) }
        let eq = ([text(output)] + others.map { text($0.element) }).joined(separator: ",") + "->" + text(target)
        var grad = g.op("Einsum", [dY] + others.map { g.input($0.offset) }, attributes: ["equation": .string(eq)])
        if target.count != term.count {
            // Labels summed away in the forward: give them back as size-1 axes, then broadcast.
            guard !term.contains("..."), true else { throw GradientError("Einsum with an ellipsis and a label only one operand has is not differentiated") }
            let missing = term.enumerated().filter { !available.contains($0.element) }.map(\.offset)
            grad = g.op("Expand", [g.unsqueeze(grad, axes: missing), g.shape(of: g.input(i))])
        }
        if term.contains("...") { grad = g.reduceToShape(grad, gradShape: nil, of: g.input(i)) }
        grads.append(grad)
    }
    return grads
}
