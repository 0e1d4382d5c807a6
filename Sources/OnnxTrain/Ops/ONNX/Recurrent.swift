import Foundation

/// RNN, GRU and LSTM (ONNX equations, all directions, sequence_lens, initial states, clip,
/// activation lists, layout 0/1). The input projection X·Wᵀ for all steps is one GEMM; each step
/// adds one H·Rᵀ GEMM (two for GRU without linear_before_reset).
///
/// The same kernel is the forward of com.microsoft LSTMTraining/GRUTraining (`records`): it then
/// also returns what the gradient kernels (RecurrentGrad.swift) need, always in [S, D, B, ·]
/// order whatever the layout: LSTM all_cell_states [S, D, B, H] and the activated gates iofc
/// [S, D, B, 4H] (i, o, f, c̃ = tanh candidate); GRU the activated gates zrh [S, D, B, 3H]
/// (z, r, h̃). Steps past a sequence's length stay zero.

/// One activation of the `activations` attribute with its alpha/beta.
struct RecurrentActivation {
    enum Kind { case relu, tanh, sigmoid, affine, leakyRelu, thresholdedRelu, scaledTanh, hardSigmoid, elu, softsign, softplus }
    let kind: Kind
    let alpha: Double, beta: Double

    /// Builds the list, consuming activation_alpha/activation_beta in order by the activations
    /// that take them (as onnxruntime does); missing values take the ONNX op defaults.
    static func list(_ names: [String], alphas: [Float], betas: [Float]) throws -> [RecurrentActivation] {
        var ai = 0, bi = 0
        return try names.map { name in
            let kind: Kind, defaults: (Double?, Double?)
            switch name.lowercased() {
            case "relu": kind = .relu; defaults = (nil, nil)
            case "tanh": kind = .tanh; defaults = (nil, nil)
            case "sigmoid": kind = .sigmoid; defaults = (nil, nil)
            case "affine": kind = .affine; defaults = (1, 0)
            case "leakyrelu": kind = .leakyRelu; defaults = (0.01, nil)
            case "thresholdedrelu": kind = .thresholdedRelu; defaults = (1, nil)
            case "scaledtanh": kind = .scaledTanh; defaults = (1, 1)
            case "hardsigmoid": kind = .hardSigmoid; defaults = (0.2, 0.5)
            case "elu": kind = .elu; defaults = (1, nil)
            case "softsign": kind = .softsign; defaults = (nil, nil)
            case "softplus": kind = .softplus; defaults = (nil, nil)
            default: throw KernelError("unsupported activation '\(name)'")
            }
            var alpha = 0.0, beta = 0.0
            if let a = defaults.0 {
                alpha = ai < alphas.count ? Double(alphas[ai]) : a; ai += 1
            }
            if let b = defaults.1 {
                beta = bi < betas.count ? Double(betas[bi]) : b; bi += 1
            }
            return RecurrentActivation(kind: kind, alpha: alpha, beta: beta)
        }
    }

    @inline(__always)
    func callAsFunction(_ x: Double) -> Double {
        switch kind {
        case .relu: return max(x, 0)
        case .tanh: return Foundation.tanh(x)
        case .sigmoid: return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x))
        case .affine: return alpha * x + beta
        case .leakyRelu: return x >= 0 ? x : alpha * x
        case .thresholdedRelu: return x > alpha ? x : 0
        case .scaledTanh: return alpha * Foundation.tanh(beta * x)
        case .hardSigmoid: return max(0, min(1, alpha * x + beta))
        case .elu: return x >= 0 ? x : alpha * (exp(x) - 1)
        case .softsign: return x / (1 + abs(x))
        case .softplus: return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x))
        }
    }
}

enum RecurrentCell { case rnn, gru, lstm }

struct RecurrentKernel: Kernel {
    let cell: RecurrentCell
    let hiddenSize: Int
    let directions: [Bool]          // per direction: true = reverse
    let activations: [RecurrentActivation]   // per direction, `perDirection` each
    let perDirection: Int
    let clip: Double?
    let layout: Int
    let linearBeforeReset: Bool
    let inputForget: Bool
    /// LSTMTraining/GRUTraining: also return the cell states and gate activations.
    let records: Bool

    var gates: Int { switch cell { case .rnn: return 1; case .gru: return 3; case .lstm: return 4 } }

