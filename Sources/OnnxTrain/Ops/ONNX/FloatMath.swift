/// Float32 exp and erf (1-ulp and rational forms) as branch-free straight-line code, so loops over them vectorise
/// (glibc's expf/erff are calls per element, which keeps those loops scalar).
/// Float's `FloatElement.erf` and `fastExp` (ElementTypes.swift), and the float32 paths of
/// Softmax and SoftmaxGrad; float64 keeps libm.

enum FloatMath {
    /// e^x for x <= 88 (the callers' arguments are <= 0: shifted logits, −x²/2, −erf tails).
    /// Cody–Waite reduction x = n·ln2 + f with |f| <= ln2/2 and the degree-7 Taylor polynomial
    /// of e^f (truncation error < 5e-9 relative, so the result is within ~1 ulp of e^x).
    /// Below −87.3, where e^x would be subnormal, the result is 0 (also for −inf); NaN stays NaN.
    @inline(__always)
    static func exp(_ x: Float) -> Float {
        let xc = Swift.max(Swift.min(x, 88), -87.3)      // NaN passes both (comparisons are false)
        let magic: Float = 12_582_912                   // 1.5·2^23: adding it rounds to an integer
        let t = xc * 1.442_695_04 + magic               // n + magic, n = round(x / ln2)
        let n = t - magic
        var f = n * -0.693_145_751_953_125 + xc         // ln2 split in a high part exact in float …
        f = n * -1.428_606_765_330_187e-6 + f           // … and the rest
        var p: Float = 1.0 / 5040
        p = p * f + 1.0 / 720
        p = p * f + 1.0 / 120
        p = p * f + 1.0 / 24
        p = p * f + 1.0 / 6
        p = p * f + 0.5
        p = p * f + 1
        p = p * f + 1
        // 2^n from its exponent bits: the low mantissa bits of t hold n (two's complement).
        let scale = Float(bitPattern: (t.bitPattern &- magic.bitPattern &+ 127) &<< 23)
        return x < -87.3 ? 0 : p * scale
    }

    /// erf(x) within 1 ulp: onnxruntime's MLAS algorithm (N. Juffa's faithfully rounded erff).
    /// |x| <= 0.921875: x + x·P(x²); above: 1 − e^(−(|x| + |x|·Q(|x|))) with |x| capped at 3.925,
    /// where erf is 1 in float. Both branches are computed and one selected, so loops vectorise.
    /// Checked against libm erf over a dense grid in FloatMathTests.
    @inline(__always)
    static func erf(_ x: Float) -> Float {
        let a = Swift.min(Swift.abs(x), 3.925)          // NaN stays NaN
        let s = a * a
        var small: Float = -5.991_049_69e-4
        small = small * s + 4.993_395_88e-3
        small = small * s - 2.676_673_42e-2
        small = small * s + 1.128_180_25e-1
        small = small * s - 3.761_248_59e-1
        small = small * s + 1.283_791_51e-1
        small = small * a + a
        var big: Float = 1.729_489_30e-5
        big = big * a - 3.832_086_80e-4
        big = big * a + 3.883_934_35e-3
        big = big * a - 2.425_456_05e-2
        big = big * a + 1.067_778_47e-1
        big = big * a + 6.348_466_87e-1
        big = big * a + 1.287_175_12e-1
        big = big * a + a
        let r = a > 0.921875 ? 1 - exp(-big) : small
        return Float(bitPattern: r.bitPattern | (x.bitPattern & 0x8000_0000))  // erf is odd
    }

    /// erf(x) as one rational function (Eigen's fast float erf, which onnxruntime's GeluGrad uses):
    /// odd degree-13 over even degree-8 polynomial on x clamped to [−4, 4]; absolute error below
    /// 5e-7 (a few ulps of 1), about 3x cheaper than `erf` (no exp, no second branch). Used where
    /// erf only enters as Φ(x) = ½(1 + erf(x/√2)): `FloatElement.phi`.
    @inline(__always)
    static func erfRational(_ v: Float) -> Float {
        let x = Swift.max(Swift.min(v, 4), -4)         // NaN stays NaN
        let x2 = x * x
        var p: Float = -2.726_142_258_013_06e-10
        p = p * x2 + 2.770_681_424_959_02e-08
        p = p * x2 - 2.101_024_020_825_08e-06
        p = p * x2 - 5.692_506_394_623_46e-05
        p = p * x2 - 7.349_906_303_268_55e-04
        p = p * x2 - 2.954_599_808_540_25e-03
        p = p * x2 - 1.609_603_332_624_15e-02
        var q: Float = -1.456_607_184_649_96e-05
        q = q * x2 - 2.133_740_552_789_05e-04
        q = q * x2 - 1.682_826_974_382_03e-03
        q = q * x2 - 7.373_329_167_204_68e-03
        q = q * x2 - 1.426_473_905_141_89e-02
        return x * p / q
    }
}
