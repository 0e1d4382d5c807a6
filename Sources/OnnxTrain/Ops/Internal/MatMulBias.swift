/// MatMulBias (onnx-train's internal domain, written only by the `MatMulAddToGemm` pass into a
/// session's compiled graph): Y = A·B + bias, a Linear layer over a batch of rows (every
/// transformer's projections), as one GEMM that adds the product onto the bias instead of a
/// product and then an Add pass over it.
///
/// Inputs: A [..., M, K] (rank 3 or more; 2-D products become Gemm), B [K, N] (or [N, K] with
/// `transB` 1: a weight stored as PyTorch's Linear stores it, whose Transpose
/// `TransposeIntoMatMul` folds into the flag), bias [N]. Output: Y [..., M, N], of A's type
/// (float32 or float64).
///
/// Every element is bias + product, rounded once, as MatMul and then Add compute it; a K that runs
/// over several of OpenBLAS's blocks adds the partial sums onto the bias rather than onto zero, so
/// results then agree to float rounding (`BLAS.gemm`'s `rowBias`). Shapes outside that (another
/// rank of B, a bias that is not one row of N) run as MatMul then Add, so any input gets the
/// pair's result and errors.
///
/// Attribute `activation` (optional, written by `GeluIntoMatMul`): "Gelu" (x·Φ(x), with erf) or
/// "FastGelu" (the tanh approximation ½x(1+tanh(√(2/π)(x+0.044715x³)))) applied to Y, each
/// thread's block of Y as soon as its product is done, while the block is in that core's cache:
/// the activation's pass over the whole of Y, and its kernel call, go. Gelu's values are
/// com.microsoft Gelu's (`ActivationMath`); FastGelu's go through the logistic function
/// (`ProductActivation.fastGelu8`); both equal to float rounding to the written-out ops the
/// pass replaced.
struct MatMulBiasKernel: Kernel {
    let transB: Bool
    var activation: ProductActivation? = nil
    /// B's packed copy, where B is a constant of the session (`PackedWeightCache`).
    var packedWeights: PackedWeightCache? = nil

    struct Compute: ElementOperation {
        let a: Tensor, b: Tensor, bias: Tensor
        let transB: Bool
        var activation: ProductActivation? = nil
        var packed: PackedWeightCache? = nil

        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            // A as rows [R, K] (R = product of its leading dims), op(B) [K, N], bias [N] → Y [R, N].
            let k = a.shape[a.rank - 1], n = transB ? b.shape[0] : b.shape[1], rows = a.count / max(k, 1)
            guard (transB ? b.shape[1] : b.shape[0]) == k else {
                throw KernelError("MatMul inner dims differ: shapes \(a.shape) and \(b.shape)\(transB ? " (transposed)" : "")")
            }
            var y = Tensor(uninitialized: T.dtype, shape: Array(a.shape.dropLast()) + [n])
            try a.withUnsafeBufferPointer(as: T.self) { pa in
                try b.withUnsafeBufferPointer(as: T.self) { pb in
                    try bias.withUnsafeBufferPointer(as: T.self) { pbias in
                        y.uncheckedMutableBufferPointer(as: T.self) { py in
                            guard let Y = py.baseAddress, let bias = pbias.baseAddress else { return }
                            guard let A = pa.baseAddress, let B = pb.baseAddress else {
                                // k == 0: an empty product, Y is the bias in every row.
                                for i in 0..<rows { (Y + i * n).update(from: bias, count: n) }
                                if let activation { activation.apply(Y, ldc: n, 0, rows, 0, n) }
                                return
                            }
                            if let packed,
                               packed.gemm(m: rows, n: n, k: k, a: A, lda: k, b: b, bElements: B, transB: transB, bias: bias, c: Y, ldc: n,
                                           epilogue: activation.map { activation in { i0, i1, j0, j1 in activation.apply(Y, ldc: n, i0, i1, j0, j1) } }) {
                                return
                            }
                            guard let activation else {
                                BLAS.gemm(transA: false, transB: transB, m: rows, n: n, k: k, alpha: 1, a: A, lda: k,
                                          b: B, ldb: b.shape[1], beta: 1, c: Y, ldc: n, rowBias: bias)
                                return
                            }
                            BLAS.gemm(transA: false, transB: transB, m: rows, n: n, k: k, alpha: 1, a: A, lda: k,
                                      b: B, ldb: b.shape[1], beta: 1, c: Y, ldc: n, rowBias: bias) { i0, i1, j0, j1 in
                                activation.apply(Y, ldc: n, i0, i1, j0, j1)
                            }
                        }
                    }
                }
            }
            return y
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let a = try inputs.tensor(0), b = try inputs.tensor(1), bias = try inputs.tensor(2)
        let dtype = try commonElementType([a, b, bias], names: ["A", "B", "bias"], floatOnly: true)
        guard (dtype == .float32 || dtype == .float64), a.rank >= 2, b.rank == 2, bias.rank == 1,
              bias.count == b.shape[transB ? 0 : 1] else {
            // Not the Linear layer the pass saw: MatMul, then Add (then the activation).
            let product = try matmul(a, transB ? transpose(b, perm: Array(0..<(b.rank - 2)) + [b.rank - 1, b.rank - 2]) : b)
            let y = try dispatch(dtype, AddOperation(x: product, y: bias))
            return [.tensor(try activation.map { try dispatch(dtype, Activated(activation: $0, y: y)) } ?? y)]
        }
        return [.tensor(try dispatch(dtype, Compute(a: a, b: b, bias: bias, transB: transB, activation: activation, packed: packedWeights)))]
    }

