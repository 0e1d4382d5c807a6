#if canImport(Glibc)
import Glibc
#endif
import CDNNL
import Synchronization

/// Float32 products A·B whose B is a constant of an inference session, through oneDNN's matmul
/// with B reordered once into the blocked layout its kernels read (as onnxruntime's MLAS prepacks
/// a constant B when a session is created), where OpenBLAS packs B again on every call.
///
/// Measured on the benchmark's shapes (Zen 4, Benchmarks/packed_gemm.c: both split by columns
/// over two threads, one single-threaded call each, as here): 0.58-0.82x OpenBLAS's time on
/// BERT's and ViT's products at batch 1 and 32 (128×256×768 0.23 ms against 0.30; 206-224
/// GFLOP/s against 157-171), 0.80x on GPT-2's lm_head 128×256×50257 (15.2 ms against 19.0); on one
/// thread 0.80-0.86x down to 128×128×128, even at 64³. Only oneDNN's brgemm kernels are used: on
/// a CPU without AVX-512 oneDNN 2.6 falls back to its own sgemm, and products stay on OpenBLAS.
///
/// The product is split by columns of C over the `Parallel` pool, one part per thread, each part
/// with its own columns of B packed: every call runs on the pool's threads, single-threaded
/// inside oneDNN (its OpenMP teams are one thread: no second pool spinning beside ours). The
/// primitive of each row count M is made on its first call and kept (a few per node).
///
/// Every element is the product (plus the bias, added after the sum, where OpenBLAS's path adds
/// the product onto the bias): equal to OpenBLAS's to float rounding. Off with
/// `ONNX_TRAIN_DISABLE_PASSES=packed-gemm` (or `all`): every product then runs on OpenBLAS.
final class PackedWeightCache: Sendable {
    /// The budget the packed copies are reserved from (shared with the session's other kept forms).
    let budget: KernelCacheBudget
    private let kept = Mutex<Packed?>(nil)

    init(budget: KernelCacheBudget) { self.budget = budget }

    /// A cache for a node whose input `index` (its B) is a constant of its session; nil where it
    /// is not, where the switch is off or oneDNN cannot run here.
    static func make(_ ctx: NodeContext, input index: Int) -> PackedWeightCache? {
        guard ctx.isConstantInput(index), let budget = ctx.cacheBudget, PackedGemm.available else { return nil }
        return PackedWeightCache(budget: budget)
    }

