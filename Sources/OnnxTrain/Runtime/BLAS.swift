#if canImport(Glibc)
import Glibc
#endif
import COpenBLAS

/// The one door to OpenBLAS: row-major single and double precision GEMM (float32 blocks that
/// oneDNN's AVX-512 sgemm does faster go to it: `DnnlGemm`).
///
/// OpenBLAS runs single-threaded; a large product is split into blocks of rows or columns of C,
/// one per `Parallel` pool thread. So there is one thread pool in the process: OpenBLAS's own
/// threads, which spin for a while after each product, never compete with the pool for the
/// cores (on a loaded machine that contention slows every step; docs/PERFORMANCE.md), and the
/// pool's worker, warm from the kernels around it, takes its half of every large product.
public enum BLAS {
    /// C[m×n] = alpha·op(A)·op(B) + beta·C, row-major; lda/ldb/ldc are row strides.
    /// Float runs cblas_sgemm, Double cblas_dgemm (the type test folds away when specialised).
    ///
    /// With `rowBias` (n values), C is not read: every row of C is set to it and the product added
    /// (beta is then taken as 1), each thread writing its own block of C just before its product
    /// adds to it, so the bias costs no pass of its own and C is warm in cache when the product
    /// reads it. Each element is bias + product rounded once, as a separate Add computes it (a K
    /// that runs over several of OpenBLAS's blocks adds the partial sums onto the bias instead of
    /// onto zero: then equal to float rounding).
    ///
    /// With `innerSplit` (a fully connected layer's input gradient dY·W, A and B = W [k, n] plain),
    /// a product with B at least twice C's height in rows (2m <= k) and C at most `innerSplitLimit`
    /// elements splits K over the threads instead of C's columns (`gemmSplittingK`): each thread
    /// reads the rows of W that it updated itself in the optimizer step (which splits every weight
    /// by rows), where a column split read half of W from the other core's cache, and only the
    /// small partial C crosses. Results equal to float rounding (each element the sum of two sums).
    ///
    /// With `epilogue`, each block of C (rows i0..<i1, columns j0..<j1) is handed to it once its
    /// product is complete, on the thread that computed it, while the block is still in that
    /// core's cache (MatMulBias's fused activation); every element of C is in exactly one block.
    @inline(__always)
    public static func gemm<T: FloatElement>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: T,
                                             a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                                             beta: T, c: UnsafeMutablePointer<T>, ldc: Int, rowBias: UnsafePointer<T>? = nil,
                                             innerSplit: Bool = false,
                                             epilogue: ((_ i0: Int, _ i1: Int, _ j0: Int, _ j1: Int) -> Void)? = nil) {
        guard m > 0 && n > 0 else { return }
        var beta = beta
        if let rowBias {
            beta = 1
            // The threaded path below writes the bias block by block; the others write it here.
            if k == 0 || m == 1 || n == 1 || !fitsInt32(m, n, k, lda, ldb, ldc) || !(T.self == Float.self || T.self == Double.self) {
                for i in 0..<m { (c + i * ldc).update(from: rowBias, count: n) }
            }
        }
        if k == 0 {
            // BLAS leaves C untouched when k == 0 only if beta == 1; make beta's meaning explicit.
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            epilogue?(0, m, 0, n)
            return
        }
        guard fitsInt32(m, n, k, lda, ldb, ldc), T.self == Float.self || T.self == Double.self else {
            referenceGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            epilogue?(0, m, 0, n)
            return
        }
        if m == 1 {
            // One row of C: a matrix-vector product (a fully connected layer at batch 1). GEMM would
            // pack all of op(B) for a single row; gemv streams it once.
            // Cᵀ [n] = alpha·op(B)ᵀ [n×k] · op(A)ᵀ [k] + beta·Cᵀ; op(A)'s row is A at stride lda if transposed.
            gemv(trans: !transB, rows: transB ? n : k, columns: transB ? k : n, alpha: alpha, a: b, lda: ldb,
                 x: a, incx: transA ? lda : 1, beta: beta, y: c, incy: 1)
            epilogue?(0, m, 0, n)
            return
        }
        if n == 1 {
            // One column of C: C [m] = alpha·op(A) [m×k] · op(B) [k] + beta·C, C at stride ldc.
            gemv(trans: transA, rows: transA ? k : m, columns: transA ? m : k, alpha: alpha, a: a, lda: lda,
                 x: b, incx: transB ? 1 : ldb, beta: beta, y: c, incy: ldc)
            epilogue?(0, m, 0, n)
            return
        }
        if innerSplit, rowBias == nil, !transA, !transB, 2 * m <= k, m * n <= innerSplitLimit, m * n * k >= singleThreadWork,
           !Parallel.isInsideRegion, Parallel.threadCount > 1 {
            gemmSplittingK(m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            epilogue?(0, m, 0, n)
            return
        }
        let ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans
        split(m: m, n: n, work: m * n * k) { i0, i1, j0, j1 in
            if let rowBias { for i in i0..<i1 { (c + i * ldc + j0).update(from: rowBias + j0, count: j1 - j0) } }
            let (m, n, k) = (Int32(i1 - i0), Int32(j1 - j0), Int32(k))
            let (pa, pb, pc) = (transA ? a + i0 : a + i0 * lda, transB ? b + j0 * ldb : b + j0, c + i0 * ldc + j0)
            if T.self == Float.self {
                if DnnlGemm.takes(transB: transB, m: Int(m), n: Int(n), k: Int(k)),
                   DnnlGemm.sgemm(transA: transA, transB: transB, m: Int(m), n: Int(n), k: Int(k), alpha: Float(alpha), a: rebound(pa),
                                  lda: lda, b: rebound(pb), ldb: ldb, beta: Float(beta), c: rebound(pc), ldc: ldc) {
                    epilogue?(i0, i1, j0, j1)
                    return
                }
                cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, Float(alpha), rebound(pa), Int32(lda), rebound(pb), Int32(ldb),
                            Float(beta), UnsafeMutableRawPointer(pc).assumingMemoryBound(to: Float.self), Int32(ldc))
            } else {
                cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, Double(alpha), rebound(pa), Int32(lda), rebound(pb), Int32(ldb),
                            Double(beta), UnsafeMutableRawPointer(pc).assumingMemoryBound(to: Double.self), Int32(ldc))
            }
            epilogue?(i0, i1, j0, j1)
        }
    }

    /// The largest C (elements) `innerSplit` products split by K: each thread past the first
    /// sums into a scratch C of its own.
    static let innerSplitLimit = 1 << 18

    /// C = alpha·A·B + beta·C with K split over the pool threads: thread i multiplies A's
    /// columns and B's rows of its part of K (chunk i of K, as an elementwise kernel splits B's
    /// elements), the first into C and the others into scratch, and then every thread adds the
    /// scratch into its own rows of C (chunk i of the rows, as the elementwise kernel after the
    /// product splits C). Each element is the sum of the parts' sums.
    static func gemmSplittingK<T: FloatElement>(m: Int, n: Int, k: Int, alpha: T, a: UnsafePointer<T>, lda: Int,
                                                b: UnsafePointer<T>, ldb: Int, beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
        let parts = min(Parallel.threadCount, k)
        let scratch = UnsafeMutablePointer<T>.allocate(capacity: (parts - 1) * m * n)
        defer { scratch.deallocate() }
        Parallel.forRange(parts) { r in
            for part in r {
                let ks = Parallel.chunk(part, of: parts, count: k)
                let (pc, ld) = part == 0 ? (c, ldc) : (scratch + (part - 1) * m * n, n)
                gemm(transA: false, transB: false, m: m, n: n, k: ks.count, alpha: alpha, a: a + ks.lowerBound,
                     lda: lda, b: b + ks.lowerBound * ldb, ldb: ldb, beta: part == 0 ? beta : T.zero, c: pc, ldc: ld)
            }
        }
        Parallel.forRange(m) { rows in
            for i in rows {
                let row = c + i * ldc
                for part in 1..<parts {
                    let add = scratch + (part - 1) * m * n + i * n
                    for j in 0..<n { row[j] += add[j] }
                }
            }
        }
    }

    /// y = alpha·op(A)·x + beta·y for A [rows×columns] row-major (row stride lda); op(A) is Aᵀ
    /// when `trans`. The output is split over the pool threads: A's rows (no transpose) or
    /// columns (transpose), so each thread streams its own part of A, the whole cost of a
    /// product with one vector (memory-bound; threaded from 2^17 multiply-adds, 512 KB of float
    /// A, ~50 µs of memory traffic, where a handoff costs a few µs).
    @inline(__always)
    static func gemv<T: FloatElement>(trans: Bool, rows: Int, columns: Int, alpha: T, a: UnsafePointer<T>, lda: Int,
                                      x: UnsafePointer<T>, incx: Int, beta: T, y: UnsafeMutablePointer<T>, incy: Int) {
        _ = singleThreaded
        let outputs = trans ? columns : rows
        let body = { (o0: Int, o1: Int) in
            // Part o0..<o1 of y: rows o0..<o1 of A, or its columns o0..<o1.
            let (r, c) = trans ? (rows, o1 - o0) : (o1 - o0, columns)
            let pa = trans ? a + o0 : a + o0 * lda, py = y + o0 * incy
            // beta 0 means y is not read (it may hold NaNs): not every OpenBLAS scales by 0 to 0.
            if beta == 0 { for i in 0..<(o1 - o0) { py[i * incy] = T.zero } }
            if T.self == Float.self {
                cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(r), Int32(c), Float(alpha), rebound(pa), Int32(lda),
                            rebound(x), Int32(incx), Float(beta), UnsafeMutableRawPointer(py).assumingMemoryBound(to: Float.self), Int32(incy))
            } else {
                cblas_dgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(r), Int32(c), Double(alpha), rebound(pa), Int32(lda),
                            rebound(x), Int32(incx), Double(beta), UnsafeMutableRawPointer(py).assumingMemoryBound(to: Double.self), Int32(incy))
            }
        }
        if rows * columns < singleThreadVectorWork || Parallel.isInsideRegion || outputs < 32 {
            body(0, outputs)
        } else {
            // Parts of 16 outputs (a cache line of float y; for a transpose, of each row of A).
            Parallel.forRange((outputs + 15) / 16) { r in body(r.lowerBound * 16, min(r.upperBound * 16, outputs)) }
        }
    }

    /// Matrix-vector products with fewer multiply-adds than this run on the calling thread alone.
    static let singleThreadVectorWork = 1 << 17

    /// `p` as a pointer to `U`, the same type as T (checked by the caller: the generic kernels
    /// that call a float32-only routine).
    @inline(__always)
    static func rebound<T, U>(_ p: UnsafePointer<T>) -> UnsafePointer<U> {
        UnsafeRawPointer(p).assumingMemoryBound(to: U.self)
    }

    /// `p` as a mutable pointer to `U`, the same type as T (checked by the caller).
    @inline(__always)
    static func rebound<T, U>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<U> {
        UnsafeMutableRawPointer(p).assumingMemoryBound(to: U.self)
    }

    /// Whether every size and stride fits the 32-bit integers of the CBLAS interface.
    @inline(__always)
    static func fitsInt32(_ values: Int...) -> Bool {
        values.allSatisfy { $0 <= Int(Int32.max) }
    }

    /// C = alpha·op(A)·op(B) + beta·C as plain loops, for products whose sizes or strides do not
    /// fit CBLAS's 32-bit integers (a [1, 2^31+1] operand): slow, but neither wrong nor a trap.
    static func referenceGemm<T: BinaryFloatingPoint>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: T,
                                                      a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                                                      beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
        for i in 0..<m {
            for j in 0..<n {
                var sum: T = 0
                for p in 0..<k {
                    sum += (transA ? a[p * lda + i] : a[i * lda + p]) * (transB ? b[j * ldb + p] : b[p * ldb + j])
                }
                c[i * ldc + j] = alpha * sum + (beta == 0 ? 0 : beta * c[i * ldc + j])
            }
        }
    }

    /// Threads used for large products: the `Parallel` pool's size.
    public static var threadCount: Int {
        get { Parallel.threadCount }
        set { Parallel.threadCount = newValue }
    }

    /// Products with fewer multiply-adds (m·n·k) than this run on the calling thread alone: below
    /// ~2^21 multiply-adds (~25 µs on one core) the handoff costs more than half the product saves.
    public static let singleThreadWork = 1 << 21

    /// Puts OpenBLAS in single-threaded mode once, before the first product. OpenBLAS starts its
    /// own server threads when the library loads, and an idle one polls with sched_yield for a
    /// while (profiles showed it taking a third of the samples of early MLP steps); they are
    /// stopped here so they never compete with the pool (OpenBLAS starts them again by itself if a
    /// caller ever asks it for more threads).
    private static let singleThreaded: Void = {
        // First one thread (setting the count restarts stopped threads), then stop them.
        openblas_set_num_threads(1)
        #if canImport(Glibc)
        typealias Shutdown = @convention(c) () -> Int32
        if let symbol = dlsym(nil, "blas_thread_shutdown_") { _ = unsafeBitCast(symbol, to: Shutdown.self)() }
        #endif
    }()

    /// Settles OpenBLAS's threading before the first product (sessions call it when they are built).
    public static func prepare() { _ = singleThreaded }

    /// The kernel set OpenBLAS runs (`openblas_get_corename`: "Cooperlake", "Haswell", ...): chosen
    /// by CPU model when the library loads, or by `OPENBLAS_CORETYPE`.
    public static var openBLASCore: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// OpenBLAS's kernel sets that use AVX-512 (lowercased `openblas_get_corename` names).
    static let avx512Cores: Set<String> = ["skylakex", "cooperlake", "sapphirerapids"]

    /// Whether OpenBLAS runs one of its AVX-512 kernel sets (with `OPENBLAS_CORETYPE=Haswell` it
    /// runs AVX2 kernels on an AVX-512 CPU, about half as fast).
    static let openBLASRunsAVX512 = avx512Cores.contains(openBLASCore.lowercased())

    /// Runs a product of C[m×n] as blocks of rows or columns of C (i0..<i1, j0..<j1), one per pool
    /// thread, each a single-threaded OpenBLAS call. Column blocks are multiples of 16 floats
    /// (a cache line), row blocks multiples of 8 rows.
    @inline(__always)
    static func split(m: Int, n: Int, work: Int, _ block: (Int, Int, Int, Int) -> Void) {
        _ = singleThreaded
        if work < singleThreadWork || Parallel.isInsideRegion {
            block(0, m, 0, n)
        } else if n >= m {
            Parallel.forRange((n + 15) / 16) { r in block(0, m, r.lowerBound * 16, min(r.upperBound * 16, n)) }
        } else {
            Parallel.forRange((m + 7) / 8) { r in block(r.lowerBound * 8, min(r.upperBound * 8, m), 0, n) }
        }
    }

    /// OpenBLAS's own multi-threaded sgemm with `threads` threads, for measuring the machine's
    /// GEMM peak against the split products (the benchmark reports the better of the two).
    public static func openBLASsgemm(threads: Int, n: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) {
        _ = singleThreaded
        openblas_set_num_threads(Int32(max(threads, 1)))
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0, c, Int32(n))
        openblas_set_num_threads(1)
    }
}
