import Foundation

/// Attention (opsets 23, 24): scaled dot-product attention over [B, H, S, D] (or [B, S, H·D])
/// inputs with a KV cache (past/present), grouped-query heads, boolean or additive masks,
/// causal masking aligned to the end of the cache, softcap, nonpad_kv_seqlen, and the optional
/// qk_matmul_output (mode 0 raw scores, 1 after softcap, 2 after the mask, 3 after softmax),
/// as the ONNX reference orders them: softcap before the mask, so -inf stays -inf.
struct AttentionKernel: Kernel {
    let isCausal: Bool
    let qHeads: Int?, kvHeads: Int?
    let scale: Double?
    let softcap: Double
    let qkMode: Int
    let wantQK: Bool

    init(_ ctx: NodeContext) throws {
        isCausal = try ctx.int("is_causal", default: 0) != 0
        qHeads = try ctx.int("q_num_heads")
        kvHeads = try ctx.int("kv_num_heads")
        scale = try ctx.float("scale").map(Double.init)
        softcap = Double(try ctx.float("softcap", default: 0))
        qkMode = try ctx.int("qk_matmul_output_mode", default: 0)
        wantQK = ctx.hasOutput(3)
        guard (0...3).contains(qkMode) else { throw KernelError("qk_matmul_output_mode \(qkMode) is not 0...3") }
    }

    /// [B, S, H·D] -> [B, H, S, D].
    static func splitHeads<T>(_ v: [T], b: Int, s: Int, h: Int, d: Int) -> [T] {
        var out = v
        for bi in 0..<b { for si in 0..<s { for hi in 0..<h {
            let src = ((bi * s + si) * h + hi) * d, dst = ((bi * h + hi) * s + si) * d
            for k in 0..<d { out[dst + k] = v[src + k] }
        } } }
        return out
    }

    /// Concatenates [B, H, P, D] and [B, H, S, D] along the sequence.
    static func concatSequence<T>(_ past: [T], _ new: [T], b: Int, h: Int, p: Int, s: Int, d: Int) -> [T] {
        var out: [T] = []
        out.reserveCapacity(b * h * (p + s) * d)
        for bh in 0..<(b * h) {
            out += past[(bh * p * d)..<((bh + 1) * p * d)]
            out += new[(bh * s * d)..<((bh + 1) * s * d)]
        }
        return out
    }

    struct Op: ElementOperation {
        let k: AttentionKernel
        let q: Tensor, key: Tensor, value: Tensor, mask: Tensor?, pastKey: Tensor?, pastValue: Tensor?, nonpad: [Int]?

