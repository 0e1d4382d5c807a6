/// Gradient rules of the elementwise math ops, activations, softmax family and reductions,
/// beside their kernels (BinaryMath.swift, UnaryMath.swift, Activations.swift, Softmax.swift,
/// Reduce.swift). Rules follow onnxruntime's gradient_builder.cc where it has one, so the graphs
/// run in onnxruntime-training too; the rest use plain ONNX ops.
func registerMathGradients(_ registry: OpRegistry) {
    // Broadcasting arithmetic.
    registry.registerGradient("Add", addGradient)
    registry.registerGradient("Sub", subGradient)
    registry.registerGradient("Mul", mulGradient)
    registry.registerGradient("Div", divGradient)
    registry.registerGradient("Pow", powGradient)
    registry.registerGradient("Sum", sumGradient)
    registry.registerGradient("Mean", meanGradient)
    for name in ["Max", "Min"] {
        // Each input that equals the result gets the gradient (ties: every tied input, as onnxruntime).
        registry.registerGradient(name) { g in
            let dY = try g.requiredDY()
            let y = g.output(0)
            return try g.node.inputs.indices.map { i in
                guard g.needs(i) else { return nil }
                if g.node.inputs.count == 1 { return dY }
                let mask = g.op("Cast", [g.op("Equal", [g.input(i), y])], attributes: ["to": .int(Int(try g.floatType(y).rawValue))])
                return g.reduced(g.op("Mul", [dY, mask]), toInput: i)
            }
        }
    }
    registry.registerGradient("Where", whereGradient)
    registry.registerGradient("PRelu", pReluGradient)
    registry.registerGradient("Clip", clipGradient)

    // Unary math: dX = dY * f'(X), written with the forward output where that is cheaper.
    func unary(_ name: String, _ rule: @escaping (GradientContext, String, String, String) throws -> String) {
        registry.registerGradient(name) { g in
            guard g.needs(0) else { return [nil] }
            return [try rule(g, try g.requiredDY(), g.input(0), g.output(0))]
        }
    }
    unary("Identity") { _, dY, _, _ in dY }
    unary("Neg") { g, dY, _, _ in g.op("Neg", [dY]) }
    unary("Abs") { g, dY, x, _ in g.op("Mul", [dY, g.op("Sign", [x])]) }
    unary("Exp") { g, dY, _, y in g.op("Mul", [dY, y]) }
    unary("Log") { g, dY, x, _ in g.op("Div", [dY, x]) }
    unary("Sqrt") { g, dY, _, y in g.op("Mul", [g.op("Div", [dY, y]), try g.scalar(0.5, like: y, name: "half")]) }
    unary("Reciprocal") { g, dY, _, y in g.op("Neg", [g.op("Mul", [dY, g.op("Mul", [y, y])])]) }
    unary("Sin") { g, dY, x, _ in g.op("Mul", [dY, g.op("Cos", [x])]) }
    unary("Cos") { g, dY, x, _ in g.op("Neg", [g.op("Mul", [dY, g.op("Sin", [x])])]) }
    unary("Tan") { g, dY, _, y in g.op("Mul", [dY, g.op("Add", [try g.scalar(1, like: y, name: "one"), g.op("Mul", [y, y])])]) }
    unary("Sinh") { g, dY, x, _ in g.op("Mul", [dY, g.op("Cosh", [x])]) }
    unary("Cosh") { g, dY, x, _ in g.op("Mul", [dY, g.op("Sinh", [x])]) }
    unary("Tanh") { g, dY, _, y in g.ms("TanhGrad", [dY, y])[0] }
    unary("Sigmoid") { g, dY, _, y in g.ms("SigmoidGrad", [dY, y])[0] }
    unary("Relu") { g, dY, _, y in g.ms("ReluGrad", [dY, y])[0] }
    unary("Atan") { g, dY, x, _ in
        g.op("Div", [dY, g.op("Add", [try g.scalar(1, like: x, name: "one"), g.op("Mul", [x, x])])])
    }
    unary("Asin") { g, dY, x, _ in
        g.op("Div", [dY, g.op("Sqrt", [g.op("Sub", [try g.scalar(1, like: x, name: "one"), g.op("Mul", [x, x])])])])
    }
    unary("Acos") { g, dY, x, _ in
        g.op("Neg", [g.op("Div", [dY, g.op("Sqrt", [g.op("Sub", [try g.scalar(1, like: x, name: "one"), g.op("Mul", [x, x])])])])])
    }
    unary("Asinh") { g, dY, x, _ in
        g.op("Div", [dY, g.op("Sqrt", [g.op("Add", [g.op("Mul", [x, x]), try g.scalar(1, like: x, name: "one")])])])
    }
    unary("Acosh") { g, dY, x, _ in
        g.op("Div", [dY, g.op("Sqrt", [g.op("Sub", [g.op("Mul", [x, x]), try g.scalar(1, like: x, name: "one")])])])
    }
    unary("Atanh") { g, dY, x, _ in
        g.op("Div", [dY, g.op("Sub", [try g.scalar(1, like: x, name: "one"), g.op("Mul", [x, x])])])
    }
    unary("Erf") { g, dY, x, _ in
        // d erf(x) = 2/sqrt(pi) * exp(-x^2)
        let e = g.op("Exp", [g.op("Neg", [g.op("Mul", [x, x])])])
        return g.op("Mul", [dY, g.op("Mul", [e, try g.scalar(2 / Double.pi.squareRoot(), like: x, name: "two_over_sqrt_pi")])])
    }
    unary("Softplus") { g, dY, x, _ in g.op("Mul", [dY, g.op("Sigmoid", [x])]) }
    unary("Softsign") { g, dY, x, _ in
        let d = g.op("Add", [try g.scalar(1, like: x, name: "one"), g.op("Abs", [x])])
        return g.op("Div", [dY, g.op("Mul", [d, d])])
    }
    unary("Elu") { g, dY, x, y in
        let alpha = Double(g.node.float("alpha") ?? 1)
        let positive = g.op("Greater", [x, try g.scalar(0, like: x, name: "zero")])
        return g.op("Where", [positive, dY, g.op("Mul", [dY, g.op("Add", [y, try g.scalar(alpha, like: x, name: "alpha")])])])
    }
    unary("Selu") { g, dY, x, y in
        let alpha = Double(g.node.float("alpha") ?? 1.67326319217681884765625)
        let gamma = Double(g.node.float("gamma") ?? 1.05070102214813232421875)
        let positive = g.op("Greater", [x, try g.scalar(0, like: x, name: "zero")])
        let negative = g.op("Add", [y, try g.scalar(gamma * alpha, like: x, name: "gamma_alpha")])
        return g.op("Mul", [dY, g.op("Where", [positive, try g.scalar(gamma, like: x, name: "gamma"), negative])])
    }
    unary("Celu") { g, dY, x, y in
        // y = max(0,x) + min(0, alpha*(exp(x/alpha)-1)); below 0 the slope is exp(x/alpha) = y/alpha + 1.
        let alpha = Double(g.node.float("alpha") ?? 1)
        let positive = g.op("Greater", [x, try g.scalar(0, like: x, name: "zero")])
        let slope = g.op("Add", [g.op("Div", [y, try g.scalar(alpha, like: x, name: "alpha")]), try g.scalar(1, like: x, name: "one")])
        return g.op("Where", [positive, dY, g.op("Mul", [dY, slope])])
    }
    unary("LeakyRelu") { g, dY, x, _ in
        g.ms("LeakyReluGrad", [dY, x], attributes: ["alpha": .float(g.node.float("alpha") ?? 0.01)])[0]
    }
    unary("ThresholdedRelu") { g, dY, x, _ in
        let alpha = Double(g.node.float("alpha") ?? 1)
        return g.op("Where", [g.op("Greater", [x, try g.scalar(alpha, like: x, name: "alpha")]), dY, try g.scalar(0, like: x, name: "zero")])
    }
    unary("HardSigmoid") { g, dY, x, _ in
        let alpha = Double(g.node.float("alpha") ?? 0.2), beta = Double(g.node.float("beta") ?? 0.5)
        let z = g.op("Add", [g.op("Mul", [x, try g.scalar(alpha, like: x, name: "alpha")]), try g.scalar(beta, like: x, name: "beta")])
        let inside = g.op("And", [g.op("Greater", [z, try g.scalar(0, like: x, name: "zero")]), g.op("Less", [z, try g.scalar(1, like: x, name: "one")])])
        return g.op("Where", [inside, g.op("Mul", [dY, try g.scalar(alpha, like: x, name: "alpha")]), try g.scalar(0, like: x, name: "zero")])
    }
    unary("HardSwish") { g, dY, x, _ in
        // y = x * clip(x/6 + 1/2, 0, 1): slope 0 below -3, 1 above 3, (2x + 3)/6 between (PyTorch's convention at +-3).
        let slope = g.op("Add", [g.op("Div", [x, try g.scalar(3, like: x, name: "three")]), try g.scalar(0.5, like: x, name: "half")])
        let below = g.op("Less", [x, try g.scalar(-3, like: x, name: "minus_three")])
        let above = g.op("Greater", [x, try g.scalar(3, like: x, name: "three")])
        let clipped = g.op("Where", [below, try g.scalar(0, like: x, name: "zero"), g.op("Where", [above, try g.scalar(1, like: x, name: "one"), slope])])
        return g.op("Mul", [dY, clipped])
    }
    unary("Mish") { g, dY, x, _ in
        // y = x tanh(sp(x)): y' = tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)
        let t = g.op("Tanh", [g.op("Softplus", [x])])
        let one = try g.scalar(1, like: x, name: "one")
        let rest = g.op("Mul", [g.op("Mul", [x, g.op("Sigmoid", [x])]), g.op("Sub", [one, g.op("Mul", [t, t])])])
        return g.op("Mul", [dY, g.op("Add", [t, rest])])
    }
    unary("Gelu") { g, dY, x, _ in
        let tanh = g.node.string("approximate") == "tanh"
        return g.ms(tanh ? "FastGeluGrad" : "GeluGrad", [dY, x])[0]
    }
    registry.registerGradient("Gelu", domain: "com.microsoft") { g in g.needs(0) ? [g.ms("GeluGrad", [try g.requiredDY(), g.input(0)])[0]] : [nil] }
    registry.registerGradient("FastGelu", domain: "com.microsoft", fastGeluGradient)
    registry.registerGradient("BiasGelu", domain: "com.microsoft", biasGeluGradient)
    registry.registerGradient("QuickGelu", domain: "com.microsoft") { g in
        [g.needs(0) ? g.ms("QuickGeluGrad", [try g.requiredDY(), g.input(0)], attributes: ["alpha": .float(g.node.float("alpha") ?? 1.702)])[0] : nil]
    }
    registry.registerGradient("Cast", castGradient)
    // CastLike (the dynamo exporter's scalar constants): dY cast back to the input's type; the
    // second input only supplies a type, so it gets none.
    registry.registerGradient("CastLike", castLikeGradient)
    // Piecewise-constant ops: zero gradient almost everywhere (as PyTorch).
    for name in ["Floor", "Ceil", "Round", "Sign"] {
        registry.registerGradient(name) { g in [nil] }
    }

    // Softmax family: onnxruntime's grads, the opset-13 variants reduce over one axis.
    for (forward, grad) in [("Softmax", "SoftmaxGrad"), ("LogSoftmax", "LogSoftmaxGrad")] {
        registry.registerGradient(forward) { g in
            guard g.needs(0) else { return [nil] }
            let modern = g.opset >= 13
            let axis = g.node.int("axis") ?? (modern ? -1 : 1)
            return [g.ms(modern ? grad + "_13" : grad, [try g.requiredDY(), g.output(0)], attributes: ["axis": .int(axis)])[0]]
        }
    }
    registry.registerGradient("CumSum", cumSumGradient)

    // Reductions.
    registry.registerGradient("ReduceSum", reduceSumGradient)
    registry.registerGradient("ReduceMean", reduceMeanGradient)
    registry.registerGradient("ReduceSumSquare", reduceSumSquareGradient)
    registry.registerGradient("ReduceL1", reduceL1Gradient)
    registry.registerGradient("ReduceL2", reduceL2Gradient)
    registry.registerGradient("ReduceLogSumExp", reduceLogSumExpGradient)
    registry.registerGradient("ReduceLogSum", reduceLogSumGradient)
    registry.registerGradient("ReduceProd", reduceProdGradient)
    for name in ["ReduceMax", "ReduceMin"] {
        registry.registerGradient(name) { g in
            guard g.needs(0) else { return [nil] }
            let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
            // The gradient is shared evenly by the elements equal to the extreme (PyTorch's amax/amin).
            let x = g.input(0)
            let mask = g.op("Cast", [g.op("Equal", [x, r.unsqueezed(g.output(0))])], attributes: ["to": .int(Int(try g.floatType(x).rawValue))])
            let count = r.sumKeepingDims(mask)
            return [g.op("Mul", [mask, g.op("Div", [r.unsqueezed(try g.requiredDY()), count])])]
        }
    }
}

