import Foundation

/// The opset-27 state-carrying sequence ops: CausalConvWithState (depthwise causal 1-D conv with
/// a rolling input cache) and LinearAttention (linear / gated / delta / gated-delta state
/// updates). Semantics follow the ops' ONNX function bodies; state is computed in float32.

/// CausalConvWithState: padded = concat(past_state or zeros [B, C, K-1], input [B, C, L]);
/// output[b, c, t] = act(bias[c] + Σ_k weight[c, 0, k] · padded[b, c, t + k]);
/// present_state = the last K-1 steps of padded.
struct CausalConvWithStateKernel: Kernel {
    let silu: Bool

    init(_ ctx: NodeContext) throws {
        switch try ctx.string("activation", default: "none").lowercased() {
        case "none", "": silu = false
        case "silu", "swish": silu = true
        case let a: throw KernelError("activation '\(a)' is not none, silu or swish")
        }
    }

    struct Op: ElementOperation {
        let silu: Bool, x: Tensor, w: Tensor, bias: Tensor?, past: Tensor?
        func float<T: FloatElement>(_ type: T.Type) throws -> [Tensor?] {
            guard x.rank == 3, w.rank == 3, w.shape[0] == x.shape[1], w.shape[1] == 1 else {
                throw KernelError("input [B, C, L] \(x.shape) and weight [C, 1, K] \(w.shape) do not fit")
            }
            let (b, c, l, k) = (x.shape[0], x.shape[1], x.shape[2], w.shape[2])
            let keep = k - 1
            if let bias, bias.count != c { throw KernelError("bias must hold \(c) values") }
            if let past, past.shape != [b, c, keep] { throw KernelError("past_state \(past.shape) must be [\(b), \(c), \(keep)]") }
            let xs = try x.elements(as: T.self), ws = try w.elements(as: T.self)
            let bs = try bias?.elements(as: T.self), ps = try past?.elements(as: T.self)
            var y = [T](repeating: 0, count: b * c * l), state = [T](repeating: 0, count: b * c * keep)
            var padded = [T](repeating: 0, count: keep + l)
            for bi in 0..<b {
                for ci in 0..<c {
                    let row = bi * c + ci
                    for i in 0..<keep { padded[i] = ps?[row * keep + i] ?? 0 }
                    for t in 0..<l { padded[keep + t] = xs[row * l + t] }
                    for t in 0..<l {
                        var s = bs?[ci] ?? 0
                        for j in 0..<k { s += ws[ci * k + j] * padded[t + j] }
                        if silu { s = T(fromDouble: s.doubleValue / (1 + exp(-s.doubleValue))) }
                        y[row * l + t] = s
                    }
                    for i in 0..<keep { state[row * keep + i] = padded[l + i] }
                }
            }
            return [Tensor(shape: [b, c, l], scalars: y), Tensor(shape: [b, c, keep], scalars: state)]
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        try withFloatCompute([inputs.tensor(0), inputs.tensor(1), inputs.optionalTensor(2), inputs.optionalTensor(3)]) { t in
            try dispatch(t[0]!.dtype, Op(silu: silu, x: t[0]!, w: t[1]!, bias: t[2], past: t[3]))
        }.map { $0.map(Value.tensor) }
    }
}

/// LinearAttention: per batch and key/value head a state S [Dk, Dv] runs over the sequence:
///   gated:  S ← S ⊙ exp(decay_t) (per key row);   delta: write β_t (v_t − Sᵀk_t) instead of v_t;
///   S ← S + k_t ⊗ write;   out_t = scale · q_tᵀ S  (query head h reads key/value head h / group).
/// Inputs query [B, T, Hq·Dk], key [B, T, Hkv·Dk], value [B, T, Hkv·Dv], past_state
/// [B, Hkv, Dk, Dv], decay [B, T, Hkv·Dk] or [B, T, Hkv], beta [B, T, Hkv] or [B, T, 1].
struct LinearAttentionKernel: Kernel {
    let qHeads: Int, kvHeads: Int, scale: Double?
    let gated: Bool, delta: Bool

