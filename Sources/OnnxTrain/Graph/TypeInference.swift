/// What is known statically about a tensor value: its element type and shape (a dimension may
/// be symbolic or unknown; `shape` nil means even the rank is unknown).
public struct TensorInfo: Equatable, CustomStringConvertible {
    public var dtype: DType?
    public var shape: [Dim]?

    public init(dtype: DType?, shape: [Dim]?) {
        self.dtype = dtype
        self.shape = shape
    }

    public init?(_ type: ValueType?) {
        guard case .tensor(let d, let s)? = type else { return nil }
        dtype = d
        shape = s
    }

    public var rank: Int? { shape?.count }
    /// Every dimension as a number, when all are known.
    public var staticShape: [Int]? {
        guard let shape else { return nil }
        var out: [Int] = []
        for d in shape { guard case .value(let v) = d else { return nil }; out.append(v) }
        return out
    }
    public var valueType: ValueType { .tensor(dtype, shape: shape) }
    public var description: String { valueType.description }
}

extension Node {
    /// Attribute accessors for graph passes (kernels parse attributes through `NodeContext`).
    public func int(_ name: String) -> Int? {
        switch attributes[name] {
        case .int(let v)?: return v
        default: return nil
        }
    }
    public func ints(_ name: String) -> [Int]? {
        switch attributes[name] {
        case .ints(let v)?: return v
        default: return nil
        }
    }
    public func float(_ name: String) -> Float? {
        switch attributes[name] {
        case .float(let v)?: return v
        case .int(let v)?: return Float(v)
        default: return nil
        }
    }
    public func string(_ name: String) -> String? {
        switch attributes[name] {
        case .string(let v)?: return v
        default: return nil
        }
    }
    public func strings(_ name: String) -> [String]? {
        switch attributes[name] {
        case .strings(let v)?: return v
        default: return nil
        }
    }
    /// Input `i`, or nil when it is absent or "".
    public func input(_ i: Int) -> String? { i < inputs.count && !inputs[i].isEmpty ? inputs[i] : nil }
    /// Output `i`, or nil when it is absent or "".
    public func output(_ i: Int) -> String? { i < outputs.count && !outputs[i].isEmpty ? outputs[i] : nil }
}

/// Static element types and shapes of every value of a graph, as far as they can be known
/// without data: declared types (inputs, value_info, outputs) and initializers first, then one
/// rule per op over the nodes in order. Symbolic dimensions are kept, also through the small
/// int64 shape tensors an export computes (`shapeValue`: Shape → Gather → Unsqueeze → Concat →
/// Reshape's target, as PyTorch writes `x.size()[:-1] + (h, d)`). An op without a shape
/// rule still gets an element type (most ops keep their first input's); its shape stays unknown,
/// and the code that reads this falls back to shapes computed at run time.
public struct TypeInference {
    public internal(set) var info: [String: TensorInfo] = [:]

    public init(graph: Graph, opsets: [String: Int]) {
        for v in graph.inputs + graph.valueInfo + graph.outputs {
            if let t = TensorInfo(v.type) { info[v.name] = t }
        }
        for (name, t) in graph.initializers {
            info[name] = TensorInfo(dtype: t.dtype, shape: t.shape.map { .value($0) })
        }
        let index = GraphIndex(graph)
        let constants = graph.initializers.filter { index.isConstant($0.key) }
        var constantValues = constants
        var shapeValues: [String: [Dim]] = [:]
        for i in index.order {
            let node = graph.nodes[i]
            if node.opType == "Constant", node.domain.isEmpty, let out = node.output(0), let t = TypeInference.constantValue(node) {
                constantValues[out] = t
            }
            /// The entries of a 1-D (or scalar) integer value, as dimensions, where known.
            func entries(_ name: String) -> [Dim]? {
                if let v = shapeValues[name] { return v }
                guard let t = constantValues[name], t.rank <= 1, t.count <= 64, let v = t.intValues() else { return nil }
                return v.map { .value($0) }
            }
            if let out = node.output(0), node.outputs.count == 1,
               let v = TypeInference.shapeValue(node, info: { info[$0] }, entries: entries, constant: { constantValues[$0] }) {
                shapeValues[out] = v
            }
            let inferred = TypeInference.rule(node, inputs: node.inputs.map { $0.isEmpty ? nil : info[$0] },
                                              constant: { name in constantValues[name] }, entries: entries,
                                              opset: opsets[node.domain] ?? 1)
            for (k, o) in node.outputs.enumerated() where !o.isEmpty {
                let declared = info[o]
                let new = k < inferred.count ? inferred[k] : nil
                info[o] = TypeInference.merge(declared, new)
            }
        }
    }

    public subscript(name: String) -> TensorInfo? { info[name] }

