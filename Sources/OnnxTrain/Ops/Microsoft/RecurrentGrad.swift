import Foundation

/// com.microsoft LSTMTraining / GRUTraining (forwards that keep what backpropagation needs) and
/// LSTMGrad / GRUGrad (backpropagation through time), as onnxruntime 1.19.2 defines them, plus
/// what onnxruntime refuses ("only supports the forward direction for now"): reverse and
/// bidirectional directions, sequence_lens and layout 1.
///
/// The forwards are the ONNX LSTM/GRU kernel (Recurrent.swift) with `records` set:
///   LSTMTraining(X, W, R, B?, sequence_lens?, initial_h?, initial_c?, P?)
///     → Y, Y_h?, Y_c?, all_cell_states [S, D, B, H], iofc [S, D, B, 4H]
///   GRUTraining(X, W, R, B?, sequence_lens?, initial_h?) → Y, Y_h?, zrh [S, D, B, 3H]
/// iofc and zrh hold the activated gates in the order of W's blocks (i, o, f, c̃ and z, r, h̃).
///
/// The gradients (inputs in onnxruntime's order; "?" = optional, "" when absent):
///   LSTMGrad(X, W, R, sequence_lens?, initial_h?, initial_c?, Y, all_cell_states, iofc,
///            dY?, dY_h?, dY_c?, P?) → dX?, dW, dR, dB?, d initial_h?, d initial_c?, dP?
///   GRUGrad(X, W, R, B?, sequence_lens?, initial_h?, Y, zrh, dY?, dY_h?)
///     → dX?, dW, dR, dB?, d initial_h?
/// P (input 12) goes beyond onnxruntime, whose LSTMGrad has no peephole input and so leaves the
/// peephole terms out of the cell-state gradient: without P the result is onnxruntime's, with P
/// it is the exact gradient of a peephole LSTM. PyTorch exports never have peepholes.
///
/// Derivatives come from the recorded activations (σ' = σ(1−σ), tanh' = 1−tanh²), so the gate
/// activations must be the defaults and `clip` absent, as onnxruntime also requires.

/// The backward pass of one LSTM/GRU node. Works in [S, B, ·] order (layout 1 tensors are
/// transposed in and out). Per direction it walks the steps backwards, one [B, G·H]·[G·H, H]
/// GEMM per step for the hidden-state gradient (two for GRU); the gate gradients of every step
/// are kept, so dX, dW and dR are one GEMM each over all steps.
struct RecurrentGradKernel: Kernel {
    let k: RecurrentKernel
    let wantsDX: Bool

    init(_ ctx: NodeContext, cell: RecurrentCell) throws {
        k = try RecurrentKernel(ctx, cell: cell)
        guard k.clip == nil else {
            throw KernelError("clip is not supported: the gradient needs the unclipped gate activations (onnxruntime refuses it too)")
        }
        let defaults: [RecurrentActivation.Kind] = cell == .lstm ? [.sigmoid, .tanh, .tanh] : [.sigmoid, .tanh]
        guard k.activations.map(\.kind) == Array(Array(repeating: defaults, count: k.directions.count).joined()) else {
            throw KernelError("activations must be the defaults (\(cell == .lstm ? "Sigmoid, Tanh, Tanh" : "Sigmoid, Tanh")): the gradient derives derivatives from sigmoid and tanh outputs")
        }
        wantsDX = ctx.hasOutput(0)
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let lstm = k.cell == .lstm
        // LSTM: X 0, W 1, R 2, sequence_lens 3, initial_h 4, initial_c 5, Y 6, all_cell_states 7, iofc 8, dY 9, dY_h 10, dY_c 11, P 12.
        // GRU:  X 0, W 1, R 2, B 3, sequence_lens 4, initial_h 5, Y 6, zrh 7, dY 8, dY_h 9.
        let lengths = try inputs.optionalTensor(lstm ? 3 : 4).map { t -> [Int] in
            guard let v = t.intValues() else { throw KernelError("sequence_lens must be an integer tensor") }
            return v
        }
        let floats: [Tensor?]
        if lstm {
            floats = try [inputs.tensor(0), inputs.tensor(1), inputs.tensor(2), nil, inputs.optionalTensor(4), inputs.optionalTensor(5),
                          inputs.tensor(6), inputs.tensor(7), inputs.tensor(8), inputs.optionalTensor(9), inputs.optionalTensor(10),
                          inputs.optionalTensor(11), inputs.optionalTensor(12)]
        } else {
            floats = try [inputs.tensor(0), inputs.tensor(1), inputs.tensor(2), inputs.optionalTensor(3), inputs.optionalTensor(5), nil,
                          inputs.tensor(6), nil, inputs.tensor(7), inputs.optionalTensor(8), inputs.optionalTensor(9), nil, nil]
        }
        let dtype = floats[0]!.dtype
        for (i, t) in floats.enumerated() {
            if let t, t.dtype != dtype { throw KernelError("input \(i) is tensor(\(t.dtype)), X is tensor(\(dtype))") }
        }
        return try withFloatCompute(floats) { t in
            try dispatch(t[0]!.dtype, Op(k: k, wantsDX: wantsDX, x: t[0]!, w: t[1]!, r: t[2]!, b: t[3], lengths: lengths,
                                              h0: t[4], c0: t[5], y: t[6]!, cells: t[7], gates: t[8]!, dY: t[9], dYh: t[10],
                                              dYc: t[11], p: t[12]))
        }.map { $0.map(Value.tensor) }
    }

