/// Gradient rules of the training ops onnxruntime's gradient builder differentiates when they
/// appear in a forward graph (its fusions and ORTModule exports write them): the legacy and
/// internal cross-entropy losses, SimplifiedLayerNormalization and ConcatTraining. Their grads
/// are kernels of this folder (CrossEntropyLoss.swift, TrainingNormalization.swift,
/// TrainingShapeOps.swift).
func registerTrainingOpGradients(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    registry.registerGradient("SoftmaxCrossEntropy", domain: ms, softmaxCrossEntropyGradient)
    registry.registerGradient("SparseSoftmaxCrossEntropy", sparseSoftmaxCrossEntropyGradient)
    registry.registerGradient("SoftmaxCrossEntropyLossInternal", domain: ms, softmaxCrossEntropyLossInternalGradient)
    registry.registerGradient("SimplifiedLayerNormalization", simplifiedLayerNormalizationGradient)
    registry.registerGradient("ConcatTraining", domain: ms, concatTrainingGradient)
}

/// The gradient rule of SoftmaxCrossEntropy (com.microsoft).
func softmaxCrossEntropyGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil] }
    let logProb = g.forwardOutput(1)
    return [g.ms("SoftmaxCrossEntropyGrad", [try g.requiredDY(), logProb, g.input(1)],
                 attributes: ["reduction": .string(g.node.string("reduction") ?? "mean")])[0], nil]
}

/// The gradient rule of SparseSoftmaxCrossEntropy.
func sparseSoftmaxCrossEntropyGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil, nil] }
    let logProb = g.forwardOutput(1)
    var inputs = [try g.requiredDY(), logProb, g.input(1)]
    if g.hasInput(2) { inputs.append(g.input(2)) }
    return [g.op("SparseSoftmaxCrossEntropyGrad", inputs, attributes: ["reduction": .string(g.node.string("reduction") ?? "mean")]), nil, nil]
}

/// The gradient rule of SoftmaxCrossEntropyLossInternal (com.microsoft).
func softmaxCrossEntropyLossInternalGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil, nil, nil] }
    let logProb = g.forwardOutput(1)
    var inputs = [try g.requiredDY(), logProb, g.input(1), g.hasInput(2) ? g.input(2) : "", g.hasInput(3) ? g.input(3) : ""]
    while inputs.last == "" { inputs.removeLast() }
    var attributes: [String: Attribute] = ["reduction": .string(g.node.string("reduction") ?? "mean")]
    if let t = g.node.int("output_type") { attributes["output_type"] = .int(t) }
    return [g.ms("SoftmaxCrossEntropyLossInternalGrad", inputs, attributes: attributes)[0], nil, nil, nil]
}

/// The gradient rule of SimplifiedLayerNormalization.
func simplifiedLayerNormalizationGradient(_ g: GradientContext) throws -> [String?] {
    let invStd = g.forwardOutput(1)
    let base = (g.node.name.isEmpty ? "SimplifiedLayerNormalization" : g.node.name) + "_Grad/"
    let outs = g.emit("SimplifiedLayerNormalizationGrad", domain: "com.microsoft", [try g.requiredDY(), g.input(0), g.input(1), invStd], outputs: 2,
                      attributes: ["axis": .int(g.node.int("axis") ?? -1), "epsilon": .float(g.node.float("epsilon") ?? 1e-5)],
                      names: [base + "dX", base + "dScale"])
    return [g.needs(0) ? outs[0] : nil, g.needs(1) ? outs[1] : nil]
}

/// The gradient rule of ConcatTraining (com.microsoft).
func concatTrainingGradient(_ g: GradientContext) throws -> [String?] {
    let lengths = g.forwardOutput(1, info: TensorInfo(dtype: .int64, shape: [.value(g.node.inputs.count)]))
    let parts = g.ms("SplitTraining", [try g.requiredDY(), lengths], outputs: g.node.inputs.count,
                     attributes: ["axis": .int(g.node.int("axis") ?? 0)])
    return g.node.inputs.indices.map { g.needs($0) ? parts[$0] : nil }
}
