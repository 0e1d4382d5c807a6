#if canImport(Glibc)
import Glibc
#endif
import CDNNL
import Synchronization

/// Float32 products A·B whose B is a constant of an inference session, through oneDNN's matmul
/// with B reordered once into the blocked layout its kernels read (as onnxruntime's MLAS prepacks
/// a constant B when a session is created), where OpenBLAS packs B again on every call.
///
/// Measured on the benchmark's shapes (Zen 4, Benchmarks/packed_gemm.c, two threads, each a
/// single-threaded call on its block of rows as here, OpenBLAS on its column blocks as BLAS.gemm
/// splits them, bias row included): 0.45-0.79x OpenBLAS's time on BERT's and ViT's products at
/// batch 1 and 32 (128×256×768 0.22 ms against 0.34; 213-228 GFLOP/s), 0.93x on GPT-2's lm_head
/// 128×256×50257 (17.8 ms against 19.0). Only oneDNN's brgemm kernels are used: on a CPU without
/// AVX-512 oneDNN 2.6 falls back to its own sgemm, and products stay on OpenBLAS.
///
/// The product is split by blocks of rows over the `Parallel` pool, one per thread, each reading
/// the one packed B: every call runs on the pool's threads, single-threaded inside oneDNN (its
/// OpenMP teams are one thread: no second pool spinning beside ours). The primitive of each row
/// count is made on its first call and kept (a few per node). oneDNN 2.6's brgemm kernels take
/// only dense A and C, so a split by columns (C's column blocks strided) would run its plain jit
/// sgemm instead: 0.61-1.0x OpenBLAS's time where row blocks on the packed B take 0.45-0.79x.
///
/// Every element is the product (plus the bias, added after the sum, where OpenBLAS's path adds
/// the product onto the bias): equal to OpenBLAS's to float rounding. Off with
/// `ONNX_TRAIN_DISABLE_PASSES=packed-gemm` (or `all`): every product then runs on OpenBLAS.
final class PackedWeightCache: Sendable {
    /// The budget the packed copies are reserved from (shared with the session's other kept forms).
    let budget: KernelCacheBudget
    private let kept = Mutex<Packed?>(nil)
    /// Set once this weight could not be packed (the budget refused it, or oneDNN would not run
    /// brgemm on it): its products then stay on OpenBLAS without asking again.
    private let refused = Atomic<Bool>(false)

    init(budget: KernelCacheBudget) { self.budget = budget }

    /// A cache for a node whose input `index` (its B) is a constant of its session; nil where it
    /// is not, where the switch is off or oneDNN cannot run here.
    static func make(_ ctx: NodeContext, input index: Int) -> PackedWeightCache? {
        guard ctx.isConstantInput(index), let budget = ctx.cacheBudget, PackedGemm.available else { return nil }
        return PackedWeightCache(budget: budget)
    }

    /// `gemm` on float32 elements.
    private func gemmFloat(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: Tensor, bElements: UnsafePointer<Float>, transB: Bool,
                           bias: UnsafePointer<Float>?, c: UnsafeMutablePointer<Float>, ldc: Int,
                           epilogue: ((_ i0: Int, _ i1: Int, _ j0: Int, _ j1: Int) -> Void)?) -> Bool {
        guard m >= PackedGemm.minimumRows, n >= 16, k >= 16, m * n * k >= PackedGemm.minimumWork, lda == k, ldc == n,
              b.dtype == .float32, b.count == k * n, !PackedGemm.streamed(m: m, k: k, n: n),
              !refused.load(ordering: .relaxed) else { return false }
        // Blocks of rows (multiples of 8), one per pool thread, each reading all of the packed B.
        let threads = Parallel.isInsideRegion ? 1 : Parallel.threadCount
        let blocks = (m + 7) / 8
        let parts = m * n * k >= BLAS.singleThreadWork ? max(1, min(threads, blocks)) : 1
        let rows = (0..<parts).map { p in
            let r = Parallel.chunk(p, of: parts, count: blocks)
            return (r.lowerBound * 8, min(r.upperBound * 8, m))
        }
        guard let packed = packed(b, bElements, k: k, n: n, transB: transB, probeRows: rows[0].1 - rows[0].0) else { return false }
        // Every part's primitive, made before the threads start (so an error leaves C untouched).
        var primitives: [Packed.Primitive] = []
        for (i0, i1) in rows {
            guard let primitive = packed.primitive(rows: i1 - i0, bias: bias != nil) else { return false }
            primitives.append(primitive)
        }
        let statuses = UnsafeMutablePointer<Int32>.allocate(capacity: parts)
        statuses.initialize(repeating: 0, count: parts)
        defer { statuses.deallocate() }
        func run(_ part: Int) {
            let (i0, i1) = rows[part]
            let p = primitives[part]
            statuses[part] = ot_matmul_run(PackedGemm.engine, p.primitive, p.scratchpad, a + i0 * k, Int64(i1 - i0), Int64(k), Int64(k),
                                           packed.weights, bias, Int64(n), c + i0 * n, Int64(n))
            if statuses[part] == 0 { epilogue?(i0, i1, 0, n) }
        }
        if parts == 1 {
            run(0)
        } else {
            Parallel.forRange(parts) { r in for part in r { run(part) } }
        }
        // oneDNN checked every argument when the primitive was made: a failed run is an
        // allocation failure inside it; the whole product then runs again on OpenBLAS.
        return (0..<parts).allSatisfy { statuses[$0] == 0 }
    }