/// The gradient rule of Add.
func addGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    return [g.needs(0) ? g.reduced(dY, toInput: 0) : nil, g.needs(1) ? g.reduced(dY, toInput: 1) : nil]
}

/// The gradient rule of Sub.
func subGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    return [g.needs(0) ? g.reduced(dY, toInput: 0) : nil, g.needs(1) ? g.reduced(g.op("Neg", [dY]), toInput: 1) : nil]
}

/// The gradient rule of Mul.
func mulGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    return [g.needs(0) ? g.reduced(g.op("Mul", [dY, g.input(1)]), toInput: 0) : nil,
            g.needs(1) ? g.reduced(g.op("Mul", [dY, g.input(0)]), toInput: 1) : nil]
}

/// The gradient rule of Div.
func divGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    // dA = dY / B;  dB = -dY * A / B^2 = -(dY * Y) / B
    return [g.needs(0) ? g.reduced(g.op("Div", [dY, g.input(1)]), toInput: 0) : nil,
            g.needs(1) ? g.reduced(g.op("Neg", [g.op("Div", [g.op("Mul", [dY, g.output(0)]), g.input(1)])]), toInput: 1) : nil]
}

/// The gradient rule of Pow.
func powGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let x = g.input(0), e = g.input(1)
    var dX: String?
    if g.needs(0) {
        // As onnxruntime: dX = (X^(E-1) * E) * dY, in the exponent's type.
        let one = try g.scalar(1, like: e, name: "one")
        let pow = g.op("Pow", [x, g.op("Sub", [e, one])])
        dX = g.reduced(g.op("Mul", [g.op("Mul", [pow, e]), dY]), toInput: 0)
    }
    // dE = dY * Y * ln(X)
    let dE = g.needs(1) ? g.reduced(g.op("Mul", [dY, g.op("Mul", [g.output(0), g.op("Log", [x])])]), toInput: 1) : nil
    return [dX, dE]
}