    init(_ ctx: NodeContext, cell: RecurrentCell, records: Bool = false) throws {
        self.cell = cell
        self.records = records
        hiddenSize = try ctx.requiredInt("hidden_size")
        // Bounded so that gate and weight sizes (4·H·H) cannot overflow.
        guard hiddenSize > 0, hiddenSize <= 1 << 24 else { throw KernelError("hidden_size \(hiddenSize) is not between 1 and 2^24") }
        switch try ctx.string("direction", default: "forward") {
        case "forward": directions = [false]
        case "reverse": directions = [true]
        case "bidirectional": directions = [false, true]
        case let d: throw KernelError("direction '\(d)' is not forward, reverse or bidirectional")
        }
        let defaults: [String]
        switch cell {
        case .rnn: defaults = ["Tanh"]; perDirection = 1
        case .gru: defaults = ["Sigmoid", "Tanh"]; perDirection = 2
        case .lstm: defaults = ["Sigmoid", "Tanh", "Tanh"]; perDirection = 3
        }
        var names = try ctx.strings("activations") ?? []
        if names.isEmpty { names = Array(Array(repeating: defaults, count: directions.count).joined()) }
        if names.count == perDirection && directions.count == 2 { names += names }
        guard names.count == perDirection * directions.count else {
            throw KernelError("activations lists \(names.count) functions, \(perDirection * directions.count) expected")
        }
        activations = try RecurrentActivation.list(names, alphas: ctx.floats("activation_alpha") ?? [], betas: ctx.floats("activation_beta") ?? [])
        clip = try ctx.float("clip").map(Double.init)
        layout = try ctx.int("layout", default: 0)
        linearBeforeReset = try ctx.int("linear_before_reset", default: 0) != 0
        inputForget = try ctx.int("input_forget", default: 0) != 0
    }

    struct Op: ElementOperation {
        let k: RecurrentKernel
        let x: Tensor, w: Tensor, r: Tensor, b: Tensor?, lengths: [Int]?, h0: Tensor?, c0: Tensor?, p: Tensor?

