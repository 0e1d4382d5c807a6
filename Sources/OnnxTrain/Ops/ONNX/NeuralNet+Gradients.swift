/// Gradient rules of the neural-network ops (MatMul.swift, Conv.swift, Pooling.swift,
/// Normalization.swift, Dropout.swift, Losses.swift), emitting onnxruntime's training kernels
/// (ConvGrad, MaxPoolGrad, BatchNormalizationGrad, LayerNormalizationGrad, DropoutGrad,
/// SoftmaxCrossEntropyLossGrad, FusedMatMul) as its gradient builder does.
func registerNeuralNetGradients(_ registry: OpRegistry) {
    registry.registerGradient("Gemm", gemmGradient)

    registry.registerGradient("MatMul", matMulGradient)

    registry.registerGradient("Conv", convGradient)

    registry.registerGradient("MaxPool", maxPoolGradient)
    registry.registerGradient("AveragePool", averagePoolGradient)
    registry.registerGradient("GlobalAveragePool", globalAveragePoolGradient)
    registry.registerGradient("GlobalMaxPool", globalMaxPoolGradient)

    registry.registerGradient("BatchNormInternal", domain: "com.microsoft", batchNormInternalGradient)
    registry.registerGradient("BatchNormalization", batchNormalizationGradient)

    for domain in ["", "com.microsoft"] {
        registry.registerGradient("LayerNormalization", domain: domain, layerNormalizationGradient)
    }

    registry.registerGradient("Dropout", dropoutGradient)

    registry.registerGradient("SoftmaxCrossEntropyLoss", softmaxCrossEntropyLossGradient)
}

/// The gradient rule of Gemm.
func gemmGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let a = g.input(0), b = g.input(1)
    let transA = g.node.int("transA") == 1, transB = g.node.int("transB") == 1
    let alpha = g.node.float("alpha") ?? 1, beta = g.node.float("beta") ?? 1
    func gemm(_ x: String, _ y: String, _ tA: Bool, _ tB: Bool) -> String {
        g.op("Gemm", [x, y], attributes: ["transA": .int(tA ? 1 : 0), "transB": .int(tB ? 1 : 0),
                                           "alpha": .float(alpha), "beta": .float(0)])
    }
    var dA: String?, dB: String?, dC: String?
    if g.needs(0) {
        // Y = op(A) op(B): d op(A) = dY op(B)^T
        dA = transA ? gemm(b, dY, transB, true) : gemm(dY, b, false, !transB)
    }
    if g.needs(1) {
        // d op(B) = op(A)^T dY
        dB = transB ? gemm(dY, a, true, transA) : gemm(a, dY, !transA, false)
    }
    if g.needs(2) {
        var reduced: String
        let c = g.input(2)
        if let cShape = g.shapeInfo(c), cShape.count == 1, let y = g.shapeInfo(g.output(0)), y.count == 2, cShape[0] == y[1], cShape[0] != .value(1) {
            reduced = g.reduceSum(dY, axes: [0], keepdims: false)
        } else {
            reduced = g.reduced(dY, toInput: 2)
        }
        if beta != 1 { reduced = g.op("Mul", [reduced, try g.scalar(Double(beta), like: c, name: "beta")]) }
        dC = reduced
    }
    return [dA, dB, dC]
}

