/// Convolution kernels beside the per-image im2col + GEMM of `convolution` and ConvGrad: several
/// images in one GEMM where each image's product is too narrow, and direct depthwise loops.

/// How many images share one GEMM for a convolution with `rows` = C/G·K column rows and
/// `positions` = P output positions per image.
///
/// A product per image is [M/G, C/G·K] · [C/G·K, P]: for deep layers on small images (P of 1 to
/// 64, e.g. ResNet's last stages at 32×32) that is a matrix-vector-like product that reads the
/// whole weight per image. Side by side, the images' columns make one product of ~1024 columns
/// that reads the weight once. Up to 4M column elements (16 MB of float32), so big images keep
/// the per-image path (which spreads images over the threads and needs no gather).
func convImageBlock(images n: Int, rows: Int, positions P: Int) -> Int {
    guard n > 1, P > 0, P < 256 else { return 1 }
    let wanted = (1024 + P - 1) / P
    let fits = max(1, (1 << 22) / max(rows * P, 1))
    return min(n, wanted, fits)
}

/// How many tiles of output rows each image of a convolution is cut into (`convolution`), for
/// `rows` = C/G·K column rows and output rows of `width` positions (every output axis but the
/// last makes the rows).
///
/// A tile's columns take about `convTileElements` floats, so the im2col buffer a thread writes is
/// still in its cache when the GEMM reads it, and no image's unfolding (115 MB for VGG's second
/// layer at 224×224) is ever materialised whole. But a tile keeps at least `convTileMinWidth`
/// positions where the image has them: every GEMM call packs the whole weight again (OpenBLAS
/// copies it once per call), and at 56 columns that copy costs as much as a third of the product
/// of a 512×4608 weight (VGG's deep layers). With fewer images than threads, the tiles come in a
/// multiple of the thread count so every thread gets an equal share of one image, at least 64
/// positions each (smaller images split the GEMM's rows instead, in BLAS.gemm). A 1×1
/// unit-stride convolution (`direct`) needs no buffer: it is cut only to share the threads.
func convTiles(images n: Int, rows: Int, outerRows: Int, width: Int, direct: Bool) -> Int {
    let threads = Parallel.threadCount, positions = outerRows * width
    guard outerRows > 1, positions > 0 else { return 1 }
    var tiles = direct ? 1 : min(outerRows, (rows * positions + convTileElements - 1) / convTileElements)
    tiles = max(1, min(tiles, positions / convTileMinWidth))
    if n < threads {
        tiles = min(threads * ((tiles + threads - 1) / threads), outerRows, positions / 64)
        tiles -= tiles % threads
    }
    return max(tiles, 1)
}

/// The im2col elements of one tile (see `convTiles`): 256K floats, 1 MB. Tests lower it and
/// `convTileMinWidth` to cut small images into many tiles (the results do not depend on them:
/// each output element is the same dot product whatever the tile).
nonisolated(unsafe) var convTileElements = 1 << 18

/// The fewest output positions of a tile where the image has them (see `convTiles`).
nonisolated(unsafe) var convTileMinWidth = 256

/// Σ over images and positions of dY [N, M, P] per channel, in Double (rows summed in T), for dB.
func channelSums<T: FloatElement>(_ dy: UnsafePointer<T>, images n: Int, channels m: Int, positions P: Int) -> [Double] {
    var sums = [Double](repeating: 0, count: m)
    sums.withUnsafeMutableBufferPointer { s in
        guard let out = s.baseAddress else { return }
        Parallel.forRange(m, minimumChunk: max(1, 16_384 / max(n * P, 1))) { channels in
            for j in channels {
                var sum = 0.0
                for b in 0..<n { sum += rowSum(dy + (b * m + j) * P, P).doubleValue }
                out[j] = sum
            }
        }
    }
    return sums
}

// MARK: - Several images per GEMM

/// im2col of `images` images (`imageStride` apart, `channels` channels each) side by side:
/// col [channels·K, images·P], image j in columns j·P..<(j+1)·P; images spread over the threads.
func im2colSideBySide<T: TensorElement>(_ x: UnsafePointer<T>, images: Int, imageStride: Int, channels: Int, _ g: ConvGeometry,
                                        _ col: UnsafeMutablePointer<T>, taps: [ConvTapRows]) {
    let P = g.outputSize
    Parallel.forRange(images) { range in
        for j in range { im2col(x + j * imageStride, channels: channels, g, col + j * P, ld: images * P, taps: taps) }
    }
}