        func float<T: FloatElement>(_ type: T.Type) throws -> [Tensor?] {
            let rank = q.rank
            guard rank == 3 || rank == 4, key.rank == rank, value.rank == rank else {
                throw KernelError("Q, K and V must all be 3-D or all 4-D, got \(q.shape), \(key.shape), \(value.shape)")
            }
            let b = q.shape[0]
            var hq: Int, hkv: Int, sq: Int, skv: Int, d: Int, dv: Int
            var qs = try q.elements(as: T.self), ks = try key.elements(as: T.self), vs = try value.elements(as: T.self)
            if rank == 3 {
                guard let qh = k.qHeads, let kh = k.kvHeads, qh > 0, kh > 0,
                      q.shape[2] % qh == 0, key.shape[2] % kh == 0, value.shape[2] % kh == 0 else {
                    throw KernelError("3-D inputs need q_num_heads and kv_num_heads that divide the hidden sizes")
                }
                hq = qh; hkv = kh; sq = q.shape[1]; skv = key.shape[1]
                d = q.shape[2] / qh; dv = value.shape[2] / kh
                guard key.shape[2] / kh == d else { throw KernelError("Q and K head sizes differ") }
                qs = AttentionKernel.splitHeads(qs, b: b, s: sq, h: hq, d: d)
                ks = AttentionKernel.splitHeads(ks, b: b, s: skv, h: hkv, d: d)
                vs = AttentionKernel.splitHeads(vs, b: b, s: skv, h: hkv, d: dv)
            } else {
                hq = q.shape[1]; hkv = key.shape[1]; sq = q.shape[2]; skv = key.shape[2]; d = q.shape[3]; dv = value.shape[3]
                guard key.shape[3] == d, value.shape[1] == hkv, value.shape[2] == skv else {
                    throw KernelError("K \(key.shape) and V \(value.shape) do not fit Q \(q.shape)")
                }
            }
            guard key.shape[0] == b, value.shape[0] == b, hkv > 0, hq % hkv == 0 else {
                throw KernelError("\(hq) query heads do not group over \(hkv) key/value heads")
            }
            // KV cache.
            var past = 0
            if let pastKey, let pastValue {
                guard pastKey.shape.count == 4, pastKey.shape[0] == b, pastKey.shape[1] == hkv, pastKey.shape[3] == d,
                      pastValue.shape == [b, hkv, pastKey.shape[2], dv] else {
                    throw KernelError("past_key \(pastKey.shape) / past_value \(pastValue.shape) do not fit [\(b), \(hkv), P, \(d)/\(dv)]")
                }
                past = pastKey.shape[2]
                ks = AttentionKernel.concatSequence(try pastKey.elements(as: T.self), ks, b: b, h: hkv, p: past, s: skv, d: d)
                vs = AttentionKernel.concatSequence(try pastValue.elements(as: T.self), vs, b: b, h: hkv, p: past, s: skv, d: dv)
            } else if (pastKey == nil) != (pastValue == nil) {
                throw KernelError("past_key and past_value must be given together")
            }
            let total = past + skv
            let scale = k.scale ?? 1 / Double(d).squareRoot()

            // Additive bias [B, Hq, Sq, total] pieces: mask broadcast (right-aligned), padded to total with -inf.
            var maskValues: [Double]? = nil
            var maskStrides = [0, 0, 0, 0], maskLast = total
            if let mask {
                guard (2...4).contains(mask.rank), mask.shape[mask.rank - 1] <= total else {
                    throw KernelError("attn_mask of shape \(mask.shape) does not fit [.., \(sq), \(total)]")
                }
                let m4 = Array(repeating: 1, count: 4 - mask.rank) + mask.shape
                guard [b, hq, sq].enumerated().allSatisfy({ m4[$0.offset] == 1 || m4[$0.offset] == $0.element }) else {
                    throw KernelError("attn_mask of shape \(mask.shape) does not broadcast to [\(b), \(hq), \(sq), \(total)]")
                }
                maskLast = m4[3]
                let st = contiguousStrides(m4)
                maskStrides = (0..<4).map { m4[$0] == 1 ? 0 : st[$0] }
                if mask.dtype == .bool {
                    maskValues = try mask.elements(as: Bool.self).map { $0 ? 0 : -Double.infinity }
                } else {
                    maskValues = (0..<mask.count).map { mask.scalarDouble(at: $0) ?? 0 }
                }
            }
            if let nonpad { guard nonpad.count == b else { throw KernelError("nonpad_kv_seqlen must hold \(b) lengths") } }

            var y = [T](repeating: 0, count: b * hq * sq * dv)
            let wantQK = k.wantQK
            var qkOut = [T](repeating: 0, count: wantQK ? b * hq * sq * total : 0)
            var scores = [T](repeating: 0, count: sq * total)
            let group = hq / hkv
            for bi in 0..<b {
                for h in 0..<hq {
                    let kvh = h / group
                    let qBase = ((bi * hq + h) * sq) * d, kBase = ((bi * hkv + kvh) * total) * d, vBase = ((bi * hkv + kvh) * total) * dv
                    // scores [Sq, total] = scale · Q_h [Sq, D] · K_hᵀ
                    qs.withUnsafeBufferPointer { pq in ks.withUnsafeBufferPointer { pk in scores.withUnsafeMutableBufferPointer { ps in
                        BLAS.gemm(transA: false, transB: true, m: sq, n: total, k: d, alpha: T(fromDouble: scale), a: pq.baseAddress! + qBase, lda: d,
                             b: pk.baseAddress! + kBase, ldb: d, beta: 0, c: ps.baseAddress!, ldc: total)
                    } } }
                    let outBase = ((bi * hq + h) * sq) * total
                    for i in 0..<sq {
                        // Causal frontier: key j is visible to query i iff j <= i + offset.
                        let offset = pastKey != nil ? past : (nonpad.map { $0[bi] - sq } ?? 0)
                        var row = [Double](repeating: 0, count: total)
                        var rowMax = -Double.infinity
                        for j in 0..<total {
                            var s = scores[i * total + j].doubleValue
                            if wantQK && k.qkMode == 0 { qkOut[outBase + i * total + j] = T(fromDouble: s) }
                            if k.softcap > 0 { s = k.softcap * tanh(s / k.softcap) }
                            if wantQK && k.qkMode == 1 { qkOut[outBase + i * total + j] = T(fromDouble: s) }
                            if let maskValues {
                                s += j < maskLast ? maskValues[bi * maskStrides[0] + h * maskStrides[1] + i * maskStrides[2] + j * maskStrides[3]] : -Double.infinity
                            }
                            if k.isCausal && j > i + offset { s += -Double.infinity }
                            if let nonpad, j >= nonpad[bi] { s += -Double.infinity }
                            if wantQK && k.qkMode == 2 { qkOut[outBase + i * total + j] = T(fromDouble: s) }
                            row[j] = s
                            rowMax = max(rowMax, s)
                        }
                        // Softmax as numpy computes it: a row that is all -inf gives NaN.
                        var sum = 0.0
                        for j in 0..<total { row[j] = exp(row[j] - rowMax); sum += row[j] }
                        for j in 0..<total {
                            let p = row[j] / sum
                            scores[i * total + j] = T(fromDouble: p)
                            if wantQK && k.qkMode == 3 { qkOut[outBase + i * total + j] = T(fromDouble: p) }
                        }
                    }
                    // Y_h [Sq, Dv] = P [Sq, total] · V_h [total, Dv]
                    let yBase = ((bi * hq + h) * sq) * dv
                    scores.withUnsafeBufferPointer { ps in vs.withUnsafeBufferPointer { pv in y.withUnsafeMutableBufferPointer { py in
                        BLAS.gemm(transA: false, transB: false, m: sq, n: dv, k: total, alpha: 1, a: ps.baseAddress!, lda: total,
                             b: pv.baseAddress! + vBase, ldb: dv, beta: 0, c: py.baseAddress! + yBase, ldc: dv)
                    } } }
                }
            }
            let yTensor: Tensor
            if rank == 3 {
                // [B, Hq, Sq, Dv] -> [B, Sq, Hq·Dv]
                var y3 = y
                for bi in 0..<b { for h in 0..<hq { for si in 0..<sq {
                    let src = ((bi * hq + h) * sq + si) * dv, dst = ((bi * sq + si) * hq + h) * dv
                    for c in 0..<dv { y3[dst + c] = y[src + c] }
                } } }
                yTensor = Tensor(shape: [b, sq, hq * dv], scalars: y3)
            } else {
                yTensor = Tensor(shape: [b, hq, sq, dv], scalars: y)
            }
            return [yTensor, Tensor(shape: [b, hkv, total, d], scalars: ks), Tensor(shape: [b, hkv, total, dv], scalars: vs),
                    wantQK ? Tensor(shape: [b, hq, sq, total], scalars: qkOut) : nil]
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let nonpad = try inputs.optionalTensor(6).map { t -> [Int] in
            guard let v = t.intValues() else { throw KernelError("nonpad_kv_seqlen must be an integer tensor") }
            return v
        }
        let ts = try [inputs.tensor(0), inputs.tensor(1), inputs.tensor(2), inputs.optionalTensor(3), inputs.optionalTensor(4), inputs.optionalTensor(5)]
        return try withFloatCompute(ts) { t in
            try dispatch(t[0]!.dtype, Op(k: self, q: t[0]!, key: t[1]!, value: t[2]!, mask: t[3], pastKey: t[4], pastValue: t[5], nonpad: nonpad))
        }.map { $0.map(Value.tensor) }
    }
}

func registerAttentionOps(_ registry: OpRegistry) {
    registry.register("Attention", since: 23) { ctx in try AttentionKernel(ctx) }
    registry.register("RotaryEmbedding", since: 23) { ctx in try RotaryEmbeddingKernel(ctx) }
    registry.register("FlexAttention", domain: "ai.onnx.preview", since: 1) { ctx in try FlexAttentionKernel(ctx) }
}

/// RotaryEmbedding (23): rotates the first `rotary_embedding_dim` features of every head by the
/// cos/sin of its position, as pairs (x[i], x[i + half]) or, interleaved, (x[2i], x[2i + 1]).
/// Input [B, H, S, D] or [B, S, H·D]; caches [max_position, half] indexed by position_ids
/// [B, S], or [B, S, half] when position_ids is omitted.
struct RotaryEmbeddingKernel: Kernel {
    let interleaved: Bool, rotaryDim: Int, numHeads: Int

