/// Float32 transcendental functions eight lanes at a time (SIMD8<Float>: one AVX register on
/// x86-64-v3), for the element loops of the activations, Exp, Erf and softmax. glibc's tanhf,
/// expf and erff are calls per element (GPT-2 tiny inference spent 29% of its time in tanhf and
/// the expm1f it calls), which keeps every loop around them scalar.
///
/// Each function is straight-line code on the eight lanes (both sides of a range split are
/// computed and one is selected), so a loop over a tensor is one vector call per eight
/// elements. A scalar (or the last n % 8 elements of a loop) goes through the same vector code
/// in lane 0 (`apply` pads the tail), so every element of a tensor gets the same value whatever
/// its position. float64 keeps libm.
///
/// Maximum errors in ulps of the exact result, measured against float64 libm over every float
/// of the functions' varying ranges (x86-64-v3 build, with fused multiply-adds; VectorMathTests
/// sweeps every 127th float and asserts just above these):
///   exp      0.94  over [-104, 89] (subnormal results: in units of the smallest subnormal)
///   tanh     1.50  over [-10, 10] (1 beyond)
///   erf      1.10  over [-4.5, 4.5] (±1 beyond)
///   sigmoid  2.40  over [-105, 0], 1.50 over [0, 20]
/// Special values: NaN in gives NaN out; exp(+inf) = +inf, exp(-inf) = 0, exp(x > 88.72) = +inf,
/// results below the smallest subnormal are 0; tanh(±inf) = ±1, erf(±inf) = ±1, sigmoid(-inf)
/// = 0, sigmoid(+inf) = 1; tanh and erf keep the sign of -0.
///
/// Where the polynomials come from:
/// - exp: x = n·ln2 + r with n = round(x/ln2) (the 1.5·2^23 rounding trick) and |r| <= ln2/2,
///   ln2 split in two parts (the first exact times any |n| < 256); e^r by its degree-7 Taylor
///   polynomial (truncation < 5.2e-9 relative); 2^n as two exponent-field powers 2^⌊n/2⌋·2^⌈n/2⌉
///   so both stay normal from n = -150 (subnormal results round once) to 128 (overflow to inf).
/// - tanh: |x| < 0.625: x + x·z·P(z), z = x², with the degree-4 P of Cephes' tanhf (S. Moshier,
///   relative error 1.3e-7 in its documentation); above, (1 − e)/(1 + e) with e = e^(−2|x|),
///   then the sign of x.
/// - erf: |x| < 0.921875: x + x·P(x²), P of degree 5; above, 1 − e^(−(a + a·Q(a))) with a = |x|
///   capped at 3.925 (erf rounds to 1 in float beyond), Q of degree 6. P and Q are this file's
///   own fits (iteratively reweighted least squares on Chebyshev nodes in float64 against
///   scipy's erf/erfc, error weighted as relative to erf; coefficients rounded to float32:
///   approximation errors 2.3e-8 relative and 0.05 ulp).
/// - sigmoid: 1 / (1 + e^(−x)), which needs no sign split because exp saturates to inf and 0.
enum VectorMath {
    typealias Vector = SIMD8<Float>
    typealias Bits = SIMD8<UInt32>
    static let width = 8

    /// a·b + c, fused where the target has FMA (one rounding: more accurate and faster); the
    /// portable build multiplies and adds (LLVM would call fmaf per lane otherwise).
    @inline(__always)
    static func fma(_ a: Vector, _ b: Vector, _ c: Vector) -> Vector {
        #if arch(arm64) || ONNX_TRAIN_X86_64_V3
        return c.addingProduct(a, b)
        #else
        return a * b + c
        #endif
    }

    @inline(__always) static func splat(_ v: Float) -> Vector { Vector(repeating: v) }
    @inline(__always) static func bits(_ v: Vector) -> Bits { unsafeBitCast(v, to: Bits.self) }
    @inline(__always) static func float(_ b: Bits) -> Vector { unsafeBitCast(b, to: Vector.self) }

    /// |x| lanes (sign bit cleared).
    @inline(__always) static func abs(_ x: Vector) -> Vector { float(bits(x) & Bits(repeating: 0x7FFF_FFFF)) }
    /// The magnitude of `magnitude` with the sign of `sign`.
    @inline(__always) static func copySign(_ magnitude: Vector, _ sign: Vector) -> Vector {
        float((bits(magnitude) & Bits(repeating: 0x7FFF_FFFF)) | (bits(sign) & Bits(repeating: 0x8000_0000)))
    }