    /// C[m, n] = A[m, k] · op(B) (+ bias[n] in every row), A and C dense (lda k, ldc n: oneDNN's
    /// brgemm kernels take no other strides), op(B) = B [k, n], or Bᵀ of B [n, k] with `transB`, B
    /// being `b`'s float32 elements. `epilogue` gets each block of C (rows i0..<i1, columns
    /// j0..<j1) once its product is done, on the thread that computed it (`BLAS.gemm`'s). Returns
    /// false, C untouched, where the product does not take this path (too small, strided, a refused
    /// budget, an error of oneDNN, elements other than Float): the caller runs it on OpenBLAS.
    func gemm<T: FloatElement>(m: Int, n: Int, k: Int, a: UnsafePointer<T>, lda: Int, b: Tensor, bElements: UnsafePointer<T>, transB: Bool,
                               bias: UnsafePointer<T>?, c: UnsafeMutablePointer<T>, ldc: Int,
                               epilogue: ((_ i0: Int, _ i1: Int, _ j0: Int, _ j1: Int) -> Void)? = nil) -> Bool {
        guard T.self == Float.self else { return false }
        return gemmFloat(m: m, n: n, k: k, a: BLAS.rebound(a), lda: lda, b: b, bElements: BLAS.rebound(bElements), transB: transB,
                         bias: bias.map { BLAS.rebound($0) }, c: BLAS.rebound(c), ldc: ldc, epilogue: epilogue)
    }

    /// B packed, kept or made now; nil when the budget refuses it or oneDNN would not run brgemm.
    private func packed(_ b: Tensor, _ B: UnsafePointer<Float>, k: Int, n: Int, transB: Bool, probeRows: Int) -> Packed? {
        if let p = kept.withLock({ $0 }), p.fits(b, transB: transB) { return p }
        guard let made = Packed(b, B, k: k, n: n, transB: transB, probeRows: probeRows, budget: budget) else {
            refused.store(true, ordering: .relaxed)
            return nil
        }
        // Two threads may both pack on a first run: the first kept wins, the other is freed.
        return kept.withLock { current in
            if let current, current.fits(b, transB: transB) { return current }
            current = made
            return made
        }
    }

    /// One weight, packed, and the primitives made for it.
    final class Packed: @unchecked Sendable {
        let source: TensorStorage, shape: [Int], transB: Bool
        let k: Int, n: Int
        /// op(B) in the layout of `layout`, made by oneDNN.
        let weights: dnnl_memory_t
        let layout: dnnl_memory_desc_t
        let bytes: Int
        let budget: KernelCacheBudget
        struct Key: Hashable { let rows: Int, bias: Bool }
        /// A primitive and the bytes of scratch memory each run of it takes (its own, so that
        /// several threads may run it at once).
        struct Primitive: @unchecked Sendable { let primitive: dnnl_primitive_t, scratchpad: Int }
        private let primitiveCache = Mutex<[Key: Primitive]>([:])

        init?(_ b: Tensor, _ B: UnsafePointer<Float>, k: Int, n: Int, transB: Bool, probeRows: Int, budget: KernelCacheBudget) {
            // The layout oneDNN picks for the first call's rows (the same for every M measured, 64 to
            // 6304 rows); a primitive made later for another M whose layout differs is not used.
            var primitive: dnnl_primitive_t?, layout = dnnl_memory_desc_t(), brgemm: Int32 = 0, scratchpad = 0
            let status = ot_matmul_create(PackedGemm.engine, Int64(probeRows), Int64(k), Int64(n), Int64(k), Int64(n), 0,
                                          &primitive, &layout, &brgemm, &scratchpad)
            if let primitive { dnnl_primitive_destroy(primitive) }
            guard status == 0, brgemm != 0 else { return nil }
            let bytes = ot_weights_size(&layout)
            guard budget.reserve(bytes) else { return nil }
            // op(B): B [k, n] at strides (n, 1), or Bᵀ of B [n, k] at (1, k).
            guard let weights = ot_pack_weights(PackedGemm.engine, B, Int64(k), Int64(n), transB ? 1 : Int64(n), transB ? Int64(k) : 1, &layout) else {
                budget.release(bytes)
                return nil
            }
            self.source = b.storage
            self.shape = b.shape
            self.transB = transB
            self.k = k
            self.n = n
            self.weights = weights
            self.layout = layout
            self.bytes = bytes
            self.budget = budget
        }