/// The gradient rule of MatMul.
func matMulGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    var a = g.input(0), b = g.input(1)
    // An unknown rank is taken as a matrix or a batch of them (vectors have static ranks in practice);
    // the broadcast reduction then works on run-time shapes.
    let ra = g.rank(a) ?? 2, rb = g.rank(b) ?? 2
    // Vectors become matrices, and the gradient is reshaped back at the end.
    var grad = dY
    if ra == 1 && rb == 1 {
        return [g.needs(0) ? g.op("Mul", [dY, b]) : nil, g.needs(1) ? g.op("Mul", [dY, a]) : nil]
    }
    if ra == 1 { a = g.unsqueeze(a, axes: [0]); grad = g.unsqueeze(grad, axes: [-2]) }
    if rb == 1 { b = g.unsqueeze(b, axes: [1]); grad = g.unsqueeze(grad, axes: [-1]) }
    let aShape = ra == 1 ? g.shapeInfo(g.input(0)).map { [.value(1)] + $0 } : g.shapeInfo(a)
    let bShape = rb == 1 ? g.shapeInfo(g.input(1)).map { $0 + [.value(1)] } : g.shapeInfo(b)
    let yShape = TypeInference.matmulShape(aShape, bShape, transA: false, transB: false)
    var dA: String?, dB: String?
    if g.needs(0) {
        var d = g.ms("FusedMatMul", [grad, b], attributes: ["transB": .int(1), "alpha": .float(1)])[0]
        if let y = yShape, let k = bShape.map({ $0[$0.count - 2] }) {
            d = g.reduceToShape(d, gradShape: Array(y.dropLast()) + [k], of: a == g.input(0) ? a : g.input(0))
        }
        dA = ra == 1 ? g.reshape(d, like: g.input(0)) : d
    }
    if g.needs(1) {
        var d: String
        if max(ra, 2) >= 3 && rb == 2, let k = g.staticShape(g.input(1))?.first, let n = g.staticShape(g.input(1))?.last {
            // A batch of rows against one weight: one product over every row, as onnxruntime.
            let rows = g.op("Reshape", [a, g.ints([-1, k], name: "rows")])
            let gradRows = g.op("Reshape", [grad, g.ints([-1, n], name: "grad_rows")])
            d = g.op("Gemm", [rows, gradRows], attributes: ["transA": .int(1), "alpha": .float(1), "beta": .float(0)])
        } else {
            d = g.ms("FusedMatMul", [a, grad], attributes: ["transA": .int(1), "alpha": .float(1)])[0]
            if let y = yShape, let k = aShape.map({ $0[$0.count - 1] }) {
                d = g.reduceToShape(d, gradShape: Array(y.dropLast(2)) + [k, y[y.count - 1]], of: rb == 1 ? b : g.input(1))
            }
        }
        dB = rb == 1 ? g.reshape(d, like: g.input(1)) : d
    }
    return [dA, dB]
}

/// The gradient rule of Conv.
func convGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let attributes = try windowAttributes(g, conv: true)
    let outs = g.emit("ConvGrad", domain: "com.microsoft", [dY, g.input(0), g.input(1)], outputs: 3,
                      attributes: attributes,
                      names: [g.needs(0) ? "dX" : "", g.needs(1) ? "dW" : "", g.hasInput(2) && g.needs(2) ? "dB" : ""].map { $0.isEmpty ? "" : g.node.name + "_Grad/" + $0 })
    return [g.needs(0) ? outs[0] : nil, g.needs(1) ? outs[1] : nil, g.hasInput(2) && g.needs(2) ? outs[2] : nil]
}

/// The gradient rule of MaxPool.
func maxPoolGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    if g.node.int("storage_order") == 1 { throw GradientError("MaxPool with storage_order 1 is not supported") }
    let indices = g.forwardOutput(1, info: TensorInfo(dtype: .int64, shape: g.shapeInfo(g.output(0))))
    let attributes = try windowAttributes(g, conv: false)
    let dX = g.op("MaxPoolGrad", [try g.requiredDY(), indices], attributes: attributes)
    g.declare(dX, like: g.input(0))
    return [dX]
}

/// The gradient rule of AveragePool.
func averagePoolGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    if g.node.int("ceil_mode") == 1 { throw GradientError("AveragePool with ceil_mode 1 is not supported") }
    let attributes = try windowAttributes(g, conv: false)
    let dX = g.op("AveragePoolGrad", [try g.requiredDY()], attributes: attributes)
    g.declare(dX, like: g.input(0))
    return [dX]
}

/// The gradient rule of GlobalAveragePool.
func globalAveragePoolGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let dY = try g.requiredDY()
    let scale = g.op("Div", [g.op("Size", [g.input(0)]), g.op("Size", [dY])])
    let scaled = g.ms("Scale", [dY, scale], attributes: ["scale_down": .int(1)])[0]
    return [g.op("Expand", [scaled, g.shape(of: g.input(0))])]
}

/// The gradient rule of GlobalMaxPool.
func globalMaxPoolGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let x = g.input(0)
    guard let r = g.rank(x), r >= 3 else { throw GradientError("GlobalMaxPool needs the rank of its input") }
    // Shared evenly by the elements equal to the maximum, as ReduceMax.
    let mask = g.op("Cast", [g.op("Equal", [x, g.output(0)])], attributes: ["to": .int(Int(try g.floatType(x).rawValue))])
    let count = g.reduceSum(mask, axes: Array(2..<r), keepdims: true)
    return [g.op("Mul", [mask, g.op("Div", [try g.requiredDY(), count])])]
}

