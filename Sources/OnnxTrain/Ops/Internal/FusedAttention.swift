/// FusedAttention (onnx-train's internal domain, written only by the `AttentionFusion` pass into an
/// inference graph): scaled dot-product attention over heads stored as the projections write them.
///
///   Y[b, i, h, :] = Σ_j softmax_j(scale·Q[b, i, h, :]·K[b, j, h, :] + mask[b, h, i, j]) · V[b, j, h, :]
///
/// Inputs: Q [B, Tq, H, D], K [B, Tk, H, D], V [B, Tk, H, Dv] (float32 or float64), and an optional
/// additive mask broadcastable to [B, H, Tq, Tk]. Attribute `scale` (float, default 1). Output Y
/// [B, Tq, H, Dv]: the layout the output projection reads after its Reshape, so the context is
/// written where it goes instead of through a Transpose copy.
///
/// Work is split over (batch, head, block of query rows); each block's scores live in a buffer
/// of its thread (a block of rows times Tk, in cache) between the two products. float32 runs
/// `AttentionBlock` (register kernels, the softmax 8 rows at a time); float64 two GEMMs with
/// scale (the first GEMM's alpha), mask, softmax (`softmaxRowInPlace`) between them. The
/// [B, H, Tq, Tk] scores are never written to memory. A row whose mask ends in entries at or
/// below −greatestFiniteMagnitude (−inf, or the most negative finite value that GPT-2's causal mask
/// writes) stops before them: their exponentials are 0 in the unfused graph too, so the causal
/// half of both products is skipped — provided nothing non-finite could reach them
/// (`trimIsExact`: otherwise the block keeps every key and gets the unfused NaN; what it needs of
/// the left-out keys, `KeySuffix`, is one pass over each (batch, head)'s K and V). A mask whose
/// kept entries are all zero (GPT-2's) is then not added at all. Results equal to float
/// rounding the ops the pass replaced (the same sums in another order; skipped products added
/// exact zeros).
///
/// Attribute `qkv_heads` (int, default 0; written by the pass's projection packing): when H > 0,
/// input 0 is one [B, T, 3·H·D] product holding Q, K and V side by side along its last axis
/// (BERT's and ViT's three projections as one, or GPT-2's c_attn before its Split), inputs 1 and
/// 2 are empty, and Q, K, V are read from it in place with token stride 3·H·D: the Split and the
/// Reshapes go, and no copy is made. A packed input whose rank is not 3 or whose last axis is not
/// 3·H·D for a whole D fails with an error.
///
/// Shapes outside that (ranks other than 4, batch or head counts that differ, a mask that does
/// not broadcast) run as the unfused ops: Transposes, MatMul, scale, Add, Softmax, MatMul,
/// Transpose, so any input gets their result and errors.
struct FusedAttentionKernel: Kernel {
    let scale: Double
    var packedHeads = 0
    /// float32 blocks on AttentionBlock's AVX-512 kernel (`AttentionBlock.wideEnabled` when made).
    var wide = AttentionBlock.wideEnabled

    /// Query rows per task: three of the float32 kernel's 16-lane score groups and eight of its
    /// 6-row P·V groups, so a full block wastes no lanes (32 rows computed 36 in P·V); a block's
    /// scores (48 × Tk floats, 38 KB at ViT's Tk = 197) stay in L2. The float32 kernel trims a
    /// causal mask per 16-row and 6-row group inside the block, so the block's size does not
    /// limit the trim (float64's sgemm path stops each block at its last row's key).
    static let blockRows = 48

    struct Compute: ElementOperation {
        let q: Tensor, k: Tensor, v: Tensor, mask: Tensor?
        let scale: Double
        /// H when q is the packed [B, T, 3·H·D] product (k and v are then q too), else 0.
        var packedHeads = 0
        var wide = false

