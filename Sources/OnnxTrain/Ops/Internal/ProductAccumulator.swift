import COpenBLAS

/// ProductAccumulator (onnx-train's internal domain, written only by the `ProductIntoAccumulator`
/// pass into a session's compiled graph, never into a saved model): a weight gradient's matrix
/// product and the com.microsoft InPlaceAccumulatorV2 that consumes it, as one node whose GEMM
/// writes straight into the accumulation buffer.
///
/// Inputs: accumulation_buffer, A, B, overwrite_flag? (InPlaceAccumulatorV2's inputs with the
/// product's operands in place of its value). Outputs: updated_flag (bool [1], true),
/// accumulation_buffer_out? (the buffer), as InPlaceAccumulatorV2's. Attributes: `product`, the
/// op it replaces (Gemm, MatMul or com.microsoft FusedMatMul), and that op's attributes.
///
/// With the overwrite flag true the product is written over the buffer (GEMM beta 0: the same
/// values the separate product held, which InPlaceAccumulatorV2 copied); with it false or absent
/// it is added to the buffer (beta 1: each element is buffer + product, rounded once, as
/// InPlaceAccumulatorV2's add; a product whose K runs over several of OpenBLAS's blocks adds
/// the partial sums in another order, so results then agree to float rounding). The fast path
/// takes float32/float64 2-D operands of the buffer's type and a product of the buffer's element
/// count (overwrite) or of a shape that broadcasts into the buffer's without repeating (add);
/// anything else computes the product as the replaced op does and accumulates it as
/// InPlaceAccumulatorV2 does, so every input gets the pair's result and errors.
struct ProductAccumulatorKernel: Kernel {
    enum Product: String { case gemm = "Gemm", matMul = "MatMul", fusedMatMul = "FusedMatMul" }
    let product: Product
    let transA: Bool, transB: Bool
    let alpha: Double
    /// The replaced product op, for inputs the fast path does not take.
    let separate: Kernel

    init(_ ctx: NodeContext) throws {
        guard let product = Product(rawValue: try ctx.string("product", default: "")) else {
            throw KernelError("ProductAccumulator's product must be Gemm, MatMul or FusedMatMul, got '\(try ctx.string("product", default: ""))'")
        }
        self.product = product
        switch product {
        case .gemm:
            guard try ctx.float("beta", default: 1) == 0 else { throw KernelError("ProductAccumulator takes a Gemm without C (beta 0)") }
            separate = try GemmKernel(ctx)
        case .matMul:
            separate = try matMulKernel(ctx)
        case .fusedMatMul:
            guard try ctx.int("transBatchA", default: 0) == 0, try ctx.int("transBatchB", default: 0) == 0 else {
                throw KernelError("ProductAccumulator takes a FusedMatMul without transBatchA/transBatchB")
            }
            separate = try fusedMatMulKernel(ctx)
        }
        let isMatMul = product == .matMul
        transA = try !isMatMul && ctx.int("transA", default: 0) != 0
        transB = try !isMatMul && ctx.int("transB", default: 0) != 0
        alpha = try isMatMul ? 1 : Double(ctx.float("alpha", default: 1))
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let buffer = try inputs.tensor(0), a = try inputs.tensor(1), b = try inputs.tensor(2)
        let flag = try inputs.optionalTensor(3)
        let overwrite = try boolFlag(flag, "overwrite_flag") ?? false
        if let direct = direct(buffer, a, b, overwrite: overwrite) {
            try inPlace(buffer, "accumulation_buffer", direct)
            return [.tensor(Tensor(shape: [1], scalars: [true])), .tensor(buffer)]
        }
        guard case .tensor(let value)?? = try separate.run([.tensor(a), .tensor(b)], context).first else {
            throw KernelError("the \(product.rawValue) product gave no value")
        }
        return try InPlaceAccumulatorV2Kernel().run([.tensor(buffer), .tensor(value), flag.map(Value.tensor)], context)
    }

    /// The GEMM into the buffer, when the operands and the buffer allow it.
    private func direct(_ buffer: Tensor, _ a: Tensor, _ b: Tensor, overwrite: Bool) -> ProductInto? {
        guard buffer.dtype == .float32 || buffer.dtype == .float64, a.dtype == buffer.dtype, b.dtype == buffer.dtype,
              a.rank == 2, b.rank == 2,
              // The buffer must not be an operand: the GEMM would read what it writes.
              buffer.storage !== a.storage, buffer.storage !== b.storage else { return nil }
        let m = transA ? a.shape[1] : a.shape[0], k = transA ? a.shape[0] : a.shape[1]
        let kb = transB ? b.shape[1] : b.shape[0], n = transB ? b.shape[0] : b.shape[1]
        guard k == kb, m * n == buffer.count else { return nil }
        // Adding, the product [m, n] must broadcast into the buffer's shape; with the same element
        // count it then repeats nothing, and element i of both is the same position.
        if !overwrite {
            guard (try? Broadcast.shape(buffer.shape, [m, n])) == buffer.shape else { return nil }
        }
        return ProductInto(a: a, b: b, m: m, n: n, k: k, transA: transA, transB: transB, alpha: alpha, beta: overwrite ? 0 : 1)
    }
}