    /// Declared information wins where it is more precise; inference fills in the rest.
    static func merge(_ declared: TensorInfo?, _ inferred: TensorInfo?) -> TensorInfo? {
        guard let declared else { return inferred }
        guard let inferred else { return declared }
        var out = declared
        if out.dtype == nil { out.dtype = inferred.dtype }
        if let d = declared.shape, let s = inferred.shape, d.count == s.count {
            out.shape = zip(d, s).map { a, b in
                if case .value = a { return a }
                if case .value = b { return b }
                if case .symbol = a { return a }
                return b
            }
        } else if declared.shape == nil {
            out.shape = inferred.shape
        }
        return out
    }

    static func constantValue(_ node: Node) -> Tensor? {
        switch node.attributes["value"] {
        case .tensor(let t)?: return t
        default: break
        }
        if let v = node.float("value_float"), node.attributes["value_float"] != nil { return Tensor(scalar: v) }
        if let v = node.int("value_int") { return Tensor(scalar: Int64(v)) }
        if let v = node.ints("value_ints") { return Tensor(shape: [v.count], scalars: v.map(Int64.init)) }
        if case .floats(let v)? = node.attributes["value_floats"] { return Tensor(shape: [v.count], scalars: v) }
        return nil
    }

    // MARK: Rules

    static let unaryShapeOps: Set<String> = [
        "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Ceil", "Cos", "Cosh", "Elu", "Erf", "Exp",
        "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity", "LeakyRelu", "Log", "Mish", "Neg", "Reciprocal",
        "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh",
        "Softmax", "LogSoftmax", "Hardmax", "Celu", "ThresholdedRelu", "Shrink", "Clip", "CumSum", "Not",
        "IsNaN", "IsInf", "Cast", "CastLike", "LpNormalization", "InstanceNormalization", "GroupNormalization",
        "MeanVarianceNormalization", "LRN", "Trilu", "BiasGelu", "FastGelu", "QuickGelu", "ReluGrad", "SigmoidGrad",
        "TanhGrad", "GeluGrad", "FastGeluGrad", "SoftmaxGrad", "SoftmaxGrad_13", "LogSoftmaxGrad", "LogSoftmaxGrad_13",
        "DropoutGrad", "LeakyReluGrad", "QuickGeluGrad", "Scale",
    ]
    static let broadcastOps: Set<String> = [
        "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Equal", "Less", "Greater", "LessOrEqual",
        "GreaterOrEqual", "And", "Or", "Xor", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Mod", "PRelu", "Where",
    ]
    static let boolOps: Set<String> = ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not", "IsNaN", "IsInf"]

    /// The value of a small shape computation's output as dimensions (a symbol or number each),
    /// or nil: Shape (its input's dimensions), Gather of constant indices, Unsqueeze or Squeeze of
    /// one entry, Concat, Cast to an integer type, and a Slice with constant bounds of a tracked value.
    static func shapeValue(_ node: Node, info: (String) -> TensorInfo?, entries: (String) -> [Dim]?,
                           constant: (String) -> Tensor?) -> [Dim]? {
        guard node.domain.isEmpty, let x = node.input(0) else { return nil }
        func constInts(_ i: Int) -> [Int]? { node.input(i).flatMap(constant)?.intValues() }
        switch node.opType {
        case "Shape":
            guard let s = info(x)?.shape else { return nil }
            let r = s.count
            let start = normalize(node.int("start") ?? 0, r, clamp: true), end = normalize(node.int("end") ?? r, r, clamp: true)
            return start < end ? Array(s[start..<end]) : []
        case "Gather":
            guard (node.int("axis") ?? 0) == 0, let v = entries(x), let idx = constInts(1) else { return nil }
            var out: [Dim] = []
            for i in idx {
                let j = i < 0 ? i + v.count : i
                guard j >= 0 && j < v.count else { return nil }
                out.append(v[j])
            }
            return out
        case "Unsqueeze", "Squeeze", "Identity":
            // One entry stays one entry (a scalar made [1], or [1] made a scalar).
            guard let v = entries(x), v.count == 1 else { return nil }
            return v
        case "Cast":
            guard let to = node.int("to"), let dt = DType(rawValue: Int32(to)), dt == .int64 || dt == .int32 else { return nil }
            return entries(x)
        case "Concat":
            guard node.int("axis") == 0 || node.int("axis") == -1 else { return nil }
            var out: [Dim] = []
            for name in node.inputs {
                guard let v = entries(name) else { return nil }
                out += v
            }
            return out
        case "Slice":
            guard node.inputs.count >= 3, let v = entries(x), let starts = constInts(1), let ends = constInts(2),
                  starts.count == 1, ends.count == 1, node.input(3) == nil || constInts(3) == [0] || constInts(3) == [-1],
                  node.input(4) == nil || constInts(4) == [1] else { return nil }
            let n = v.count
            let a = min(max(starts[0] < 0 ? starts[0] + n : starts[0], 0), n), b = min(max(ends[0] < 0 ? ends[0] + n : ends[0], 0), n)
            return a < b ? Array(v[a..<b]) : []
        default:
            return nil
        }
    }

