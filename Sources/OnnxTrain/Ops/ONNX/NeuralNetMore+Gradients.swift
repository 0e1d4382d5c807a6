/// Gradient rules of ConvTranspose, Einsum, Resize/Upsample, GroupNormalization,
/// InstanceNormalization and TopK, the ops onnxruntime 1.19.2 could not differentiate on the CPU
/// (ConvTransposeGrad is CUDA-only there; the others have no builder). They are written with ops
/// this runtime and onnxruntime both run.
func registerMoreNeuralNetGradients(_ registry: OpRegistry) {
    registry.registerGradient("ConvTranspose", convTransposeGradient)

    registry.registerGradient("TopK", topKGradient)

    for name in ["GroupNormalization", "InstanceNormalization"] {
        registry.registerGradient(name) { g in try groupNormGradient(g, instance: name == "InstanceNormalization") }
    }

    registry.registerGradient("Einsum") { g in try einsumGradient(g) }

    for name in ["Resize", "Upsample"] {
        registry.registerGradient(name) { g in try resizeGradient(g) }
    }
}

/// The gradient rule of ConvTranspose.
func convTransposeGradient(_ g: GradientContext) throws -> [String?] {
    // Y = ConvT(X, W) is the adjoint of Conv(., W): dX = Conv(dY, W) with the same geometry;
    // dW is ConvGrad's weight gradient with the roles of X and dY swapped.
    let dY = try g.requiredDY()
    if let mode = g.node.string("auto_pad"), mode != "NOTSET" {
        throw GradientError("ConvTranspose with auto_pad \(mode) is differentiated with explicit pads only")
    }
    var attributes: [String: Attribute] = [:]
    for key in ["strides", "pads", "dilations", "group", "kernel_shape"] { attributes[key] = g.attributes[key] }
    var dX: String?, dW: String?, dB: String?
    if g.needs(0) { dX = g.op("Conv", [dY, g.input(1)], attributes: attributes) }
    if g.needs(1) {
        var gradAttributes = try windowAttributes(g, conv: true)
        gradAttributes["output_padding"] = nil
        gradAttributes["output_shape"] = nil
        let base = (g.node.name.isEmpty ? "ConvTranspose" : g.node.name) + "_Grad/"
        dW = g.emit("ConvGrad", domain: "com.microsoft", [g.input(0), dY, g.input(1)], outputs: 2,
                    attributes: gradAttributes, names: ["", base + "dW"])[1]
    }
    if g.hasInput(2) && g.needs(2) {
        guard let r = g.rank(g.input(0)) else { throw GradientError("ConvTranspose needs the rank of its input") }
        dB = g.reduceSum(dY, axes: [0] + Array(2..<r), keepdims: false)
    }
    return [dX, dW, dB]
}

/// The gradient rule of TopK.
func topKGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0), let dY = g.dY(0) else { return [nil, nil] }
    let indices = g.forwardOutput(1)
    return [g.ms("GatherElementsGrad", [dY, g.shape(of: g.input(0)), indices],
                 attributes: ["axis": .int(g.node.int("axis") ?? -1)])[0], nil]
}

