// FusedAttention's float32 block kernel in AVX-512 (AttentionBlock.swift runs it where the CPU has
// AVX-512F, and its own 8-lane kernel otherwise). The same algorithm and the same operations in the
// same order as the Swift kernel, 16 lanes wide with 32 registers: Sᵀ = K·Qᵀ with Q transposed
// into `qt` (8 keys × 48 lanes a tile, each key's value an embedded broadcast), the softmax down
// the columns 16 query rows a register, P·V 6 query rows × 64 values a tile. Every value it writes
// is bit for bit the Swift kernel's (the same fused multiply-adds over the same index order, the
// same exponential), except the values past the last multiple of 8 of an odd Dv, which the Swift
// kernel sums without fusing and this one with.
#pragma once
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>

/// Whether the CPU and the OS run AVX-512F (the zmm and mask registers saved: XCR0 bits 1, 2, 5-7).
static inline int ot_attention_avx512(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 16))) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  // OSXSAVE
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xE6) == 0xE6;
}

// The tiles' loops over their registers unrolled completely, so the accumulators stay in registers
// (clang left the 12-key loop rolled, its accumulators on the stack: 1.5x the time).
#if defined(__clang__)
#define OT_UNROLL _Pragma("unroll")
#else
#define OT_UNROLL _Pragma("GCC unroll 16")
#endif
#define OT_AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma,avx2")))
#define OT_AVX512 static inline OT_AVX512_TARGET __attribute__((always_inline))

/// e^x: VectorMath.exp's clamps, range reduction, polynomial and two-power scale, bit for bit.
OT_AVX512 __m512 ot_exp16(__m512 x) {
    // max/min return their second operand when one is NaN: NaN stays, as in the Swift clamps.
    __m512 xc = _mm512_min_ps(_mm512_set1_ps(88.8f), _mm512_max_ps(_mm512_set1_ps(-104.f), x));
    const __m512 magic = _mm512_set1_ps(12582912.f);
    __m512 t = _mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504f), magic);
    __m512 n = _mm512_sub_ps(t, magic);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693145751953125f), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-1.428606765330187e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    __m512i ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(magic));
    __m512i n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
    const __m512i bias = _mm512_set1_epi32(127);
    __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23));
    __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23));
    return _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
}

/// out[kk·lanes + 16·z + 0..<16] = alpha·Σ_p k[kk·ks + p]·qt[p·lanes + 16·z + 0..<16] for NK keys kk
/// and NZ registers z (NK·NZ <= 24 accumulators).
#define OT_SCORES(NAME, NK, NZ)                                                                                        \
    OT_AVX512 void NAME(const float *qt, long lanes, const float *k, long ks, long d, float alpha, float *out) {       \
        __m512 acc[NK][NZ];                                                                                            \
        OT_UNROLL for (int kk = 0; kk < NK; kk++)                                                                                \
            OT_UNROLL for (int z = 0; z < NZ; z++) acc[kk][z] = _mm512_setzero_ps();                                             \
        const float *qp = qt;                                                                                          \
        for (long p = 0; p < d; p++) {                                                                                 \
            __m512 x[NZ];                                                                                              \
            OT_UNROLL for (int z = 0; z < NZ; z++) x[z] = _mm512_loadu_ps(qp + 16 * z);                                          \
            OT_UNROLL for (int kk = 0; kk < NK; kk++) {                                                                          \
                __m512 c = _mm512_set1_ps(k[kk * ks + p]);                                                             \
                OT_UNROLL for (int z = 0; z < NZ; z++) acc[kk][z] = _mm512_fmadd_ps(x[z], c, acc[kk][z]);                       \
            }                                                                                                          \
            qp += lanes;                                                                                               \
        }                                                                                                              \
        const __m512 s = _mm512_set1_ps(alpha);                                                                        \
        OT_UNROLL for (int kk = 0; kk < NK; kk++)                                                                                \
            OT_UNROLL for (int z = 0; z < NZ; z++) _mm512_storeu_ps(out + kk * lanes + 16 * z, _mm512_mul_ps(acc[kk][z], s));  \
    }