/// The gradient rule of Sum.
func sumGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    return g.node.inputs.indices.map { g.needs($0) ? g.reduced(dY, toInput: $0) : nil }
}

/// The gradient rule of Mean.
func meanGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let scaled = g.op("Div", [dY, try g.scalar(Double(g.node.inputs.count), like: g.output(0), name: "count")])
    return g.node.inputs.indices.map { g.needs($0) ? g.reduced(scaled, toInput: $0) : nil }
}

/// The gradient rule of Where.
func whereGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let zero = try g.scalar(0, like: g.output(0), name: "zero")
    let cond = g.input(0)
    return [nil,
            g.needs(1) ? g.reduced(g.op("Where", [cond, dY, zero]), toInput: 1) : nil,
            g.needs(2) ? g.reduced(g.op("Where", [cond, zero, dY]), toInput: 2) : nil]
}

/// The gradient rule of PRelu.
func pReluGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let x = g.input(0)
    let positive = g.op("Greater", [x, try g.scalar(0, like: x, name: "zero")])
    let zero = try g.scalar(0, like: x, name: "zero")
    return [g.needs(0) ? g.reduced(g.op("Where", [positive, dY, g.op("Mul", [dY, g.input(1)])]), toInput: 0) : nil,
            g.needs(1) ? g.reduced(g.op("Where", [positive, zero, g.op("Mul", [dY, x])]), toInput: 1) : nil]
}

