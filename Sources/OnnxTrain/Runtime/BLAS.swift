import COpenBLAS

/// The one door to OpenBLAS: row-major single and double precision GEMM.
public enum BLAS {
    /// C[m×n] = alpha·op(A)·op(B) + beta·C, row-major; lda/ldb/ldc are row strides.
    @inline(__always)
    public static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                             a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        guard m > 0 && n > 0 else { return }
        if k == 0 {
            // BLAS leaves C untouched when k == 0 only if beta == 1; make beta's meaning explicit.
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        withThreads(forWork: m * n * k) {
            cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        }
    }

    @inline(__always)
    public static func dgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
                             a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
                             beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        guard m > 0 && n > 0 else { return }
        if k == 0 {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        withThreads(forWork: m * n * k) {
            cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        }
    }

    /// How many threads OpenBLAS uses for large products; kernels that split work themselves take
    /// this into account.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
        set {
            configuredThreads = max(newValue, 1)
            openblas_set_num_threads(Int32(configuredThreads))
        }
    }

    /// Products with fewer multiply-adds (m·n·k) than this run on the calling thread alone.
    /// OpenBLAS splits anything above 2^18 across its threads; a conv's per-image GEMM (16×1024×75)
    /// or an attention head's then spends more waking and waiting for the second thread than it
    /// saves: one CNN training step took about twice as long with 2 threads as with 1 on a loaded
    /// 2-core machine. 2^23 multiply-adds is ~0.3 ms on one core, long enough to pay for a handoff.
    public static let singleThreadWork = 1 << 23

    /// A Parallel.forRange job is starting / has ended: products inside its chunks run on their
    /// own thread, so the two pools never compete for the cores.
    static func enterParallelRegion() {
        if configuredThreads > 1 { openblas_set_num_threads(1) }
    }

    static func leaveParallelRegion() {
        if configuredThreads > 1 { openblas_set_num_threads(Int32(configuredThreads)) }
    }

    /// The thread count to restore after a small product (what the process asked OpenBLAS for).
    nonisolated(unsafe) private static var configuredThreads = Int(openblas_get_num_threads())

    @inline(__always)
    static func withThreads(forWork work: Int, _ body: () -> Void) {
        let threads = configuredThreads
        if Parallel.isInsideRegion {
            body()  // a Parallel.forRange chunk: OpenBLAS is already single-threaded
        } else if work < singleThreadWork && threads > 1 {
            openblas_set_num_threads(1)
            body()
            openblas_set_num_threads(Int32(threads))
        } else {
            body()
        }
    }
}
