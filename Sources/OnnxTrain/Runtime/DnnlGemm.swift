import CDNNL

/// oneDNN's sgemm for float32 products whose operands are not constants: training's forward and
/// backward products (fully connected layers, attention, convolutions' im2col products), which
/// `BLAS.gemm` splits into one block per pool thread. Where oneDNN runs its AVX-512 kernels,
/// `dnnl_sgemm` did ViT's and BERT's training products in 0.73-0.95x OpenBLAS's time
/// (Benchmarks/dnnl_sgemm.c: 2 threads, blocks as `BLAS.split` makes them, under `chrt`), a
/// convolution's forward 64×3136×576 in 0.67x, 16×4096×144 in 0.60x (one thread).
///
/// Left on OpenBLAS where oneDNN lost: blocks under 128 rows or with K under 128
/// (`minimumRowsAndK`: see there), small blocks (a call costs oneDNN about a microsecond more:
/// 64×64×64 ran 1.17x OpenBLAS's time, 128×128×128 0.85x), thin ones (64×10×512: 1.43x), and
/// products with B transposed (C = op(A)·Bᵀ) whose K or N is over 1024: a convolution's weight
/// gradient dY·colsᵀ 64×576×3136 ran 1.33-1.43x, 256×2304×196 1.06-1.10x.
///
/// Switched off by `ONNX_TRAIN_DISABLE_PASSES=dnnl-gemm` (or `all`); off where oneDNN has no
/// AVX-512 kernels (its plain sgemm is no faster than OpenBLAS's). A product oneDNN refuses runs
/// on OpenBLAS. The result equals OpenBLAS's to float rounding (other blocking, other summation
/// order), not bit for bit.
enum DnnlGemm {
    /// Blocks with fewer multiply-adds (m·n·k) stay on OpenBLAS.
    static let minimumWork = 1 << 20
    /// Blocks with fewer columns of C stay on OpenBLAS.
    static let minimumColumns = 16
    /// Blocks with fewer rows of C, or a shorter K, stay on OpenBLAS: a batch of 64 as the rows
    /// (a fully connected layer's forward and input gradient) or as K (its weight gradient) ran
    /// the MLP benchmark's training step 13% slower on oneDNN (1.42-1.94 -> 1.64-2.18 ms median,
    /// 3 interleaved rounds), though each product alone, repeated, ran 0.73-0.99x OpenBLAS's
    /// time (in the step, operands arrive just written, some by the other core; OpenBLAS runs
    /// such shapes in its small-matrix kernels, which pack nothing; why oneDNN loses there is not
    /// known).
    static let minimumRowsAndK = 128

    static let available: Bool = {
        let off = PassPipeline.disabledNames
        return !off.contains("dnnl-gemm") && !off.contains("all") && PackedGemm.avx512
    }()

    /// With B transposed, the largest K and N where oneDNN won.
    static let transposedMaximumK = 1024
    static let transposedMaximumN = 1024

    /// The limits above were measured against OpenBLAS's AVX-512 kernel sets. OpenBLAS picks its set
    /// by CPU model when it loads, or as `OPENBLAS_CORETYPE` says: with `OPENBLAS_CORETYPE=Haswell`
    /// (set machine-wide on this project's Zen 5 benchmark machines) it runs AVX2 kernels on an
    /// AVX-512 CPU (`BLAS.openBLASRunsAVX512` false), and there oneDNN's sgemm did one thread's
    /// products in 0.25-0.72x OpenBLAS's time over M 8-256, N 16-3136, K 16-576 (NN, NT, TN, under
    /// `chrt`), losing only below 2^15 multiply-adds and with B transposed under 32 rows (0.9-1.8x
    /// at 16 rows). ResNet-18 at batch 1 ran 13% slower, MobileNetV3 at batch 32 20%, on those kernels.
    /// Beside OpenBLAS's AVX2 kernels: blocks with fewer multiply-adds stay on OpenBLAS.
    static let minimumWorkBesideAVX2 = 1 << 15
    /// Beside OpenBLAS's AVX2 kernels: B-transposed blocks with fewer rows stay on OpenBLAS.
    static let minimumTransposedRowsBesideAVX2 = 32

    /// Whether a block C[m×n] = op(A)·op(B) with this op(B) runs on oneDNN.
    @inline(__always)
    static func takes(transB: Bool, m: Int, n: Int, k: Int) -> Bool {
        guard available && n >= minimumColumns else { return false }
        guard BLAS.openBLASRunsAVX512 else {
            return m * n * k >= minimumWorkBesideAVX2 && (!transB || m >= minimumTransposedRowsBesideAVX2)
        }
        guard m >= minimumRowsAndK && k >= minimumRowsAndK && m * n * k >= minimumWork else { return false }
        return !transB || (k <= transposedMaximumK && n <= transposedMaximumN)
    }

    /// C[m×n] = alpha·op(A)·op(B) + beta·C, row-major, on the calling thread alone; false when
    /// oneDNN refused (nothing written: the caller runs OpenBLAS).
    @inline(__always)
    static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
                      b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) -> Bool {
        // oneDNN's OpenMP team is the calling thread's alone (a pool thread runs one block), and the
        // thread's signals are held meanwhile (`SignalHold`: oneDNN 2's gemm kernels move rsp).
        let ta = CChar(UInt8(ascii: transA ? "T" : "N")), tb = CChar(UInt8(ascii: transB ? "T" : "N"))
        return SignalHold.around({ ot_sgemm(ta, tb, Int64(m), Int64(n), Int64(k), alpha, a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc)) }) == 0
    }
}