    init(_ ctx: NodeContext) throws {
        interleaved = try ctx.int("interleaved", default: 0) != 0
        rotaryDim = try ctx.int("rotary_embedding_dim", default: 0)
        numHeads = try ctx.int("num_heads", default: 0)
    }

    struct Op: ElementOperation {
        let k: RotaryEmbeddingKernel, x: Tensor, cos: Tensor, sin: Tensor, positions: [Int]?
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            guard x.rank == 3 || x.rank == 4 else { throw KernelError("input must be [B, H, S, D] or [B, S, H·D], got \(x.shape)") }
            let b = x.shape[0]
            let (h, s, d): (Int, Int, Int)
            if x.rank == 4 {
                (h, s, d) = (x.shape[1], x.shape[2], x.shape[3])
            } else {
                guard k.numHeads > 0, x.shape[2] % k.numHeads == 0 else { throw KernelError("3-D input needs num_heads dividing \(x.shape[2])") }
                (h, s, d) = (k.numHeads, x.shape[1], x.shape[2] / k.numHeads)
            }
            let rot = k.rotaryDim == 0 ? d : k.rotaryDim
            guard rot <= d, rot % 2 == 0 else { throw KernelError("rotary_embedding_dim \(rot) must be even and at most \(d)") }
            let half = rot / 2
            guard cos.shape.last == half, sin.shape == cos.shape else { throw KernelError("cos/sin caches \(cos.shape) must end in \(half)") }
            let cs = try cos.elements(as: T.self), sn = try sin.elements(as: T.self)
            if let positions {
                guard positions.count == b * s else { throw KernelError("position_ids must be [\(b), \(s)]") }
                let rows = cos.count / half
                if let bad = positions.first(where: { $0 < 0 || $0 >= rows }) { throw KernelError("position \(bad) is outside the \(rows)-row cache") }
            } else {
                guard cos.count == b * s * half else { throw KernelError("without position_ids the caches must be [\(b), \(s), \(half)]") }
            }
            var y = x
            try x.withUnsafeBufferPointer(as: T.self) { px in
                y.uncheckedMutableBufferPointer(as: T.self) { py in
                    for bi in 0..<b { for si in 0..<s {
                        let row = (positions.map { $0[bi * s + si] } ?? (bi * s + si)) * half
                        for hi in 0..<h {
                            // offset of x[b, h, s, 0] (4-D) or x[b, s, h·D] (3-D)
                            let base = x.rank == 4 ? ((bi * h + hi) * s + si) * d : ((bi * s + si) * h + hi) * d
                            for i in 0..<half {
                                let (i1, i2) = k.interleaved ? (base + 2 * i, base + 2 * i + 1) : (base + i, base + i + half)
                                let x1 = px[i1], x2 = px[i2], c = cs[row + i], sv = sn[row + i]
                                py[i1] = c * x1 - sv * x2
                                py[i2] = sv * x1 + c * x2
                            }
                        }
                    } }
                }
            }
            return y
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        guard x.rank == 3 || x.rank == 4 else { throw KernelError("input must be 3-D or 4-D, got \(x.shape)") }
        let positions = try inputs.optionalTensor(3).map { t -> [Int] in
            guard let v = t.intValues() else { throw KernelError("position_ids must be an integer tensor") }
            return v
        }
        return try withFloatCompute([x, inputs.tensor(1), inputs.tensor(2)]) { t in
            [try dispatch(t[0]!.dtype, Op(k: self, x: t[0]!, cos: t[1]!, sin: t[2]!, positions: positions))]
        }.map { $0.map(Value.tensor) }
    }
}

/// FlexAttention (ai.onnx.preview 1): softmax(score_mod(scale · Q·Kᵀ)) then prob_mod, times V,
/// over [B, H, L, D] inputs with grouped key/value heads (query head h reads head h / group).
/// The mods are graph attributes run on the whole [B, Hq, L, S] tensor; scores and
/// probabilities are float32 for half inputs.
struct FlexAttentionKernel: Kernel {
    let scale: Double?
    let scoreMod: Subgraph?, probMod: Subgraph?

