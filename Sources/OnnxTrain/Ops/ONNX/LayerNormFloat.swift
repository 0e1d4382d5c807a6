/// Float32 layer norm forward and backward (LayerNormalization and LayerNormalizationGrad for
/// float inputs), in float like onnxruntime's CPU kernels, rows split across threads.
/// Statistics are two-pass (mean, then mean of squared deviations), which keeps rows with a
/// large common offset accurate where onnxruntime's E[x²] − E[x]² would cancel.

typealias FloatVec8 = SIMD8<Float>

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> FloatVec8 {
    UnsafeRawPointer(p).loadUnaligned(as: FloatVec8.self)
}

@inline(__always) func store8(_ v: FloatVec8, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: FloatVec8.self)
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

/// layernorm_forward: x, y [rows, cols]; scale, bias [cols] (bias optional); mean, invStd [rows].
func layerNormForward(x: UnsafePointer<Float>, scale: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                      y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>, invStd: UnsafeMutablePointer<Float>,
                      rows: Int, cols: Int, epsilon: Float) {
    guard rows > 0, cols > 0 else { return }
    Parallel.forRange(rows, minimumChunk: max(1, 8192 / cols)) { range in
        for r in range {
            let px = x + r * cols, py = y + r * cols
            let m = sumFloat(px, cols) / Float(cols)
            let v = squaredDeviationSum(px, cols, m) / Float(cols)
            let s = 1 / (v + epsilon).squareRoot()
            mean[r] = m
            invStd[r] = s
            if let bias {
                for j in 0..<cols { py[j] = (px[j] - m) * s * scale[j] + bias[j] }
            } else {
                for j in 0..<cols { py[j] = (px[j] - m) * s * scale[j] }
            }
        }
    }
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
            let pg = dy + r * cols, px = x + r * cols, po = dx + r * cols
            let m = mean[r], s = invStd[r]
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
    }
    Parallel.forRange(cols, minimumChunk: 32) { range in
        for j in range { dScale[j] = 0; dBias[j] = 0 }
        for r in 0..<rows {
            let pg = dy + r * cols, px = x + r * cols
            let m = mean[r], s = invStd[r]
            for j in range {
                dScale[j] += pg[j] * ((px[j] - m) * s)
                dBias[j] += pg[j]
            }
        }
    }
}