    init(_ ctx: NodeContext) throws {
        qHeads = try ctx.requiredInt("q_num_heads")
        kvHeads = try ctx.requiredInt("kv_num_heads")
        scale = try ctx.float("scale").map(Double.init)
        switch try ctx.string("update_rule", default: "gated_delta") {
        case "linear": (gated, delta) = (false, false)
        case "gated": (gated, delta) = (true, false)
        case "delta": (gated, delta) = (false, true)
        case "gated_delta": (gated, delta) = (true, true)
        case let r: throw KernelError("update_rule '\(r)' is not linear, gated, delta or gated_delta")
        }
        guard qHeads > 0, kvHeads > 0, qHeads % kvHeads == 0 else { throw KernelError("q_num_heads must be a multiple of kv_num_heads") }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let q = try inputs.tensor(0), k = try inputs.tensor(1), v = try inputs.tensor(2)
        guard q.rank == 3, k.rank == 3, v.rank == 3, k.shape[0] == q.shape[0], v.shape[0] == q.shape[0],
              k.shape[1] == q.shape[1], v.shape[1] == q.shape[1],
              q.shape[2] % qHeads == 0, k.shape[2] % kvHeads == 0, v.shape[2] % kvHeads == 0 else {
            throw KernelError("query \(q.shape), key \(k.shape), value \(v.shape) do not fit \(qHeads)/\(kvHeads) heads")
        }
        let (b, t) = (q.shape[0], q.shape[1])
        let dk = q.shape[2] / qHeads, dv = v.shape[2] / kvHeads
        guard k.shape[2] / kvHeads == dk else { throw KernelError("query and key head sizes differ") }
        let qs = try quantizedValues(q), ks = try quantizedValues(k), vs = try quantizedValues(v)
        var state = [Float](repeating: 0, count: b * kvHeads * dk * dv)
        if let past = try inputs.optionalTensor(3) {
            guard past.shape == [b, kvHeads, dk, dv] else { throw KernelError("past_state \(past.shape) must be [\(b), \(kvHeads), \(dk), \(dv)]") }
            state = try quantizedValues(past)
        }
        let decay = try inputs.optionalTensor(4).map(quantizedValues)
        let beta = try inputs.optionalTensor(5).map(quantizedValues)
        // decay per key element or per head; beta per head or per token.
        let decayPerHead = decay.map { $0.count == b * t * kvHeads } ?? false
        if let decay, decay.count != b * t * kvHeads * dk && !decayPerHead { throw KernelError("decay must be [B, T, Hkv·Dk] or [B, T, Hkv]") }
        if gated && decay == nil { throw KernelError("the gated update rules need decay") }
        let betaPerHead = beta.map { $0.count == b * t * kvHeads } ?? false
        if let beta, beta.count != b * t && !betaPerHead { throw KernelError("beta must be [B, T, Hkv] or [B, T, 1]") }
        let scale = Float(self.scale ?? 1 / Double(dk).squareRoot())
        let group = qHeads / kvHeads
        var out = [Float](repeating: 0, count: b * t * qHeads * dv)
        var write = [Float](repeating: 0, count: dv)
        for bi in 0..<b {
            for ti in 0..<t {
                let token = bi * t + ti
                for h in 0..<kvHeads {
                    let sBase = (bi * kvHeads + h) * dk * dv
                    let kBase = (token * kvHeads + h) * dk, vBase = (token * kvHeads + h) * dv
                    if gated, let decay {
                        for i in 0..<dk {
                            let g = exp(decayPerHead ? decay[token * kvHeads + h] : decay[kBase + i])
                            for j in 0..<dv { state[sBase + i * dv + j] *= g }
                        }
                    }
                    for j in 0..<dv { write[j] = vs[vBase + j] }
                    if delta {
                        let bt = beta.map { betaPerHead ? $0[token * kvHeads + h] : $0[token] } ?? 1
                        for j in 0..<dv {
                            var retrieved: Float = 0
                            for i in 0..<dk { retrieved += state[sBase + i * dv + j] * ks[kBase + i] }
                            write[j] = bt * (write[j] - retrieved)
                        }
                    }
                    for i in 0..<dk {
                        let ki = ks[kBase + i]
                        for j in 0..<dv { state[sBase + i * dv + j] += ki * write[j] }
                    }
                    for g in 0..<group {
                        let qh = h * group + g
                        let qBase = (token * qHeads + qh) * dk, oBase = (token * qHeads + qh) * dv
                        for j in 0..<dv {
                            var s: Float = 0
                            for i in 0..<dk { s += qs[qBase + i] * state[sBase + i * dv + j] }
                            out[oBase + j] = scale * s
                        }
                    }
                }
            }
        }
        let dtype = q.dtype
        return [.tensor(floatTensor(dtype, shape: [b, t, qHeads * dv], out.map(Double.init))),
                .tensor(floatTensor(dtype, shape: [b, kvHeads, dk, dv], state.map(Double.init)))]
    }
}

func registerRecurrentStateOps(_ registry: OpRegistry) {
    registry.register("CausalConvWithState", since: 27) { ctx in try CausalConvWithStateKernel(ctx) }
    registry.register("LinearAttention", since: 27) { ctx in try LinearAttentionKernel(ctx) }
}