/// The gradient rule of Clip.
func clipGradient(_ g: GradientContext) throws -> [String?] {
    // Passes where min <= X <= max (both bounds inclusive, as PyTorch's clamp).
    let dY = try g.requiredDY()
    let x = g.input(0)
    var lo: String?, hi: String?
    if g.opset < 11 {
        if let v = g.node.float("min") { lo = try g.scalar(Double(v), like: x, name: "min") }
        if let v = g.node.float("max") { hi = try g.scalar(Double(v), like: x, name: "max") }
    } else {
        lo = g.hasInput(1) ? g.input(1) : nil
        hi = g.hasInput(2) ? g.input(2) : nil
    }
    // Not(x < lo) and Not(x > hi): ops every opset that has Where (9) has.
    var mask: String?
    if let lo { mask = g.op("Not", [g.op("Less", [x, lo])]) }
    if let hi {
        let below = g.op("Not", [g.op("Greater", [x, hi])])
        mask = mask.map { g.op("And", [$0, below]) } ?? below
    }
    guard let mask else { return [dY] }
    return [g.op("Where", [mask, dY, try g.scalar(0, like: x, name: "zero")])]
}

/// The gradient rule of FastGelu (com.microsoft).
func fastGeluGradient(_ g: GradientContext) throws -> [String?] {
    guard g.hasInput(1) else { return [g.needs(0) ? g.ms("FastGeluGrad", [try g.requiredDY(), g.input(0)])[0] : nil] }
    let dX = g.ms("BiasFastGeluGrad_dX", [try g.requiredDY(), g.input(0), g.input(1)])[0]
    return [g.needs(0) ? dX : nil, g.needs(1) ? g.reduced(dX, toInput: 1) : nil]
}