/// The gradient rule of BatchNormInternal (com.microsoft).
func batchNormInternalGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let savedMean = g.forwardOutput(3), savedInvStd = g.forwardOutput(4)
    let outs = g.ms("BatchNormalizationGrad", [dY, g.input(0), g.input(1), savedMean, savedInvStd], outputs: 3,
                    attributes: ["epsilon": .float(g.node.float("epsilon") ?? 1e-5)])
    return [g.needs(0) ? outs[0] : nil, g.needs(1) ? outs[1] : nil, g.needs(2) ? outs[2] : nil, nil, nil]
}

/// The gradient rule of BatchNormalization.
func batchNormalizationGradient(_ g: GradientContext) throws -> [String?] {
    let training = (g.node.int("training_mode") ?? 0) == 1 || (g.opset < 9 && g.node.outputs.count > 1)
    if training {
        throw GradientError("BatchNormalization in training mode is differentiated as com.microsoft BatchNormInternal (the artifact builder rewrites it)")
    }
    // Inference mode (frozen statistics): Y = (X - mean) * scale / sqrt(var + eps) + B, per channel.
    let dY = try g.requiredDY()
    let x = g.input(0)
    guard let rank = g.rank(x), rank >= 2 else { throw GradientError("BatchNormalization needs the rank of its input") }
    let channelAxes = [0] + Array(2..<rank)
    func perChannel(_ v: String) -> String { rank == 2 ? v : g.unsqueeze(v, axes: Array(1..<(rank - 1))) }
    let eps = try g.scalar(Double(g.node.float("epsilon") ?? 1e-5), like: x, name: "epsilon")
    let invStd = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [g.input(4), eps])])])
    var dX: String?, dScale: String?, dB: String?
    if g.needs(0) { dX = g.op("Mul", [dY, perChannel(g.op("Mul", [g.input(1), invStd]))]) }
    if g.needs(1) {
        let normalized = g.op("Mul", [g.op("Sub", [x, perChannel(g.input(3))]), perChannel(invStd)])
        dScale = g.reduceSum(g.op("Mul", [dY, normalized]), axes: channelAxes, keepdims: false)
    }
    if g.needs(2) { dB = g.reduceSum(dY, axes: channelAxes, keepdims: false) }
    return [dX, dScale, dB, nil, nil]
}

/// The gradient rule of LayerNormalization (ai.onnx.preview.training).
func layerNormalizationGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let mean = g.forwardOutput(1), invStd = g.forwardOutput(2)
    var attributes: [String: Attribute] = ["axis": .int(g.node.int("axis") ?? -1), "epsilon": .float(g.node.float("epsilon") ?? 1e-5)]
    if let stash = g.node.int("stash_type") { attributes["stash_type"] = .int(stash) }
    let hasBias = g.hasInput(2)
    let base = (g.node.name.isEmpty ? "LayerNormalization" : g.node.name) + "_Grad/"
    let outs = g.emit("LayerNormalizationGrad", domain: "com.microsoft", [dY, g.input(0), g.input(1), mean, invStd],
                      outputs: 3, attributes: attributes,
                      names: [base + "dX", base + "dScale", hasBias ? base + "dBias" : ""])
    return [g.needs(0) ? outs[0] : nil, g.needs(1) ? outs[1] : nil, hasBias && g.needs(2) ? outs[2] : nil]
}

/// The gradient rule of Dropout.
func dropoutGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let dY = try g.requiredDY()
    let trainingMode: Bool? = g.opset >= 12 ? (g.hasInput(2) ? g.constantInput(2)?.scalarDouble().map { $0 != 0 } : false) : (g.node.int("is_test") ?? 0) == 0
    if trainingMode == false { return [dY] }
    let mask = g.forwardOutput(1, info: TensorInfo(dtype: .bool, shape: g.shapeInfo(g.input(0))))
    var inputs = [dY, mask]
    if g.opset >= 12 {
        inputs.append(g.hasInput(1) ? g.input(1) : "")
        if g.hasInput(2) { inputs.append(g.input(2)) }
        while inputs.last == "" { inputs.removeLast() }
    } else {
        inputs.append(try g.scalar(Double(g.node.float("ratio") ?? 0.5), like: g.input(0), name: "ratio"))
    }
    return [g.ms("DropoutGrad", inputs)[0]]
}

