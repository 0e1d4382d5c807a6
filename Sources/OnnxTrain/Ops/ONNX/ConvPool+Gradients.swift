/// Gradient rules of Conv, ConvTranspose and the pooling ops, emitting onnxruntime's training
/// kernels (ConvGrad, MaxPoolGrad, AveragePoolGrad) as its gradient builder does; ConvTranspose's
/// (CUDA-only ConvTransposeGrad in onnxruntime 1.19.2) is written with ops both runtimes run.
/// They sit here, not in Conv.swift and Pooling.swift, only while those files are reworked.
func registerConvPoolGradients(_ registry: OpRegistry) {
    registry.registerGradient("Conv", convGradient)
    registry.registerGradient("ConvTranspose", convTransposeGradient)
    registry.registerGradient("MaxPool", maxPoolGradient)
    registry.registerGradient("AveragePool", averagePoolGradient)
    registry.registerGradient("GlobalAveragePool", globalAveragePoolGradient)
    registry.registerGradient("GlobalMaxPool", globalMaxPoolGradient)
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