    /// The activation over the whole of a float tensor (the fallback's).
    struct Activated: ElementOperation {
        let activation: ProductActivation
        let y: Tensor
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            var out = y
            let count = out.count
            try out.withUnsafeMutableBufferPointer(as: T.self) { p in
                if let base = p.baseAddress { activation.apply(base, ldc: count, 0, 1, 0, count) }
            }
            return out
        }
    }

    /// The separate Add of the fallback, with numpy broadcasting.
    struct AddOperation: ElementOperation {
        let x: Tensor, y: Tensor
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            try broadcastBinary(x, y, T.self, T.self, T.self, outDType: T.dtype) { $0 + $1 }
        }
    }
}

/// StridedMatMul (onnx-train's internal domain, written only by the `StridedMatMulFusion` pass):
/// a batched product whose operands and result are transposes of stored tensors, read and written
/// where they are instead of copied: attention's heads, Q [B, T, H, D] read as [B, H, T, D].
///
///   Y = Transpose(alpha·op(Transpose(A, permA))·op(Transpose(B, permB)), permY)
///
/// Inputs A and B (the logical operands of one rank r >= 3 with equal batch dims; float32 and
/// float64 in place, other types through copies and MatMul or FusedMatMul); attributes transA, transB (swap the logical operand's last two axes, as FusedMatMul),
/// alpha (default 1) and permA, permB, permY (absent: identity). Each batch entry is one GEMM on
/// the stored memory: a matrix whose last stored axis is one of its two axes is a BLAS matrix with
/// a leading dimension (transposed when its rows are the contiguous axis); a result whose columns
/// are not contiguous is computed as its transpose, op(B)ᵀ·op(A)ᵀ. Every GEMM is the product
/// FusedMatMul makes of the copied operands (the same sums; the transposed result sums in BLAS's
/// other order, equal to float rounding). Other layouts, ranks or broadcast batches copy the
/// transposes and run FusedMatMul, so any input gets its defined result.
struct StridedMatMulKernel: Kernel {
    let alpha: Double
    let transA: Bool, transB: Bool
    let permA: [Int]?, permB: [Int]?, permY: [Int]?

