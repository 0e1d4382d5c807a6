#if arch(x86_64)
import CDNNL
#endif

/// FusedAttention's float32 block kernel: one block of query rows of one head, in registers,
/// instead of two small sgemm calls. At GPT-2's and ViT's sizes (32 query rows, 64-wide heads,
/// 128-197 keys) OpenBLAS packed both operands and paid its call overhead on every block, about
/// a thousand calls a run, and the softmax went row by row between them.
///
/// The block works on the scores transposed, keys by query rows (`st[j][r]`, a row of 8·k lanes):
///   1. Q's rows are copied transposed into `qt[p][r]` (rows·d values, padded with zeros to a
///      multiple of 16 lanes), so Sᵀ = K·Qᵀ is an outer-product kernel with no packing of K:
///      6 keys × 16 lanes, twelve 8-lane accumulators, each key's value broadcast from K in place.
///   2. The mask is added and the softmax taken down each column, 8 query rows at a time in the
///      lanes of one register: running maxima, exponentials (VectorMath.exp), sums, with no
///      horizontal reductions. The exponentials stay unnormalised.
///   3. Y = P·V, 6 query rows × 16 values per pass over the keys, V's rows read in place; each row
///      is scaled by 1/its sum as it is stored (one rounding more than normalising P first).
/// Keys past a row's `length` (the causal trim) get probability 0: their scores are never
/// computed where a whole 16-lane group ends before them, and are set to −inf in the softmax
/// otherwise.
///
/// Where the CPU has AVX-512F the block runs `ot_attention_block` (Sources/CDNNL/attention.h)
/// instead: the same operations in the same order, 16 lanes and 32 registers wide (Sᵀ 8 keys ×
/// 48 lanes a tile, the softmax 16 rows a register, P·V 6 rows × 64 values), so every output is
/// bit for bit this kernel's (an odd Dv's last values % 8 aside: fused there, to float rounding).
/// Measured with Benchmarks/attention_block.c and the models' FusedAttention nodes (commit
/// message). Off with `ONNX_TRAIN_DISABLE_PASSES=attention-avx512` (or `all`).
enum AttentionBlock {
    typealias V8 = SIMD8<Float>

    /// Whether the CPU runs AVX-512F (the OS saving its registers): the wide kernel can run.
    #if arch(x86_64)
    static let wideAvailable = ot_attention_avx512() != 0
    #else
    static let wideAvailable = false
    #endif

    /// `wideAvailable`, and not switched off (`ONNX_TRAIN_DISABLE_PASSES=attention-avx512` or `all`).
    static var wideEnabled: Bool {
        let off = PassPipeline.disabledNames
        return wideAvailable && !off.contains("attention-avx512") && !off.contains("all")
    }

    /// Scratch for blocks of up to `maxRows` query rows against `keys` keys and heads of `d`.
    struct Scratch {
        let qt: UnsafeMutablePointer<Float>, st: UnsafeMutablePointer<Float>, inverse: UnsafeMutablePointer<Float>
        let stCount: Int

        init(maxRows: Int, keys: Int, d: Int) {
            let lanes = AttentionBlock.lanes(maxRows)
            qt = .allocate(capacity: max(1, d * lanes))
            // 8 values of slack: the last 6-row group of P·V reads up to 5 lanes past the block.
            stCount = keys * lanes + 8
            st = .allocate(capacity: stCount)
            st.initialize(repeating: 0, count: stCount)
            inverse = .allocate(capacity: lanes + 8)
            inverse.initialize(repeating: 0, count: lanes + 8)
        }

        func deallocate() { qt.deallocate(); st.deallocate(); inverse.deallocate() }
    }