// Full tiles, and every shorter count of keys for a range's last keys (one key at a time, a
// chain of d dependent multiply-adds per register, took 4x a tile's time a key).
OT_SCORES(ot_scores_8x3, 8, 3)
OT_SCORES(ot_scores_7x3, 7, 3)
OT_SCORES(ot_scores_6x3, 6, 3)
OT_SCORES(ot_scores_5x3, 5, 3)
OT_SCORES(ot_scores_4x3, 4, 3)
OT_SCORES(ot_scores_3x3, 3, 3)
OT_SCORES(ot_scores_2x3, 2, 3)
OT_SCORES(ot_scores_1x3, 1, 3)
OT_SCORES(ot_scores_12x2, 12, 2)
OT_SCORES(ot_scores_8x2, 8, 2)
OT_SCORES(ot_scores_4x2, 4, 2)
OT_SCORES(ot_scores_2x2, 2, 2)
OT_SCORES(ot_scores_1x2, 1, 2)
OT_SCORES(ot_scores_12x1, 12, 1)
OT_SCORES(ot_scores_8x1, 8, 1)
OT_SCORES(ot_scores_4x1, 4, 1)
OT_SCORES(ot_scores_2x1, 2, 1)
OT_SCORES(ot_scores_1x1, 1, 1)
#undef OT_SCORES

/// Sᵀ for keys j0..<j1 and the NZ 16-lane registers from lane l0.
OT_AVX512 void ot_scores_range(const float *qt, long lanes, long l0, int nz, const float *k, long ks, long d, float alpha,
                               float *st, long j0, long j1) {
    long j = j0;
#define OT_TILE(NAME, N) for (; j + N <= j1; j += N) NAME(qt + l0, lanes, k + j * ks, ks, d, alpha, st + j * lanes + l0)
    if (nz == 3) {
        OT_TILE(ot_scores_8x3, 8);
        switch (j1 - j) {
        case 7: OT_TILE(ot_scores_7x3, 7); break;
        case 6: OT_TILE(ot_scores_6x3, 6); break;
        case 5: OT_TILE(ot_scores_5x3, 5); break;
        case 4: OT_TILE(ot_scores_4x3, 4); break;
        case 3: OT_TILE(ot_scores_3x3, 3); break;
        case 2: OT_TILE(ot_scores_2x3, 2); break;
        case 1: OT_TILE(ot_scores_1x3, 1); break;
        default: break;
        }
    } else if (nz == 2) {
        OT_TILE(ot_scores_12x2, 12);
        OT_TILE(ot_scores_8x2, 8);
        OT_TILE(ot_scores_4x2, 4);
        OT_TILE(ot_scores_2x2, 2);
        OT_TILE(ot_scores_1x2, 1);
    } else {
        OT_TILE(ot_scores_12x1, 12);
        OT_TILE(ot_scores_8x1, 8);
        OT_TILE(ot_scores_4x1, 4);
        OT_TILE(ot_scores_2x1, 2);
        OT_TILE(ot_scores_1x1, 1);
    }
#undef OT_TILE
}

/// out[t·ys + c] = inverse[t]·Σ_{j<w} p[j·lanes + t]·v[j·vs + c] for t < n (6 rows computed) and
/// c < 16·NZ (the last register's columns under `last`).
#define OT_VALUES(NAME, NZ)                                                                                            \
    OT_AVX512 void NAME(const float *p, long lanes, const float *v, long vs, long w, float *out, long ys, int n,         \
                        const float *inverse, __mmask16 last) {                                                        \
        __m512 acc[6][NZ];                                                                                             \
        OT_UNROLL for (int t = 0; t < 6; t++)                                                                                    \
            OT_UNROLL for (int z = 0; z < NZ; z++) acc[t][z] = _mm512_setzero_ps();                                              \
        const float *pp = p, *vp = v;                                                                                  \
        for (long j = 0; j < w; j++) {                                                                                 \
            __m512 x[NZ];                                                                                              \
            OT_UNROLL for (int z = 0; z < NZ - 1; z++) x[z] = _mm512_loadu_ps(vp + 16 * z);                                      \
            x[NZ - 1] = _mm512_maskz_loadu_ps(last, vp + 16 * (NZ - 1));                                               \
            OT_UNROLL for (int t = 0; t < 6; t++) {                                                                              \
                __m512 c = _mm512_set1_ps(pp[t]);                                                                      \
                OT_UNROLL for (int z = 0; z < NZ; z++) acc[t][z] = _mm512_fmadd_ps(x[z], c, acc[t][z]);                          \
            }                                                                                                          \
            pp += lanes;                                                                                               \
            vp += vs;                                                                                                  \
        }                                                                                                              \
        OT_UNROLL for (int t = 0; t < 6; t++) {                                                                              \
            if (t >= n) break;                                                                                         \
            const __m512 s = _mm512_set1_ps(inverse[t]);                                                               \
            OT_UNROLL for (int z = 0; z < NZ - 1; z++) _mm512_storeu_ps(out + t * ys + 16 * z, _mm512_mul_ps(acc[t][z], s));    \
            _mm512_mask_storeu_ps(out + t * ys + 16 * (NZ - 1), last, _mm512_mul_ps(acc[t][NZ - 1], s));               \
        }                                                                                                              \
    }