/// The gradient rule of BiasGelu (com.microsoft).
func biasGeluGradient(_ g: GradientContext) throws -> [String?] {
    let dX = g.ms("BiasGeluGrad_dX", [try g.requiredDY(), g.input(0), g.input(1)])[0]
    return [g.needs(0) ? dX : nil, g.needs(1) ? g.reduced(dX, toInput: 1) : nil]
}

/// The gradient rule of Cast.
func castGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let dY = try g.requiredDY()
    guard let to = g.dtype(g.input(0)) else { throw GradientError("the element type of '\(g.input(0))' is unknown") }
    return [g.op("Cast", [dY], attributes: ["to": .int(Int(to.rawValue))])]
}

/// The gradient rule of CastLike.
func castLikeGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil, nil] }
    let dY = try g.requiredDY()
    guard let to = g.dtype(g.input(0)) else { throw GradientError("the element type of '\(g.input(0))' is unknown") }
    return [g.op("Cast", [dY], attributes: ["to": .int(Int(to.rawValue))]), nil]
}

/// The gradient rule of CumSum.
func cumSumGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let reverse = (g.node.int("reverse") ?? 0) == 0 ? 1 : 0
    return [g.op("CumSum", [try g.requiredDY(), g.input(1)],
                 attributes: ["reverse": .int(reverse), "exclusive": .int(g.node.int("exclusive") ?? 0)])]
}

/// The gradient rule of ReduceSum.
func reduceSumGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 13)
    return [g.op("Expand", [r.unsqueezed(try g.requiredDY()), g.shape(of: g.input(0))])]
}

/// The gradient rule of ReduceMean.
func reduceMeanGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    let dY = try g.requiredDY()
    // As onnxruntime: dY scaled down by Size(X) / Size(dY), then broadcast back.
    let scale = g.op("Div", [g.op("Size", [g.input(0)]), g.op("Size", [dY])])
    let scaled = g.ms("Scale", [dY, scale], attributes: ["scale_down": .int(1)])[0]
    return [g.op("Expand", [r.unsqueezed(scaled), g.shape(of: g.input(0))])]
}

/// The gradient rule of ReduceSumSquare.
func reduceSumSquareGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    let x = g.input(0)
    let twice = g.op("Mul", [x, try g.scalar(2, like: x, name: "two")])
    return [g.op("Mul", [twice, r.unsqueezed(try g.requiredDY())])]
}