/// Forward convolution with `block` images per GEMM (see `convImageBlock`).
///
/// X [N, C, in...], W [M, C/G, k...], bias [M]? -> Y [N, M, out...]. Per block and group:
/// colB [C/G·K, B·P] holds the images' columns side by side, yB [M/G, B·P] = W_g · colB, then
/// yB is scattered into Y (plus bias).
func convolutionBlocked<T: FloatElement>(_ X: UnsafePointer<T>, _ W: UnsafePointer<T>, bias: UnsafePointer<T>?, _ Y: UnsafeMutablePointer<T>,
                                         images n: Int, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry, block: Int) {
    let cg = c / group, mg = m / group, K = g.kernelSize, P = g.outputSize, I = g.inputSize, rows = cg * K
    let taps = ConvTapRows.all(g)
    let col = UnsafeMutablePointer<T>.allocate(capacity: rows * block * P)
    let yB = UnsafeMutablePointer<T>.allocate(capacity: mg * block * P)
    defer { col.deallocate(); yB.deallocate() }
    for start in stride(from: 0, to: n, by: block) {
        let bc = min(block, n - start), ld = bc * P
        for gi in 0..<group {
            im2colSideBySide(X + (start * c + gi * cg) * I, images: bc, imageStride: c * I, channels: cg, g, col, taps: taps)
            // yB [mg, B·P] = W_g [mg, rows] · colB [rows, B·P]
            BLAS.gemm(transA: false, transB: false, m: mg, n: ld, k: rows, alpha: T(1), a: W + gi * mg * rows, lda: rows,
                      b: col, ldb: ld, beta: T(0), c: yB, ldc: ld)
            Parallel.forRange(bc) { images in
                for j in images {
                    for o in 0..<mg {
                        let dst = Y + ((start + j) * m + gi * mg + o) * P, src = yB + o * ld + j * P
                        if let bias {
                            let b = bias[gi * mg + o]
                            for p in 0..<P { dst[p] = src[p] + b }
                        } else {
                            dst.update(from: src, count: P)
                        }
                    }
                }
            }
        }
    }
}

/// ConvGrad with `block` images per GEMM (see `convImageBlock`); dX and dW as requested (dW
/// written straight into its [M, C/G·K] layout, so no per-thread partials).
///
/// dY [N, M, P], X [N, C, I], W [M, C/G·K] -> dX [N, C, I]?, dW [M, C/G·K]?. Per block and group:
/// dyB [M/G, B·P] gathers the images' gradients side by side, colB [C/G·K, B·P] their columns;
///   dW_g (+)= dyB · colBᵀ,   colB = W_gᵀ · dyB then col2im per image into dX.
func convolutionGradBlocked<T: FloatElement>(_ DY: UnsafePointer<T>, _ X: UnsafePointer<T>, _ W: UnsafePointer<T>,
                                             dx: UnsafeMutablePointer<T>?, dw: UnsafeMutablePointer<T>?,
                                             images n: Int, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry, block: Int) {
    let cg = c / group, mg = m / group, K = g.kernelSize, P = g.outputSize, I = g.inputSize, rows = cg * K
    let taps = ConvTapRows.all(g)
    let col = UnsafeMutablePointer<T>.allocate(capacity: rows * block * P)
    let dyB = UnsafeMutablePointer<T>.allocate(capacity: mg * block * P)
    defer { col.deallocate(); dyB.deallocate() }
    for start in stride(from: 0, to: n, by: block) {
        let bc = min(block, n - start), ld = bc * P
        for gi in 0..<group {
            Parallel.forRange(bc) { images in
                for j in images {
                    for o in 0..<mg { (dyB + o * ld + j * P).update(from: DY + ((start + j) * m + gi * mg + o) * P, count: P) }
                }
            }
            if let dw {
                im2colSideBySide(X + (start * c + gi * cg) * I, images: bc, imageStride: c * I, channels: cg, g, col, taps: taps)
                // dW_g [mg, rows] (+)= dyB [mg, B·P] · colBᵀ [B·P, rows]
                BLAS.gemm(transA: false, transB: true, m: mg, n: rows, k: ld, alpha: T(1), a: dyB, lda: ld, b: col, ldb: ld,
                          beta: start == 0 ? T(0) : T(1), c: dw + gi * mg * rows, ldc: rows)
            }
            if let dx {
                // colB [rows, B·P] = W_gᵀ [rows, mg] · dyB [mg, B·P]
                BLAS.gemm(transA: true, transB: false, m: rows, n: ld, k: mg, alpha: T(1), a: W + gi * mg * rows, lda: rows,
                          b: dyB, ldb: ld, beta: T(0), c: col, ldc: ld)
                Parallel.forRange(bc) { images in
                    for j in images {
                        let image = dx + ((start + j) * c + gi * cg) * I
                        image.update(repeating: T.zero, count: cg * I)
                        col2im(col + j * P, channels: cg, g, image, ld: ld, taps: taps)
                    }
                }
            }
        }
    }
}

// MARK: - Depthwise