    /// A BLAS view of one logical matrix op(X) [rows, cols] whose row and column strides are
    /// `rowStride`, `colStride`: (transposed, leading dimension), or nil without a unit stride.
    static func blasView(rowStride: Int, colStride: Int, rows: Int, cols: Int) -> (trans: Bool, ld: Int)? {
        if colStride == 1 && rowStride >= max(1, cols) { return (false, rowStride) }
        if rowStride == 1 && colStride >= max(1, rows) { return (true, colStride) }
        return nil
    }

    struct Compute: ElementOperation {
        let kernel: StridedMatMulKernel
        let a: Tensor, b: Tensor

        /// The logical shape and element strides of `x` read through `perm`.
        static func view(_ x: Tensor, _ perm: [Int]?) throws -> (shape: [Int], strides: [Int]) {
            let strides = contiguousStrides(x.shape)
            guard let perm else { return (x.shape, strides) }
            guard perm.count == x.rank, Set(perm) == Set(0..<x.rank) else { throw KernelError("perm \(perm) is not a permutation of \(x.rank) axes") }
            return (perm.map { x.shape[$0] }, perm.map { strides[$0] })
        }

        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            let k = kernel
            let (la, sa) = try Self.view(a, k.permA), (lb, sb) = try Self.view(b, k.permB)
            let r = la.count
            guard r >= 3, lb.count == r, la[..<(r - 2)] == lb[..<(r - 2)] else { return try copied(T.self) }
            let m = k.transA ? la[r - 1] : la[r - 2], kk = k.transA ? la[r - 2] : la[r - 1]
            let kb = k.transB ? lb[r - 1] : lb[r - 2], n = k.transB ? lb[r - 2] : lb[r - 1]
            guard kk == kb else { throw KernelError("A \(la) and B \(lb) have inner dims \(kk) and \(kb) (after transposes)") }
            let batch = Array(la[..<(r - 2)])
            let logicalY = batch + [m, n]
            if let permY = k.permY {
                guard permY.count == r, Set(permY) == Set(0..<r) else { throw KernelError("permY \(permY) is not a permutation of \(r) axes") }
            }
            let storedY = k.permY.map { p in p.map { logicalY[$0] } } ?? logicalY
            // Logical axis j of Y sits at stored axis inverse[j].
            let storedStrides = contiguousStrides(storedY)
            var sy = storedStrides
            if let permY = k.permY { for (d, j) in permY.enumerated() { sy[j] = storedStrides[d] } }
            // op(A) [m, k] and op(B) [k, n] strides, and Y's [m, n].
            let (aRow, aCol) = k.transA ? (sa[r - 1], sa[r - 2]) : (sa[r - 2], sa[r - 1])
            let (bRow, bCol) = k.transB ? (sb[r - 1], sb[r - 2]) : (sb[r - 2], sb[r - 1])
            guard let va = StridedMatMulKernel.blasView(rowStride: aRow, colStride: aCol, rows: m, cols: kk),
                  let vb = StridedMatMulKernel.blasView(rowStride: bRow, colStride: bCol, rows: kk, cols: n) else { return try copied(T.self) }
            // Y row-major with ldc, or Yᵀ (columns contiguous) computed as op(B)ᵀ·op(A)ᵀ.
            let yTransposed: Bool, ldc: Int
            if sy[r - 1] == 1 && sy[r - 2] >= max(1, n) {
                (yTransposed, ldc) = (false, sy[r - 2])
            } else if sy[r - 2] == 1 && sy[r - 1] >= max(1, m) {
                (yTransposed, ldc) = (true, sy[r - 1])
            } else {
                return try copied(T.self)
            }
            var out = Tensor(uninitialized: T.dtype, shape: storedY)
            let count = Tensor.elementCount(batch)
            guard count > 0, m > 0, n > 0 else { return out }
            var walk = Odometer(shape: batch, strides: [Array(sa[..<(r - 2)]), Array(sb[..<(r - 2)]), Array(sy[..<(r - 2)])])
            let offsets = (0..<count).map { _ in
                defer { walk.advance() }
                return (walk.offsets[0], walk.offsets[1], walk.offsets[2])
            }
            let alpha = T(fromDouble: k.alpha)
            try a.withUnsafeBufferPointer(as: T.self) { pa in
                try b.withUnsafeBufferPointer(as: T.self) { pb in
                    out.uncheckedMutableBufferPointer(as: T.self) { po in
                        guard let yo = po.baseAddress else { return }
                        // k == 0: no operand memory; BLAS.gemm writes the zeros.
                        let ya = pa.baseAddress ?? UnsafePointer(yo), yb = pb.baseAddress ?? UnsafePointer(yo)
                        // Batch entries split across threads; each GEMM then runs single-threaded.
                        Parallel.forRange(count, minimumChunk: max(1, (1 << 16) / max(1, m * n * kk))) { range in
                            for i in range {
                                let (oa, ob, oy) = offsets[i]
                                if yTransposed {
                                    BLAS.gemm(transA: !vb.trans, transB: !va.trans, m: n, n: m, k: kk, alpha: alpha, a: yb + ob, lda: vb.ld,
                                              b: ya + oa, ldb: va.ld, beta: T.zero, c: yo + oy, ldc: ldc)
                                } else {
                                    BLAS.gemm(transA: va.trans, transB: vb.trans, m: m, n: n, k: kk, alpha: alpha, a: ya + oa, lda: va.ld,
                                              b: yb + ob, ldb: vb.ld, beta: T.zero, c: yo + oy, ldc: ldc)
                                }
                            }
                        }
                    }
                }
            }
            return out
        }