/// C = alpha·op(A)·op(B) + beta·C into the buffer (row-major [m, n]).
private struct ProductInto: InPlaceBody {
    let a: Tensor, b: Tensor
    let m: Int, n: Int, k: Int
    let transA: Bool, transB: Bool
    let alpha: Double, beta: Double

    func callAsFunction<T: FloatElement>(_ p: UnsafeMutableBufferPointer<T>) throws {
        guard let c = p.baseAddress else { return }
        try a.withUnsafeBufferPointer(as: T.self) { pa in
            try b.withUnsafeBufferPointer(as: T.self) { pb in
                guard let A = pa.baseAddress, let B = pb.baseAddress else {
                    // k == 0 (an empty operand): the product is zeros.
                    if beta == 0 { c.update(repeating: T.zero, count: m * n) }
                    return
                }
                let (lda, ldb) = (a.shape[1], b.shape[1])
                let (alphaT, betaT) = (T(fromDouble: alpha), T(fromDouble: beta))
                let block = { (i0: Int, i1: Int, j0: Int, j1: Int) in
                    BLAS.gemm(transA: transA, transB: transB, m: i1 - i0, n: j1 - j0, k: k, alpha: alphaT,
                              a: transA ? A + i0 : A + i0 * lda, lda: lda, b: transB ? B + j0 * ldb : B + j0, ldb: ldb,
                              beta: betaT, c: c + i0 * n + j0, ldc: n)
                }
                guard m > 1, n > 1, m * n * k >= BLAS.singleThreadWork else { return block(0, m, 0, n) }
                // Rows split over the pool as an elementwise kernel over the buffer splits its
                // elements (Parallel.forRange: the optimizer's update, AdamW's halves), so each
                // thread writes the part of the gradient it then updates itself and the gradient
                // never crosses to the other core (a column split wrote half of every row there:
                // 1.3 MB of the MLP's 1.8 MB crossing a step). Each part runs as blocks within
                // OpenBLAS's small-matrix limit (`SmallProducts`) where that pays.
                let tile = T.self == Float.self ? SmallProducts.tile(n: n, k: k) : nil
                Parallel.forRange(m) { r in
                    guard let tile else { return block(r.lowerBound, r.upperBound, 0, n) }
                    for i0 in stride(from: r.lowerBound, to: r.upperBound, by: tile.rows) {
                        for j0 in stride(from: 0, to: n, by: tile.columns) {
                            block(i0, min(i0 + tile.rows, r.upperBound), j0, min(j0 + tile.columns, n))
                        }
                    }
                }
            }
        }
    }
}

/// OpenBLAS builds for AVX-512 cores (SkylakeX, Cooperlake, Sapphire Rapids; also chosen on AMD
/// Zen 4) run float32 products of at most 10^6 multiply-adds (M·N·K) through small-matrix kernels
/// that read the operands unpacked and, with beta 0, write C without first zeroing it
/// (`sgemm_beta`, a separate pass over C: 5.8% of the MLP step's profile). A weight gradient's
/// product has a small K (the batch) and a large C: as row blocks within that limit it ran 8-15%
/// faster on this machine's Zen 4 (one thread's share of the MLP's 512x784 dW, K 64: 267 -> 232 µs
/// with 32-row blocks; 512x256: 175 -> 148 µs), bit-identical to one call. Blocks of fewer rows
/// were slower (K 128, 16 rows: 507 -> 537 µs), and past one of OpenBLAS's K blocks the packed
/// kernel sums in another order, so blocks are used for K up to 256 with at least 32 rows, and
/// only on those cores (elsewhere each block would repack an operand).
enum SmallProducts {
    /// OpenBLAS's limit: M·N·K at most 100^3 (sgemm_small_kernel_permit for SkylakeX; 39 rows of
    /// 392x64 ran small, 40 did not).
    static let limit = 1_000_000
    static let available: Bool = BLAS.openBLASRunsAVX512

    /// Rows per block for a product `width` columns wide with inner dim `k` (a multiple of 8, at
    /// least 32), or 0 when blocks that small are not worth it or the kernels are missing.
    static func rows(width: Int, k: Int) -> Int {
        guard available, width > 0, k > 0, k <= 256 else { return 0 }
        let rows = limit / (width * k) / 8 * 8
        return rows >= 32 ? rows : 0
    }

    /// Blocks for a product `n` columns wide with inner dim `k`: the fewest column pieces (each a
    /// multiple of 16 columns) whose blocks of `rows(width:k:)` rows stay within the limit, or nil
    /// when there are none (MLP's 784-wide dW, K 64: two pieces of 400 and 384 columns, 32 rows).
    static func tile(n: Int, k: Int) -> (rows: Int, columns: Int)? {
        var pieces = 1
        while true {
            let columns = ((n + pieces - 1) / pieces + 15) / 16 * 16
            let rows = rows(width: min(columns, n), k: k)
            if rows > 0 { return (rows, columns) }
            if columns <= 16 { return nil }
            pieces += 1
        }
    }
}

func registerProductAccumulatorOps(_ registry: OpRegistry) {
    registry.register("ProductAccumulator", domain: internalDomain, since: 1, mutates: [0]) { ctx in try ProductAccumulatorKernel(ctx) }
}