    /// C[m, n] (row stride ldc) = A[m, k] (row stride lda) · op(B) (+ bias[n] in every row), op(B)
    /// = B [k, n] (ldb n), or Bᵀ of B [n, k] (ldb k) with `transB`, B being `b`'s float32 elements.
    /// `epilogue` gets each block of C (rows i0..<i1, columns j0..<j1) once its product is done,
    /// on the thread that computed it (`BLAS.gemm`'s). Returns false, C untouched, where the
    /// product does not take this path (too small, a refused budget, an error of oneDNN): the
    /// caller runs it on OpenBLAS.
    func gemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: Tensor, bElements: UnsafePointer<Float>, transB: Bool,
              bias: UnsafePointer<Float>?, c: UnsafeMutablePointer<Float>, ldc: Int,
              epilogue: ((_ i0: Int, _ i1: Int, _ j0: Int, _ j1: Int) -> Void)? = nil) -> Bool {
        guard m >= PackedGemm.minimumRows, n >= 16, k >= 16, m * n * k >= PackedGemm.minimumWork, b.dtype == .float32,
              b.count == k * n else { return false }
        let threads = Parallel.isInsideRegion ? 1 : Parallel.threadCount
        let parts = m * n * k >= BLAS.singleThreadWork ? max(1, min(threads, n / 16)) : 1
        guard let packed = packed(b, bElements, k: k, n: n, transB: transB, parts: parts) else { return false }
        // Every part's primitive for this M, made before the threads start (so an error leaves C untouched).
        guard let primitives = packed.primitives(m: m, lda: lda, ldc: ldc, bias: bias != nil) else { return false }
        let statuses = UnsafeMutablePointer<Int32>.allocate(capacity: parts)
        statuses.initialize(repeating: 0, count: parts)
        defer { statuses.deallocate() }
        func run(_ part: Int) {
            let (j0, j1) = packed.columns[part]
            statuses[part] = ot_matmul_run(PackedGemm.engine, primitives[part], a, Int64(m), Int64(k), Int64(lda), packed.weights[part],
                                           bias.map { $0 + j0 }, Int64(j1 - j0), c + j0, Int64(ldc))
            if statuses[part] == 0 { epilogue?(0, m, j0, j1) }
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

    /// B's packed parts for `parts` threads, kept or made now; nil when the budget refuses them.
    private func packed(_ b: Tensor, _ B: UnsafePointer<Float>, k: Int, n: Int, transB: Bool, parts: Int) -> Packed? {
        if let p = kept.withLock({ $0 }), p.fits(b, transB: transB, parts: parts) { return p }
        guard let made = Packed(b, B, k: k, n: n, transB: transB, parts: parts, budget: budget) else { return nil }
        // Two threads may both pack on a first run: the first kept wins, the other is freed.
        return kept.withLock { current in
            if let current, current.fits(b, transB: transB, parts: parts) { return current }
            current = made
            return made
        }
    }

    /// One weight's columns, packed per part, and the primitives made for it.
    final class Packed: @unchecked Sendable {
        let source: TensorStorage, shape: [Int], transB: Bool
        let k: Int
        /// Columns j0..<j1 of C (and op(B)) of each part: multiples of 16 (a cache line of C).
        let columns: [(Int, Int)]
        /// Each part's columns of op(B) in the layout of `layouts`, made by oneDNN.
        let weights: [dnnl_memory_t]
        let layouts: [dnnl_memory_desc_t]
        let bytes: Int
        let budget: KernelCacheBudget
        struct Key: Hashable { let m: Int, lda: Int, ldc: Int, bias: Bool }
        /// One primitive per part (oneDNN's primitives may run on any thread, several at once).
        struct Primitives: @unchecked Sendable { let list: [dnnl_primitive_t] }
        private let primitiveCache = Mutex<[Key: Primitives]>([:])

        init?(_ b: Tensor, _ B: UnsafePointer<Float>, k: Int, n: Int, transB: Bool, parts: Int, budget: KernelCacheBudget) {
            let blocks = (n + 15) / 16
            let columns = (0..<parts).map { p in
                let r = Parallel.chunk(p, of: parts, count: blocks)
                return (r.lowerBound * 16, min(r.upperBound * 16, n))
            }
            // The layouts oneDNN picks for a typical M (the same for every M measured: 64 to 6304
            // rows); a primitive made later for another M whose layout differs is not used.
            var layouts: [dnnl_memory_desc_t] = []
            for (j0, j1) in columns {
                var primitive: dnnl_primitive_t?, layout = dnnl_memory_desc_t(), brgemm: Int32 = 0
                let status = ot_matmul_create(PackedGemm.engine, 128, Int64(k), Int64(j1 - j0), Int64(k), Int64(n), 0, &primitive, &layout, &brgemm)
                if let primitive { dnnl_primitive_destroy(primitive) }
                guard status == 0, brgemm != 0 else {
                    if status == 0 { PackedGemm.markUnavailable() }
                    return nil
                }
                layouts.append(layout)
            }
            var total = 0
            for var layout in layouts { total += ot_weights_size(&layout) }
            guard budget.reserve(total) else { return nil }
            var weights: [dnnl_memory_t] = []
            for (p, (j0, j1)) in columns.enumerated() {
                var layout = layouts[p]
                // op(B)'s columns j0..<j1: B [k, n] at strides (n, 1), or Bᵀ of B [n, k] at (1, k).
                let memory = transB
                    ? ot_pack_weights(PackedGemm.engine, B + j0 * k, Int64(k), Int64(j1 - j0), 1, Int64(k), &layout)
                    : ot_pack_weights(PackedGemm.engine, B + j0, Int64(k), Int64(j1 - j0), Int64(n), 1, &layout)
                guard let memory else {
                    for w in weights { dnnl_memory_destroy(w) }
                    budget.release(total)
                    return nil
                }
                weights.append(memory)
            }
            self.source = b.storage
            self.shape = b.shape
            self.transB = transB
            self.k = k
            self.columns = columns
            self.weights = weights
            self.layouts = layouts
            self.bytes = total
            self.budget = budget
        }

        deinit {
            for w in weights { dnnl_memory_destroy(w) }
            for kept in primitiveCache.withLock({ Array($0.values) }) { for p in kept.list { dnnl_primitive_destroy(p) } }
            budget.release(bytes)
        }

        func fits(_ b: Tensor, transB: Bool, parts: Int) -> Bool {
            source === b.storage && shape == b.shape && self.transB == transB && columns.count == parts
        }

        /// Each part's primitive for m rows (row strides lda of A, ldc of C), kept or made now; nil
        /// if oneDNN refuses one or picks another weight layout for it.
        func primitives(m: Int, lda: Int, ldc: Int, bias: Bool) -> [dnnl_primitive_t]? {
            let key = Key(m: m, lda: lda, ldc: ldc, bias: bias)
            if let kept = primitiveCache.withLock({ $0[key] }) { return kept.list }
            var list: [dnnl_primitive_t] = []
            var ok = true
            for (p, (j0, j1)) in columns.enumerated() {
                var primitive: dnnl_primitive_t?, layout = dnnl_memory_desc_t(), brgemm: Int32 = 0
                let status = ot_matmul_create(PackedGemm.engine, Int64(m), Int64(k), Int64(j1 - j0), Int64(lda), Int64(ldc), bias ? 1 : 0,
                                              &primitive, &layout, &brgemm)
                var kept = layouts[p]
                guard status == 0, let primitive else { ok = false; break }
                list.append(primitive)
                if brgemm == 0 || ot_weights_equal(&layout, &kept) == 0 { ok = false; break }
            }
            guard ok else {
                for p in list { dnnl_primitive_destroy(p) }
                return nil
            }
            let made = Primitives(list: list)
            return primitiveCache.withLock { cache -> [dnnl_primitive_t]? in
                if let current = cache[key] {
                    for p in made.list { dnnl_primitive_destroy(p) }
                    return current.list
                }
                // A few row counts per node (a session's batch and sequence lengths); past that, the
                // oldest are not freed while a run may hold them, so new ones stop being kept.
                if cache.count >= PackedGemm.primitivesPerWeight {
                    for p in made.list { dnnl_primitive_destroy(p) }
                    return nil
                }
                cache[key] = made
                return made.list
            }
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

    nonisolated(unsafe) static let engine: dnnl_engine_t? = ot_dnnl_engine()

    /// False with `ONNX_TRAIN_DISABLE_PASSES=packed-gemm` (or `all`), without an engine, or once
    /// oneDNN has picked an implementation other than its brgemm kernels (no AVX-512).
    static var available: Bool { enabled && engine != nil && !unavailable.load(ordering: .relaxed) }

    static var enabled: Bool {
        let off = PassPipeline.disabledNames
        return !off.contains("packed-gemm") && !off.contains("all")
    }

    private static let unavailable = Atomic<Bool>(false)
    static func markUnavailable() { unavailable.store(true, ordering: .relaxed) }
}
