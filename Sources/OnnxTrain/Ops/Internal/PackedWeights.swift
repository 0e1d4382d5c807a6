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
///
/// The original B is freed once packed where the node alone reads it (`ConstantRelease`), as
/// onnxruntime frees a prepacked initializer: after its first packed product, the cache releases
/// it, and from then on serves every call itself, whatever it is: a row count under the packing
/// threshold or one oneDNN lays out B differently for, strided A or C, a primitive oneDNN refuses
/// or a run that fails, run on OpenBLAS with B unpacked from the packed copy into a temporary
/// (a reorder, the same floats). What is never packed (float64, a budget or probe refused on the
/// first product, a product that first comes with fewer than `minimumRows` rows) is never released.
/// The call sites keep the contract (`consumes`): every call of a float32 product reaches `gemm`
/// before any read of B's elements; Gemm only with transA 0, alpha 1 and a C that is absent, a
/// constant or multiplied by beta 0, so that whether its packed path is taken never changes.
/// A released weight's packed copy is not counted in the budget (it replaced the original).
final class PackedWeightCache: Sendable {
    /// The budget the packed copies are reserved from (shared with the session's other kept forms).
    let budget: KernelCacheBudget
    private let kept = Mutex<Packed?>(nil)
    /// Set once this weight could not be packed (the budget refused it, or oneDNN would not run
    /// brgemm on it): its products then stay on OpenBLAS without asking again.
    private let refused = Atomic<Bool>(false)
    /// The handle of B where the node alone reads it and its call site consumes it (`consumes`).
    let release: ConstantRelease?
    /// Set once B is released: every call is served from `kept`.
    private let released = Atomic<Bool>(false)

    init(budget: KernelCacheBudget, release: ConstantRelease? = nil) {
        self.budget = budget
        self.release = release
    }

    /// A cache for a node whose input `index` (its B) is a constant of its session; nil where it
    /// is not, where the switch is off or oneDNN cannot run here.
    static func make(_ ctx: NodeContext, input index: Int) -> PackedWeightCache? {
        guard ctx.isConstantInput(index), let budget = ctx.cacheBudget, PackedGemm.available else { return nil }
        return PackedWeightCache(budget: budget, release: consumes(ctx, input: index) ? ctx.releasableConstant(index) : nil)
    }

    /// Whether the node's kernel calls `gemm` before any read of B on every call where B is
    /// float32 (see the type's comment): MatMul, MatMulBias with a constant bias (its fallback for
    /// another bias shape reads B), Gemm with transA 0, alpha 1 and C absent, constant or times 0.
    static func consumes(_ ctx: NodeContext, input index: Int) -> Bool {
        guard index == 1 else { return false }
        switch (canonicalDomain(ctx.node.domain), ctx.node.opType) {
        case ("", "MatMul"):
            return true
        case (internalDomain, "MatMulBias"):
            return ctx.isConstantInput(2)
        case ("", "Gemm"):
            guard (try? ctx.int("transA", default: 0)) == 0, (try? ctx.float("alpha", default: 1)) == 1,
                  let beta = try? ctx.float("beta", default: 1) else { return false }
            return !ctx.hasInput(2) || beta == 0 || ctx.isConstantInput(2)
        default:
            return false
        }
    }

    /// Whether B has been released (tests read it).
    var isReleased: Bool { released.load(ordering: .acquiring) }
    /// The packed copy, if made (tests read it).
    var packedForTests: Packed? { kept.withLock { $0 } }

    /// `gemm` on float32 elements.
    private func gemmFloat(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: Tensor, bElements: UnsafePointer<Float>, transB: Bool,
                           bias: UnsafePointer<Float>?, c: UnsafeMutablePointer<Float>, ldc: Int,
                           epilogue: ((_ i0: Int, _ i1: Int, _ j0: Int, _ j1: Int) -> Void)?) -> Bool {
        if released.load(ordering: .acquiring), let packed = kept.withLock({ $0 }) {
            // B is gone: every call runs here, on the packed copy or on B unpacked from it.
            guard m > 0 else { return true }
            if lda == k, ldc == n, run(packed, m: m, a: a, bias: bias, c: c, epilogue: epilogue) { return true }
            runUnpacked(packed, m: m, a: a, lda: lda, bias: bias, c: c, ldc: ldc, epilogue: epilogue)
            return true
        }
        guard m >= PackedGemm.minimumRows, n >= 16, k >= 16, m * n * k >= PackedGemm.minimumWork, lda == k, ldc == n,
              b.dtype == .float32, b.count == k * n, !refused.load(ordering: .relaxed) else { return false }
        // Consumed where B is the constant itself (not a converted copy) and released after a
        // product ran packed: the budget is not charged for a copy that replaces its original.
        let consumable = release.map { $0.holds(b) && !$0.isReleased } ?? false
        guard let packed = packed(b, bElements, k: k, n: n, transB: transB, probeRows: rowBlocks(m: m, n: n, k: k)[0].count, consumable: consumable),
              run(packed, m: m, a: a, bias: bias, c: c, epilogue: epilogue) else { return false }
        if consumable, let release, kept.withLock({ $0 === packed }), !released.exchange(true, ordering: .acquiringAndReleasing) {
            packed.returnBudget()
            release.release()
        }
        return true
    }