        /// Element strides of the mask broadcast to [B, H, Tq, Tk] (0 along broadcast axes), or nil
        /// when it does not broadcast.
        static func maskStrides(_ mask: Tensor, _ target: [Int]) -> [Int]? {
            guard mask.rank <= 4 else { return nil }
            let shape = Array(repeating: 1, count: 4 - mask.rank) + mask.shape
            let strides = contiguousStrides(shape)
            var out = [Int](repeating: 0, count: 4)
            for d in 0..<4 {
                if shape[d] == target[d] && shape[d] != 1 { out[d] = strides[d] } else if shape[d] != 1 { return nil }
            }
            return out
        }

        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            // Token strides of Q, K, V and where K and V start (element offsets into k and v).
            var b = 0, tq = 0, h = 0, d = 0, tk = 0, dv = 0, qs = 0, ks = 0, vs = 0, kOff = 0, vOff = 0
            if packedHeads > 0 {
                guard q.rank == 3, q.shape[2] % (3 * packedHeads) == 0 else {
                    throw KernelError("FusedAttention: a packed QKV input must be [B, T, 3·\(packedHeads)·D], got \(q.shape)")
                }
                (b, tq, h) = (q.shape[0], q.shape[1], packedHeads)
                d = q.shape[2] / (3 * h)
                (tk, dv) = (tq, d)
                (qs, ks, vs, kOff, vOff) = (3 * h * d, 3 * h * d, 3 * h * d, h * d, 2 * h * d)
            } else {
                guard q.rank == 4, k.rank == 4, v.rank == 4 else { return try unfused(T.self) }
                (b, tq, h, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
                (tk, dv) = (k.shape[1], v.shape[3])
                guard k.shape[0] == b, v.shape[0] == b, k.shape[2] == h, v.shape[2] == h, k.shape[3] == d, v.shape[1] == tk, d > 0 else {
                    return try unfused(T.self)
                }
                (qs, ks, vs) = (h * d, h * d, h * dv)
            }
            var ms = [0, 0, 0, 0]
            if let mask {
                guard let s = Self.maskStrides(mask, [b, h, tq, tk]) else { return try unfused(T.self) }
                ms = s
            }
            var out = Tensor(uninitialized: T.dtype, shape: [b, tq, h, dv])
            guard out.count > 0 else { return out }
            let alpha = T(fromDouble: scale)
            let blockRows = FusedAttentionKernel.blockRows
            let blocks = (tq + blockRows - 1) / blockRows
            let tasks = b * h * blocks
            let maskTensor = mask ?? q  // not read without a mask
            try q.withUnsafeBufferPointer(as: T.self) { pq in
                try k.withUnsafeBufferPointer(as: T.self) { pk in
                    try v.withUnsafeBufferPointer(as: T.self) { pv in
                        try maskTensor.withUnsafeBufferPointer(as: T.self) { pm in
                            out.uncheckedMutableBufferPointer(as: T.self) { po in
                                guard let Y = po.baseAddress else { return }
                                guard tk > 0, d > 0, let Q = pq.baseAddress, let K = pk.baseAddress.map({ $0 + kOff }),
                                      let V = pv.baseAddress.map({ $0 + vOff }) else {
                                    // No keys: softmax over nothing, an empty product: zeros.
                                    Y.update(repeating: T.zero, count: po.count)
                                    return
                                }
                                let M = mask == nil ? nil : pm.baseAddress
                                let work = blockRows * tk * (2 * d + dv)
                                Parallel.forRange(tasks, minimumChunk: max(1, (1 << 16) / max(1, work))) { range in
                                    let isFloat = T.self == Float.self
                                    // float32's scores live in `scratch`; float64's in `scores`.
                                    let scores: UnsafeMutablePointer<T>? = isFloat ? nil : .allocate(capacity: blockRows * tk)
                                    let lengths = UnsafeMutablePointer<Int>.allocate(capacity: blockRows)
                                    let scratch: AttentionBlock.Scratch? = isFloat ? AttentionBlock.Scratch(maxRows: blockRows, keys: tk, d: d) : nil
                                    let suffix = KeySuffix(keys: tk)
                                    defer { scores?.deallocate(); lengths.deallocate(); scratch?.deallocate(); suffix.deallocate() }
                                    for task in range {
                                        let block = task % blocks, head = (task / blocks) % h, n = task / (blocks * h)
                                        let i0 = block * blockRows, rows = min(blockRows, tq - i0)
                                        attend(Q: Q, K: K, V: V, M: M, Y: Y, ms: ms, n: n, head: head, i0: i0, rows: rows,
                                               tq: tq, tk: tk, h: h, d: d, dv: dv, qs: qs, ks: ks, vs: vs, alpha: alpha, scores: scores, lengths: lengths,
                                               scratch: scratch, suffix: suffix)
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return out
        }

        /// One task: query rows i0..<i0+rows of head `head` in batch entry `n` (qs, ks, vs: the
        /// token strides of Q, K and V).
        @inline(__always)
        func attend<T: FloatElement>(Q: UnsafePointer<T>, K: UnsafePointer<T>, V: UnsafePointer<T>, M: UnsafePointer<T>?,
                                     Y: UnsafeMutablePointer<T>, ms: [Int], n: Int, head: Int, i0: Int, rows: Int,
                                     tq: Int, tk: Int, h: Int, d: Int, dv: Int, qs: Int, ks: Int, vs: Int, alpha: T,
                                     scores: UnsafeMutablePointer<T>?, lengths: UnsafeMutablePointer<Int>,
                                     scratch: AttentionBlock.Scratch?, suffix: KeySuffix) {
            let q = Q + (n * tq + i0) * qs + head * d, k = K + n * tk * ks + head * d, v = V + n * tk * vs + head * dv
            let y = Y + ((n * tq + i0) * h + head) * dv
            let maskBase = M.map { $0 + n * ms[0] + head * ms[1] + i0 * ms[2] }
            // Each row's keys: all, or up to its last entry the mask leaves in. A mask whose kept
            // entries are all 0 (GPT-2's causal mask) adds nothing once the rest is left out.
            var width = 0, shortest = tk, zeroMask = M != nil && ms[3] == 1
            for r in 0..<rows {
                var len = tk
                if let maskBase, ms[3] == 1 {
                    let row = maskBase + r * ms[2]
                    while len > 0 && row[len - 1] <= -T.greatestFiniteMagnitude { len -= 1 }
                    // A row masked throughout (softmax of equal values) or whose kept end is itself
                    // nearly as low keeps every key: the dropped exponentials might not be 0 there.
                    if len == 0 || !(row[len - 1] > T(fromDouble: -1e30)) { len = tk }
                    zeroMask = zeroMask && allZero(row, len)
                }
                lengths[r] = len
                width = max(width, len)
                shortest = min(shortest, len)
            }
            if shortest < tk && !Self.trimIsExact(q: q, rows: rows, keysFrom: shortest, suffix: suffix.of(k: k, v: v, n: n, head: head, ks: ks, vs: vs, d: d, dv: dv),
                                                  qs: qs, d: d, alpha: alpha) {
                for r in 0..<rows { lengths[r] = tk }
                width = tk
                zeroMask = false
            }
            let maskRows = zeroMask ? nil : maskBase
            if let scratch, T.self == Float.self {
                func f(_ p: UnsafePointer<T>) -> UnsafePointer<Float> { UnsafeRawPointer(p).assumingMemoryBound(to: Float.self) }
                AttentionBlock.run(q: f(q), qs: qs, k: f(k), ks: ks, v: f(v), vs: vs,
                                   y: UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self), ys: h * dv,
                                   mask: maskRows.map(f), mRow: ms[2], mKey: ms[3], rows: rows, d: d, dv: dv,
                                   alpha: Float(alpha.doubleValue), lengths: lengths, width: width, scratch: scratch, wide: wide)
                return
            }
            guard let scores else { return }
            // scores[rows, width] = alpha·Q·Kᵀ (heads read in place: row stride H·D, or 3·H·D packed).
            BLAS.gemm(transA: false, transB: true, m: rows, n: width, k: d, alpha: alpha,
                      a: q, lda: qs, b: k, ldb: ks, beta: T.zero, c: scores, ldc: width)
            for r in 0..<rows {
                let s = scores + r * width, len = lengths[r]
                if let maskRows {
                    let row = maskRows + r * ms[2]
                    if ms[3] == 1 {
                        addRow(s, row, len)
                    } else {
                        let c = row[0]
                        for j in 0..<len { s[j] += c }
                    }
                }
                softmaxRowInPlace(s, len)
                for j in len..<width { s[j] = T.zero }
            }
            // Y[b, i0..., head, :] = P·V (V's heads read in place, Y written in [B, Tq, H, Dv]).
            BLAS.gemm(transA: false, transB: false, m: rows, n: dv, k: width, alpha: T(fromDouble: 1),
                      a: scores, lda: width, b: v, ldb: vs, beta: T.zero, c: y, ldc: h * dv)
        }

        /// Whether leaving out keys `from..<tk` gives what the unfused ops compute. There those
        /// keys' logits are alpha·q·k + m with m <= −3.4e38 and their probabilities exactly 0 when
        /// |alpha·q·k| stays far below 3.4e38 (bounded by |alpha|·max|q|·max|k|·d < 1e30 here) and
        /// the kept logits are above −1e30 (the lengths' rule), and 0·v adds nothing when v is
        /// finite. A NaN or infinity in q, in the left-out keys or values (`suffix[from]` is then
        /// infinite), or a product that could overflow, keeps every key, so the row gets the
        /// unfused NaN or infinity.
        static func trimIsExact<T: FloatElement>(q: UnsafePointer<T>, rows: Int, keysFrom from: Int, suffix: UnsafePointer<Double>,
                                                 qs: Int, d: Int, alpha: T) -> Bool {
            guard let qm = largestAbs(q, rows, d, qs) else { return false }
            // An infinite suffix (non-finite key or value) fails the comparison, also times 0 (NaN).
            return abs(alpha.doubleValue) * qm * suffix[from] * Double(d) < 1e30
        }

        /// The ops the pass replaced, one after another (shapes the fused loop does not take).
        func unfused<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            func heads(_ x: Tensor, _ perm: [Int]) throws -> Tensor {
                guard x.rank == 4 else { throw KernelError("FusedAttention: inputs must have rank 4, got \(x.shape)") }
                return try transpose(x, perm: perm)
            }
            var s = try FusedMatMulKernel.Compute(a: try heads(q, [0, 2, 1, 3]), b: try heads(k, [0, 2, 3, 1]), alpha: scale,
                                                  transA: false, transB: false).float(T.self)
            if let mask { s = try broadcastBinary(s, mask, T.self, T.self, T.self, outDType: T.dtype) { $0 + $1 } }
            let n = s.shape.last ?? 1
            let p = try SoftmaxOperation(x: s, outer: s.count / max(1, n), n: n, inner: 1, kind: .softmax).float(T.self)
            return try transpose(try matmul(p, try heads(v, [0, 2, 1, 3])), perm: [0, 2, 1, 3])
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let q = try inputs.tensor(0)
        let mask = inputs.count > 3 ? try inputs.optionalTensor(3) : nil
        if packedHeads > 0 {
            let dtype = try commonElementType([q] + (mask.map { [$0] } ?? []), names: ["QKV", "mask"].prefix(mask == nil ? 1 : 2).map { $0 },
                                              floatOnly: true)
            guard dtype == .float32 || dtype == .float64 else { throw KernelError("FusedAttention takes float32 or float64, got \(dtype)") }
            return [.tensor(try dispatch(dtype, Compute(q: q, k: q, v: q, mask: mask, scale: scale, packedHeads: packedHeads, wide: wide)))]
        }
        let k = try inputs.tensor(1), v = try inputs.tensor(2)
        let dtype = try commonElementType([q, k, v] + (mask.map { [$0] } ?? []), names: ["Q", "K", "V", "mask"].prefix(mask == nil ? 3 : 4).map { $0 },
                                          floatOnly: true)
        guard dtype == .float32 || dtype == .float64 else { throw KernelError("FusedAttention takes float32 or float64, got \(dtype)") }
        return [.tensor(try dispatch(dtype, Compute(q: q, k: k, v: v, mask: mask, scale: scale, wide: wide)))]
    }
}

/// For each key j of one (batch, head): the largest |k| over keys j..<Tk, or +infinity when one of
/// those keys or their values is not finite (`trimIsExact` reads it at a block's shortest key
/// length). Kept per worker and filled once per (batch, head) it is asked about: a worker's tasks
/// run the blocks of one (batch, head) one after another, so K and V's keys are scanned once
/// there, not once per block.
final class KeySuffix {
    let values: UnsafeMutablePointer<Double>
    let keys: Int
    var filledFor: (n: Int, head: Int)? = nil

    init(keys: Int) {
        self.keys = keys
        values = .allocate(capacity: keys + 1)
    }

    func deallocate() { values.deallocate() }

    /// The suffix of (n, head), whose first key and value rows are `k` and `v` (token strides ks, vs).
    func of<T: FloatElement>(k: UnsafePointer<T>, v: UnsafePointer<T>, n: Int, head: Int, ks: Int, vs: Int, d: Int, dv: Int)
        -> UnsafePointer<Double> {
        if let f = filledFor, f.n == n, f.head == head { return UnsafePointer(values) }
        var top = 0.0
        values[keys] = 0
        for j in stride(from: keys - 1, through: 0, by: -1) {
            if top.isFinite {
                if let km = largestAbs(k + j * ks, 1, d, 0), largestAbs(v + j * vs, 1, dv, 0) != nil {
                    top = max(top, km)
                } else {
                    top = .infinity
                }
            }
            values[j] = top
        }
        filledFor = (n, head)
        return UnsafePointer(values)
    }
}

/// max |x| over `count` rows of `width` at row stride `rs`, or nil if one is not finite.
func largestAbs<T: FloatElement>(_ x: UnsafePointer<T>, _ count: Int, _ width: Int, _ rs: Int) -> Double? {
    if T.self == Float.self {
        return largestFloat(UnsafeRawPointer(x).assumingMemoryBound(to: Float.self), count, width, rs)
    }
    var top = T.zero, probe = T.zero
    for r in 0..<count {
        let row = x + r * rs
        for e in 0..<width {
            let a = abs(row[e])
            top = a > top ? a : top
            probe += row[e] - row[e]  // 0, or NaN for an infinity or NaN
        }
    }
    return probe == T.zero ? top.doubleValue : nil
}

/// `largestAbs` for float32, eight lanes at a time (the scalar loop's running sum is a chain of
/// dependent adds).
func largestFloat(_ x: UnsafePointer<Float>, _ count: Int, _ width: Int, _ rs: Int) -> Double? {
    typealias V8 = SIMD8<Float>
    var top = V8(), probe = V8(), top1: Float = 0, probe1: Float = 0
    for r in 0..<count {
        let row = x + r * rs
        var e = 0
        while e + 8 <= width {
            let v = UnsafeRawPointer(row + e).loadUnaligned(as: V8.self)
            let a = VectorMath.abs(v)
            top = top.replacing(with: a, where: a .> top)
            probe += v - v
            e += 8
        }
        while e < width {
            top1 = max(top1, abs(row[e]))
            probe1 += row[e] - row[e]
            e += 1
        }
    }
    guard probe1 == 0, probe == V8() else { return nil }
    return Double(max(top.max(), top1))
}

/// Whether m[0..<n] are all ±0.
@inline(never)
func allZero<T: FloatElement>(_ m: UnsafePointer<T>, _ n: Int) -> Bool {
    for j in 0..<n where m[j] != T.zero { return false }
    return true
}

/// s[j] += m[j] for j < n: a function of its own so the loop vectorises.
@inline(never)
func addRow<T: FloatElement>(_ s: UnsafeMutablePointer<T>, _ m: UnsafePointer<T>, _ n: Int) {
    for j in 0..<n { s[j] += m[j] }
}

func registerFusedAttentionOps(_ registry: OpRegistry) {
    registry.register("FusedAttention", domain: internalDomain, since: [1]) { ctx in
        let heads = try ctx.int("qkv_heads", default: 0)
        guard heads >= 0 else { throw KernelError("FusedAttention: qkv_heads must be at least 0, got \(heads)") }
        return FusedAttentionKernel(scale: Double(try ctx.float("scale", default: 1)), packedHeads: heads)
    }
}