    /// Output information of one node from its inputs' information (`entries`: a shape
    /// computation's value as dimensions, `shapeValue`).
    static func rule(_ node: Node, inputs: [TensorInfo?], constant: (String) -> Tensor?, entries: (String) -> [Dim]? = { _ in nil },
                     opset: Int) -> [TensorInfo?] {
        func input(_ i: Int) -> TensorInfo? { i < inputs.count ? inputs[i] : nil }
        func constInts(_ i: Int) -> [Int]? { node.input(i).flatMap(constant)?.intValues() }
        let x = input(0)
        let dtype = x?.dtype
        let op = node.opType
        // ChannelAffine (ChannelAffineFusion) keeps its input's type and shape.
        if node.domain == internalDomain && op == "ChannelAffine" { return [x] }
        // ClipGradient (ClipGradientFusion): dY's type, every present input broadcast.
        if node.domain == internalDomain && op == "ClipGradient" {
            let present = node.inputs.indices.filter { !node.inputs[$0].isEmpty }
            return [TensorInfo(dtype: dtype ?? input(4)?.dtype, shape: broadcast(present.map { input($0)?.shape }))]
        }
        // MatMulBias (MatMulAddToGemm): rows [..., M, K] times [K, N] give [..., M, N].
        if node.domain == internalDomain && op == "MatMulBias" {
            return [TensorInfo(dtype: dtype, shape: matmulShape(x?.shape, input(1)?.shape, transA: false, transB: node.int("transB") == 1))]
        }
        // FusedAttention (AttentionFusion): Q [B, Tq, H, D] and V [B, Tk, H, Dv] give [B, Tq, H, Dv].
        // Packed (qkv_heads H): QKV [B, T, 3·H·D] gives [B, T, H, D].
        if node.domain == internalDomain && op == "FusedAttention" {
            if let h = node.int("qkv_heads"), h > 0 {
                guard let ps = x?.shape, ps.count == 3 else { return [TensorInfo(dtype: dtype, shape: nil)] }
                var d = Dim.unknown
                if case .value(let w) = ps[2], w % (3 * h) == 0 { d = .value(w / (3 * h)) }
                return [TensorInfo(dtype: dtype, shape: [ps[0], ps[1], .value(h), d])]
            }
            guard let qs = x?.shape, qs.count == 4, let vs = input(2)?.shape, vs.count == 4 else { return [TensorInfo(dtype: dtype, shape: nil)] }
            return [TensorInfo(dtype: dtype, shape: Array(qs.prefix(3)) + [vs[3]])]
        }
        // StridedMatMul (StridedMatMulFusion): the product of the permuted operands, permuted.
        if node.domain == internalDomain && op == "StridedMatMul" {
            func permuted(_ shape: [Dim]?, _ perm: [Int]?) -> [Dim]? {
                guard let shape, let perm else { return shape }
                return perm.count == shape.count && perm.allSatisfy({ shape.indices.contains($0) }) ? perm.map { shape[$0] } : nil
            }
            let y = matmulShape(permuted(x?.shape, node.ints("permA")), permuted(input(1)?.shape, node.ints("permB")),
                                transA: node.int("transA") == 1, transB: node.int("transB") == 1)
            return [TensorInfo(dtype: dtype, shape: permuted(y, node.ints("permY")))]
        }
        // ElementwiseChain (ElementwiseFusion): its start's type (every input shares it), the
        // start broadcast with every binary step's operand and every ClipGradient step's x, bounds
        // and fill (as that op's own rule); a Clip step's scalar bounds and the Softmax keep it.
        if node.domain == internalDomain && op == "ElementwiseChain" {
            guard let ops = node.strings("ops"), let operands = node.ints("operands"), ops.count == operands.count else {
                return [TensorInfo(dtype: dtype, shape: nil)]
            }
            var shapes = [x?.shape]
            for (name, k) in zip(ops, operands) {
                if ElementwiseChainKernel.binaryOps.contains(name) { shapes.append(input(k)?.shape) }
                if name == "ClipGradient" { shapes += (k..<(k + 4)).map { input($0)?.shape } }
            }
            return [TensorInfo(dtype: dtype, shape: broadcast(shapes))]
        }
        guard node.domain.isEmpty || node.domain == "com.microsoft" else { return [] }
        if op == "Constant" { return [TypeInference.constantValue(node).map { TensorInfo(dtype: $0.dtype, shape: $0.shape.map { .value($0) }) }] }
        if op == "Cast" { return [TensorInfo(dtype: node.int("to").flatMap { DType(rawValue: Int32($0)) }, shape: x?.shape)] }
        if op == "CastLike" { return [TensorInfo(dtype: input(1)?.dtype, shape: x?.shape)] }
        if op == "Where" {
            return [TensorInfo(dtype: input(1)?.dtype, shape: broadcast(inputs.map { $0?.shape }))]
        }
        if boolOps.contains(op) {
            let shape = unaryShapeOps.contains(op) ? x?.shape : broadcast(inputs.map { $0?.shape })
            return [TensorInfo(dtype: .bool, shape: shape)]
        }
        if unaryShapeOps.contains(op) { return [TensorInfo(dtype: dtype, shape: x?.shape)] }
        if broadcastOps.contains(op) { return [TensorInfo(dtype: dtype, shape: broadcast(inputs.map { $0?.shape }))] }
        switch op {
        case "Shape":
            guard let r = x?.rank else { return [TensorInfo(dtype: .int64, shape: [.unknown])] }
            let start = normalize(node.int("start") ?? 0, r, clamp: true), end = normalize(node.int("end") ?? r, r, clamp: true)
            return [TensorInfo(dtype: .int64, shape: [.value(max(0, end - start))])]
        case "Size": return [TensorInfo(dtype: .int64, shape: [])]
        case "ArgMax", "ArgMin":
            return [TensorInfo(dtype: .int64, shape: reduced(x?.shape, axes: node.int("axis").map { [$0] } ?? [0], keep: (node.int("keepdims") ?? 1) != 0))]
        case "Dropout":
            return [TensorInfo(dtype: dtype, shape: x?.shape), TensorInfo(dtype: .bool, shape: x?.shape)]
        case "MatMul", "FusedMatMul":
            return [TensorInfo(dtype: dtype, shape: matmulShape(x?.shape, input(1)?.shape, transA: node.int("transA") == 1, transB: node.int("transB") == 1))]
        case "Gemm":
            guard let a = x?.shape, let b = input(1)?.shape, a.count == 2, b.count == 2 else { return [TensorInfo(dtype: dtype, shape: nil)] }
            let m = node.int("transA") == 1 ? a[1] : a[0], n = node.int("transB") == 1 ? b[0] : b[1]
            return [TensorInfo(dtype: dtype, shape: [m, n])]
        case "Transpose":
            guard let s = x?.shape else { return [TensorInfo(dtype: dtype, shape: nil)] }
            let perm = node.ints("perm") ?? Array((0..<s.count).reversed())
            guard perm.count == s.count, perm.allSatisfy({ $0 >= 0 && $0 < s.count }) else { return [TensorInfo(dtype: dtype, shape: nil)] }
            return [TensorInfo(dtype: dtype, shape: perm.map { s[$0] })]
        case "Reshape":
            guard let target = constInts(1) else {
                // Computed entries: their symbols and numbers (0 copies the input's dimension).
                if let v = node.input(1).flatMap(entries) {
                    let zero = node.int("allowzero") != 1
                    let ints = v.compactMap { d -> Int? in if case .value(let n) = d { return n } else { return nil } }
                    if ints.count == v.count { return [TensorInfo(dtype: dtype, shape: reshape(x?.shape, ints, allowZero: !zero))] }
                    return [TensorInfo(dtype: dtype, shape: v.enumerated().map { i, d in
                        if case .value(let n) = d {
                            if n == 0 && zero { return x?.shape.flatMap { i < $0.count ? $0[i] : nil } ?? .unknown }
                            return n < 0 ? .unknown : d
                        }
                        return d
                    })]
                }
                // The rank is the shape input's length, when that is static.
                if let s = input(1)?.shape, s.count == 1, case .value(let r) = s[0] { return [TensorInfo(dtype: dtype, shape: Array(repeating: .unknown, count: r))] }
                return [TensorInfo(dtype: dtype, shape: nil)]
            }
            return [TensorInfo(dtype: dtype, shape: reshape(x?.shape, target, allowZero: node.int("allowzero") == 1))]
        case "Flatten":
            guard let s = x?.shape else { return [TensorInfo(dtype: dtype, shape: nil)] }
            let axis = normalize(node.int("axis") ?? 1, s.count, clamp: true)
            return [TensorInfo(dtype: dtype, shape: [product(s[..<axis]), product(s[axis...])])]
        case "Squeeze", "Unsqueeze":
            guard let s = x?.shape else { return [TensorInfo(dtype: dtype, shape: nil)] }
            let axes = opset >= 13 ? (node.input(1) == nil ? (op == "Squeeze" ? [] : nil) : constInts(1)) : (node.ints("axes") ?? (op == "Squeeze" ? [] : nil))
            guard let axes else { return [TensorInfo(dtype: dtype, shape: nil)] }
            if op == "Squeeze" {
                if axes.isEmpty {
                    guard s.allSatisfy({ if case .value = $0 { return true } else { return false } }) else { return [TensorInfo(dtype: dtype, shape: nil)] }
                    return [TensorInfo(dtype: dtype, shape: s.filter { $0 != .value(1) })]
                }
                let norm = Set(axes.map { normalize($0, s.count, clamp: false) })
                return [TensorInfo(dtype: dtype, shape: s.indices.filter { !norm.contains($0) }.map { s[$0] })]
            }
            let r = s.count + axes.count
            let norm = Set(axes.map { normalize($0, r, clamp: false) })
            var it = s.makeIterator()
            return [TensorInfo(dtype: dtype, shape: (0..<r).map { norm.contains($0) ? .value(1) : (it.next() ?? .unknown) })]
        case "Concat", "ConcatTraining":
            let shapes = inputs.map { $0?.shape }
            guard let first = shapes.first ?? nil, shapes.allSatisfy({ $0?.count == first.count }) else { return [TensorInfo(dtype: dtype, shape: nil)] }
            let axis = normalize(node.int("axis") ?? 0, first.count, clamp: false)
            guard axis >= 0 && axis < first.count else { return [TensorInfo(dtype: dtype, shape: nil)] }
            var out = first
            var total = 0
            var known = true
            for s in shapes { if case .value(let v) = s![axis] { total += v } else { known = false } }
            out[axis] = known ? .value(total) : .unknown
            return [TensorInfo(dtype: dtype, shape: out), TensorInfo(dtype: .int64, shape: [.value(inputs.count)])]
        case "Gather":
            guard let s = x?.shape, let ind = input(1)?.shape else { return [TensorInfo(dtype: dtype, shape: nil)] }
            let axis = normalize(node.int("axis") ?? 0, s.count, clamp: false)
            guard axis >= 0 && axis < s.count else { return [TensorInfo(dtype: dtype, shape: nil)] }
            return [TensorInfo(dtype: dtype, shape: Array(s[..<axis]) + ind + Array(s[(axis + 1)...]))]
        case "GatherElements": return [TensorInfo(dtype: dtype, shape: input(1)?.shape)]
        case "GatherGrad", "GatherNDGrad":
            // (shape, indices, dY) → dX of `shape`, dY's type. The default rule (input 0's type) made
            // it int64, and every gradient after it (BERT's pooler Gather: the whole backward pass)
            // an integer, so the passes that read types left the backward pass alone.
            return [TensorInfo(dtype: input(2)?.dtype, shape: constInts(0).map { $0.map { .value($0) } })]
        case "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
             "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare":
            let axesFromInput = op == "ReduceSum" ? opset >= 13 : opset >= 18
            let axes: [Int]?
            if axesFromInput { axes = node.input(1) == nil ? [] : constInts(1) } else { axes = node.ints("axes") ?? [] }
            guard let axes else { return [TensorInfo(dtype: dtype, shape: nil)] }
            let keep = (node.int("keepdims") ?? 1) != 0
            if axes.isEmpty && node.int("noop_with_empty_axes") == 1 { return [TensorInfo(dtype: dtype, shape: x?.shape)] }
            return [TensorInfo(dtype: dtype, shape: reduced(x?.shape, axes: axes.isEmpty ? nil : axes, keep: keep))]
        case "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool":
            guard let s = x?.shape, s.count >= 2 else { return [TensorInfo(dtype: dtype, shape: nil)] }
            return [TensorInfo(dtype: dtype, shape: [s[0], s[1]] + Array(repeating: .value(1), count: s.count - 2))]
        case "Conv", "MaxPool", "AveragePool", "LpPool":
            return [TensorInfo(dtype: dtype, shape: windowShape(node, x?.shape, weight: op == "Conv" ? input(1)?.shape : nil)),
                    TensorInfo(dtype: .int64, shape: windowShape(node, x?.shape, weight: nil))]
        case "BatchNormalization", "BatchNormInternal":
            let c = input(1)?.shape
            return [TensorInfo(dtype: dtype, shape: x?.shape)] + (1..<5).map { _ in TensorInfo(dtype: input(1)?.dtype ?? dtype, shape: c) }
        case "LayerNormalization", "SimplifiedLayerNormalization":
            guard let s = x?.shape else { return [TensorInfo(dtype: dtype, shape: nil)] }
            let axis = normalize(node.int("axis") ?? -1, s.count, clamp: false)
            let stats = axis >= 0 && axis <= s.count ? Array(s[..<axis]) + Array(repeating: Dim.value(1), count: s.count - axis) : nil
            let stash = node.int("stash_type").flatMap { DType(rawValue: Int32($0)) } ?? .float32
            return [TensorInfo(dtype: dtype, shape: s), TensorInfo(dtype: stash, shape: stats), TensorInfo(dtype: stash, shape: stats)]
        case "SoftmaxCrossEntropyLoss":
            let reduction = node.string("reduction") ?? "mean"
            let labels = input(1)?.shape
            return [TensorInfo(dtype: dtype, shape: reduction == "none" ? labels : []), TensorInfo(dtype: dtype, shape: x?.shape)]
        case "Expand":
            guard let target = constInts(1) else {
                // A shape computed at run time (BERT's token type ids, expanded to the input's
                // [batch, sequence]): the rank is still known when the shape input's length is,
                // and a dimension of x other than 1 stays. Without it every value after the
                // embeddings had an unknown rank, and no projection became a MatMulBias.
                if let s = x?.shape, let t = input(1)?.shape, t.count == 1, case .value(let r) = t[0], r >= 0 {
                    return [TensorInfo(dtype: dtype, shape: broadcast([s, Array(repeating: .unknown, count: r)]))]
                }
                return [TensorInfo(dtype: dtype, shape: nil)]
            }
            return [TensorInfo(dtype: dtype, shape: broadcast([x?.shape, target.map { .value($0) }]))]
        case "ConstantOfShape":
            let d: DType = { if case .tensor(let t)? = node.attributes["value"] { return t.dtype }; return .float32 }()
            if let dims = constInts(0) { return [TensorInfo(dtype: d, shape: dims.map { .value($0) })] }
            // A shape computed at run time (ViT's class token, expanded to the batch through
            // ConstantOfShape, Where and Expand): the rank is the shape input's length. Without it
            // every value after the embeddings had an unknown rank, and no projection of ViT's
            // but the attention output became a MatMulBias.
            if let t = x?.shape, t.count == 1, case .value(let r) = t[0], r >= 0 {
                return [TensorInfo(dtype: d, shape: Array(repeating: .unknown, count: r))]
            }
            return [TensorInfo(dtype: d, shape: nil)]
        case "Range": return [TensorInfo(dtype: dtype, shape: [.unknown])]
        case "TopK":
            return [TensorInfo(dtype: dtype, shape: nil), TensorInfo(dtype: .int64, shape: nil)]
        case "NonZero": return [TensorInfo(dtype: .int64, shape: nil)]
        case "OneHot": return [TensorInfo(dtype: input(2)?.dtype, shape: nil)]
        case "EyeLike":
            return [TensorInfo(dtype: node.int("dtype").flatMap { DType(rawValue: Int32($0)) } ?? dtype, shape: x?.shape)]
        case "RandomNormal", "RandomUniform":
            return [TensorInfo(dtype: node.int("dtype").flatMap { DType(rawValue: Int32($0)) } ?? .float32, shape: node.ints("shape")?.map { .value($0) })]
        case "RandomNormalLike", "RandomUniformLike", "Bernoulli":
            return [TensorInfo(dtype: node.int("dtype").flatMap { DType(rawValue: Int32($0)) } ?? dtype, shape: x?.shape)]
        case "Split", "SplitTraining":
            // Every axis but the split one stays; that one's sizes from the split input or
            // attribute, or equal parts of a known size.
            guard let s = x?.shape else { return node.outputs.map { _ in TensorInfo(dtype: dtype, shape: nil) } }
            let axis = normalize(node.int("axis") ?? 0, s.count, clamp: false)
            guard axis >= 0 && axis < s.count else { return node.outputs.map { _ in TensorInfo(dtype: dtype, shape: s.map { _ in .unknown }) } }
            let sizes: [Int]?
            if node.input(1) != nil { sizes = constInts(1) } else if let a = node.ints("split") { sizes = a } else if case .value(let n) = s[axis],
                node.outputs.count > 0, n % node.outputs.count == 0 { sizes = Array(repeating: n / node.outputs.count, count: node.outputs.count) } else { sizes = nil }
            return node.outputs.indices.map { k in
                var out = s
                out[axis] = sizes.flatMap { k < $0.count ? .value($0[k]) : nil } ?? .unknown
                return TensorInfo(dtype: dtype, shape: out)
            }
        case "Slice":
            // starts, ends, axes and steps: inputs from opset 10, attributes before (no steps).
            let fromInputs = opset >= 10
            func operand(_ i: Int, _ attribute: String) -> [Int]?? {
                if !fromInputs { return .some(node.ints(attribute)) }
                guard node.input(i) != nil else { return .some(nil) }
                return constInts(i).map { .some($0) }   // nil: present but computed at run time
            }
            guard let s = x?.shape else { return [TensorInfo(dtype: dtype, shape: nil)] }
            guard let starts = operand(1, "starts") ?? nil, let ends = operand(2, "ends") ?? nil,
                  let axes = operand(3, "axes"), let steps = operand(4, "") else {
                return [TensorInfo(dtype: dtype, shape: Array(repeating: .unknown, count: s.count))]
            }
            return [TensorInfo(dtype: dtype, shape: sliced(s, starts: starts, ends: ends, axes: axes, steps: steps))]
        case "Pad", "Tile", "Resize", "Upsample", "ConvTranspose", "Einsum", "DepthToSpace", "SpaceToDepth",
             "GatherND", "ScatterND", "ScatterElements", "Compress", "ReverseSequence":
            if op == "ScatterND" || op == "ScatterElements" { return [TensorInfo(dtype: dtype, shape: x?.shape)] }
            return [TensorInfo(dtype: dtype, shape: x?.rank.map { Array(repeating: .unknown, count: $0) })]
        case "LSTM", "GRU", "RNN", "LSTMTraining", "GRUTraining":
            // Y [S, D, B, H] (layout 0) or [B, S, D, H] (layout 1); Y_h and Y_c [D, B, H] or [B, D, H].
            let layout = node.int("layout") ?? 0
            let d: Dim = .value(node.string("direction") == "bidirectional" ? 2 : 1)
            let h: Dim = node.int("hidden_size").map { .value($0) } ?? .unknown
            guard let s = x?.shape, s.count == 3 else { return node.outputs.map { _ in TensorInfo(dtype: dtype, shape: nil) } }
            let (seq, batch) = layout == 0 ? (s[0], s[1]) : (s[1], s[0])
            let y: [Dim] = layout == 0 ? [seq, d, batch, h] : [batch, seq, d, h]
            let state: [Dim] = layout == 0 ? [d, batch, h] : [batch, d, h]
            return [TensorInfo(dtype: dtype, shape: y), TensorInfo(dtype: dtype, shape: state), TensorInfo(dtype: dtype, shape: state)]
        default:
            return node.outputs.map { _ in TensorInfo(dtype: dtype, shape: nil) }
        }
    }