    struct Op: ElementOperation {
        let k: RecurrentKernel
        let wantsDX: Bool
        let x: Tensor, w: Tensor, r: Tensor, b: Tensor?, lengths: [Int]?, h0: Tensor?, c0: Tensor?
        let y: Tensor, cells: Tensor?, gates: Tensor, dY: Tensor?, dYh: Tensor?, dYc: Tensor?, p: Tensor?

        func float<T: FloatElement>(_ type: T.Type) throws -> [Tensor?] {
            let lstm = k.cell == .lstm, gru = k.cell == .gru
            let H = k.hiddenSize, GH = k.gates * k.hiddenSize, D = k.directions.count
            guard x.rank == 3 else { throw KernelError("X must be 3-D, got \(x.shape)") }
            let layout0 = k.layout == 0
            let S = layout0 ? x.shape[0] : x.shape[1], B = layout0 ? x.shape[1] : x.shape[0], I = x.shape[2]
            func check(_ t: Tensor?, _ name: String, _ shape: [Int]) throws {
                if let t, t.shape != shape { throw KernelError("\(name) of shape \(t.shape) does not fit \(shape)") }
            }
            let sequenceShape = layout0 ? [S, D, B, H] : [B, S, D, H], stateShape = layout0 ? [D, B, H] : [B, D, H]
            try check(w, "W", [D, GH, I]); try check(r, "R", [D, GH, H]); try check(b, "B", [D, 2 * GH])
            try check(h0, "initial_h", stateShape); try check(c0, "initial_c", stateShape)
            try check(y, "Y", sequenceShape); try check(dY, "dY", sequenceShape)
            try check(dYh, "dY_h", stateShape); try check(dYc, "dY_c", stateShape)
            try check(gates, lstm ? "iofc" : "zrh", [S, D, B, GH]); try check(cells, "all_cell_states", [S, D, B, H])
            try check(p, "P", [D, 3 * H])
            if lstm && cells == nil { throw KernelError("all_cell_states is required") }
            let lens = lengths ?? Array(repeating: S, count: B)
            guard lens.count == B, lens.allSatisfy({ $0 >= 0 && $0 <= S }) else {
                throw KernelError("sequence_lens \(lens) does not fit batch \(B) and \(S) steps")
            }

            // Every input of the compute type (scalars(as:) below would trap on another).
            for t in [x, w, r, y, gates] + [b, p, h0, c0, cells, dY, dYh, dYc].compactMap({ $0 }) { try t.checkElementType(T.self) }
            // Everything in [S, (D,) B, ·] order.
            func sequenceMajor(_ t: Tensor) -> [T] {
                let v = t.scalars(as: T.self)
                guard !layout0 else { return v }
                var out = v
                for bi in 0..<B { for s in 0..<S { for d in 0..<D { for j in 0..<H {
                    out[((s * D + d) * B + bi) * H + j] = v[((bi * S + s) * D + d) * H + j]
                } } } }
                return out
            }
            func stateMajor(_ t: Tensor) -> [T] { layout0 ? t.scalars(as: T.self) : transpose01(t.scalars(as: T.self), B, D, H) }
            let xs = layout0 ? x.scalars(as: T.self) : transpose01(x.scalars(as: T.self), B, S, I)
            let ys = sequenceMajor(y), dys = dY.map(sequenceMajor)
            let h0s = h0.map(stateMajor), c0s = c0.map(stateMajor), dyhs = dYh.map(stateMajor), dycs = dYc.map(stateMajor)
            let gs = gates.scalars(as: T.self), cs = cells?.scalars(as: T.self) ?? []
            let ws = w.scalars(as: T.self), rs = r.scalars(as: T.self), bs = b?.scalars(as: T.self), ps = p?.scalars(as: T.self)

            var dX = [T](repeating: 0, count: wantsDX ? S * B * I : 0)
            var dW = [T](repeating: 0, count: D * GH * I), dR = [T](repeating: 0, count: D * GH * H)
            var dB = [T](repeating: 0, count: D * 2 * GH), dP = [T](repeating: 0, count: lstm ? D * 3 * H : 0)
            var dH0 = [T](repeating: 0, count: D * B * H), dC0 = [T](repeating: 0, count: lstm ? D * B * H : 0)
            // Per direction: the gate pre-activation gradients of every step, as seen by W (dAW)
            // and by R (dAR; they differ only in GRU's h̃ block with linear_before_reset), and the
            // hidden state each step read (hPrev; GRU without linear_before_reset also r ⊙ hPrev).
            var dAW = [T](repeating: 0, count: S * B * GH), dAR = [T](repeating: 0, count: S * B * GH)
            var hPrev = [T](repeating: 0, count: S * B * H)
            let resetBeforeLinear = gru && !k.linearBeforeReset
            var rhPrev = [T](repeating: 0, count: resetBeforeLinear ? S * B * H : 0)
            // Per step: dh/dc flowing into the step's output state, its R-side gate gradients,
            // the state it read, and scratch for the hidden-state gradient it passes back.
            var dh = [T](repeating: 0, count: B * H), dc = [T](repeating: 0, count: B * H)
            var stepA = [T](repeating: 0, count: B * GH), stepPrev = [T](repeating: 0, count: B * H)
            var carry = [T](repeating: 0, count: B * H), product = [T](repeating: 0, count: B * H)
            let active = { (s: Int) in (0..<B).filter { s < lens[$0] } }

            for d in 0..<D where S > 0 && B > 0 {
                let reverse = k.directions[d]
                @inline(__always) func time(_ s: Int, _ bi: Int) -> Int { reverse ? lens[bi] - 1 - s : s }
                for i in 0..<dAW.count { dAW[i] = 0; dAR[i] = 0 }
                for i in 0..<(B * H) {
                    dh[i] = dyhs?[d * B * H + i] ?? 0
                    dc[i] = dycs?[d * B * H + i] ?? 0
                }
                let pOffset = d * 3 * H, rOffset = d * GH * H
                let rbh = bs.map { Array($0[(d * 2 * GH + GH + 2 * H)..<(d * 2 * GH + GH + 3 * H)]) }
                for s in stride(from: S - 1, through: 0, by: -1) {
                    let rows = active(s)
                    guard !rows.isEmpty else { continue }
                    for i in 0..<stepA.count { stepA[i] = 0 }
                    for bi in rows {
                        let t = time(s, bi), tp = s > 0 ? time(s - 1, bi) : -1
                        let state = ((t * D + d) * B + bi) * H, prevState = ((tp * D + d) * B + bi) * H
                        let g = ((t * D + d) * B + bi) * GH, a = bi * GH
                        for j in 0..<H {
                            if let dys { dh[bi * H + j] += dys[state + j] }
                            stepPrev[bi * H + j] = s > 0 ? ys[prevState + j] : (h0s?[(d * B + bi) * H + j] ?? 0)
                        }
                        if lstm {
                            for j in 0..<H {
                                let i = gs[g + j].doubleValue, o = gs[g + H + j].doubleValue
                                let f = gs[g + 2 * H + j].doubleValue, cc = gs[g + 3 * H + j].doubleValue
                                let c = cs[state + j].doubleValue
                                let cPrev = s > 0 ? cs[prevState + j].doubleValue : (c0s?[(d * B + bi) * H + j].doubleValue ?? 0)
                                let tc = Foundation.tanh(c), dhv = dh[bi * H + j].doubleValue
                                let dao = dhv * tc * o * (1 - o)
                                var dcv = dc[bi * H + j].doubleValue + dhv * o * (1 - tc * tc)
                                if let ps { dcv += dao * ps[pOffset + H + j].doubleValue }   // o sees the new cell
                                var di = dcv * cc, df = dcv * cPrev
                                if k.inputForget { di -= df; df = 0 }                      // f = 1 − i
                                let dai = di * i * (1 - i), daf = df * f * (1 - f), dag = dcv * i * (1 - cc * cc)
                                var dcPrev = dcv * f
                                if let ps { dcPrev += dai * ps[pOffset + j].doubleValue + daf * ps[pOffset + 2 * H + j].doubleValue }
                                dc[bi * H + j] = T(fromDouble: dcPrev)
                                stepA[a + j] = T(fromDouble: dai); stepA[a + H + j] = T(fromDouble: dao)
                                stepA[a + 2 * H + j] = T(fromDouble: daf); stepA[a + 3 * H + j] = T(fromDouble: dag)
                                dP[pOffset + j] += T(fromDouble: dai * cPrev)
                                dP[pOffset + H + j] += T(fromDouble: dao * c)
                                dP[pOffset + 2 * H + j] += T(fromDouble: daf * cPrev)
                                carry[bi * H + j] = 0
                            }
                        } else {
                            for j in 0..<H {
                                let z = gs[g + j].doubleValue, hc = gs[g + 2 * H + j].doubleValue
                                let hp = stepPrev[bi * H + j].doubleValue, dhv = dh[bi * H + j].doubleValue
                                stepA[a + j] = T(fromDouble: dhv * (hp - hc) * z * (1 - z))
                                stepA[a + 2 * H + j] = T(fromDouble: dhv * (1 - z) * (1 - hc * hc))
                                carry[bi * H + j] = T(fromDouble: dhv * z)
                            }
                        }
                    }
                    if gru {
                        // r's gradient needs a product with Rh: with linear_before_reset it is
                        // dah ⊙ (hPrev·Rhᵀ + Rbh), without it (dah·Rh) ⊙ hPrev.
                        stepPrev.withUnsafeBufferPointer { hp in stepA.withUnsafeBufferPointer { sa in rs.withUnsafeBufferPointer { pr in
                            product.withUnsafeMutableBufferPointer { po in
                                if k.linearBeforeReset {
                                    BLAS.gemm(transA: false, transB: true, m: B, n: H, k: H, alpha: 1, a: hp.baseAddress!, lda: H,
                                         b: pr.baseAddress! + rOffset + 2 * H * H, ldb: H, beta: 0, c: po.baseAddress!, ldc: H)
                                } else {
                                    BLAS.gemm(transA: false, transB: false, m: B, n: H, k: H, alpha: 1, a: sa.baseAddress! + 2 * H, lda: GH,
                                         b: pr.baseAddress! + rOffset + 2 * H * H, ldb: H, beta: 0, c: po.baseAddress!, ldc: H)
                                }
                            }
                        } } }
                        for bi in rows {
                            let t = time(s, bi), g = ((t * D + d) * B + bi) * GH, a = bi * GH
                            for j in 0..<H {
                                let rg = gs[g + H + j].doubleValue, hp = stepPrev[bi * H + j].doubleValue
                                let dah = stepA[a + 2 * H + j].doubleValue, q = product[bi * H + j].doubleValue
                                let dr: Double
                                if k.linearBeforeReset {
                                    dr = dah * (q + (rbh?[j].doubleValue ?? 0))
                                } else {
                                    dr = q * hp
                                    carry[bi * H + j] += T(fromDouble: q * rg)
                                    rhPrev[(t * B + bi) * H + j] = T(fromDouble: rg * hp)
                                }
                                stepA[a + H + j] = T(fromDouble: dr * rg * (1 - rg))
                            }
                        }
                    }
                    // Keep the step's gradients by time row; the R side of GRU's h̃ with
                    // linear_before_reset is dah ⊙ r.
                    for bi in rows {
                        let t = time(s, bi), row = (t * B + bi) * GH, a = bi * GH
                        for q in 0..<GH { dAW[row + q] = stepA[a + q]; dAR[row + q] = stepA[a + q] }
                        for j in 0..<H { hPrev[(t * B + bi) * H + j] = stepPrev[bi * H + j] }
                        if gru && k.linearBeforeReset {
                            let g = ((t * D + d) * B + bi) * GH
                            for j in 0..<H {
                                let v = stepA[a + 2 * H + j] * gs[g + H + j]
                                dAR[row + 2 * H + j] = v; stepA[a + 2 * H + j] = v
                            }
                        }
                    }
                    // dh for the previous step: carry + stepA·R (GRU without linear_before_reset:
                    // its h̃ path is already in carry).
                    let through = resetBeforeLinear ? 2 * H : GH
                    stepA.withUnsafeBufferPointer { sa in rs.withUnsafeBufferPointer { pr in product.withUnsafeMutableBufferPointer { po in
                        BLAS.gemm(transA: false, transB: false, m: B, n: H, k: through, alpha: 1, a: sa.baseAddress!, lda: GH,
                             b: pr.baseAddress! + rOffset, ldb: H, beta: 0, c: po.baseAddress!, ldc: H)
                    } } }
                    for bi in rows { for j in 0..<H { dh[bi * H + j] = carry[bi * H + j] + product[bi * H + j] } }
                }
                for i in 0..<(B * H) {
                    dH0[d * B * H + i] = dh[i]
                    if lstm { dC0[d * B * H + i] = dc[i] }
                }
                // Whole-sequence products: dX += dAW·W, dW = dAWᵀ·X, dR = dARᵀ·hPrev.
                dAW.withUnsafeBufferPointer { aw in dAR.withUnsafeBufferPointer { ar in
                    if wantsDX && I > 0 {
                        ws.withUnsafeBufferPointer { pw in dX.withUnsafeMutableBufferPointer { po in
                            BLAS.gemm(transA: false, transB: false, m: S * B, n: I, k: GH, alpha: 1, a: aw.baseAddress!, lda: GH,
                                 b: pw.baseAddress! + d * GH * I, ldb: I, beta: d == 0 ? 0 : 1, c: po.baseAddress!, ldc: I)
                        } }
                    }
                    if I > 0 {
                        xs.withUnsafeBufferPointer { px in dW.withUnsafeMutableBufferPointer { po in
                            BLAS.gemm(transA: true, transB: false, m: GH, n: I, k: S * B, alpha: 1, a: aw.baseAddress!, lda: GH,
                                 b: px.baseAddress!, ldb: I, beta: 0, c: po.baseAddress! + d * GH * I, ldc: I)
                        } }
                    }
                    let plain = resetBeforeLinear ? 2 * H : GH
                    hPrev.withUnsafeBufferPointer { hp in dR.withUnsafeMutableBufferPointer { po in
                        BLAS.gemm(transA: true, transB: false, m: plain, n: H, k: S * B, alpha: 1, a: ar.baseAddress!, lda: GH,
                             b: hp.baseAddress!, ldb: H, beta: 0, c: po.baseAddress! + rOffset, ldc: H)
                    } }
                    if resetBeforeLinear {
                        rhPrev.withUnsafeBufferPointer { rp in dR.withUnsafeMutableBufferPointer { po in
                            BLAS.gemm(transA: true, transB: false, m: H, n: H, k: S * B, alpha: 1, a: ar.baseAddress! + 2 * H, lda: GH,
                                 b: rp.baseAddress!, ldb: H, beta: 0, c: po.baseAddress! + rOffset + 2 * H * H, ldc: H)
                        } }
                    }
                } }
                // Biases: Wb gets the W-side gradients, Rb the R-side ones.
                var wSum = [Double](repeating: 0, count: GH), rSum = [Double](repeating: 0, count: GH)
                for row in 0..<(S * B) { for q in 0..<GH { wSum[q] += dAW[row * GH + q].doubleValue; rSum[q] += dAR[row * GH + q].doubleValue } }
                for q in 0..<GH { dB[d * 2 * GH + q] = T(fromDouble: wSum[q]); dB[d * 2 * GH + GH + q] = T(fromDouble: rSum[q]) }
            }

            let dXTensor = wantsDX ? Tensor(shape: layout0 ? [S, B, I] : [B, S, I], scalars: layout0 ? dX : transpose01(dX, S, B, I)) : nil
            func state(_ v: [T]) -> Tensor { Tensor(shape: stateShape, scalars: layout0 ? v : transpose01(v, D, B, H)) }
            var outputs: [Tensor?] = [dXTensor, Tensor(shape: [D, GH, I], scalars: dW), Tensor(shape: [D, GH, H], scalars: dR),
                                      Tensor(shape: [D, 2 * GH], scalars: dB), state(dH0)]
            if lstm { outputs += [state(dC0), Tensor(shape: [D, 3 * H], scalars: dP)] }
            return outputs
        }
    }
}

func registerRecurrentTrainingOps(_ registry: OpRegistry) {
    registry.register("LSTMTraining", domain: "com.microsoft", since: 1) { ctx in try RecurrentKernel(ctx, cell: .lstm, records: true) }
    registry.register("GRUTraining", domain: "com.microsoft", since: 1) { ctx in try RecurrentKernel(ctx, cell: .gru, records: true) }
    registry.register("LSTMGrad", domain: "com.microsoft", since: 1) { ctx in try RecurrentGradKernel(ctx, cell: .lstm) }
    registry.register("GRUGrad", domain: "com.microsoft", since: 1) { ctx in try RecurrentGradKernel(ctx, cell: .gru) }
}