    /// C = A·op(B) (+ bias) on the packed copy, by blocks of rows over the pool; false, C
    /// untouched or to be written again whole, where oneDNN refuses a primitive or a run fails.
    private func run(_ packed: Packed, m: Int, a: UnsafePointer<Float>, bias: UnsafePointer<Float>?, c: UnsafeMutablePointer<Float>,
                     epilogue: ((_ i0: Int, _ i1: Int, _ j0: Int, _ j1: Int) -> Void)?) -> Bool {
        let (n, k) = (packed.n, packed.k)
        let rows = rowBlocks(m: m, n: n, k: k).map { ($0.lowerBound, $0.upperBound) }
        let parts = rows.count
        // Every part's primitive, made before the threads start (so an error leaves C untouched).
        var primitives: [Packed.Primitive] = []
        defer { for p in primitives where p.temporary { dnnl_primitive_destroy(p.primitive) } }
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
            statuses[part] = SignalHold.around({ ot_matmul_run(PackedGemm.engine, p.primitive, p.scratchpad, a + i0 * k, Int64(i1 - i0), Int64(k), Int64(k),
                                           packed.weights, bias, Int64(n), c + i0 * n, Int64(n)) })
            if statuses[part] == 0 { epilogue?(i0, i1, 0, n) }
        }
        if parts == 1 {
            run(0)
        } else {
            Parallel.forRange(parts) { r in for part in r { run(part) } }
        }
        // oneDNN checked every argument when the primitive was made: a failed run is an
        // allocation failure inside it; the whole product then runs again (on OpenBLAS).
        return (0..<parts).allSatisfy { statuses[$0] == 0 }
    }

    /// Blocks of rows (multiples of 8), one per pool thread, each reading all of the packed B.
    private func rowBlocks(m: Int, n: Int, k: Int) -> [Range<Int>] {
        let threads = Parallel.isInsideRegion ? 1 : Parallel.threadCount
        let blocks = (m + 7) / 8
        let parts = m * n * k >= BLAS.singleThreadWork ? max(1, min(threads, blocks)) : 1
        return (0..<parts).map { p in
            let r = Parallel.chunk(p, of: parts, count: blocks)
            return r.lowerBound * 8..<min(r.upperBound * 8, m)
        }
    }

    /// The product of a released B on OpenBLAS, B unpacked from the packed copy into a temporary:
    /// what the call site would have run on the original (the same floats, the same call).
    private func runUnpacked(_ packed: Packed, m: Int, a: UnsafePointer<Float>, lda: Int, bias: UnsafePointer<Float>?,
                             c: UnsafeMutablePointer<Float>, ldc: Int, epilogue: ((_ i0: Int, _ i1: Int, _ j0: Int, _ j1: Int) -> Void)?) {
        let (n, k) = (packed.n, packed.k)
        let plain = UnsafeMutablePointer<Float>.allocate(capacity: k * n)
        defer { plain.deallocate() }
        guard packed.unpack(into: plain) else {
            // A reorder of a layout oneDNN made itself, into memory we allocated: fails only
            // where oneDNN cannot allocate its own few bytes.
            fatalError("oneDNN could not unpack a released weight (\(k)x\(n)): out of memory")
        }
        BLAS.gemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: lda, b: plain, ldb: n,
                  beta: bias == nil ? 0 : 1, c: c, ldc: ldc, rowBias: bias, epilogue: epilogue)
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
    /// A `consumable` B (released once packed) is packed even where the budget refuses it.
    private func packed(_ b: Tensor, _ B: UnsafePointer<Float>, k: Int, n: Int, transB: Bool, probeRows: Int, consumable: Bool) -> Packed? {
        if let p = kept.withLock({ $0 }), p.fits(b, transB: transB) { return p }
        guard let made = Packed(b, B, k: k, n: n, transB: transB, probeRows: probeRows, budget: budget, unbudgeted: consumable) else {
            refused.store(true, ordering: .relaxed)
            return nil
        }
        // Two threads may both pack on a first run: the first kept wins, the other is freed.
        return kept.withLock { current in
            if let current, current.fits(b, transB: transB) || released.load(ordering: .acquiring) { return current }
            current = made
            return made
        }
    }

    /// One weight, packed, and the primitives made for it.
    final class Packed: @unchecked Sendable {
        /// B's storage (its identity only: a reference would keep a released B alive).
        let source: ObjectIdentifier, shape: [Int], transB: Bool
        let k: Int, n: Int
        /// op(B) in the layout of `layout`, made by oneDNN.
        let weights: dnnl_memory_t
        let layout: dnnl_memory_desc_t
        let bytes: Int
        let budget: KernelCacheBudget
        /// Whether `bytes` are reserved from `budget` (until `returnBudget` or deinit).
        private let budgetHeld: Atomic<Bool>
        struct Key: Hashable { let rows: Int, bias: Bool }
        /// A primitive and the bytes of scratch memory each run of it takes (its own, so that
        /// several threads may run it at once); a temporary one (the cache of primitives full)
        /// is destroyed by its caller after its run.
        struct Primitive: @unchecked Sendable {
            let primitive: dnnl_primitive_t, scratchpad: Int
            var temporary = false
        }
        private let primitiveCache = Mutex<[Key: Primitive]>([:])

        init?(_ b: Tensor, _ B: UnsafePointer<Float>, k: Int, n: Int, transB: Bool, probeRows: Int, budget: KernelCacheBudget,
              unbudgeted: Bool = false) {
            // The layout oneDNN picks for the first call's rows (the same for every M measured, 64 to
            // 6304 rows); a primitive made later for another M whose layout differs is not used.
            var primitive: dnnl_primitive_t?, layout = dnnl_memory_desc_t(), brgemm: Int32 = 0, scratchpad = 0
            let status = ot_matmul_create(PackedGemm.engine, Int64(probeRows), Int64(k), Int64(n), Int64(k), Int64(n), 0,
                                          &primitive, &layout, &brgemm, &scratchpad)
            if let primitive { dnnl_primitive_destroy(primitive) }
            guard status == 0, brgemm != 0 else { return nil }
            let bytes = ot_weights_size(&layout)
            let reserved = budget.reserve(bytes)
            guard reserved || unbudgeted else { return nil }
            // op(B): B [k, n] at strides (n, 1), or Bᵀ of B [n, k] at (1, k).
            guard let weights = SignalHold.around({ ot_pack_weights(PackedGemm.engine, B, Int64(k), Int64(n), transB ? 1 : Int64(n), transB ? Int64(k) : 1, &layout) }) else {
                if reserved { budget.release(bytes) }
                return nil
            }
            self.budgetHeld = Atomic(reserved)
            self.source = ObjectIdentifier(b.storage)
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
            returnBudget()
        }

        /// Gives the reserved bytes back (once): the copy of a released B replaced its original.
        func returnBudget() {
            if budgetHeld.exchange(false, ordering: .acquiringAndReleasing) { budget.release(bytes) }
        }

        func fits(_ b: Tensor, transB: Bool) -> Bool { source == ObjectIdentifier(b.storage) && shape == b.shape && self.transB == transB }

        /// op(B) [k, n] row-major into `plain` (k·n floats), reordered back from the packed copy.
        func unpack(into plain: UnsafeMutablePointer<Float>) -> Bool {
            var plainDesc = dnnl_memory_desc_t(), packedDesc = layout
            var dims: [Int64] = [Int64(k), Int64(n)], strides: [Int64] = [Int64(n), 1]
            guard dnnl_memory_desc_init_by_strides(&plainDesc, 2, &dims, dnnl_f32, &strides) == dnnl_success else { return false }
            var to: dnnl_memory_t?, pd: dnnl_primitive_desc_t?, reorder: dnnl_primitive_t?, stream: dnnl_stream_t?
            defer {
                if let stream { dnnl_stream_destroy(stream) }
                if let reorder { dnnl_primitive_destroy(reorder) }
                if let pd { dnnl_primitive_desc_destroy(pd) }
                if let to { dnnl_memory_destroy(to) }
            }
            guard dnnl_memory_create(&to, &plainDesc, PackedGemm.engine, plain) == dnnl_success,
                  dnnl_reorder_primitive_desc_create(&pd, &packedDesc, PackedGemm.engine, &plainDesc, PackedGemm.engine, nil) == dnnl_success,
                  dnnl_primitive_create(&reorder, pd) == dnnl_success,
                  dnnl_stream_create(&stream, PackedGemm.engine, dnnl_stream_default_flags.rawValue) == dnnl_success else { return false }
            let args = [dnnl_exec_arg_t(arg: DNNL_ARG_FROM, memory: weights), dnnl_exec_arg_t(arg: DNNL_ARG_TO, memory: to)]
            return SignalHold.around({ ot_execute(reorder, stream, 2, args) }) == 0
        }

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
                // the threads); past that, new ones are not kept (a run may still hold the old
                // ones): used once and destroyed by the caller.
                if cache.count >= PackedGemm.primitivesPerWeight {
                    var once = wrapped
                    once.temporary = true
                    return once
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
