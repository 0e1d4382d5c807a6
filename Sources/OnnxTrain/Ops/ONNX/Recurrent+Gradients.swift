/// Gradient rules of LSTM and GRU (Recurrent.swift): the forward node becomes com.microsoft
/// LSTMTraining / GRUTraining, which also return what backpropagation through time needs
/// (all cell states and gates), and LSTMGrad / GRUGrad compute the input gradients, as
/// onnxruntime's gradient builder does (RecurrentGrad.swift holds both kernels).
func registerRecurrentGradients(_ registry: OpRegistry) {
    registry.registerGradient("LSTM") { g in
        // LSTM inputs: X 0, W 1, R 2, B 3, sequence_lens 4, initial_h 5, initial_c 6, P 7.
        var attributes = g.attributes
        if attributes["direction"] == nil { attributes["direction"] = .string("forward") }
        if attributes["input_forget"] == nil { attributes["input_forget"] = .int(0) }
        g.rewriteForward(opType: "LSTMTraining", domain: "com.microsoft", attributes: attributes)
        let y = g.forwardOutput(0), states = g.forwardOutput(3), gates = g.forwardOutput(4)
        var inputs = [g.input(0), g.input(1), g.input(2), g.input(4), g.input(5), g.input(6), y, states, gates,
                      g.dY(0) ?? "", g.dY(1) ?? "", g.dY(2) ?? ""]
        if g.hasInput(7) { inputs.append(g.input(7)) }
        while inputs.last == "" { inputs.removeLast() }
        let wanted = [0, 1, 2, 3, 5, 6, 7]
        let base = (g.node.name.isEmpty ? "LSTM" : g.node.name) + "_Grad/"
        let names = wanted.map { g.needs($0) ? base + "d\($0)" : "" }
        let outs = g.emit("LSTMGrad", domain: "com.microsoft", inputs, outputs: names.count, attributes: attributes, names: names)
        var grads = [String?](repeating: nil, count: g.node.inputs.count)
        for (k, i) in wanted.enumerated() where i < grads.count && g.needs(i) { grads[i] = outs[k] }
        return grads
    }
    registry.registerGradient("GRU") { g in
        // GRU inputs: X 0, W 1, R 2, B 3, sequence_lens 4, initial_h 5.
        var attributes = g.attributes
        if attributes["direction"] == nil { attributes["direction"] = .string("forward") }
        g.rewriteForward(opType: "GRUTraining", domain: "com.microsoft", attributes: attributes)
        let y = g.forwardOutput(0), gates = g.forwardOutput(2)
        var inputs = [g.input(0), g.input(1), g.input(2), g.input(3), g.input(4), g.input(5), y, gates, g.dY(0) ?? "", g.dY(1) ?? ""]
        while inputs.last == "" { inputs.removeLast() }
        let wanted = [0, 1, 2, 3, 5]
        let base = (g.node.name.isEmpty ? "GRU" : g.node.name) + "_Grad/"
        let names = wanted.map { g.needs($0) ? base + "d\($0)" : "" }
        let outs = g.emit("GRUGrad", domain: "com.microsoft", inputs, outputs: names.count, attributes: attributes, names: names)
        var grads = [String?](repeating: nil, count: g.node.inputs.count)
        for (k, i) in wanted.enumerated() where i < grads.count && g.needs(i) { grads[i] = outs[k] }
        return grads
    }
}