    init(_ ctx: NodeContext) throws {
        scale = try ctx.float("scale").map(Double.init)
        scoreMod = ctx.has("score_mod") ? try ctx.subgraph("score_mod") : nil
        probMod = ctx.has("prob_mod") ? try ctx.subgraph("prob_mod") : nil
    }

    struct Scores: ElementOperation {
        let q: Tensor, k: Tensor, scale: Double?
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            guard q.rank == 4, k.rank == 4, k.shape[0] == q.shape[0], k.shape[3] == q.shape[3], k.shape[1] > 0, q.shape[1] % k.shape[1] == 0 else {
                throw KernelError("Q \(q.shape) and K \(k.shape) must be [B, H, L, D] with H_q a multiple of H_kv")
            }
            let (b, hq, l, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
            let (hkv, s) = (k.shape[1], k.shape[2])
            let group = hq / hkv
            let alpha = T(fromDouble: scale ?? 1 / Double(d).squareRoot())
            var out = Tensor(zeros: T.dtype, shape: [b, hq, l, s])
            try q.withUnsafeBufferPointer(as: T.self) { pq in try k.withUnsafeBufferPointer(as: T.self) { pk in out.uncheckedMutableBufferPointer(as: T.self) { po in
                for bi in 0..<b { for h in 0..<hq {
                    BLAS.gemm(transA: false, transB: true, m: l, n: s, k: d, alpha: alpha, a: pq.baseAddress! + (bi * hq + h) * l * d, lda: d,
                         b: pk.baseAddress! + (bi * hkv + h / group) * s * d, ldb: d, beta: 0, c: po.baseAddress! + (bi * hq + h) * l * s, ldc: s)
                } }
            } } }
            return out
        }
    }