        deinit {
            dnnl_memory_destroy(weights)
            for kept in primitiveCache.withLock({ Array($0.values) }) { dnnl_primitive_destroy(kept.primitive) }
            budget.release(bytes)
        }

        func fits(_ b: Tensor, transB: Bool) -> Bool { source === b.storage && shape == b.shape && self.transB == transB }

        /// The primitive for `rows` rows of A and C, kept or made now; nil if oneDNN refuses it or
        /// picks another weight layout for it.
        func primitive(rows: Int, bias: Bool) -> Primitive? {
            let key = Key(rows: rows, bias: bias)
            if let kept = primitiveCache.withLock({ $0[key] }) { return kept }
            var made: dnnl_primitive_t?, chosen = dnnl_memory_desc_t(), brgemm: Int32 = 0, scratchpad = 0
            let status = ot_matmul_create(PackedGemm.engine, Int64(rows), Int64(k), Int64(n), Int64(k), Int64(n), bias ? 1 : 0,
                                          &made, &chosen, &brgemm, &scratchpad)
            var packedLayout = layout
            guard status == 0, let made else { return nil }
            guard brgemm != 0, ot_weights_equal(&chosen, &packedLayout) != 0 else {
                dnnl_primitive_destroy(made)
                return nil
            }
            let wrapped = Primitive(primitive: made, scratchpad: scratchpad)
            let result = primitiveCache.withLock { cache -> Primitive? in
                if let current = cache[key] {
                    dnnl_primitive_destroy(wrapped.primitive)
                    return current
                }
                // A few row counts per node (a session's batch and sequence lengths, each split over
                // the threads); past that, new ones are not kept (a run may still hold the old ones).
                if cache.count >= PackedGemm.primitivesPerWeight {
                    dnnl_primitive_destroy(wrapped.primitive)
                    return nil
                }
                cache[key] = wrapped
                return wrapped
            }
            return result
        }
    }
}

/// oneDNN's engine and the switches of `PackedWeightCache`.
enum PackedGemm: Sendable {
    /// Products with fewer rows, or multiply-adds, stay on OpenBLAS (a one-row product is its gemv;
    /// a call costs oneDNN ~3 µs, the time of a 64×64×64 product, where the two break even).
    static let minimumRows = 8
    static let minimumWork = 1 << 18
    /// Row counts (and stride and bias variants) whose primitives one weight keeps.
    static let primitivesPerWeight = 16

    /// Whether a product streams a big B from memory for few rows of A: B over `streamedBytes`
    /// with fewer than `streamedRows` rows. Such products stay on OpenBLAS, B not packed, for
    /// memory's sake: AlexNet's fully connected layers at batch 32 (B 151, 67 and 16 MB) run
    /// faster packed (18.2 + 8.8 ms against 29.1 + 13.3 on OpenBLAS in a profile), but the packed
    /// copies beside the initializers took its peak RSS from 373 to 602 MiB (onnxruntime's: 485,
    /// which frees an initializer once prepacked; the executor cannot drop one yet). A B that the
    /// cache holds (16 MiB or less) is still packed.
    static let streamedRows = 64
    static let streamedBytes = 16 << 20
    static func streamed(m: Int, k: Int, n: Int) -> Bool { m < streamedRows && k * n * 4 > streamedBytes }

    nonisolated(unsafe) static let engine: dnnl_engine_t? = ot_dnnl_engine()

    /// False with `ONNX_TRAIN_DISABLE_PASSES=packed-gemm` (or `all`), without an engine, or on a
    /// CPU without AVX-512 (where oneDNN 2.6 would run its plain sgemm rather than brgemm).
    static var available: Bool { enabled && engine != nil && avx512 }
    static let avx512 = ot_dnnl_avx512() != 0

    static var enabled: Bool {
        let off = PassPipeline.disabledNames
        return !off.contains("packed-gemm") && !off.contains("all")
    }
}