    /// Slice's output shape from constant starts, ends, axes (default: the first ones) and steps
    /// (default 1), clamped as the Slice kernel clamps them (`sliceAxis`); a sliced axis of unknown
    /// length stays unknown, inconsistent operands (which the kernel rejects) give every axis
    /// unknown. Without it a shape assembled from Slice(Shape(x)) (ViT's patch embedding) had an
    /// unknown length, the Reshape after it an unknown rank, and no Linear layer after it became a
    /// MatMulBias.
    static func sliced(_ shape: [Dim], starts: [Int], ends: [Int], axes: [Int]?, steps: [Int]?) -> [Dim] {
        let unknown = Array(repeating: Dim.unknown, count: shape.count)
        let axes = axes ?? Array(0..<starts.count), steps = steps ?? Array(repeating: 1, count: starts.count)
        guard ends.count == starts.count, axes.count == starts.count, steps.count == starts.count else { return unknown }
        let normalized = axes.map { $0 < 0 ? $0 + shape.count : $0 }
        guard normalized.allSatisfy({ $0 >= 0 && $0 < shape.count }), Set(normalized).count == normalized.count,
              !steps.contains(0) else { return unknown }
        var out = shape
        for (k, axis) in normalized.enumerated() {
            guard case .value(let d) = shape[axis], d >= 0 else { out[axis] = .unknown; continue }
            out[axis] = .value(sliceAxis(length: d, start: starts[k], end: ends[k], step: steps[k]).count)
        }
        return out
    }

