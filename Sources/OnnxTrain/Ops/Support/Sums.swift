/// The reductions of the hot float kernels (layer norm, batch norm and group norm statistics,
/// softmax grad, conv grad biases), generic over Float and Double.
///
/// Accumulator: T, in sixteen partial sums (two eight-lane vectors), added once at the end: the
/// loops vectorise (the compiler does not reassociate float additions by itself), and float32
/// sums match onnxruntime's float kernels to rounding. The tail runs scalar.

/// Eight elements of `p` as one vector (unaligned load).
@inline(__always)
func load8<T: FloatElement>(_ p: UnsafePointer<T>) -> SIMD8<T> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<T>.self)
}

/// Σ p[0..<n].
@inline(__always)
func rowSum<T: FloatElement>(_ p: UnsafePointer<T>, _ n: Int) -> T {
    var a0 = SIMD8<T>(), a1 = SIMD8<T>(), i = 0
    while i + 16 <= n { a0 += load8(p + i); a1 += load8(p + i + 8); i += 16 }
    var tail = T.zero
    while i < n { tail += p[i]; i += 1 }
    return (a0 + a1).sum() + tail
}

/// Σ a[i]·b[i] over 0..<n.
@inline(__always)
func dotSum<T: FloatElement>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ n: Int) -> T {
    var a0 = SIMD8<T>(), a1 = SIMD8<T>(), i = 0
    while i + 16 <= n { a0 += load8(a + i) * load8(b + i); a1 += load8(a + i + 8) * load8(b + i + 8); i += 16 }
    var tail = T.zero
    while i < n { tail += a[i] * b[i]; i += 1 }
    return (a0 + a1).sum() + tail
}

/// Σ (p[i] − mu)² over 0..<n (the second pass of a two-pass variance).
@inline(__always)
func squaredDeviationSum<T: FloatElement>(_ p: UnsafePointer<T>, _ n: Int, _ mu: T) -> T {
    let mv = SIMD8<T>(repeating: mu)
    var a0 = SIMD8<T>(), a1 = SIMD8<T>(), i = 0
    while i + 16 <= n {
        let d0 = load8(p + i) - mv, d1 = load8(p + i + 8) - mv
        a0 += d0 * d0; a1 += d1 * d1
        i += 16
    }
    var tail = T.zero
    while i < n { let d = p[i] - mu; tail += d * d; i += 1 }
    return (a0 + a1).sum() + tail
}

/// (Σ g[i], Σ g[i]·(x[i] − mu)) over 0..<n (batch norm's backward sums).
@inline(__always)
func sumAndCrossDeviation<T: FloatElement>(_ g: UnsafePointer<T>, _ x: UnsafePointer<T>, _ n: Int, _ mu: T) -> (T, T) {
    let mv = SIMD8<T>(repeating: mu)
    var s0 = SIMD8<T>(), s1 = SIMD8<T>(), c0 = SIMD8<T>(), c1 = SIMD8<T>(), i = 0
    while i + 16 <= n {
        let g0 = load8(g + i), g1 = load8(g + i + 8)
        s0 += g0; s1 += g1
        c0 += g0 * (load8(x + i) - mv); c1 += g1 * (load8(x + i + 8) - mv)
        i += 16
    }
    var ts = T.zero, tc = T.zero
    while i < n { ts += g[i]; tc += g[i] * (x[i] - mu); i += 1 }
    return ((s0 + s1).sum() + ts, (c0 + c1).sum() + tc)
}

/// Mean and biased variance of `rows` rows of `length` values, row k at p + k·stride, in two
/// passes (the mean, then the squared deviations from it). Accumulator: each row in T (the sums
/// above), the rows' sums in Double. (0, 0) when there are no values.
@inline(__always)
func meanVariance<T: FloatElement>(_ p: UnsafePointer<T>, rows: Int, stride: Int, length: Int) -> (mean: Double, variance: Double) {
    let count = Double(rows * length)
    guard count > 0 else { return (0, 0) }
    var sum = 0.0
    for k in 0..<rows { sum += rowSum(p + k * stride, length).doubleValue }
    let mean = sum / count, mu = T(fromDouble: mean)
    var squares = 0.0
    for k in 0..<rows { squares += squaredDeviationSum(p + k * stride, length, mu).doubleValue }
    return (mean, squares / count)
}

/// Σ x² over a float32/float64 tensor, accumulated in Double (gradient-norm clipping).
func sumOfSquares(_ t: Tensor) throws -> Double {
    try dispatch(t.dtype, SumOfSquares(tensor: t))
}

private struct SumOfSquares: ElementOperation {
    let tensor: Tensor
    func float<T: FloatElement>(_ type: T.Type) throws -> Double {
        try tensor.withUnsafeBufferPointer(as: T.self) { $0.reduce(0) { $0 + $1.doubleValue * $1.doubleValue } }
    }
}