    /// e^x, within 0.94 ulp.
    @inline(__always)
    static func exp(_ x: Vector) -> Vector {
        // Clamp to [-104, 88.8] (NaN stays: comparisons with NaN are false): e^-104 rounds to 0
        // and e^88.8 overflows, so the clamped lanes still give 0 and inf.
        var xc = x.replacing(with: splat(-104), where: x .< splat(-104))
        xc = xc.replacing(with: splat(88.8), where: xc .> splat(88.8))
        let (p, n) = expReduced(xc)
        // n split into two halves for the scale, so both powers stay normal.
        let n1 = n &>> 1
        let n2 = n &- n1
        let bias = SIMD8<Int32>(repeating: 127)
        let s1 = unsafeBitCast((n1 &+ bias) &<< 23, to: Vector.self)
        let s2 = unsafeBitCast((n2 &+ bias) &<< 23, to: Vector.self)
        return p * s1 * s2
    }

    /// e^x for lanes known to lie in [-87, 88] (or NaN), where e^x is a normal float: `exp` without
    /// the clamps and with 2^n as one exponent-field power. Bit for bit `exp` there (the same
    /// polynomial, and scaling by 2^⌊n/2⌋·2^⌈n/2⌉ or by 2^n is exact while the result stays normal),
    /// with fewer instructions; erf and tanh call it with their arguments in range.
    @inline(__always)
    static func expNormal(_ x: Vector) -> Vector {
        let (p, n) = expReduced(x)
        return p * unsafeBitCast((n &+ SIMD8<Int32>(repeating: 127)) &<< 23, to: Vector.self)
    }

    /// exp's range reduction and polynomial: x = n·ln2 + r with n = round(x/ln2) (the 1.5·2^23
    /// rounding trick) and |r| <= ln2/2; returns e^r and n (from the rounded value's low mantissa
    /// bits, two's complement).
    @inline(__always)
    static func expReduced(_ x: Vector) -> (Vector, SIMD8<Int32>) {
        let magic = splat(12_582_912)                           // 1.5·2^23
        let t = fma(x, splat(1.442_695_04), magic)              // n + magic, n = round(x/ln2)
        let n = t - magic
        var r = fma(n, splat(-0.693_145_751_953_125), x)        // exact: the high part has 15 bits
        r = fma(n, splat(-1.428_606_765_330_187e-6), r)
        var p = splat(1.0 / 5040)
        p = fma(p, r, splat(1.0 / 720))
        p = fma(p, r, splat(1.0 / 120))
        p = fma(p, r, splat(1.0 / 24))
        p = fma(p, r, splat(1.0 / 6))
        p = fma(p, r, splat(0.5))
        p = fma(p, r, splat(1))
        p = fma(p, r, splat(1))
        return (p, unsafeBitCast(bits(t) &- bits(magic), to: SIMD8<Int32>.self))
    }

    /// tanh(x), within 1.5 ulps.
    @inline(__always)
    static func tanh(_ x: Vector) -> Vector {
        let a = abs(x)
        // Small: a + a·z·P(z) (Cephes tanhf's P).
        let z = a * a
        var p = splat(-5.704_988_727_45e-3)
        p = fma(p, z, splat(2.063_908_879_54e-2))
        p = fma(p, z, splat(-5.373_971_555_31e-2))
        p = fma(p, z, splat(1.333_144_220_36e-1))
        p = fma(p, z, splat(-3.333_328_194_22e-1))
        let small = fma(a * z, p, a)
        // Large: (1 − e)/(1 + e), e = e^(−2a) (NaN for NaN), with −2a held at −87
        // (e = 1.6e-38; beyond a = 9, 1 ± e rounds to 1 anyway, so the result is the same).
        let minus2a = a * splat(-2)
        let e = expNormal(minus2a.replacing(with: splat(-87), where: minus2a .< splat(-87)))
        let large = (splat(1) - e) / (splat(1) + e)
        let r = large.replacing(with: small, where: a .< splat(0.625))
        return copySign(r, x)
    }

