import Foundation

/// ai.onnx.preview.training optimizers: Adagrad, Momentum (standard and nesterov), Adam, as the
/// onnx reference defines them. Inputs are R (learning rate), T (update count), then the
/// per-tensor groups (X..., G..., state...); outputs are the new X... then the new state groups.
/// Each element is computed in Double and rounded once to the tensor's type.
func registerPreviewOptimizerOps(_ registry: OpRegistry) {
    let domain = "ai.onnx.preview.training"
    registry.register("Adagrad", domain: domain, since: 1, adagradKernel)
    registry.register("Momentum", domain: domain, since: 1, momentumKernel)
    registry.register("Adam", domain: domain, since: 1, adamKernel)
}

/// Adagrad (ai.onnx.preview.training), since opset 1.
func adagradKernel(_ ctx: NodeContext) throws -> Kernel {
    let decay = Double(try ctx.float("decay_factor", default: 0))
    let epsilon = Double(try ctx.float("epsilon", default: 1e-6))
    let lambda = Double(try ctx.float("norm_coefficient", default: 0))
    return AnyKernel { inputs, _ in
        try optimizerStep(inputs, groups: 3) { r, t, v in
            // v = [x, g, h] -> [x', h']
            let rate = r / (1 + t * decay)
            let g = lambda * v[0] + v[1]
            let h = v[2] + g * g
            return [v[0] - rate * g / (h.squareRoot() + epsilon), h]
        }
    }
}

/// Momentum (ai.onnx.preview.training), since opset 1.
func momentumKernel(_ ctx: NodeContext) throws -> Kernel {
    guard let alpha = try ctx.float("alpha").map(Double.init), let beta = try ctx.float("beta").map(Double.init),
          let lambda = try ctx.float("norm_coefficient").map(Double.init) else {
        throw KernelError("attributes alpha, beta and norm_coefficient are required")
    }
    let mode = try ctx.string("mode", default: "standard")
    guard mode == "standard" || mode == "nesterov" else { throw KernelError("unknown mode '\(mode)'") }
    return AnyKernel { inputs, _ in
        try optimizerStep(inputs, groups: 3) { r, t, v in
            // v = [x, g, v] -> [x', v']; the gradient's coefficient is 1 on the first update.
            let g = lambda * v[0] + v[1]
            let m = alpha * v[2] + (t > 0 ? beta : 1) * g
            return [mode == "standard" ? v[0] - r * m : v[0] - r * (g + alpha * m), m]
        }
    }
}

/// Adam (ai.onnx.preview.training), since opset 1.
func adamKernel(_ ctx: NodeContext) throws -> Kernel {
    let alpha = Double(try ctx.float("alpha", default: 0.9)), beta = Double(try ctx.float("beta", default: 0.999))
    let epsilon = Double(try ctx.float("epsilon", default: 1e-6))
    let lambda = Double(try ctx.float("norm_coefficient", default: 0))
    let lambdaPost = Double(try ctx.float("norm_coefficient_post", default: 0))
    return AnyKernel { inputs, _ in
        try optimizerStep(inputs, groups: 4) { r, t, v in
            // v = [x, g, v, h] -> [x', v', h']; bias correction once t > 0.
            let g = lambda * v[0] + v[1]
            let m = alpha * v[2] + (1 - alpha) * g
            let h = beta * v[3] + (1 - beta) * g * g
            let rate = t > 0 ? r * (1 - pow(beta, t)).squareRoot() / (1 - pow(alpha, t)) : r
            let x = v[0] - rate * m / (h.squareRoot() + epsilon)
            return [(1 - lambdaPost) * x, m, h]
        }
    }
}

/// Runs an elementwise optimizer update over every tensor group. `update` maps (R, T, one element
/// of each input group) to one element of each output group (new X first).
private func optimizerStep(_ inputs: [Value?], groups: Int, _ update: (Double, Double, [Double]) -> [Double]) throws -> [Value?] {
    guard let r = try inputs.tensor(0).doubles().first, let t = try inputs.tensor(1).doubles().first else {
        throw KernelError("R and T must be scalars")
    }
    let n = (inputs.count - 2) / groups
    guard n > 0, inputs.count == 2 + n * groups else { throw KernelError("expected 2 + \(groups) x N inputs, got \(inputs.count)") }
    var outputs = [[Value?]](repeating: [], count: groups - 1)
    for i in 0..<n {
        let tensors = try (0..<groups).map { try inputs.tensor(2 + $0 * n + i) }
        guard tensors.allSatisfy({ $0.shape == tensors[0].shape }) else {
            throw KernelError("tensor group \(i) mixes shapes \(tensors.map(\.shape))")
        }
        let values = try tensors.map { try $0.doubles() }
        var results = [[Double]](repeating: [Double](repeating: 0, count: tensors[0].count), count: groups - 1)
        var element = [Double](repeating: 0, count: groups)
        for e in 0..<tensors[0].count {
            for k in 0..<groups { element[k] = values[k][e] }
            let out = update(r, t, element)
            for k in 0..<(groups - 1) { results[k][e] = out[k] }
        }
        for k in 0..<(groups - 1) {
            // New X takes X's type; each state output takes its state input's type.
            let like = tensors[k == 0 ? 0 : k + 1]
            outputs[k].append(.tensor(try Tensor(dtype: like.dtype, shape: like.shape, doubles: results[k])))
        }
    }
    return outputs.flatMap { $0 }
}