/// GroupNormalization (scale and bias per channel from opset 21, per group at 18) and
/// InstanceNormalization (one group per channel): with x̂ = (x - μ)·r over each group,
/// dx̂ = dY·scale and dX = r·(dx̂ - mean(dx̂) - x̂·mean(dx̂·x̂)).
func groupNormGradient(_ g: GradientContext, instance: Bool) throws -> [String?] {
    let dY = try g.requiredDY()
    let x = g.input(0)
    guard let shape = g.shapeInfo(x), shape.count >= 3, case .value(let channels) = shape[1] else {
        throw GradientError("\(g.node.opType) needs its input's rank and channel count")
    }
    let r = shape.count
    let groups = instance ? channels : (g.node.int("num_groups") ?? 1)
    let perChannelAffine = instance || g.opset >= 21
    let eps = try g.scalar(Double(g.node.float("epsilon") ?? 1e-5), like: x, name: "epsilon")
    // [N, G, C/G * spatial] views; statistics over the last axis.
    let grouped = g.ints([0, groups, -1], name: "grouped")
    let xg = g.op("Reshape", [x, grouped])
    let mean = g.reduceMean(xg, axes: [2])
    let centered = g.op("Sub", [xg, mean])
    let variance = g.reduceMean(g.op("Mul", [centered, centered]), axes: [2])
    let invStd = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [variance, eps])])])
    let normalized = g.op("Mul", [centered, invStd])                         // x̂ [N, G, K]
    let xHat = g.reshape(normalized, like: x)                                 // x̂ in X's shape
    // The affine parameters broadcast per channel [1, C, 1, ...].
    let channelShape = g.ints([1, channels] + Array(repeating: 1, count: r - 2), name: "channel_shape")
    var scale = g.input(1)
    if !perChannelAffine {
        // Opset 18: one scale per group, repeated over the group's channels.
        let perGroup = g.op("Reshape", [scale, g.ints([groups, 1], name: "group_column")])
        scale = g.op("Reshape", [g.op("Expand", [perGroup, g.ints([groups, channels / groups], name: "group_channels")]), g.ints([channels], name: "channels")])
    }
    let spatialAxes = [0] + Array(2..<r)
    var dScale: String?, dBias: String?, dX: String?
    if g.needs(1) || g.needs(2) {
        if g.needs(1) {
            let perChannel = g.reduceSum(g.op("Mul", [dY, xHat]), axes: spatialAxes, keepdims: false)
            dScale = perChannelAffine ? perChannel : g.reduceSum(g.op("Reshape", [perChannel, g.ints([groups, channels / groups], name: "per_group")]), axes: [1], keepdims: false)
        }
        if g.needs(2) {
            let perChannel = g.reduceSum(dY, axes: spatialAxes, keepdims: false)
            dBias = perChannelAffine ? perChannel : g.reduceSum(g.op("Reshape", [perChannel, g.ints([groups, channels / groups], name: "per_group")]), axes: [1], keepdims: false)
        }
    }
    if g.needs(0) {
        let dXHat = g.op("Reshape", [g.op("Mul", [dY, g.op("Reshape", [scale, channelShape])]), grouped])
        let meanD = g.reduceMean(dXHat, axes: [2])
        let meanDX = g.reduceMean(g.op("Mul", [dXHat, normalized]), axes: [2])
        let inner = g.op("Sub", [g.op("Sub", [dXHat, meanD]), g.op("Mul", [normalized, meanDX])])
        dX = g.reshape(g.op("Mul", [inner, invStd]), like: x)
    }
    return [dX, dScale, dBias]
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