        /// The transposes copied, FusedMatMul's product (numpy broadcasting), the result transposed.
        func copied<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            let k = kernel
            let ta = try k.permA.map { try transpose(a, perm: $0) } ?? a, tb = try k.permB.map { try transpose(b, perm: $0) } ?? b
            let y = try FusedMatMulKernel.Compute(a: ta, b: tb, alpha: k.alpha, transA: k.transA && ta.rank >= 2,
                                                  transB: k.transB && tb.rank >= 2).float(T.self)
            return try k.permY.map { try transpose(y, perm: $0) } ?? y
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let a = try inputs.tensor(0), b = try inputs.tensor(1)
        if a.dtype == b.dtype && (a.dtype == .float32 || a.dtype == .float64) {
            return [.tensor(try dispatch(a.dtype, Compute(kernel: self, a: a, b: b)))]
        }
        // Other types: the copies and the op the pass replaced (MatMul, for every type it takes, or
        // FusedMatMul), so results and errors are theirs.
        let ta = try permA.map { try transpose(a, perm: $0) } ?? a, tb = try permB.map { try transpose(b, perm: $0) } ?? b
        let y = alpha == 1 && !transA && !transB
            ? try matmul(ta, tb)
            : try FusedMatMulKernel(alpha: alpha, transA: transA, transB: transB, transBatchA: false, transBatchB: false)
                .run([.tensor(ta), .tensor(tb)], context).tensor(0)
        return [.tensor(try permY.map { try transpose(y, perm: $0) } ?? y)]
    }
}

/// The activations MatMulBias applies to its result (attribute `activation`).
enum ProductActivation: String {
    /// x·Φ(x), Φ with erf (com.microsoft Gelu).
    case gelu = "Gelu"
    /// ½x(1+tanh(√(2/π)(x+0.044715x³))) (com.microsoft FastGelu).
    case fastGelu = "FastGelu"

    /// Applies the activation in place to rows i0..<i1, columns j0..<j1 of y (row stride ldc).
    @inline(__always)
    func apply<T: FloatElement>(_ y: UnsafeMutablePointer<T>, ldc: Int, _ i0: Int, _ i1: Int, _ j0: Int, _ j1: Int) {
        for i in i0..<i1 {
            switch self {
            case .gelu: ProductActivation.geluRow(y + i * ldc + j0, j1 - j0)
            case .fastGelu: ProductActivation.fastGeluRow(y + i * ldc + j0, j1 - j0)
            }
        }
    }