    static func normalize(_ axis: Int, _ rank: Int, clamp: Bool) -> Int {
        let a = axis < 0 ? axis + rank : axis
        return clamp ? min(max(a, 0), rank) : a
    }

    static func product<C: Collection>(_ dims: C) -> Dim where C.Element == Dim {
        var p = 1
        for d in dims {
            guard case .value(let v) = d else { return .unknown }
            let (q, overflow) = p.multipliedReportingOverflow(by: v)
            if overflow { return .unknown }
            p = q
        }
        return .value(p)
    }

    /// numpy broadcasting of known ranks; a 1 against anything gives the other dimension.
    static func broadcast(_ shapes: [[Dim]?]) -> [Dim]? {
        var out: [Dim] = []
        for s in shapes {
            guard let s else { return nil }
            let r = max(out.count, s.count)
            let a = Array(repeating: Dim.value(1), count: r - out.count) + out
            let b = Array(repeating: Dim.value(1), count: r - s.count) + s
            out = zip(a, b).map { x, y in
                if x == .value(1) { return y }
                if y == .value(1) { return x }
                if x == y { return x }
                if case .value = x { return x }
                if case .value = y { return y }
                return .unknown
            }
        }
        return out
    }

    static func matmulShape(_ a: [Dim]?, _ b: [Dim]?, transA: Bool, transB: Bool) -> [Dim]? {
        guard var a, var b, !a.isEmpty, !b.isEmpty else { return nil }
        if transA && a.count >= 2 { a.swapAt(a.count - 1, a.count - 2) }
        if transB && b.count >= 2 { b.swapAt(b.count - 1, b.count - 2) }
        let aVec = a.count == 1, bVec = b.count == 1
        if aVec { a = [.value(1)] + a }
        if bVec { b = b + [.value(1)] }
        guard let batch = broadcast([Array(a.dropLast(2)), Array(b.dropLast(2))]) else { return nil }
        var out = batch + [a[a.count - 2], b[b.count - 1]]
        if bVec { out.removeLast() }
        if aVec { out.remove(at: out.count - (bVec ? 1 : 2)) }
        return out
    }

