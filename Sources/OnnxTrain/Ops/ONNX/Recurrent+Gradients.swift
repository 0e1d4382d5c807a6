/// Gradient rules of LSTM and GRU (Recurrent.swift): the forward node becomes com.microsoft
/// LSTMTraining / GRUTraining, which also return what backpropagation through time needs
/// (all cell states and gates), and LSTMGrad / GRUGrad compute the input gradients, as
/// onnxruntime's gradient builder does (RecurrentGrad.swift holds both kernels).
func registerRecurrentGradients(_ registry: OpRegistry) {
    registry.registerGradient("LSTM", lstmGradient)
    registry.registerGradient("GRU", gruGradient)
}

/// The gradient rule of LSTM.
func lstmGradient(_ g: GradientContext) throws -> [String?] {
    // LSTM inputs: X 0, W 1, R 2, B 3, sequence_lens 4, initial_h 5, initial_c 6, P 7.
    var attributes = g.attributes
    if attributes["direction"] == nil { attributes["direction"] = .string("forward") }
    if attributes["input_forget"] == nil { attributes["input_forget"] = .int(0) }
    g.rewriteForward(opType: "LSTMTraining", domain: "com.microsoft", attributes: attributes)
    let y = g.forwardOutput(0), states = g.forwardOutput(3), gates = g.forwardOutput(4)
    var inputs = [g.input(0), g.input(1), g.input(2), g.input(4), g.input(5), g.input(6), y, states, gates,
                  g.dY(0) ?? "", g.dY(1) ?? "", g.dY(2) ?? ""]
    if g.hasInput(7) { inputs.append(g.input(7)) }
    // LSTMGrad outputs: dX, dW, dR, dB, d initial_h, d initial_c, dP.
    return recurrentGrad(g, "LSTMGrad", inputs, attributes: attributes, outputsFor: [0, 1, 2, 3, 5, 6, 7])
}

/// The gradient rule of GRU.
func gruGradient(_ g: GradientContext) throws -> [String?] {
    // GRU inputs: X 0, W 1, R 2, B 3, sequence_lens 4, initial_h 5.
    var attributes = g.attributes
    if attributes["direction"] == nil { attributes["direction"] = .string("forward") }
    g.rewriteForward(opType: "GRUTraining", domain: "com.microsoft", attributes: attributes)
    let y = g.forwardOutput(0), gates = g.forwardOutput(2)
    let inputs = [g.input(0), g.input(1), g.input(2), g.input(3), g.input(4), g.input(5), y, gates, g.dY(0) ?? "", g.dY(1) ?? ""]
    // GRUGrad outputs: dX, dW, dR, dB, d initial_h.
    return recurrentGrad(g, "GRUGrad", inputs, attributes: attributes, outputsFor: [0, 1, 2, 3, 5])
}

/// Emits LSTMGrad/GRUGrad; output k is the gradient of forward input `outputsFor[k]`, and only
/// the needed ones are named.
private func recurrentGrad(_ g: GradientContext, _ op: String, _ inputs: [String], attributes: [String: Attribute],
                           outputsFor: [Int]) -> [String?] {
    var inputs = inputs
    while inputs.last == "" { inputs.removeLast() }
    let base = (g.node.name.isEmpty ? g.node.opType : g.node.name) + "_Grad/"
    let names = outputsFor.map { g.needs($0) ? base + "d\($0)" : "" }
    let outs = g.emit(op, domain: "com.microsoft", inputs, outputs: names.count, attributes: attributes, names: names)
    var grads = [String?](repeating: nil, count: g.node.inputs.count)
    for (k, i) in outputsFor.enumerated() where i < grads.count && g.needs(i) { grads[i] = outs[k] }
    return grads
}