/// Resize and Upsample are linear in X and separable by axis (nearest, linear, cubic, with any
/// coordinate transformation), so Y = X ×_a M_a over the resized axes, and dX = dY ×_a M_aᵀ.
/// Each M_a is computed once, while the gradient graph is built, by resizing an identity matrix
/// with the node's own attributes; it needs the input's static shape and constant scales or sizes.
func resizeGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return Array(repeating: nil, count: g.node.inputs.count) }
    let dY = try g.requiredDY()
    let x = g.input(0)
    guard let shape = g.staticShape(x) else { throw GradientError("\(g.node.opType) is differentiated for a static input shape") }
    let dtype = try g.floatType(x)
    let r = shape.count
    // Per-axis scale (or output size) from the constant inputs or attributes.
    var scales: [Double]?
    var sizes: [Int]?
    if g.node.opType == "Upsample" || g.opset < 11 {
        if let s = g.node.attributes["scales"], case .floats(let v) = s { scales = v.map(Double.init) }
        else if let t = g.constantInput(1) { scales = (0..<t.count).compactMap { t.scalarDouble(at: $0) } }
    } else {
        if let t = g.constantInput(3), t.count > 0 { sizes = t.intValues() }
        else if let t = g.constantInput(2), t.count > 0 { scales = (0..<t.count).compactMap { t.scalarDouble(at: $0) } }
    }
    if let axes = g.node.ints("axes") {
        // Opset 18: scales/sizes name only some axes.
        var fullScales = [Double](repeating: 1, count: r), fullSizes = shape
        for (k, a) in axes.enumerated() {
            let axis = a < 0 ? a + r : a
            if let s = scales, k < s.count { fullScales[axis] = s[k] }
            if let s = sizes, k < s.count { fullSizes[axis] = s[k] }
        }
        if scales != nil { scales = fullScales }
        if sizes != nil { sizes = fullSizes }
    }
    guard scales?.count == r || sizes?.count == r else {
        throw GradientError("\(g.node.opType) is differentiated for constant scales or sizes")
    }
    if g.node.string("keep_aspect_ratio_policy").map({ $0 != "stretch" }) == true {
        throw GradientError("Resize with keep_aspect_ratio_policy is not differentiated")
    }
    var grad = dY
    for axis in 0..<r {
        let n = shape[axis]
        let resized = sizes.map { $0[axis] != n } ?? (scales![axis] != 1)
        guard resized else { continue }
        // M_aᵀ: resize the rows of an n x n identity along axis 1 with this axis's scale or size.
        var basis = Graph()
        basis.inputs = [ValueInfo(name: "I", type: .tensor(dtype, shape: [.value(n), .value(n)]))]
        var attributes = g.attributes
        attributes["axes"] = nil
        var inputs = ["I"]
        if g.node.opType == "Upsample" || g.opset < 11 {
            if g.node.opType == "Upsample" && g.opset < 9 { attributes["scales"] = .floats([1, Float(scales![axis])]) }
            else { basis.setInitializer("scales", Tensor(shape: [2], scalars: [Float(1), Float(scales![axis])])); inputs.append("scales") }
        } else {
            basis.setInitializer("roi", try GradientContext.scalarTensor(0, dtype: dtype, shape: [0]))
            if let sizes {
                basis.setInitializer("scales", Tensor(shape: [0], scalars: [Float]()))
                basis.setInitializer("sizes", Tensor(shape: [2], scalars: [Int64(n), Int64(sizes[axis])]))
                inputs += ["roi", "scales", "sizes"]
            } else {
                basis.setInitializer("scales", Tensor(shape: [2], scalars: [Float(1), Float(scales![axis])]))
                inputs += ["roi", "scales"]
            }
        }
        if let roi = g.constantInput(1), roi.count == 2 * r, g.node.string("coordinate_transformation_mode") == "tf_crop_and_resize" {
            basis.setInitializer("roi", try GradientContext.scalarTensor(0, dtype: dtype, shape: [4]))
            var values = [Double](repeating: 0, count: 4)
            values[0] = 0; values[2] = 1
            values[1] = roi.scalarDouble(at: axis) ?? 0
            values[3] = roi.scalarDouble(at: axis + r) ?? 1
            basis.setInitializer("roi", try Tensor(shape: [4], scalars: values).cast(to: dtype))
        }
        basis.nodes = [Node(opType: g.node.opType, name: "basis", inputs: inputs, outputs: ["R"], attributes: attributes)]
        basis.outputs = [ValueInfo(name: "R", type: nil)]
        var model = Model(graph: basis)
        model.opsetImports = ["": g.onnxOpset]
        var identity = [Double](repeating: 0, count: n * n)
        for i in 0..<n { identity[i * n + i] = 1 }
        let feeds: [String: Value] = ["I": .tensor(try Tensor(shape: [n, n], scalars: identity).cast(to: dtype))]
        guard let transposedM = try InferenceSession(model: model).run(feeds)["R"]?.tensor else {
            throw GradientError("could not compute the interpolation matrix of axis \(axis)")
        }
        // R = Mᵀ [n, out]: dX along the axis = dY (axis last) @ M = dY @ Rᵀ.
        let m = g.constant(transposedM, name: "interpolation_\(axis)")
        var perm = Array(0..<r)
        perm.swapAt(axis, r - 1)
        let moved = axis == r - 1 ? grad : g.op("Transpose", [grad], attributes: ["perm": .ints(perm)])
        let product = g.ms("FusedMatMul", [moved, m], attributes: ["transB": .int(1), "alpha": .float(1)])[0]
        grad = axis == r - 1 ? product : g.op("Transpose", [product], attributes: ["perm": .ints(perm)])
    }
    return [grad] + Array(repeating: nil, count: g.node.inputs.count - 1)
}