    struct Output: ElementOperation {
        let p: Tensor, v: Tensor
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            let (b, hq, l, s) = (p.shape[0], p.shape[1], p.shape[2], p.shape[3])
            guard v.rank == 4, v.shape[0] == b, v.shape[2] == s, v.shape[1] > 0, hq % v.shape[1] == 0 else {
                throw KernelError("V \(v.shape) does not fit probabilities \(p.shape)")
            }
            let (hkv, dv) = (v.shape[1], v.shape[3])
            var y = Tensor(zeros: T.dtype, shape: [b, hq, l, dv])
            try p.withUnsafeBufferPointer(as: T.self) { pp in try v.withUnsafeBufferPointer(as: T.self) { pv in y.uncheckedMutableBufferPointer(as: T.self) { py in
                for bi in 0..<b { for h in 0..<hq {
                    BLAS.gemm(transA: false, transB: false, m: l, n: dv, k: s, alpha: 1, a: pp.baseAddress! + (bi * hq + h) * l * s, lda: s,
                         b: pv.baseAddress! + (bi * hkv + h / (hq / hkv)) * s * dv, ldb: dv, beta: 0, c: py.baseAddress! + (bi * hq + h) * l * dv, ldc: dv)
                } }
            } } }
            return y
        }
    }

    /// Softmax over the last axis, in place (numpy semantics: an all -inf row gives NaN).
    struct Softmax: ElementOperation {
        let x: Tensor
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            var y = x
            let n = x.shape.last ?? 1
            try y.withUnsafeMutableBufferPointer(as: T.self) { p in
                guard n > 0 else { return }
                for r in 0..<(p.count / n) {
                    let base = r * n
                    var m = -Double.infinity
                    for j in 0..<n { m = max(m, p[base + j].doubleValue) }
                    var sum = 0.0
                    var e = [Double](repeating: 0, count: n)
                    for j in 0..<n { e[j] = exp(p[base + j].doubleValue - m); sum += e[j] }
                    for j in 0..<n { p[base + j] = T(fromDouble: e[j] / sum) }
                }
            }
            return y
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let q = try inputs.tensor(0)
        return try withFloatCompute([q, inputs.tensor(1), inputs.tensor(2)]) { t in
            let (q, k, v) = (t[0]!, t[1]!, t[2]!)
            var scores = try dispatch(q.dtype, Scores(q: q, k: k, scale: scale))
            if let scoreMod {
                guard case .tensor(let s)? = try scoreMod.run([.tensor(scores)], context).first, s.shape == scores.shape, s.dtype == scores.dtype else {
                    throw KernelError("score_mod must return a tensor shaped like its scores \(scores.shape)")
                }
                scores = s
            }
            var probs = try dispatch(q.dtype, Softmax(x: scores))
            if let probMod {
                guard case .tensor(let p)? = try probMod.run([.tensor(probs)], context).first, p.shape == probs.shape, p.dtype == probs.dtype else {
                    throw KernelError("prob_mod must return a tensor shaped like its probabilities \(probs.shape)")
                }
                probs = p
            }
            return [try dispatch(q.dtype, Output(p: probs, v: v))]
        }.map { $0.map(Value.tensor) }
    }
}