        func float<T: FloatElement>(_ type: T.Type) throws -> [Tensor?] {
            let H = k.hiddenSize, G = k.gates, D = k.directions.count
            guard x.rank == 3 else { throw KernelError("X must be 3-D, got \(x.shape)") }
            // Work in [S, B, I] order.
            let S = k.layout == 0 ? x.shape[0] : x.shape[1], B = k.layout == 0 ? x.shape[1] : x.shape[0], I = x.shape[2]
            guard w.shape == [D, G * H, I] else { throw KernelError("W of shape \(w.shape) does not fit [\(D), \(G * H), \(I)]") }
            guard r.shape == [D, G * H, H] else { throw KernelError("R of shape \(r.shape) does not fit [\(D), \(G * H), \(H)]") }
            if let b, b.shape != [D, 2 * G * H] { throw KernelError("B of shape \(b.shape) does not fit [\(D), \(2 * G * H)]") }
            if let p, p.shape != [D, 3 * H] { throw KernelError("P of shape \(p.shape) does not fit [\(D), \(3 * H)]") }
            let lens = lengths ?? Array(repeating: S, count: B)
            guard lens.count == B, lens.allSatisfy({ $0 >= 0 && $0 <= S }) else { throw KernelError("sequence_lens \(lens) does not fit batch \(B) and \(S) steps") }
            let stateShape = k.layout == 0 ? [D, B, H] : [B, D, H]
            for (name, s) in [("initial_h", h0), ("initial_c", c0)] {
                if let s, s.shape != stateShape { throw KernelError("\(name) of shape \(s.shape) does not fit \(stateShape)") }
            }
            var xs = try x.elements(as: T.self)
            if k.layout != 0 { xs = transpose01(xs, B, S, I) }
            let ws = try w.elements(as: T.self), rs = try r.elements(as: T.self)
            let bs = try b?.elements(as: T.self), ps = try p?.elements(as: T.self)
            // State index helpers in layout 0 ([D, B, H]); converted at the end for layout 1.
            var h0s = try h0?.elements(as: T.self), c0s = try c0?.elements(as: T.self)
            if k.layout != 0 { h0s = h0s.map { transpose01($0, B, D, H) }; c0s = c0s.map { transpose01($0, B, D, H) } }

            var y = [T](repeating: 0, count: S * D * B * H)
            var yh = [T](repeating: 0, count: D * B * H), yc = [T](repeating: 0, count: D * B * H)
            var xw = [T](repeating: 0, count: S * B * G * H)
            var hr = [T](repeating: 0, count: B * G * H)
            var rh = [T](repeating: 0, count: B * H)   // GRU: (r ⊙ h) and its product with Rhᵀ
            var rhr = [T](repeating: 0, count: B * H)
            // Training records, [S, D, B, G·H] gates and [S, D, B, H] cells.
            var gateRecord = [T](repeating: 0, count: k.records ? S * D * B * G * H : 0)
            var cellRecord = [T](repeating: 0, count: k.records && k.cell == .lstm ? S * D * B * H : 0)
            let clip = k.clip
            @inline(__always) func clipped(_ v: Double) -> Double { clip.map { min(max(v, -$0), $0) } ?? v }

            for d in 0..<D {
                let reverse = k.directions[d]
                let act = Array(k.activations[(d * k.perDirection)..<((d + 1) * k.perDirection)])
                var h = h0s.map { Array($0[(d * B * H)..<((d + 1) * B * H)]) } ?? [T](repeating: 0, count: B * H)
                var c = c0s.map { Array($0[(d * B * H)..<((d + 1) * B * H)]) } ?? [T](repeating: 0, count: B * H)
                // X·Wᵀ for every step: [S·B, I] · [I, G·H]
                xs.withUnsafeBufferPointer { px in ws.withUnsafeBufferPointer { pw in xw.withUnsafeMutableBufferPointer { po in
                    BLAS.gemm(transA: false, transB: true, m: S * B, n: G * H, k: I, alpha: 1, a: px.baseAddress!, lda: I,
                         b: pw.baseAddress! + d * G * H * I, ldb: I, beta: 0, c: po.baseAddress!, ldc: G * H)
                } } }
                let wb = bs.map { Array($0[(d * 2 * G * H)..<(d * 2 * G * H + G * H)]).map(\.doubleValue) } ?? Array(repeating: 0.0, count: G * H)
                let rb = bs.map { Array($0[(d * 2 * G * H + G * H)..<((d + 1) * 2 * G * H)]).map(\.doubleValue) } ?? Array(repeating: 0.0, count: G * H)
                let peep = ps.map { Array($0[(d * 3 * H)..<((d + 1) * 3 * H)]).map(\.doubleValue) } ?? Array(repeating: 0.0, count: 3 * H)
                let rOffset = d * G * H * H

                for s in 0..<S {
                    // H·Rᵀ: [B, H] · [H, G·H]
                    h.withUnsafeBufferPointer { ph in rs.withUnsafeBufferPointer { pr in hr.withUnsafeMutableBufferPointer { po in
                        BLAS.gemm(transA: false, transB: true, m: B, n: G * H, k: H, alpha: 1, a: ph.baseAddress!, lda: H,
                             b: pr.baseAddress! + rOffset, ldb: H, beta: 0, c: po.baseAddress!, ldc: G * H)
                    } } }
                    if k.cell == .gru && !k.linearBeforeReset {
                        // r first, then (r ⊙ h)·Rhᵀ
                        for bi in 0..<B where s < lens[bi] {
                            let t = reverse ? lens[bi] - 1 - s : s
                            let xrow = (t * B + bi) * G * H
                            for j in 0..<H {
                                let rg = act[0](clipped(xw[xrow + H + j].doubleValue + hr[bi * G * H + H + j].doubleValue + wb[H + j] + rb[H + j]))
                                rh[bi * H + j] = T(fromDouble: rg * h[bi * H + j].doubleValue)
                            }
                        }
                        rh.withUnsafeBufferPointer { pa in rs.withUnsafeBufferPointer { pr in rhr.withUnsafeMutableBufferPointer { po in
                            BLAS.gemm(transA: false, transB: true, m: B, n: H, k: H, alpha: 1, a: pa.baseAddress!, lda: H,
                                 b: pr.baseAddress! + rOffset + 2 * H * H, ldb: H, beta: 0, c: po.baseAddress!, ldc: H)
                        } } }
                    }
                    for bi in 0..<B {
                        guard s < lens[bi] else { continue }
                        let t = reverse ? lens[bi] - 1 - s : s
                        let xrow = (t * B + bi) * G * H, hrow = bi * G * H
                        @inline(__always) func gate(_ g: Int, _ j: Int) -> Double {
                            xw[xrow + g * H + j].doubleValue + hr[hrow + g * H + j].doubleValue + wb[g * H + j] + rb[g * H + j]
                        }
                        for j in 0..<H {
                            let hi = bi * H + j
                            let hPrev = h[hi].doubleValue
                            var hNew: Double
                            switch k.cell {
                            case .rnn:
                                hNew = act[0](clipped(gate(0, j)))
                            case .gru:
                                let z = act[0](clipped(gate(0, j)))
                                let rg = act[0](clipped(gate(1, j)))
                                let candidate: Double
                                if k.linearBeforeReset {
                                    candidate = xw[xrow + 2 * H + j].doubleValue + wb[2 * H + j]
                                        + rg * (hr[hrow + 2 * H + j].doubleValue + rb[2 * H + j])
                                } else {
                                    candidate = xw[xrow + 2 * H + j].doubleValue + wb[2 * H + j] + rhr[hi].doubleValue + rb[2 * H + j]
                                }
                                let hc = act[1](clipped(candidate))
                                hNew = (1 - z) * hc + z * hPrev
                                if k.records {
                                    let g = ((t * D + d) * B + bi) * G * H + j
                                    gateRecord[g] = T(fromDouble: z); gateRecord[g + H] = T(fromDouble: rg); gateRecord[g + 2 * H] = T(fromDouble: hc)
                                }
                            case .lstm:
                                let cPrev = c[hi].doubleValue
                                let i = act[0](clipped(gate(0, j) + peep[j] * cPrev))
                                let f = k.inputForget ? 1 - i : act[0](clipped(gate(2, j) + peep[2 * H + j] * cPrev))
                                let cc = act[1](clipped(gate(3, j)))
                                let cNew = f * cPrev + i * cc
                                let o = act[0](clipped(gate(1, j) + peep[H + j] * cNew))
                                hNew = o * act[2](cNew)
                                c[hi] = T(fromDouble: cNew)
                                if k.records {
                                    let g = ((t * D + d) * B + bi) * G * H + j
                                    gateRecord[g] = T(fromDouble: i); gateRecord[g + H] = T(fromDouble: o)
                                    gateRecord[g + 2 * H] = T(fromDouble: f); gateRecord[g + 3 * H] = T(fromDouble: cc)
                                    cellRecord[((t * D + d) * B + bi) * H + j] = c[hi]
                                }
                            }
                            h[hi] = T(fromDouble: hNew)
                            y[((t * D + d) * B + bi) * H + j] = h[hi]
                        }
                    }
                }
                for i in 0..<(B * H) { yh[d * B * H + i] = h[i]; yc[d * B * H + i] = c[i] }
            }
            var records: [Tensor?] = []
            if k.records {
                if k.cell == .lstm { records.append(Tensor(shape: [S, D, B, H], scalars: cellRecord)) }
                records.append(Tensor(shape: [S, D, B, G * H], scalars: gateRecord))
            }
            if k.layout == 0 {
                return [Tensor(shape: [S, D, B, H], scalars: y), Tensor(shape: [D, B, H], scalars: yh)]
                    + (k.cell == .lstm ? [Tensor(shape: [D, B, H], scalars: yc)] : []) + records
            }
            // layout 1: Y [B, S, D, H], states [B, D, H]
            var y1 = [T](repeating: 0, count: y.count)
            for s in 0..<S { for d in 0..<D { for bi in 0..<B { for j in 0..<H {
                y1[((bi * S + s) * D + d) * H + j] = y[((s * D + d) * B + bi) * H + j]
            } } } }
            return [Tensor(shape: [B, S, D, H], scalars: y1), Tensor(shape: [B, D, H], scalars: transpose01(yh, D, B, H))]
                + (k.cell == .lstm ? [Tensor(shape: [B, D, H], scalars: transpose01(yc, D, B, H))] : []) + records
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        // RNN/GRU: X, W, R, B, sequence_lens, initial_h; LSTM adds initial_c, P.
        let lengths = try inputs.optionalTensor(4).map { t -> [Int] in
            guard let v = t.intValues() else { throw KernelError("sequence_lens must be an integer tensor") }
            return v
        }
        let floats = try [inputs.tensor(0), inputs.tensor(1), inputs.tensor(2), inputs.optionalTensor(3), inputs.optionalTensor(5),
                          cell == .lstm ? inputs.optionalTensor(6) : nil, cell == .lstm ? inputs.optionalTensor(7) : nil]
        return try withFloatCompute(floats) { t in
            try dispatch(t[0]!.dtype, Op(k: self, x: t[0]!, w: t[1]!, r: t[2]!, b: t[3], lengths: lengths, h0: t[4], c0: t[5], p: t[6]))
        }.map { $0.map(Value.tensor) }
    }
}

/// Swaps the first two dims of a row-major [a, b, c] array.
func transpose01<T>(_ v: [T], _ a: Int, _ b: Int, _ c: Int) -> [T] {
    guard a * b * c > 0 else { return v }
    var out = v
    for i in 0..<a { for j in 0..<b {
        let src = (i * b + j) * c, dst = (j * a + i) * c
        for k in 0..<c { out[dst + k] = v[src + k] }
    } }
    return out
}

func registerRecurrentOps(_ registry: OpRegistry) {
    registry.register("RNN", since: 1) { ctx in try RecurrentKernel(ctx, cell: .rnn) }
    registry.register("GRU", since: 1) { ctx in try RecurrentKernel(ctx, cell: .gru) }
    registry.register("LSTM", since: 1) { ctx in try RecurrentKernel(ctx, cell: .lstm) }
    // Gradient rules: through LSTMTraining/GRUTraining and LSTMGrad/GRUGrad (RecurrentGrad.swift).
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