    /// Rows padded to the 16-lane groups of the score kernel.
    @inline(__always) static func lanes(_ rows: Int) -> Int { (rows + 15) & ~15 }

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> V8 { UnsafeRawPointer(p).loadUnaligned(as: V8.self) }
    @inline(__always) static func store(_ v: V8, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: V8.self)
    }

    /// Y[r, :] = softmax_j(alpha·Q[r]·K[j] + mask[r, j]) · V[j] for r < rows, j < lengths[r].
    /// Q, K, V, Y at row strides qs, ks, vs, ys; `mask` (nil: none) is row r's mask at
    /// `mask + r·mRow + j·mKey`. `width` = max lengths.
    /// `wide`: run the AVX-512 kernel (only where `wideAvailable`).
    static func run(q: UnsafePointer<Float>, qs: Int, k: UnsafePointer<Float>, ks: Int, v: UnsafePointer<Float>, vs: Int,
                    y: UnsafeMutablePointer<Float>, ys: Int, mask: UnsafePointer<Float>?, mRow: Int, mKey: Int,
                    rows: Int, d: Int, dv: Int, alpha: Float, lengths: UnsafePointer<Int>, width: Int, scratch: Scratch,
                    wide: Bool = false) {
        #if arch(x86_64)
        if wide {
            ot_attention_block(q, qs, k, ks, v, vs, y, ys, mask, mRow, mKey, rows, d, dv, alpha, lengths, width,
                               scratch.qt, scratch.st, scratch.inverse)
            return
        }
        #endif
        let lanes = Self.lanes(rows)
        let qt = scratch.qt, st = scratch.st
        // 1. Qᵀ, zero-padded lanes.
        for p in 0..<d {
            let row = qt + p * lanes
            for r in 0..<rows { row[r] = q[r * qs + p] }
            for r in rows..<lanes { row[r] = 0 }
        }
        /// The longest row among r0..<r1 (rows past the block count 0).
        func widest(_ r0: Int, _ r1: Int) -> Int {
            var w = 0
            for r in r0..<min(r1, rows) { w = max(w, lengths[r]) }
            return w
        }
        // 2. Sᵀ[j, lanes] = alpha·K[j]·Qᵀ, each 16-lane group up to its longest row.
        for l0 in stride(from: 0, to: lanes, by: 16) {
            let w = widest(l0, l0 + 16)
            var j = 0
            while j + 6 <= w {
                scores6(qt + l0, lanes, k + j * ks, ks, d, alpha, st + j * lanes + l0)
                j += 6
            }
            while j < w {
                scores1(qt + l0, lanes, k + j * ks, d, alpha, st + j * lanes + l0)
                j += 1
            }
        }
        // 3. Mask, trim and softmax down the columns, 8 rows a register.
        let ninf = V8(repeating: -.infinity)
        for l0 in stride(from: 0, to: rows, by: 8) {
            let w = widest(l0, l0 + 8)
            var len = SIMD8<Int32>(repeating: Int32(w))
            var trimmed = false
            for r in 0..<8 where l0 + r < rows && lengths[l0 + r] < w { len[r] = Int32(lengths[l0 + r]); trimmed = true }
            let column = st + l0
            if let mask {
                if mRow == 0 {
                    for j in 0..<w {
                        let s = column + j * lanes
                        store(load(s) + V8(repeating: mask[j * mKey]), s)
                    }
                } else {
                    var offsets = SIMD8<Int>(repeating: 0), valid = 0
                    for r in 0..<8 where l0 + r < rows { offsets[r] = (l0 + r) * mRow; valid = r + 1 }
                    for j in 0..<w {
                        let s = column + j * lanes, m = mask + j * mKey
                        var add = V8()
                        for r in 0..<valid { add[r] = m[offsets[r]] }
                        store(load(s) + add, s)
                    }
                }
            }
            if trimmed {
                for j in 0..<w {
                    let s = column + j * lanes
                    store(load(s).replacing(with: ninf, where: SIMD8<Int32>(repeating: Int32(j)) .>= len), s)
                }
            }
            // Running maximum (a NaN score is skipped here and makes its row NaN through exp, as
            // softmaxRowInPlace does), exponentials, sums.
            var top = load(column)
            for j in 1..<max(w, 1) {
                let s = load(column + j * lanes)
                top = top.replacing(with: s, where: s .> top)
            }
            var sum = V8()
            for j in 0..<w {
                let s = column + j * lanes
                let e = VectorMath.exp(load(s) - top)
                store(e, s)
                sum += e
            }
            store(V8(repeating: 1) / sum, scratch.inverse + l0)
            // Columns past this group's longest row, which step 2 may not have written: 0.
            let all = widest(0, rows)
            for j in w..<all { store(V8(), column + j * lanes) }
        }
        // 4. Y = P·V, scaled by the inverse sums.
        for r0 in stride(from: 0, to: rows, by: 6) {
            let w = widest(r0, r0 + 6), n = min(6, rows - r0)
            let p = st + r0, out = y + r0 * ys, inverse = scratch.inverse + r0
            var c = 0
            while c + 16 <= dv {
                values6x16(p, lanes, v + c, vs, w, out + c, ys, n, inverse)
                c += 16
            }
            if c + 8 <= dv {
                values6x8(p, lanes, v + c, vs, w, out + c, ys, n, inverse)
                c += 8
            }
            for t in 0..<n {
                for col in c..<dv {
                    var sum: Float = 0
                    for j in 0..<w { sum += p[j * lanes + t] * v[j * vs + col] }
                    out[t * ys + col] = sum * inverse[t]
                }
            }
        }
    }

    /// out[kk·lanes + 0..<16] = alpha·Σ_p k[kk·ks + p]·qt[p·lanes + 0..<16] for 6 keys kk.
    @inline(__always)
    static func scores6(_ qt: UnsafePointer<Float>, _ lanes: Int, _ k: UnsafePointer<Float>, _ ks: Int, _ d: Int, _ alpha: Float,
                        _ out: UnsafeMutablePointer<Float>) {
        var a0 = V8(), a1 = V8(), a2 = V8(), a3 = V8(), a4 = V8(), a5 = V8()
        var b0 = V8(), b1 = V8(), b2 = V8(), b3 = V8(), b4 = V8(), b5 = V8()
        let k0 = k, k1 = k + ks, k2 = k + 2 * ks, k3 = k + 3 * ks, k4 = k + 4 * ks, k5 = k + 5 * ks
        var qp = qt
        for p in 0..<d {
            let x = load(qp), y = load(qp + 8)
            var c = V8(repeating: k0[p]); a0 = VectorMath.fma(x, c, a0); b0 = VectorMath.fma(y, c, b0)
            c = V8(repeating: k1[p]); a1 = VectorMath.fma(x, c, a1); b1 = VectorMath.fma(y, c, b1)
            c = V8(repeating: k2[p]); a2 = VectorMath.fma(x, c, a2); b2 = VectorMath.fma(y, c, b2)
            c = V8(repeating: k3[p]); a3 = VectorMath.fma(x, c, a3); b3 = VectorMath.fma(y, c, b3)
            c = V8(repeating: k4[p]); a4 = VectorMath.fma(x, c, a4); b4 = VectorMath.fma(y, c, b4)
            c = V8(repeating: k5[p]); a5 = VectorMath.fma(x, c, a5); b5 = VectorMath.fma(y, c, b5)
            qp += lanes
        }
        let s = V8(repeating: alpha)
        store(a0 * s, out); store(b0 * s, out + 8)
        store(a1 * s, out + lanes); store(b1 * s, out + lanes + 8)
        store(a2 * s, out + 2 * lanes); store(b2 * s, out + 2 * lanes + 8)
        store(a3 * s, out + 3 * lanes); store(b3 * s, out + 3 * lanes + 8)
        store(a4 * s, out + 4 * lanes); store(b4 * s, out + 4 * lanes + 8)
        store(a5 * s, out + 5 * lanes); store(b5 * s, out + 5 * lanes + 8)
    }

    /// scores6 for one key.
    @inline(__always)
    static func scores1(_ qt: UnsafePointer<Float>, _ lanes: Int, _ k: UnsafePointer<Float>, _ d: Int, _ alpha: Float,
                        _ out: UnsafeMutablePointer<Float>) {
        var a = V8(), b = V8()
        var qp = qt
        for p in 0..<d {
            let c = V8(repeating: k[p])
            a = VectorMath.fma(load(qp), c, a); b = VectorMath.fma(load(qp + 8), c, b)
            qp += lanes
        }
        let s = V8(repeating: alpha)
        store(a * s, out); store(b * s, out + 8)
    }

    /// out[t·ys + 0..<16] = inverse[t]·Σ_{j<w} p[j·lanes + t]·v[j·vs + 0..<16] for t < n (6 rows computed).
    @inline(__always)
    static func values6x16(_ p: UnsafePointer<Float>, _ lanes: Int, _ v: UnsafePointer<Float>, _ vs: Int, _ w: Int,
                           _ out: UnsafeMutablePointer<Float>, _ ys: Int, _ n: Int, _ inverse: UnsafePointer<Float>) {
        var a0 = V8(), a1 = V8(), a2 = V8(), a3 = V8(), a4 = V8(), a5 = V8()
        var b0 = V8(), b1 = V8(), b2 = V8(), b3 = V8(), b4 = V8(), b5 = V8()
        var pp = p, vp = v
        for _ in 0..<w {
            let x = load(vp), y = load(vp + 8)
            var c = V8(repeating: pp[0]); a0 = VectorMath.fma(x, c, a0); b0 = VectorMath.fma(y, c, b0)
            c = V8(repeating: pp[1]); a1 = VectorMath.fma(x, c, a1); b1 = VectorMath.fma(y, c, b1)
            c = V8(repeating: pp[2]); a2 = VectorMath.fma(x, c, a2); b2 = VectorMath.fma(y, c, b2)
            c = V8(repeating: pp[3]); a3 = VectorMath.fma(x, c, a3); b3 = VectorMath.fma(y, c, b3)
            c = V8(repeating: pp[4]); a4 = VectorMath.fma(x, c, a4); b4 = VectorMath.fma(y, c, b4)
            c = V8(repeating: pp[5]); a5 = VectorMath.fma(x, c, a5); b5 = VectorMath.fma(y, c, b5)
            pp += lanes; vp += vs
        }
        @inline(__always) func put(_ t: Int, _ a: V8, _ b: V8) {
            guard t < n else { return }
            let s = V8(repeating: inverse[t])
            store(a * s, out + t * ys); store(b * s, out + t * ys + 8)
        }
        put(0, a0, b0); put(1, a1, b1); put(2, a2, b2); put(3, a3, b3); put(4, a4, b4); put(5, a5, b5)
    }

    /// values6x16 for 8 values.
    @inline(__always)
    static func values6x8(_ p: UnsafePointer<Float>, _ lanes: Int, _ v: UnsafePointer<Float>, _ vs: Int, _ w: Int,
                          _ out: UnsafeMutablePointer<Float>, _ ys: Int, _ n: Int, _ inverse: UnsafePointer<Float>) {
        var a0 = V8(), a1 = V8(), a2 = V8(), a3 = V8(), a4 = V8(), a5 = V8()
        var pp = p, vp = v
        for _ in 0..<w {
            let x = load(vp)
            a0 = VectorMath.fma(x, V8(repeating: pp[0]), a0)
            a1 = VectorMath.fma(x, V8(repeating: pp[1]), a1)
            a2 = VectorMath.fma(x, V8(repeating: pp[2]), a2)
            a3 = VectorMath.fma(x, V8(repeating: pp[3]), a3)
            a4 = VectorMath.fma(x, V8(repeating: pp[4]), a4)
            a5 = VectorMath.fma(x, V8(repeating: pp[5]), a5)
            pp += lanes; vp += vs
        }
        @inline(__always) func put(_ t: Int, _ a: V8) {
            guard t < n else { return }
            store(a * V8(repeating: inverse[t]), out + t * ys)
        }
        put(0, a0); put(1, a1); put(2, a2); put(3, a3); put(4, a4); put(5, a5)
    }
}