OT_VALUES(ot_values_6x4, 4)
OT_VALUES(ot_values_6x3, 3)
OT_VALUES(ot_values_6x2, 2)
OT_VALUES(ot_values_6x1, 1)
#undef OT_VALUES

/// r[j] = column j of the 16 rows r[0..<16] (a 16 × 16 transpose in registers).
OT_AVX512 void ot_transpose16(__m512 r[16]) {
    __m512 t[16];
    OT_UNROLL for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    OT_UNROLL for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 2])));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 2])));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * i + 1]), _mm512_castps_pd(t[4 * i + 3])));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * i + 1]), _mm512_castps_pd(t[4 * i + 3])));
    }
    OT_UNROLL for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    OT_UNROLL for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
}

/// The longest of lengths[r0 ..< min(r1, rows)] (0 if none).
static inline long ot_widest(const long *lengths, long rows, long r0, long r1) {
    long w = 0;
    for (long r = r0; r < r1 && r < rows; r++) w = lengths[r] > w ? lengths[r] : w;
    return w;
}

/// AttentionBlock.run in AVX-512: Y[r, :] = softmax_j(alpha·Q[r]·K[j] + mask[r, j]) · V[j] for
/// r < rows, j < lengths[r] (width = their maximum). Q, K, V, Y at row strides qs, ks, vs, ys; the
/// mask (NULL: none) of row r and key j at mask[r·mRow + j·mKey]. Scratch as AttentionBlock.Scratch
/// makes it: qt of d·lanes floats, st of keys·lanes + 8 (zeroed once), inverse of lanes + 8, with
/// lanes = rows rounded up to 16.
static inline OT_AVX512_TARGET __attribute__((noinline)) void ot_attention_block(const float *q, long qs, const float *k, long ks, const float *v, long vs, float *y, long ys,
                                  const float *mask, long mRow, long mKey, long rows, long d, long dv, float alpha,
                                  const long *lengths, long width, float *qt, float *st, float *inverse) {
    const long lanes = (rows + 15) & ~15L;
    // 1. Qᵀ, zero-padded lanes: 16 × 16 tiles transposed in registers (element by element, the
    //    copy took 8% of a 48 × 128 block's time).
    for (long r0 = 0; r0 < lanes; r0 += 16) {
        const long nr = rows - r0 < 16 ? rows - r0 : 16;
        for (long p0 = 0; p0 < d; p0 += 16) {
            const long np = d - p0 < 16 ? d - p0 : 16;
            const __mmask16 cols = (__mmask16)(np == 16 ? 0xFFFF : (1u << np) - 1);
            __m512 t[16];
            OT_UNROLL for (int i = 0; i < 16; i++)
                t[i] = i < nr ? _mm512_maskz_loadu_ps(cols, q + (r0 + i) * qs + p0) : _mm512_setzero_ps();
            ot_transpose16(t);
            OT_UNROLL for (int j = 0; j < 16; j++)
                if (j < np) _mm512_storeu_ps(qt + (p0 + j) * lanes + r0, t[j]);
        }
    }
    // 2. Sᵀ = alpha·K·Qᵀ: 48-lane groups up to the shortest of their 16-lane groups' widths, then
    //    each 16-lane group on to its own (as the Swift kernel computes them).
    for (long l0 = 0; l0 < lanes; l0 += 48) {
        int nz = (int)((lanes - l0) / 16 < 3 ? (lanes - l0) / 16 : 3);
        long w[3], shortest = width;
        for (int z = 0; z < nz; z++) {
            w[z] = ot_widest(lengths, rows, l0 + 16 * z, l0 + 16 * z + 16);
            shortest = w[z] < shortest ? w[z] : shortest;
        }
        ot_scores_range(qt, lanes, l0, nz, k, ks, d, alpha, st, 0, shortest);
        for (int z = 0; z < nz; z++)
            if (w[z] > shortest) ot_scores_range(qt, lanes, l0 + 16 * z, 1, k, ks, d, alpha, st, shortest, w[z]);
    }
    // 3. Mask, trim and softmax down the columns, 16 rows a register.
    const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
    for (long l0 = 0; l0 < rows; l0 += 16) {
        const long w = ot_widest(lengths, rows, l0, l0 + 16);
        int32_t lens[16];
        int trimmed = 0;
        for (int r = 0; r < 16; r++) {
            lens[r] = (int32_t)w;
            if (l0 + r < rows && lengths[l0 + r] < w) { lens[r] = (int32_t)lengths[l0 + r]; trimmed = 1; }
        }
        float *column = st + l0;
        if (mask) {
            if (mRow == 0) {
                for (long j = 0; j < w; j++) {
                    float *s = column + j * lanes;
                    _mm512_storeu_ps(s, _mm512_add_ps(_mm512_loadu_ps(s), _mm512_set1_ps(mask[j * mKey])));
                }
            } else {
                int valid = 0;
                for (int r = 0; r < 16; r++) if (l0 + r < rows) valid = r + 1;
                for (long j = 0; j < w; j++) {
                    float *s = column + j * lanes;
                    const float *m = mask + l0 * mRow + j * mKey;
                    float add[16] = {0};
                    for (int r = 0; r < valid; r++) add[r] = m[r * mRow];
                    _mm512_storeu_ps(s, _mm512_add_ps(_mm512_loadu_ps(s), _mm512_loadu_ps(add)));
                }
            }
        }
        if (trimmed) {
            const __m512i len = _mm512_loadu_si512(lens);
            for (long j = 0; j < w; j++) {
                float *s = column + j * lanes;
                __mmask16 past = _mm512_cmp_epi32_mask(_mm512_set1_epi32((int32_t)j), len, _MM_CMPINT_NLT);
                _mm512_storeu_ps(s, _mm512_mask_blend_ps(past, _mm512_loadu_ps(s), ninf));
            }
        }
        // Maximum, four chains (the Swift kernel's one chain is latency-bound): the same value
        // wherever the column holds no NaN, and a column with a NaN is NaN after the exponentials
        // either way. Then exponentials and sums.
        __m512 t0 = _mm512_loadu_ps(column), t1 = t0, t2 = t0, t3 = t0;
        long j4 = 1;
        for (; j4 + 4 <= w; j4 += 4) {
            t0 = _mm512_max_ps(t0, _mm512_loadu_ps(column + j4 * lanes));
            t1 = _mm512_max_ps(t1, _mm512_loadu_ps(column + (j4 + 1) * lanes));
            t2 = _mm512_max_ps(t2, _mm512_loadu_ps(column + (j4 + 2) * lanes));
            t3 = _mm512_max_ps(t3, _mm512_loadu_ps(column + (j4 + 3) * lanes));
        }
        for (; j4 < w; j4++) t0 = _mm512_max_ps(t0, _mm512_loadu_ps(column + j4 * lanes));
        const __m512 top = _mm512_max_ps(_mm512_max_ps(t0, t1), _mm512_max_ps(t2, t3));
        __m512 sum = _mm512_setzero_ps();
        for (long j = 0; j < w; j++) {
            float *s = column + j * lanes;
            __m512 e = ot_exp16(_mm512_sub_ps(_mm512_loadu_ps(s), top));
            _mm512_storeu_ps(s, e);
            sum = _mm512_add_ps(sum, e);
        }
        _mm512_storeu_ps(inverse + l0, _mm512_div_ps(_mm512_set1_ps(1.f), sum));
        // Columns past this group's longest row, which step 2 may not have written: 0.
        for (long j = w; j < width; j++) _mm512_storeu_ps(column + j * lanes, _mm512_setzero_ps());
    }
    // 4. Y = P·V, scaled by the inverse sums: 6 rows × 64 values a tile; an odd Dv's last values
    //    under a mask.
    for (long r0 = 0; r0 < rows; r0 += 6) {
        const long w = ot_widest(lengths, rows, r0, r0 + 6);
        const int n = (int)(rows - r0 < 6 ? rows - r0 : 6);
        const float *p = st + r0, *inv = inverse + r0;
        float *out = y + r0 * ys;
        long c = 0;
        for (; c + 64 <= dv; c += 64) ot_values_6x4(p, lanes, v + c, vs, w, out + c, ys, n, inv, (__mmask16)0xFFFF);
        const long left = dv - c;
        if (left > 0) {
            const __mmask16 last = (__mmask16)(left % 16 == 0 ? 0xFFFF : (1u << (left % 16)) - 1);
            const long regs = (left + 15) / 16;
            if (regs == 3) ot_values_6x3(p, lanes, v + c, vs, w, out + c, ys, n, inv, last);
            else if (regs == 2) ot_values_6x2(p, lanes, v + c, vs, w, out + c, ys, n, inv, last);
            else ot_values_6x1(p, lanes, v + c, vs, w, out + c, ys, n, inv, last);
        }
    }
}
#undef OT_AVX512
#undef OT_AVX512_TARGET
#undef OT_UNROLL
#endif
