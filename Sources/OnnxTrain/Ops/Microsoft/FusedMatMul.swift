/// FusedMatMul (com.microsoft v1; TransposeMatMul is its older name): Y = alpha·op(A)·op(B) with
/// numpy-matmul broadcasting over batch dims, through BLAS GEMM per batch.
///   transA/transB swap the last two dims of A/B (no effect on 1-D inputs).
///   transBatchA/transBatchB read a stored [d0, d1…d_{r−2}, d_{r−1}] as permute(1…r−2, 0, r−1),
///   i.e. the leading dim moves to the matrix rows; they need both inputs of one rank >= 3.
struct FusedMatMulKernel: Kernel {
    let alpha: Double
    let transA: Bool, transB: Bool, transBatchA: Bool, transBatchB: Bool

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        var a = try inputs.tensor(0), b = try inputs.tensor(1)
        _ = try commonElementType([a, b], names: ["A", "B"], floatOnly: true)
        guard a.rank >= 1, b.rank >= 1 else { throw KernelError("A \(a.shape) and B \(b.shape) must have rank >= 1") }
        if transBatchA || transBatchB {
            guard a.rank == b.rank, a.rank >= 3 else {
                throw KernelError("transBatchA/transBatchB need A \(a.shape) and B \(b.shape) of one rank >= 3")
            }
        }
        // Move the batch-transposed leading dim next to the matrix dims.
        if transBatchA { a = try transpose(a, perm: Array(1..<(a.rank - 1)) + [0, a.rank - 1]) }
        if transBatchB { b = try transpose(b, perm: Array(1..<(b.rank - 1)) + [0, b.rank - 1]) }
        let (ta, tb) = (transA && a.rank >= 2, transB && b.rank >= 2)
        return [.tensor(try computingHalfInFloat([a, b]) { w in
            try dispatch(w[0].dtype, Compute(a: w[0], b: w[1], alpha: alpha, transA: ta, transB: tb))
        })]
    }

    struct Compute: ElementOperation {
        let a: Tensor, b: Tensor
        let alpha: Double
        let transA: Bool, transB: Bool

        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            // Matrices: A as [batchA…, m, k] (1-D A is [1, k]), B as [batchB…, k, n] (1-D B is [k, 1]).
            let aShape = a.rank == 1 ? [1, a.shape[0]] : a.shape
            let bShape = b.rank == 1 ? [b.shape[0], 1] : b.shape
            let (ar, br) = (aShape.count, bShape.count)
            let m = transA ? aShape[ar - 1] : aShape[ar - 2], k = transA ? aShape[ar - 2] : aShape[ar - 1]
            let kb = transB ? bShape[br - 1] : bShape[br - 2], n = transB ? bShape[br - 2] : bShape[br - 1]
            guard k == kb else { throw KernelError("A \(a.shape) and B \(b.shape) have inner dims \(k) and \(kb) (after transposes)") }
            let batchA = Array(aShape[..<(ar - 2)]), batchB = Array(bShape[..<(br - 2)])
            let batch = try Broadcast.shape(batchA, batchB)
            var outShape = batch
            if a.rank != 1 { outShape.append(m) }
            if b.rank != 1 { outShape.append(n) }
            var out = Tensor(uninitialized: T.dtype, shape: outShape)
            let count = Tensor.elementCount(batch)
            let (lda, ldb) = (aShape[ar - 1], bShape[br - 1])
            try a.withUnsafeBufferPointer(as: T.self) { pa in
                try b.withUnsafeBufferPointer(as: T.self) { pb in
                    out.uncheckedMutableBufferPointer(as: T.self) { po in
                        guard let ya = pa.baseAddress, let yb = pb.baseAddress, let yo = po.baseAddress else { return }
                        if batchB.allSatisfy({ $0 == 1 }) && !transA && batchA == batch {
                            // N-D × 2-D: one GEMM over all rows of A.
                            BLAS.gemm(transA: false, transB: transB, m: count * m, n: n, k: k, alpha: T(alpha),
                                 a: ya, lda: lda, b: yb, ldb: ldb, beta: T(0), c: yo, ldc: n)
                            return
                        }
                        let sa = Broadcast.strides(batchA, to: batch), sb = Broadcast.strides(batchB, to: batch)
                        let matA = m * k, matB = k * n
                        var walk = Odometer(shape: batch, strides: [sa.map { $0 * matA }, sb.map { $0 * matB }])
                        let offsets = (0..<count).map { _ in
                            defer { walk.advance() }
                            return (walk.offsets[0], walk.offsets[1])
                        }
                        // Batch entries split across threads; each GEMM then runs single-threaded.
                        let alphaT = T(alpha)
                        Parallel.forRange(count, minimumChunk: max(1, (1 << 16) / max(1, m * n * k))) { range in
                            for i in range {
                                let (oa, ob) = offsets[i]
                                BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alphaT,
                                     a: ya + oa, lda: lda, b: yb + ob, ldb: ldb, beta: T(0), c: yo + i * m * n, ldc: n)
                            }
                        }
                    }
                }
            }
            return out
        }
    }
}

