/// Float32 layer norm forward and backward (LayerNormalization and LayerNormalizationGrad for
/// float inputs), in float like onnxruntime's CPU kernels, rows split across threads.
/// Statistics are two-pass (mean, then mean of squared deviations), which keeps rows with a
/// large common offset accurate where onnxruntime's E[x²] − E[x]² would cancel.

typealias FloatVec8 = SIMD8<Float>

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> FloatVec8 {
    UnsafeRawPointer(p).loadUnaligned(as: FloatVec8.self)
}

/// Σ p[0..<n] with eight partial sums (so the loop vectorises; float addition is not reassociated
/// by the compiler).
@inline(__always) func sumFloat(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = FloatVec8(), j = 0
    while j + 8 <= n { acc += load8(p + j); j += 8 }
    var s = acc.sum()
    while j < n { s += p[j]; j += 1 }
    return s
}

/// Σ (p[j] − c)² over 0..<n, eight partial sums.
@inline(__always) func squaredDeviationSum(_ p: UnsafePointer<Float>, _ n: Int, _ c: Float) -> Float {
    var acc = FloatVec8(), j = 0
    let cv = FloatVec8(repeating: c)
    while j + 8 <= n { let d = load8(p + j) - cv; acc += d * d; j += 8 }
    var s = acc.sum()
    while j < n { let d = p[j] - c; s += d * d; j += 1 }
    return s
}

// The row loops are functions of their own, called from the Parallel.forRange closures: LLVM
// vectorises loops over plain pointer arguments but not the same loops inside those closures.

/// layernorm_forward: x, y [rows, cols]; scale, bias [cols] (bias optional); mean, invStd [rows].
func layerNormForward(x: UnsafePointer<Float>, scale: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                      y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, invStd: UnsafeMutablePointer<Float>,
                      rows: Int, cols: Int, epsilon: Float) {
    guard rows > 0, cols > 0 else { return }
    Parallel.forRange(rows, minimumChunk: max(1, 8192 / cols)) { range in
        for r in range {
            (mean[r], invStd[r]) = layerNormRow(x + r * cols, scale, bias, y + r * cols, cols, epsilon)
        }
    }
}

/// One row of layernorm_forward; returns its mean and 1/std.
@inline(never)
func layerNormRow(_ px: UnsafePointer<Float>, _ scale: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                  _ py: UnsafeMutablePointer<Float>, _ cols: Int, _ epsilon: Float) -> (Float, Float) {
    let m = sumFloat(px, cols) / Float(cols)
    let v = squaredDeviationSum(px, cols, m) / Float(cols)
    let s = 1 / (v + epsilon).squareRoot()
    if let bias {
        for j in 0..<cols { py[j] = (px[j] - m) * s * scale[j] + bias[j] }
    } else {
        for j in 0..<cols { py[j] = (px[j] - m) * s * scale[j] }
    }
    return (m, s)
}

/// layernorm_backward: dy, x, dx [rows, cols]; scale, dScale, dBias [cols]; mean, invStd [rows].
/// Per row, with x̂ = (x − mean)·invStd and b = dy·scale:
///   dx = invStd·(b − mean(b) − x̂·mean(b·x̂));  dScale = Σ_rows dy·x̂, dBias = Σ_rows dy.
/// dx runs over row blocks, the column sums over column blocks (each column summed in row order,
/// so the result does not depend on the thread count).
func layerNormBackward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                       mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>,
                       dx: UnsafeMutablePointer<Float>, dScale: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>,
                       rows: Int, cols: Int) {
    guard cols > 0 else { return }
    Parallel.forRange(rows, minimumChunk: max(1, 4096 / cols)) { range in
        for r in range {
            layerNormGradRow(dy + r * cols, x + r * cols, scale, mean[r], invStd[r], dx + r * cols, cols)
        }
    }
    Parallel.forRange(cols, minimumChunk: 32) { range in
        layerNormColumnSums(dy, x, mean, invStd, dScale, dBias, rows: rows, cols: cols, columns: range)
    }
}

/// dx of one row of layernorm_backward.
@inline(never)
func layerNormGradRow(_ pg: UnsafePointer<Float>, _ px: UnsafePointer<Float>, _ scale: UnsafePointer<Float>, _ m: Float, _ s: Float,
                      _ po: UnsafeMutablePointer<Float>, _ cols: Int) {
    let mv = FloatVec8(repeating: m), sv = FloatVec8(repeating: s)
    var accB = FloatVec8(), accC = FloatVec8(), j = 0
    while j + 8 <= cols {
        let b = load8(pg + j) * load8(scale + j)
        accB += b
        accC += b * ((load8(px + j) - mv) * sv)
        j += 8
    }
    var sumB = accB.sum(), sumC = accC.sum()
    while j < cols {
        let b = pg[j] * scale[j]
        sumB += b
        sumC += b * ((px[j] - m) * s)
        j += 1
    }
    let meanB = sumB / Float(cols), meanC = sumC / Float(cols)
    for j in 0..<cols {
        let xhat = (px[j] - m) * s
        po[j] = s * (pg[j] * scale[j] - meanB - xhat * meanC)
    }
}

/// dScale[j] = Σ_r dy[r, j]·x̂[r, j] and dBias[j] = Σ_r dy[r, j] for j in `columns`, rows in order.
@inline(never)
func layerNormColumnSums(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ mean: UnsafePointer<Float>, _ invStd: UnsafePointer<Float>,
                         _ dScale: UnsafeMutablePointer<Float>, _ dBias: UnsafeMutablePointer<Float>,
                         rows: Int, cols: Int, columns: Range<Int>) {
    let j0 = columns.lowerBound, width = columns.count
    let ds = dScale + j0, db = dBias + j0
    for j in 0..<width { ds[j] = 0; db[j] = 0 }
    for r in 0..<rows {
        let pg = dy + r * cols + j0, px = x + r * cols + j0
        let m = mean[r], s = invStd[r]
        for j in 0..<width {
            ds[j] += pg[j] * ((px[j] - m) * s)
            db[j] += pg[j]
        }
    }
}
