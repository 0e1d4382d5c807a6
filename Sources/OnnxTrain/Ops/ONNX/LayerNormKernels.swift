/// Layer norm forward and backward (LayerNormalization and LayerNormalizationGrad), generic over
/// Float and Double, rows split across threads. Accumulator: T (float32 computes in float like
/// onnxruntime's CPU kernels; Sums.swift). Statistics are two-pass (mean, then mean of squared
/// deviations), which keeps rows with a large common offset accurate where onnxruntime's
/// E[x²] − E[x]² would cancel.

// The row loops are functions of their own, called from the Parallel.forRange closures: LLVM
// vectorises loops over plain pointer arguments but not the same loops inside those closures.

/// layernorm_forward: x, y [rows, cols]; scale, bias [cols] (bias optional); mean, invStd [rows].
func layerNormForward<T: FloatElement>(x: UnsafePointer<T>, scale: UnsafePointer<T>, bias: UnsafePointer<T>?,
                      y: UnsafeMutablePointer<T>, mean: UnsafeMutablePointer<T>, invStd: UnsafeMutablePointer<T>,
                      rows: Int, cols: Int, epsilon: T) {
    guard rows > 0, cols > 0 else { return }
    Parallel.forRange(rows, minimumChunk: max(1, 8192 / cols)) { range in
        for r in range {
            (mean[r], invStd[r]) = layerNormRow(x + r * cols, scale, bias, y + r * cols, cols, epsilon)
        }
    }
}

/// One row of layernorm_forward; returns its mean and 1/std.
@inline(never)
func layerNormRow<T: FloatElement>(_ px: UnsafePointer<T>, _ scale: UnsafePointer<T>, _ bias: UnsafePointer<T>?,
                  _ py: UnsafeMutablePointer<T>, _ cols: Int, _ epsilon: T) -> (T, T) {
    let m = rowSum(px, cols) / T(cols)
    let v = squaredDeviationSum(px, cols, m) / T(cols)
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
func layerNormBackward<T: FloatElement>(dy: UnsafePointer<T>, x: UnsafePointer<T>, scale: UnsafePointer<T>,
                       mean: UnsafePointer<T>, invStd: UnsafePointer<T>,
                       dx: UnsafeMutablePointer<T>, dScale: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>,
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
func layerNormGradRow<T: FloatElement>(_ pg: UnsafePointer<T>, _ px: UnsafePointer<T>, _ scale: UnsafePointer<T>, _ m: T, _ s: T,
                      _ po: UnsafeMutablePointer<T>, _ cols: Int) {
    let mv = SIMD8<T>(repeating: m), sv = SIMD8<T>(repeating: s)
    var accB = SIMD8<T>(), accC = SIMD8<T>(), j = 0
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
    let meanB = sumB / T(cols), meanC = sumC / T(cols)
    for j in 0..<cols {
        let xhat = (px[j] - m) * s
        po[j] = s * (pg[j] * scale[j] - meanB - xhat * meanC)
    }
}

/// dScale[j] = Σ_r dy[r, j]·x̂[r, j] and dBias[j] = Σ_r dy[r, j] for j in `columns`, rows in order.
@inline(never)
func layerNormColumnSums<T: FloatElement>(_ dy: UnsafePointer<T>, _ x: UnsafePointer<T>, _ mean: UnsafePointer<T>, _ invStd: UnsafePointer<T>,
                         _ dScale: UnsafeMutablePointer<T>, _ dBias: UnsafeMutablePointer<T>,
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