/// DivGrad(dY, A, B) → dA?, dB? (com.microsoft v1), for Y = A / B with broadcasting:
///   dA = Σ_broadcast(dY / B),  dB = Σ_broadcast(−dY·A / B²).
struct DivGradKernel: Kernel {
    let wantA: Bool, wantB: Bool
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dyT = try inputs.tensor(0), aT = try inputs.tensor(1), bT = try inputs.tensor(2)
        let dtype = try commonElementType([dyT, aT, bT], names: ["dY", "A", "B"], floatOnly: true)
        let shape = try Broadcast.shape(aT.shape, bT.shape)
        guard dyT.shape == shape else { throw KernelError("dY \(dyT.shape) must have the broadcast shape \(shape)") }
        let dy = try floatValues(dyT, "dY")
        let a = try broadcastValues(aT, to: shape), b = try broadcastValues(bT, to: shape)
        var results: [Value?] = [nil, nil]
        if wantA {
            let full = (0..<dy.count).map { dy[$0] / b[$0] }
            results[0] = .tensor(floatTensor(dtype, shape: aT.shape, reduceSumToShape(full, fullShape: shape, to: aT.shape)))
        }
        if wantB {
            let full = (0..<dy.count).map { -dy[$0] * a[$0] / (b[$0] * b[$0]) }
            results[1] = .tensor(floatTensor(dtype, shape: bT.shape, reduceSumToShape(full, fullShape: shape, to: bT.shape)))
        }
        return results
    }
}

/// A float tensor's values broadcast to `shape`, as Double.
func broadcastValues(_ t: Tensor, to shape: [Int]) throws -> [Double] {
    let v = try floatValues(t, "input")
    if t.shape == shape { return v }
    return gatherStrided(v, shape: shape, strides: Broadcast.strides(t.shape, to: shape))
}

/// FusedMatMul and TransposeMatMul (com.microsoft): alpha and the four transposes read once.
func fusedMatMulKernel(_ ctx: NodeContext) throws -> Kernel {
    FusedMatMulKernel(alpha: Double(try ctx.float("alpha", default: 1)),
                      transA: try ctx.int("transA", default: 0) != 0, transB: try ctx.int("transB", default: 0) != 0,
                      transBatchA: try ctx.int("transBatchA", default: 0) != 0,
                      transBatchB: try ctx.int("transBatchB", default: 0) != 0)
}

/// DivGrad (com.microsoft): computes only the gradients the node has outputs for.
func divGradKernel(_ ctx: NodeContext) throws -> Kernel {
    DivGradKernel(wantA: ctx.hasOutput(0), wantB: ctx.hasOutput(1))
}

func registerFusedMatMulOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    registry.register("FusedMatMul", domain: ms, since: 1, fusedMatMulKernel)
    registry.register("TransposeMatMul", domain: ms, since: 1, fusedMatMulKernel)
    registry.register("DivGrad", domain: ms, since: 1, divGradKernel)
}