/// Direct depthwise convolution (group == C): output channel o reads input channel o / (M/C).
///
/// X [N, C, in...], W [M, 1, k...], bias [M]? -> Y [N, M, out...]. Per output plane, per kernel
/// tap, per output row: y[row, lo..<hi] += w · x[base + first + j·step] (the tap's rows from
/// ConvTapRows, so padding, strides and dilations cost no per-element test). A GEMM per channel
/// would be a [1, K] · [K, P] product: all overhead.
func depthwiseConvolution<T: FloatElement>(_ X: UnsafePointer<T>, _ W: UnsafePointer<T>, bias: UnsafePointer<T>?, _ Y: UnsafeMutablePointer<T>,
                                           images n: Int, channels c: Int, outputs m: Int, _ g: ConvGeometry) {
    let mult = m / c, K = g.kernelSize, P = g.outputSize, I = g.inputSize, lastOut = g.output[g.rank - 1]
    let taps = ConvTapRows.all(g)
    Parallel.forRange(n * m, minimumChunk: max(1, 8_192 / max(P * K, 1))) { planes in
        for u in planes {
            let b = u / m, o = u % m
            let src = X + (b * c + o / mult) * I, dst = Y + u * P
            dst.update(repeating: bias?[o] ?? T.zero, count: P)
            for k in 0..<K {
                let tap = taps[k], w = W[o * K + k], lo = tap.lo, hi = tap.hi, step = tap.step
                if hi <= lo { continue }
                tap.bases.withUnsafeBufferPointer { bases in
                    for r in 0..<bases.count where bases[r] >= 0 {
                        let s = src + bases[r] + tap.first, d = dst + r * lastOut
                        if step == 1 {
                            for j in lo..<hi { d[j] += w * s[j] }
                        } else {
                            for j in lo..<hi { d[j] += w * s[j * step] }
                        }
                    }
                }
            }
        }
    }
}

/// Direct depthwise ConvGrad (group == C), the adjoint of `depthwiseConvolution`:
///   dX[c] = Σ_{o of c} Σ_k w[o, k] · scatter_k(dY[o]),   dW[o, k] = Σ_{n, rows} dY[o] · x[c] along tap k.
/// dX is spread over (image, input channel) planes, dW over output channels (each thread sums its
/// own channels over every image, so no partials).
func depthwiseConvolutionGrad<T: FloatElement>(_ DY: UnsafePointer<T>, _ X: UnsafePointer<T>, _ W: UnsafePointer<T>,
                                               dx: UnsafeMutablePointer<T>?, dw: UnsafeMutablePointer<T>?,
                                               images n: Int, channels c: Int, outputs m: Int, _ g: ConvGeometry) {
    let mult = m / c, K = g.kernelSize, P = g.outputSize, I = g.inputSize, lastOut = g.output[g.rank - 1]
    let taps = ConvTapRows.all(g)
    if let dx {
        Parallel.forRange(n * c, minimumChunk: max(1, 8_192 / max(P * K * mult, 1))) { planes in
            for u in planes {
                let b = u / c, ci = u % c
                let dst = dx + u * I
                dst.update(repeating: T.zero, count: I)
                for t in 0..<mult {
                    let o = ci * mult + t, src = DY + (b * m + o) * P
                    for k in 0..<K {
                        let tap = taps[k], w = W[o * K + k], lo = tap.lo, hi = tap.hi, step = tap.step
                        if hi <= lo { continue }
                        tap.bases.withUnsafeBufferPointer { bases in
                            for r in 0..<bases.count where bases[r] >= 0 {
                                let d = dst + bases[r] + tap.first, s = src + r * lastOut
                                if step == 1 {
                                    for j in lo..<hi { d[j] += w * s[j] }
                                } else {
                                    for j in lo..<hi { d[j * step] += w * s[j] }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if let dw {
        Parallel.forRange(m, minimumChunk: max(1, 8_192 / max(n * P * K, 1))) { outputs in
            for o in outputs {
                let ci = o / mult
                for k in 0..<K {
                    let tap = taps[k], lo = tap.lo, hi = tap.hi, step = tap.step
                    var sum = T.zero
                    if hi > lo {
                        tap.bases.withUnsafeBufferPointer { bases in
                            for b in 0..<n {
                                let dyPlane = DY + (b * m + o) * P, xPlane = X + (b * c + ci) * I
                                for r in 0..<bases.count where bases[r] >= 0 {
                                    let s = xPlane + bases[r] + tap.first, d = dyPlane + r * lastOut
                                    if step == 1 {
                                        sum += dotSum(d + lo, s + lo, hi - lo)
                                    } else {
                                        for j in lo..<hi { sum += d[j] * s[j * step] }
                                    }
                                }
                            }
                        }
                    }
                    dw[o * K + k] = sum
                }
            }
        }
    }
}