    /// Gelu over n contiguous values: float32 eight lanes at a time, the tail through lane 0 of
    /// the same form (`ActivationMath.gelu`); float64 through libm.
    @inline(never)
    static func geluRow<T: FloatElement>(_ p: UnsafeMutablePointer<T>, _ n: Int) {
        var j = 0
        if T.self == Float.self {
            let raw = UnsafeMutableRawPointer(p)
            while j + 8 <= n {
                let v = ActivationMath.gelu8(raw.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self))
                raw.storeBytes(of: v, toByteOffset: 4 * j, as: SIMD8<Float>.self)
                j += 8
            }
        }
        while j < n { p[j] = ActivationMath.gelu(p[j]); j += 1 }
    }

    /// FastGelu over n contiguous values: float32 eight lanes at a time (`fastGelu8`), the tail
    /// through lane 0 of the same form; float64 as ½x(1+tanh(u)) with libm.
    @inline(never)
    static func fastGeluRow<T: FloatElement>(_ p: UnsafeMutablePointer<T>, _ n: Int) {
        guard T.self == Float.self else {
            for j in 0..<n { p[j] = ActivationMath.fastGelu(p[j]) }
            return
        }
        let raw = UnsafeMutableRawPointer(p)
        var j = 0
        while j + 8 <= n {
            raw.storeBytes(of: fastGelu8(raw.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self)), toByteOffset: 4 * j, as: SIMD8<Float>.self)
            j += 8
        }
        while j < n {
            raw.storeBytes(of: fastGelu8(SIMD8(repeating: raw.load(fromByteOffset: 4 * j, as: Float.self)))[0], toByteOffset: 4 * j, as: Float.self)
            j += 1
        }
    }

    /// ½x(1+tanh(u)), u = √(2/π)(x+0.044715x³), as x/(1+e^(−2u)) (the same function: ½(1+tanh(u))
    /// is the logistic σ(2u)): one exponential and one division, where tanh takes its polynomial,
    /// an exponential and a division, and the sum 1+tanh(u) cancels for negative u (the quotient
    /// keeps its relative accuracy there). e^(−2u) overflows to inf for 2u < −88.7, where the
    /// result becomes ±0 instead of x·σ(2u) < 3e-39·|x|. Within a few roundings of the
    /// written-out ops' value (absolute, of |x|, where those cancel).
    @inline(__always)
    static func fastGelu8(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let a = Float(2 * ActivationMath.sqrt2OverPi), b = Float(2 * ActivationMath.sqrt2OverPi * ActivationMath.gamma)
        let v = x * VectorMath.fma(x * x, SIMD8(repeating: b), SIMD8(repeating: a))
        return x / (1 + VectorMath.exp(-v))
    }
}

func registerMatMulBiasOps(_ registry: OpRegistry) {
    registry.register("MatMulBias", domain: internalDomain, since: [1]) { ctx in
        let name = try ctx.string("activation")
        let activation = try name.map { name -> ProductActivation in
            guard let a = ProductActivation(rawValue: name) else { throw KernelError("unknown activation '\(name)' (Gelu or FastGelu)") }
            return a
        }
        return MatMulBiasKernel(transB: try ctx.int("transB", default: 0) != 0, activation: activation,
                                packedWeights: PackedWeightCache.make(ctx, input: 1))
    }
    registry.register("StridedMatMul", domain: internalDomain, since: [1]) { ctx in
        StridedMatMulKernel(alpha: Double(try ctx.float("alpha", default: 1)),
                            transA: try ctx.int("transA", default: 0) != 0, transB: try ctx.int("transB", default: 0) != 0,
                            permA: try ctx.ints("permA"), permB: try ctx.ints("permB"), permY: try ctx.ints("permY"))
    }
}