    static func reduced(_ shape: [Dim]?, axes: [Int]?, keep: Bool) -> [Dim]? {
        guard let shape else { return nil }
        let set = Set((axes ?? Array(shape.indices)).map { normalize($0, shape.count, clamp: false) })
        var out: [Dim] = []
        for (i, d) in shape.enumerated() {
            if set.contains(i) { if keep { out.append(.value(1)) } } else { out.append(d) }
        }
        return out
    }

    static func reshape(_ input: [Dim]?, _ target: [Int], allowZero: Bool) -> [Dim]? {
        var out: [Dim] = target.enumerated().map { i, v in
            if v == 0 && !allowZero { return input.flatMap { i < $0.count ? $0[i] : nil } ?? .unknown }
            return v == -1 ? .unknown : .value(v)
        }
        if let m = target.firstIndex(of: -1), let input, case .value(let total) = product(input) {
            var known = 1
            for (i, d) in out.enumerated() where i != m {
                guard case .value(let v) = d else { return out }
                let (q, overflow) = known.multipliedReportingOverflow(by: v)
                if overflow { return out }
                known = q
            }
            if known > 0 { out[m] = .value(total / known) }
        }
        return out
    }

    /// Conv and pooling output shapes with explicit pads (auto_pad NOTSET or VALID).
    static func windowShape(_ node: Node, _ x: [Dim]?, weight: [Dim]?) -> [Dim]? {
        guard let x, x.count >= 3 else { return nil }
        let spatial = x.count - 2
        let kernel = node.ints("kernel_shape") ?? weight.flatMap { w -> [Int]? in
            let k = w.dropFirst(2).compactMap { d -> Int? in if case .value(let v) = d { return v } else { return nil } }
            return k.count == spatial ? k : nil
        }
        guard let kernel, kernel.count == spatial else { return nil }
        let autoPad = node.string("auto_pad") ?? "NOTSET"
        guard autoPad == "NOTSET" || autoPad == "VALID" else { return nil }
        let strides = node.ints("strides") ?? Array(repeating: 1, count: spatial)
        let dilations = node.ints("dilations") ?? Array(repeating: 1, count: spatial)
        let pads = autoPad == "VALID" ? Array(repeating: 0, count: 2 * spatial) : (node.ints("pads") ?? Array(repeating: 0, count: 2 * spatial))
        let ceil = node.int("ceil_mode") == 1
        guard strides.count == spatial, dilations.count == spatial, pads.count == 2 * spatial else { return nil }
        var out: [Dim] = [x[0], weight?.first ?? x[1]]
        for i in 0..<spatial {
            // Hostile attributes (pads or dilations near Int.max) leave the size unknown: the kernel
            // reports them by name when it runs.
            guard case .value(let n) = x[i + 2], strides[i] > 0, let o = TypeInference.windowSize(
                n, pads[i], pads[i + spatial], dilation: dilations[i], kernel: kernel[i], stride: strides[i], ceil: ceil) else {
                out.append(.unknown)
                continue
            }
            out.append(.value(o))
        }
        return out
    }

    /// One output size of a window op, or nil when the arithmetic overflows.
    static func windowSize(_ n: Int, _ begin: Int, _ end: Int, dilation: Int, kernel: Int, stride: Int, ceil: Bool) -> Int? {
        let (reach, o1) = dilation.multipliedReportingOverflow(by: kernel &- 1)
        let (padded, o2) = n.addingReportingOverflow(begin)
        let (padded2, o3) = padded.addingReportingOverflow(end)
        let (span, o4) = padded2.subtractingReportingOverflow(reach)
        let (last, o5) = span.subtractingReportingOverflow(1)
        let (rounded, o6) = last.addingReportingOverflow(ceil ? stride - 1 : 0)
        guard !(o1 || o2 || o3 || o4 || o5 || o6) else { return nil }
        return rounded / stride + 1
    }
}