    /// erf(x), within 1.1 ulps.
    @inline(__always)
    static func erf(_ x: Vector) -> Vector {
        let a0 = abs(x)
        let a = a0.replacing(with: splat(3.925), where: a0 .> splat(3.925))   // NaN stays
        let s = a * a
        var p = splat(-5.991_156_212_985_516e-4)
        p = fma(p, s, splat(4.993_251_524_865_627e-3))
        p = fma(p, s, splat(-2.676_667_645_573_616e-2))
        p = fma(p, s, splat(1.128_181_815_147_399_9e-1))
        p = fma(p, s, splat(-3.761_249_482_631_683_3e-1))
        p = fma(p, s, splat(1.283_791_512_250_900_3e-1))
        let small = fma(a, p, a)
        var q = splat(1.159_199_928_224_552_4e-5)
        q = fma(q, a, splat(-3.263_529_797_550_291e-4))
        q = fma(q, a, splat(3.656_622_255_221_009_3e-3))
        q = fma(q, a, splat(-2.379_141_561_686_992_6e-2))
        q = fma(q, a, splat(1.062_702_238_559_722_9e-1))
        q = fma(q, a, splat(6.351_315_975_189_209e-1))
        q = fma(q, a, splat(1.286_532_282_829_284_7e-1))
        // a + a·Q(a) lies in [0.9, 16] for a in [0.92, 3.925] (the small lanes' values are
        // discarded), so e^−(…) is normal: expNormal.
        let large = splat(1) - expNormal(-fma(a, q, a))
        let r = large.replacing(with: small, where: a .<= splat(0.921875))
        return copySign(r, x)
    }

    /// The logistic function, within 2.4 ulps: 1/(1 + e) for x >= 0 and e/(1 + e) below, with
    /// e = e^(−|x|) <= 1, so nothing overflows and tiny results keep their relative accuracy
    /// (1/(1 + e^(−x)) alone gives 0 below x = −88.7, where the result is still 3e-39).
    @inline(__always)
    static func sigmoid(_ x: Vector) -> Vector {
        let e = exp(-abs(x))
        let numerator = splat(1).replacing(with: e, where: x .< splat(0))
        return numerator / (splat(1) + e)
    }

    // Scalars through lane 0 of the same code, so a scalar call gives what a loop gives.
    @inline(__always) static func exp(_ x: Float) -> Float { exp(splat(x))[0] }
    @inline(__always) static func tanh(_ x: Float) -> Float { tanh(splat(x))[0] }
    @inline(__always) static func erf(_ x: Float) -> Float { erf(splat(x))[0] }
    @inline(__always) static func sigmoid(_ x: Float) -> Float { sigmoid(splat(x))[0] }

    /// out[i] = step(a[i], b[i], c[i]) for i in 0..<n, eight elements per step; an input given as
    /// nil reads as zeros (the step ignores it). The last n % 8 elements go through `step` padded
    /// with zeros: lanes are independent, so every element gets the value a full vector gives it.
    /// `out` may be one of the inputs (each step loads its eight inputs before it stores).
    ///
    /// The step is a `VectorStep` struct, not a closure: LLVM kept a closure called twice (the
    /// loop and the tail) out of line for the heavy functions (erf, GELU), a call per eight
    /// elements that broadcast the polynomial's constants each time (Erf 19% and a ViT step's
    /// GELU 5.9% slower). A struct's always-inlined method is inlined into both places.
    @inline(__always)
    static func apply<S: VectorStep>(_ step: S, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>?, _ c: UnsafePointer<Float>?,
                                     _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        @inline(__always) func load(_ p: UnsafePointer<Float>?, _ i: Int) -> Vector {
            guard let p else { return Vector() }
            return UnsafeRawPointer(p + i).loadUnaligned(as: Vector.self)
        }
        var i = 0
        while i + width <= n {
            UnsafeMutableRawPointer(out + i).storeBytes(of: step(load(a, i), load(b, i), load(c, i)), as: Vector.self)
            i += width
        }
        guard i < n else { return }
        var u = Vector(), v = Vector(), w = Vector()
        for j in 0..<(n - i) {
            u[j] = a[i + j]
            if let b { v[j] = b[i + j] }
            if let c { w[j] = c[i + j] }
        }
        let r = step(u, v, w)
        for j in 0..<(n - i) { out[i + j] = r[j] }
    }
}

/// One step of `VectorMath.apply`: eight results from eight lanes of up to three inputs (a unary
/// function reads only the first). Conformers mark `callAsFunction` `@inline(__always)`.
protocol VectorStep {
    func callAsFunction(_ a: VectorMath.Vector, _ b: VectorMath.Vector, _ c: VectorMath.Vector) -> VectorMath.Vector
}