/// The gradient rule of ReduceL1.
func reduceL1Gradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    return [g.op("Mul", [g.op("Sign", [g.input(0)]), r.unsqueezed(try g.requiredDY())])]
}

/// The gradient rule of ReduceL2.
func reduceL2Gradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    // dX = dY * X / Y (where Y = 0 the gradient is 0, as PyTorch's norm)
    let x = g.input(0), y = r.unsqueezed(g.output(0))
    let zero = try g.scalar(0, like: x, name: "zero")
    let safe = g.op("Where", [g.op("Equal", [y, zero]), try g.scalar(1, like: x, name: "one"), y])
    let ratio = g.op("Where", [g.op("Equal", [y, zero]), zero, g.op("Div", [x, safe])])
    return [g.op("Mul", [ratio, r.unsqueezed(try g.requiredDY())])]
}

/// The gradient rule of ReduceLogSumExp.
func reduceLogSumExpGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    let softmax = g.op("Exp", [g.op("Sub", [g.input(0), r.unsqueezed(g.output(0))])])
    return [g.op("Mul", [softmax, r.unsqueezed(try g.requiredDY())])]
}

/// The gradient rule of ReduceLogSum.
func reduceLogSumGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    let sum = g.op("Exp", [r.unsqueezed(g.output(0))])
    return [g.op("Expand", [g.op("Div", [r.unsqueezed(try g.requiredDY()), sum]), g.shape(of: g.input(0))])]
}

/// The gradient rule of ReduceProd.
func reduceProdGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    // dX = dY * Y / X (inputs with zeros are not supported: their gradient would be inf/NaN).
    return [g.op("Mul", [r.unsqueezed(try g.requiredDY()), g.op("Div", [r.unsqueezed(g.output(0)), g.input(0)])])]
}

/// The axes of a Reduce* node and how to undo the reduction's shape on its gradient.
struct ReducedGradient {
    let g: GradientContext
    /// Fixed axes ([] = every axis), or the name of the run-time axes input.
    let axes: [Int]?
    let axesValue: String?
    let keepdims: Bool
    let noop: Bool

    init(_ g: GradientContext, axesFromInput: Bool) throws {
        self.g = g
        keepdims = (g.node.int("keepdims") ?? 1) != 0
        if axesFromInput {
            if !g.hasInput(1) {
                axes = []
                axesValue = nil
            } else if let t = g.constantInput(1), let v = t.intValues() {
                axes = v
                axesValue = nil
            } else {
                axes = nil
                axesValue = g.input(1)
            }
        } else {
            axes = g.node.ints("axes") ?? []
            axesValue = nil
        }
        noop = g.node.int("noop_with_empty_axes") == 1
    }

    /// A reduced tensor given back the reduced axes as size-1 dimensions (nothing to do with keepdims).
    func unsqueezed(_ value: String) -> String {
        if keepdims { return value }
        if let axes {
            if axes.isEmpty { return value }  // a scalar broadcasts against anything
            return g.unsqueeze(value, axes: axes)
        }
        // Run-time axes: unsqueeze through the input's shape with ones at the reduced axes.
        return g.op("Reshape", [value, g.op("Shape", [sumKeepingDims(g.input(0))])])
    }

    /// `x` summed over the node's axes with keepdims.
    func sumKeepingDims(_ x: String) -> String {
        if let axes {
            if axes.isEmpty && noop { return x }
            if axes.isEmpty, let r = g.rank(g.input(0)) { return g.reduceSum(x, axes: Array(0..<r), keepdims: true) }
            if axes.isEmpty { return g.op("ReduceSum", [x], attributes: ["keepdims": .int(1)]) }
            return g.reduceSum(x, axes: axes, keepdims: true)
        }
        return g.reduceSum(x, axesValue: axesValue!, keepdims: true)
    }
}

extension GradientContext {
    /// The floating-point element type of `name` (float32 when unknown).
    func floatType(_ name: String) throws -> DType {
        let d = dtype(name) ?? .float32
        guard d.isFloatingPoint else { throw GradientError("'\(name)' is tensor(\(d)), not a floating-point tensor") }
        return d
    }
}