/// The gradient rule of SoftmaxCrossEntropyLoss.
func softmaxCrossEntropyLossGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil, nil] }
    let logProb = g.forwardOutput(1, info: TensorInfo(dtype: g.dtype(g.input(0)), shape: g.shapeInfo(g.input(0))))
    var attributes: [String: Attribute] = ["reduction": .string(g.node.string("reduction") ?? "mean")]
    if let ignore = g.node.int("ignore_index") { attributes["ignore_index"] = .int(ignore) }
    var inputs = [try g.requiredDY(), logProb, g.input(1)]
    if g.hasInput(2) { inputs.append(g.input(2)) }
    return [g.ms("SoftmaxCrossEntropyLossGrad", inputs, attributes: attributes)[0], nil, nil]
}

/// The forward node's attributes with every schema default written out, as onnxruntime's gradient
/// builder copies them (its MaxPoolGrad and ConvGrad shape inference reads them all: a missing
/// `storage_order` crashes onnxruntime 1.19.2 while it loads the model).
func windowAttributes(_ g: GradientContext, conv: Bool) throws -> [String: Attribute] {
    var attributes = g.attributes
    let spatial: Int
    if let k = g.node.ints("kernel_shape") { spatial = k.count } else if let w = g.staticShape(g.input(1)), conv {
        spatial = w.count - 2
        attributes["kernel_shape"] = .ints(Array(w.dropFirst(2)))
    } else if let r = g.rank(g.input(0)) { spatial = r - 2 } else {
        throw GradientError("the kernel shape is unknown")
    }
    func fill(_ key: String, _ value: Attribute) { if attributes[key] == nil { attributes[key] = value } }
    fill("strides", .ints(Array(repeating: 1, count: spatial)))
    fill("pads", .ints(Array(repeating: 0, count: 2 * spatial)))
    fill("dilations", .ints(Array(repeating: 1, count: spatial)))
    fill("auto_pad", .string("NOTSET"))
    if conv { fill("group", .int(1)) } else { fill("ceil_mode", .int(0)) }
    if g.node.opType == "MaxPool" { fill("storage_order", .int(0)) }
    if g.node.opType == "AveragePool" { fill("count_include_pad", .int(0)); attributes["dilations"] = g.attributes["dilations"] }
    try resolveAutoPad(g, &attributes, weight: conv ? g.input(1) : nil)
    return attributes
}

/// Replaces auto_pad SAME_UPPER/SAME_LOWER by explicit pads (onnxruntime's ConvGrad and pool
/// grads read only `pads`); needs the input's spatial shape.
func resolveAutoPad(_ g: GradientContext, _ attributes: inout [String: Attribute], weight: String?) throws {
    let mode = g.node.string("auto_pad") ?? "NOTSET"
    guard mode == "SAME_UPPER" || mode == "SAME_LOWER" || mode == "VALID" else { return }
    attributes["auto_pad"] = .string("NOTSET")
    guard let x = g.staticShape(g.input(0)), x.count >= 3 else {
        throw GradientError("auto_pad \(mode) needs the input's static shape to be differentiated")
    }
    let spatial = x.count - 2
    if mode == "VALID" { attributes["pads"] = .ints(Array(repeating: 0, count: 2 * spatial)); return }
    let kernel = g.node.ints("kernel_shape") ?? weight.flatMap { g.staticShape($0).map { Array($0.dropFirst(2)) } }
    guard let kernel, kernel.count == spatial else { throw GradientError("auto_pad \(mode) needs kernel_shape") }
    let strides = g.node.ints("strides") ?? Array(repeating: 1, count: spatial)
    let dilations = g.node.ints("dilations") ?? Array(repeating: 1, count: spatial)
    var begin: [Int] = [], end: [Int] = []
    for i in 0..<spatial {
        let out = (x[i + 2] + strides[i] - 1) / strides[i]
        let total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - x[i + 2])
        let small = total / 2, large = total - small
        begin.append(mode == "SAME_UPPER" ? small : large)
        end.append(mode == "SAME_UPPER" ? large : small)
    }
    attributes["pads"] = .ints(begin + end)
}
