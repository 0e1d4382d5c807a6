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

/// The fewest multiply-adds (M/G · C/G · P) of one image's product at which a direct 1×1
/// convolution (unit strides, no padding) multiplies each image where it lies instead of several
/// images side by side (`convolution`). ShuffleNet's grouped 1×1 layers have 906K; smaller
/// products (MobileNetV3-32 training at 8×8: at most 74K) keep the blocked GEMM.
let convDirectImageMinWork = 1 << 19

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

/// The most multiply-adds (m·n·k) of a float32 product that OpenBLAS runs through its small-matrix
/// kernel, which reads A and B where they lie; a larger product packs both first (OpenBLAS 0.3.21's
/// permit rule for its AVX-512 kernels, the ones this machine's EPYC runs).
let convSmallProductWork = 1_000_000

/// BLAS.gemm for the thin products of convolutions: C [m×n] = op(A) [m×k] · op(B) [k×n] + beta·C,
/// cut where the pieces fit OpenBLAS's small-matrix kernel (`convSmallProductWork`) and that kernel
/// is the faster one. Measured one thread, 64 to 4096 calls each (µs per call, whole -> cut):
///   * by columns of C when m·k is small (pieces 64+ wide): the cnn's 5×5 layers' forwards
///     [16×75]·[75×1024] 56 -> 22 (512 wide), [32×400]·[400×256] 75 -> 57 (64 wide), their dX
///     [400×32]ᵀ-shaped products 71 -> 60, ResNet-18's stem [64×147]·[147×12544] 2800-6900 -> 2350-2650,
///     MobileNetV3's 1×1 layers 15-25% faster; with m·k too large for 64 columns (e.g. [64×576],
///     [128×288]) 16-wide pieces run slower than the packed product, so those stay whole;
///   * along k (each piece adding onto C) when m·n is small enough for pieces of 256+: the cnn's
///     first dW [75×1024]·[1024×16] 39 -> 23; with shorter pieces ([400×256]·[256×32] in 64s) no gain.
/// The pieces are the same dot products as the whole (cut along k: partial sums added, equal to
/// float rounding). Outside a parallel region a product of `BLAS.singleThreadWork`+ multiply-adds
/// spreads its column pieces over the pool threads (k pieces then stay whole: BLAS.gemm splits C).
func convGemm<T: FloatElement>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<T>, lda: Int,
                               b: UnsafePointer<T>, ldb: Int, beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
    let threaded = !Parallel.isInsideRegion && m * n * k >= BLAS.singleThreadWork
    guard T.self == Float.self, m > 1, n > 1, k > 0 else {
        BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: T(1), a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        return
    }
    let width = convSmallProductWork / (m * k) / 16 * 16
    if width >= 64 && n > width {
        var pieces = (n + width - 1) / width
        // Spread over the threads, a multiple of their count (3 pieces on 2 threads left one
        // thread a third of the product idle).
        if threaded { pieces = (pieces + Parallel.threadCount - 1) / Parallel.threadCount * Parallel.threadCount }
        let step = ((n + pieces - 1) / pieces + 15) / 16 * 16
        let count = (n + step - 1) / step
        func piece(_ i: Int) {
            let j0 = i * step, j1 = min(n, j0 + step)
            BLAS.gemm(transA: transA, transB: transB, m: m, n: j1 - j0, k: k, alpha: T(1), a: a, lda: lda,
                      b: transB ? b + j0 * ldb : b + j0, ldb: ldb, beta: beta, c: c + j0, ldc: ldc)
        }
        if threaded {
            Parallel.forRange(count) { r in for i in r { piece(i) } }
        } else {
            for i in 0..<count { piece(i) }
        }
        return
    }
    let depth = convSmallProductWork / (m * n) / 16 * 16
    if depth >= 256 && k > depth && !threaded {
        let pieces = (k + depth - 1) / depth, step = ((k + pieces - 1) / pieces + 15) / 16 * 16
        for k0 in stride(from: 0, to: k, by: step) {
            BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: min(step, k - k0), alpha: T(1),
                      a: transA ? a + k0 * lda : a + k0, lda: lda, b: transB ? b + k0 : b + k0 * ldb, ldb: ldb,
                      beta: k0 == 0 ? beta : T(1), c: c, ldc: ldc)
        }
        return
    }
    BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: T(1), a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
}

// MARK: - Output channels split over the threads

/// Whether `convolution` runs an ungrouped convolution of `images` images with `outputs` output
/// channels, `rows` = C·K column rows and `positions` output positions per image by
/// `convolutionSplittingOutputs`: fewer images than threads (batch 1), at most
/// `convSplitMaxPositions` positions, `convSplitMinOutputs` outputs or more per thread (the
/// product split by columns is as fast below), and a
/// column buffer of at most 4M floats (16 MB).
///
/// The tiled path splits a 14×14 or 28×28 image's positions over the threads, and a product of 98
/// or 392 columns runs below OpenBLAS's peak (a 7×7 image is one tile, whose product BLAS.gemm
/// already splits by rows, but its im2col, bias and epilogue ran on one thread). Split by output
/// channels, each thread multiplies all columns: 2 threads, products alone, minimum of 300 under
/// chrt, threads spinning between runs (GFLOP/s, columns -> channels): [1024×256]·[256×196] 164 -> 189, [256×1024]·[1024×196]
/// 166 -> 189, [256×2304]·[2304×196] 170 -> 189, [2048×512]·[512×49] 130 -> 170, [512×4608]·[4608×49]
/// 136 -> 174, [512×128]·[128×784] 157 -> 195, [512×256]·[256×784] 187 -> 207, [96×480]·[480×196]
/// 161 -> 177, [128×832]·[832×49] 130 -> 160; but at 3136 columns (56×56) 202 -> 185 ([64×147]),
/// and with 64 outputs (32 per thread) the split by columns is as fast or faster (160 against 151
/// at [64×512]·[512×196]).
func convSplitsOutputs(images n: Int, outputs m: Int, rows: Int, positions P: Int, direct: Bool) -> Bool {
    let threads = Parallel.threadCount
    guard threads > 1, n < threads, !Parallel.isInsideRegion, P > 1, P <= convSplitMaxPositions,
          m >= convSplitMinOutputs * threads else { return false }
    return direct || rows * P <= 1 << 22
}

/// The most output positions per image for which `convSplitsOutputs` splits the output channels.
nonisolated(unsafe) var convSplitMaxPositions = 1024

/// The fewest output channels per thread for which `convSplitsOutputs` splits the output channels
/// (tests lower it).
nonisolated(unsafe) var convSplitMinOutputs = 48

/// Forward convolution (group 1) with the threads splitting the output channels (see
/// `convSplitsOutputs`).
///
/// Per image: the threads unfold the image's columns [C·K, P] together (a share of the channels
/// each; a direct 1×1 convolution reads the image as its columns), then each thread takes a block
/// of output channels (a multiple of 8): it sets its rows of Y to the bias, adds the product
/// W [rows, C·K] · columns [C·K, P] onto them and applies `epilogue` to them while they are in
/// its cache. Each output element is the same dot product as in the tiled path.
func convolutionSplittingOutputs<T: FloatElement>(_ X: UnsafePointer<T>, _ W: UnsafePointer<T>, bias: UnsafePointer<T>?,
                                                  _ Y: UnsafeMutablePointer<T>, images n: Int, channels c: Int, outputs m: Int,
                                                  _ g: ConvGeometry, direct: Bool, epilogue: ConvEpilogue<T>? = nil) {
    let K = g.kernelSize, P = g.outputSize, I = g.inputSize, rows = c * K
    let taps = direct ? [] : ConvTapRows.all(g)
    let col = UnsafeMutablePointer<T>.allocate(capacity: direct ? 1 : rows * P)
    defer { col.deallocate() }
    let blocks = (m + 7) / 8, threads = min(Parallel.threadCount, blocks)
    for b in 0..<n {
        let image = X + b * c * I
        let columns: UnsafePointer<T>
        if direct {
            columns = image
        } else {
            Parallel.forRange(c, minimumChunk: max(1, 8_192 / max(K * P, 1))) { channels in
                im2col(image + channels.lowerBound * I, channels: channels.count, g, col + channels.lowerBound * K * P, ld: P, taps: taps)
            }
            columns = UnsafePointer(col)
        }
        Parallel.forRange(threads) { parts in
            for part in parts {
                let chunk = Parallel.chunk(part, of: threads, count: blocks)
                let o0 = chunk.lowerBound * 8, o1 = min(m, chunk.upperBound * 8)
                if o1 <= o0 { continue }
                let out = Y + (b * m + o0) * P
                if let bias { for o in o0..<o1 { (out + (o - o0) * P).update(repeating: bias[o], count: P) } }
                // Y[o0..<o1] [rows, P] (+)= W[o0..<o1] [rows, C·K] · columns [C·K, P]
                convGemm(transA: false, transB: false, m: o1 - o0, n: P, k: rows, a: W + o0 * rows, lda: rows,
                         b: columns, ldb: P, beta: bias == nil ? 0 : 1, c: out, ldc: P)
                if let epilogue { epilogue.apply(Y, (b * m + o0) * P, (o1 - o0) * P) }
            }
        }
    }
}

/// The fewest elements the convolutions hand their epilogue at once where whole output rows
/// lie one after another (16 KB of float32, still in cache): FusedConv's activations called once
/// per row of a 7×7 image (49 elements) cost more in calls than in arithmetic (MobileNetV3's last
/// blocks, 576 rows an image).
let convEpilogueRun = 4096

/// Output rows of `count` elements handed to an epilogue in runs of consecutive rows
/// (`convEpilogueRun`): `add` each row once it is written, `flush` at the end. The same
/// elementwise epilogue on the same elements, so the same values.
struct EpilogueRun<T: FloatElement> {
    let epilogue: ConvEpilogue<T>?
    let y: UnsafeMutablePointer<T>
    let count: Int
    var start = 0, length = 0

    init(_ epilogue: ConvEpilogue<T>?, _ y: UnsafeMutablePointer<T>, _ count: Int) {
        self.epilogue = epilogue
        self.y = y
        self.count = count
    }

    /// The row at `offset` is written.
    @inline(__always)
    mutating func add(_ offset: Int) {
        guard epilogue != nil else { return }
        if length > 0 && offset != start + length { flush() }
        if length == 0 { start = offset }
        length += count
        if length >= convEpilogueRun { flush() }
    }

    mutating func flush() {
        if length > 0, let epilogue { epilogue.apply(y, start, length) }
        length = 0
    }
}

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
/// yB is scattered into Y (plus bias, then `epilogue` on each row while it is in cache: a pass
/// over the whole output afterwards read it back from memory, 22 MB for SqueezeNet's last layer
/// at batch 32). The gather and the scatter spread (image, channel) rows over the threads.
func convolutionBlocked<T: FloatElement>(_ X: UnsafePointer<T>, _ W: UnsafePointer<T>, bias: UnsafePointer<T>?, _ Y: UnsafeMutablePointer<T>,
                                         images n: Int, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry, block: Int,
                                         epilogue: ConvEpilogue<T>? = nil) {
    let cg = c / group, mg = m / group, K = g.kernelSize, P = g.outputSize, I = g.inputSize, rows = cg * K
    let taps = ConvTapRows.all(g)
    let col = UnsafeMutablePointer<T>.allocate(capacity: rows * block * P)
    let yB = UnsafeMutablePointer<T>.allocate(capacity: mg * block * P)
    defer { col.deallocate(); yB.deallocate() }
    let rowChunk = max(1, 8_192 / max(P, 1))
    for start in stride(from: 0, to: n, by: block) {
        let bc = min(block, n - start), ld = bc * P
        for gi in 0..<group {
            // colB: image j's channel ch in rows ch·K..<(ch + 1)·K, columns j·P..<(j + 1)·P.
            let x = X + (start * c + gi * cg) * I
            Parallel.forRange(bc * cg, minimumChunk: rowChunk) { items in
                var item = items.lowerBound
                while item < items.upperBound {
                    let j = item / cg, ch = item % cg, count = min(cg - ch, items.upperBound - item)
                    im2col(x + j * c * I + ch * I, channels: count, g, col + ch * K * ld + j * P, ld: ld, taps: taps)
                    item += count
                }
            }
            // yB [mg, B·P] = W_g [mg, rows] · colB [rows, B·P]
            convGemm(transA: false, transB: false, m: mg, n: ld, k: rows, a: W + gi * mg * rows, lda: rows,
                      b: col, ldb: ld, beta: T(0), c: yB, ldc: ld)
            Parallel.forRange(bc * mg, minimumChunk: rowChunk) { items in
                // The epilogue runs over consecutive rows of one image together (`convEpilogueRun`).
                var run = EpilogueRun(epilogue, Y, P)
                for item in items {
                    let j = item / mg, o = item % mg
                    let at = ((start + j) * m + gi * mg + o) * P
                    let dst = Y + at, src = yB + o * ld + j * P
                    if let bias {
                        let b = bias[gi * mg + o]
                        for p in 0..<P { dst[p] = src[p] + b }
                    } else {
                        dst.update(from: src, count: P)
                    }
                    run.add(at)
                }
                run.flush()
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
                convGemm(transA: false, transB: true, m: mg, n: rows, k: ld, a: dyB, lda: ld, b: col, ldb: ld,
                          beta: start == 0 ? T(0) : T(1), c: dw + gi * mg * rows, ldc: rows)
            }
            if let dx {
                // colB [rows, B·P] = W_gᵀ [rows, mg] · dyB [mg, B·P]
                convGemm(transA: true, transB: false, m: rows, n: ld, k: mg, a: W + gi * mg * rows, lda: rows,
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
                                           images n: Int, channels c: Int, outputs m: Int, _ g: ConvGeometry,
                                           epilogue: ConvEpilogue<T>? = nil) {
    if let planes = DepthwisePlanes.layouts(g) {
        depthwiseConvolution2D(X, W, bias: bias, Y, images: n, channels: c, outputs: m, g, planes: planes.forward, epilogue: epilogue)
        return
    }
    let mult = m / c, K = g.kernelSize, P = g.outputSize, I = g.inputSize, lastOut = g.output[g.rank - 1]
    let taps = ConvTapRows.all(g)
    Parallel.forRange(n * m, minimumChunk: max(1, 8_192 / max(P * K, 1))) { planes in
        var run = EpilogueRun(epilogue, Y, P)
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
            run.add(u * P)
        }
        run.flush()
    }
}

/// The 2-D depthwise forward: each input plane is copied once into a zero-padded buffer
/// (`DepthwisePlanes`) split into `sw` column phases, so every kernel tap of every output row
/// reads one contiguous run at a fixed offset, whatever the pads, strides and dilations; then
/// blocks of 4 output rows × 16 columns (8 × 8 on narrow planes) are accumulated in SIMD
/// registers over all taps and stored once. The old tap-by-tap sweep over the plane ran its
/// strided taps one scalar at a time (52% of MobileNetV3-Small's batch-32 inference profile).
///
/// X [N, C, ih, iw], W [M, 1, kh, kw], bias [M]? -> Y [N, M, oh, ow]. Output channel o reads input
/// channel o / (M/C). Output (r, j), tap (ky, kx) reads padded row r·sh + ky·dh, padded column
/// j·sw + kx·dw: phase (kx·dw) mod sw at index j + (kx·dw) / sw.
/// `epilogue` (FusedConv's Z and Relu) is applied to each output plane right after it is
/// written, while it is in cache, by the same thread: a separate pass over the whole output after
/// the kernel cost a second wake of the threads per node.
func depthwiseConvolution2D<T: FloatElement>(_ X: UnsafePointer<T>, _ W: UnsafePointer<T>, bias: UnsafePointer<T>?, _ Y: UnsafeMutablePointer<T>,
                                             images n: Int, channels c: Int, outputs m: Int, _ g: ConvGeometry,
                                             planes: DepthwisePlanes, epilogue: ConvEpilogue<T>? = nil) {
    let mult = m / c, (kh, kw) = (g.kernel[0], g.kernel[1]), (oh, ow) = (g.output[0], g.output[1])
    let K = kh * kw, P = oh * ow, I = g.inputSize
    Parallel.forRange(n * c, minimumChunk: max(1, 8_192 / max(P * K * mult, 1))) { range in
        let buffer = planes.allocate(T.self)
        defer { buffer.deallocate() }
        var run = EpilogueRun(epilogue, Y, P)
        for u in range {
            planes.fill(buffer, from: X + u * I)
            let b = u / c, ci = u % c
            for o in (ci * mult)..<(ci * mult + mult) {
                planes.correlate(buffer, weights: W + o * K, start: bias?[o] ?? T.zero, accumulate: false, into: Y + (b * m + o) * P)
                run.add((b * m + o) * P)
            }
        }
        run.flush()
    }
}

/// The 2-D depthwise dX, `depthwiseConvolution2D`'s adjoint in x, as the same kind of
/// correlation: dX[ci] = Σ_o (dY[o] spread by the strides (zeros between), padded) ⋆ flipped W[o],
/// stride 1. Input row y, flipped tap ky' = kh-1-ky reads spread row y + ky'·dh, which holds dY
/// row r where r·sh = y + ky'·dh - ((kh-1)·dh - pt) (zero between rows when sh > 1).
func depthwiseConvolutionGradX2D<T: FloatElement>(_ DY: UnsafePointer<T>, _ W: UnsafePointer<T>, _ dx: UnsafeMutablePointer<T>,
                                                  images n: Int, channels c: Int, outputs m: Int, _ g: ConvGeometry,
                                                  planes: DepthwisePlanes) {
    let mult = m / c, K = g.kernelSize, P = g.outputSize, I = g.inputSize
    Parallel.forRange(n * c, minimumChunk: max(1, 8_192 / max(P * K * mult, 1))) { range in
        let buffer = planes.allocate(T.self)
        defer { buffer.deallocate() }
        for u in range {
            let b = u / c, ci = u % c
            for t in 0..<mult {
                let o = ci * mult + t
                planes.fill(buffer, from: DY + (b * m + o) * P)
                planes.correlate(buffer, weights: W + o * K, start: T.zero, accumulate: t > 0, into: dx + u * I)
            }
        }
    }
}

/// The 2-D depthwise dW: dW[o, k] = Σ_images Σ_(r, j) dY[o][r, j] · x[ci] at tap k of (r, j), read
/// from the forward's buffer (`DepthwisePlanes`: tap k of output row r is one contiguous run),
/// against dY copied into rows of whole 8-column vectors (zeros after the last column and row).
/// Spread over input channels; each thread sums its channels over every image (no partials).
func depthwiseConvolutionGradW2D<T: FloatElement>(_ DY: UnsafePointer<T>, _ X: UnsafePointer<T>, _ dw: UnsafeMutablePointer<T>,
                                                  images n: Int, channels c: Int, outputs m: Int, _ g: ConvGeometry,
                                                  planes: DepthwisePlanes) {
    let mult = m / c, (kh, kw) = (g.kernel[0], g.kernel[1]), (oh, ow) = (g.output[0], g.output[1])
    let K = kh * kw, P = oh * ow, I = g.inputSize
    let width = planes.vectors * 8, step = planes.strides.rows * planes.rowLength
    Parallel.forRange(c, minimumChunk: max(1, 8_192 / max(n * P * K * mult, 1))) { range in
        let buffer = planes.allocate(T.self)
        let gradient = UnsafeMutablePointer<T>.allocate(capacity: planes.rowBlocks * 4 * width)
        defer { buffer.deallocate(); gradient.deallocate() }
        gradient.initialize(repeating: T.zero, count: planes.rowBlocks * 4 * width)
        planes.tapOffsets.withUnsafeBufferPointer { offsets in
            for ci in range {
                (dw + ci * mult * K).update(repeating: T.zero, count: mult * K)
                for b in 0..<n {
                    planes.fill(buffer, from: X + (b * c + ci) * I)
                    for o in (ci * mult)..<(ci * mult + mult) {
                        // dY's plane in whole vectors; the padding columns and rows stay zero.
                        let plane = DY + (b * m + o) * P
                        for r in 0..<oh { (gradient + r * width).update(from: plane + r * ow, count: ow) }
                        for k in 0..<K {
                            var (a0, a1, a2, a3) = (SIMD8<T>(), SIMD8<T>(), SIMD8<T>(), SIMD8<T>())
                            for rb in 0..<planes.rowBlocks {
                                let d0 = gradient + rb * 4 * width, x0 = buffer + rb * 4 * step + offsets[k]
                                for v in stride(from: 0, to: width, by: 8) {
                                    @inline(__always) func product(_ i: Int) -> SIMD8<T> {
                                        UnsafeRawPointer(d0 + i * width + v).loadUnaligned(as: SIMD8<T>.self)
                                            * UnsafeRawPointer(x0 + i * step + v).loadUnaligned(as: SIMD8<T>.self)
                                    }
                                    a0 += product(0); a1 += product(1); a2 += product(2); a3 += product(3)
                                }
                            }
                            dw[o * K + k] += ((a0 + a1) + (a2 + a3)).sum()
                        }
                    }
                }
            }
        }
    }
}

/// A source plane laid out for a direct 2-D correlation (`depthwiseConvolution2D`): rows of
/// `phases` = sw column phases, `phaseLength` apart (a multiple of 8); phase q holds the padded
/// columns q, q + sw, q + 2·sw, ... Buffer row z holds source row (z - offsets.rows) / spread.rows
/// where that divides and lands inside (zeros elsewhere), columns likewise: `spread` > 1 puts
/// zeros between the source's elements (the strides of a gradient). The buffer covers output rows
/// up to a multiple of 4 and columns up to a multiple of 8 (zeros there: their results are dropped).
struct DepthwisePlanes {
    let source: (rows: Int, columns: Int), output: (rows: Int, columns: Int), kernel: (rows: Int, columns: Int)
    let strides: (rows: Int, columns: Int), offsets: (rows: Int, columns: Int), spread: (rows: Int, columns: Int)
    let vectors: Int, rowBlocks: Int, bufferRows: Int, phaseLength: Int, rowLength: Int
    /// Per weight k = ky·kw + kx: where its run starts in a buffer row block (phase and index).
    let tapOffsets: [Int]

    /// A plane's layout from its sizes (`Layout`, computed once by `layouts`).
    private init(source: (Int, Int), output: (Int, Int), kernel: (Int, Int), strides: (Int, Int), dilations: (Int, Int),
                 offsets: (Int, Int), spread: (Int, Int), flipped: Bool, layout: Layout) {
        self.source = source; self.output = output; self.kernel = kernel; self.strides = strides
        self.offsets = offsets; self.spread = spread
        (vectors, rowBlocks, phaseLength, rowLength, bufferRows) =
            (layout.vectors, layout.rowBlocks, layout.phaseLength, layout.rowLength, layout.bufferRows)
        var taps = [Int](repeating: 0, count: kernel.0 * kernel.1)
        for ky in 0..<kernel.0 {
            for kx in 0..<kernel.1 {
                // A flipped kernel (the gradient's) reads weight (kh-1-ky, kw-1-kx) at tap (ky, kx).
                let k = flipped ? (kernel.0 - 1 - ky) * kernel.1 + (kernel.1 - 1 - kx) : ky * kernel.1 + kx
                let column = kx * dilations.1
                taps[k] = ky * dilations.0 * rowLength + (column % strides.1) * phaseLength + column / strides.1
            }
        }
        tapOffsets = taps
    }

    typealias Layout = (vectors: Int, rowBlocks: Int, phaseLength: Int, rowLength: Int, bufferRows: Int, count: Int)

    /// The sizes of a layout, or nil when one of them overflows Int.
    private static func layout(output: (Int, Int), kernel: (Int, Int), strides: (Int, Int), dilations: (Int, Int)) -> Layout? {
        func add(_ a: Int, _ b: Int) -> Int? { let r = a.addingReportingOverflow(b); return r.overflow ? nil : r.partialValue }
        func mul(_ a: Int, _ b: Int) -> Int? { let r = a.multipliedReportingOverflow(by: b); return r.overflow ? nil : r.partialValue }
        let vectors = (output.1 + 7) / 8, rowBlocks = (output.0 + 3) / 4
        guard let span1 = mul(kernel.1 - 1, dilations.1), let run = add(vectors * 8, span1 / strides.1),
              let phase = add(run, 7).map({ $0 / 8 * 8 }), let rowLength = mul(strides.1, phase),
              let rowSpan = mul(rowBlocks * 4 - 1, strides.0), let span0 = mul(kernel.0 - 1, dilations.0),
              let bufferRows = add(rowSpan, span0).flatMap({ add($0, 1) }),
              let count = add(bufferRows, 1).flatMap({ mul($0, rowLength) }) else { return nil }
        return (vectors, rowBlocks, phase, rowLength, bufferRows, count)
    }

    /// The 2-D depthwise kernels' layouts of `g`'s planes, or nil where they do not apply (the
    /// general loops over ConvTapRows run those, as they run every rank but 2): `forward`, an input
    /// plane padded in column phases (the forward and dW read it), and `gradientX`, dY spread by
    /// the strides (dX). Both sizes must fit in Int and each buffer stay within a small multiple
    /// of the planes it serves; strides or dilations far beyond the image (one window per axis,
    /// near Int.max) fail that. The forward and ConvGrad make the same choice for one geometry.
    static func layouts(_ g: ConvGeometry) -> (forward: DepthwisePlanes, gradientX: DepthwisePlanes)? {
        guard g.rank == 2 else { return nil }
        let (kh, kw) = (g.kernel[0], g.kernel[1]), (dh, dw) = (g.dilations[0], g.dilations[1])
        let (ih, iw) = (g.input[0], g.input[1]), (oh, ow) = (g.output[0], g.output[1])
        guard let forward = layout(output: (oh, ow), kernel: (kh, kw), strides: (g.strides[0], g.strides[1]), dilations: (dh, dw)),
              let gradient = layout(output: (ih, iw), kernel: (kh, kw), strides: (1, 1), dilations: (dh, dw))
        else { return nil }
        // A buffer rounds rows up to 4 and columns up to 8 and holds the padding and the spread:
        // up to ~40x a tiny plane; anything past 64x the planes plus 64K elements is a geometry
        // whose windows mostly fall outside the image.
        let cap = 64 * (g.inputSize + g.outputSize) + (1 << 16)
        guard forward.count <= cap && gradient.count <= cap else { return nil }
        // Within the cap, the offsets below cannot overflow: (kh-1)·dh is part of gradient.bufferRows.
        return (DepthwisePlanes(source: (ih, iw), output: (oh, ow), kernel: (kh, kw), strides: (g.strides[0], g.strides[1]),
                                dilations: (dh, dw), offsets: (g.padsBegin[0], g.padsBegin[1]), spread: (1, 1), flipped: false,
                                layout: forward),
                DepthwisePlanes(source: (oh, ow), output: (ih, iw), kernel: (kh, kw), strides: (1, 1), dilations: (dh, dw),
                                offsets: ((kh - 1) * dh - g.padsBegin[0], (kw - 1) * dw - g.padsBegin[1]),
                                spread: (g.strides[0], g.strides[1]), flipped: true, layout: gradient))
    }

    /// A buffer for one plane, plus one padded row before the phases are split, all zeros: `fill`
    /// writes only the positions that hold source elements (the same for every plane), so the
    /// padding, and the zeros between spread elements, are written once here.
    func allocate<T: FloatElement>(_ type: T.Type) -> UnsafeMutablePointer<T> {
        let count = (bufferRows + 1) * rowLength
        let buffer = UnsafeMutablePointer<T>.allocate(capacity: count)
        buffer.initialize(repeating: T.zero, count: count)
        return buffer
    }

    /// Lays out the source plane `src` [source.rows, source.columns] in `buffer` (from `allocate`).
    func fill<T: FloatElement>(_ buffer: UnsafeMutablePointer<T>, from src: UnsafePointer<T>) {
        let sw = strides.columns, scratch = buffer + bufferRows * rowLength
        // The source rows and columns that land inside: 0 <= offset + i·spread < length.
        func inside(_ count: Int, offset: Int, spread: Int, length: Int) -> Range<Int> {
            let first = offset >= 0 ? 0 : (-offset + spread - 1) / spread
            let last = length - offset <= 0 ? 0 : min(count, (length - offset + spread - 1) / spread)
            return first..<max(first, last)
        }
        let rows = inside(source.rows, offset: offsets.rows, spread: spread.rows, length: bufferRows)
        let columns = inside(source.columns, offset: offsets.columns, spread: spread.columns, length: rowLength)
        let (offset, step) = (offsets.columns, spread.columns)
        for sr in rows {
            let row = buffer + (offsets.rows + sr * spread.rows) * rowLength, line = src + sr * source.columns
            // The padded row, linear: position offset + x·step holds source column x.
            let linear = sw == 1 ? row : scratch
            if step == 1 {
                // Inline, 8 at a time: rows are 7 to 56 elements here, and a memmove call per row
                // cost two thirds of the fill (MobileNetV3's depthwise planes at batch 32).
                let to = linear + offset + columns.lowerBound, from = line + columns.lowerBound, count = columns.count
                var x = 0
                while x + 8 <= count {
                    UnsafeMutableRawPointer(to + x).storeBytes(of: UnsafeRawPointer(from + x).loadUnaligned(as: SIMD8<T>.self), as: SIMD8<T>.self)
                    x += 8
                }
                while x < count { to[x] = from[x]; x += 1 }
            } else {
                for x in columns { linear[offset + x * step] = line[x] }
            }
            if sw == 2 {
                // Split even and odd positions, 8 of each per step (phaseLength is a multiple of 8).
                for t in stride(from: 0, to: phaseLength, by: 8) {
                    let v = UnsafeRawPointer(linear + 2 * t).loadUnaligned(as: SIMD16<T>.self)
                    UnsafeMutableRawPointer(row + t).storeBytes(of: v.evenHalf, as: SIMD8<T>.self)
                    UnsafeMutableRawPointer(row + phaseLength + t).storeBytes(of: v.oddHalf, as: SIMD8<T>.self)
                }
            } else if sw > 2 {
                for q in 0..<sw { for t in 0..<phaseLength { row[q * phaseLength + t] = linear[t * sw + q] } }
            }
        }
    }

    /// dst [output.rows, output.columns] (+)= Σ_k weights[k] · the buffer's run of tap k, plus `start`.
    /// Multiply and add stay two roundings (no FMA), as in scalar loops, so builds with and without
    /// FMA agree. Eight accumulators of 8 columns at a time (4 rows × 2 vectors, or 8 rows × 1
    /// vector where a row is one vector): with four, each tap's adds waited on the last tap's
    /// (latency 3 cycles, four chains), with eight the loads and the two add and two multiply
    /// ports bound it. Each element is the same sum in the same order whatever the blocking.
    @inline(__always)
    func correlate<T: FloatElement>(_ buffer: UnsafePointer<T>, weights: UnsafePointer<T>, start: T, accumulate: Bool,
                                    into dst: UnsafeMutablePointer<T>) {
        let (oh, ow) = output, K = tapOffsets.count, step = strides.rows * rowLength
        let initial = SIMD8<T>(repeating: start)
        @inline(__always) func load(_ p: UnsafePointer<T>) -> SIMD8<T> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<T>.self) }
        // Rows of one or two vectors are stored in order, row by row: a row's last vector may be
        // stored whole, its lanes past the row landing on the next row's first columns, written
        // after it (never past the plane, and not when adding onto dst). A lane-by-lane store of
        // 7 or 6 columns was a tenth of the kernel on MobileNetV3's 7x7 and 14x14 planes.
        let spills = !accumulate && vectors <= 2, planeEnd = oh * ow
        /// Output row r, columns v·8 ..< v·8 + 8 (those inside the plane) (+)= a.
        @inline(__always) func store(_ a: SIMD8<T>, row r: Int, vector v: Int) {
            guard r < oh else { return }
            let j0 = v * 8, count = min(8, ow - j0), out = dst + r * ow + j0
            if count == 8 || (spills && r * ow + j0 + 8 <= planeEnd) {
                let sum = accumulate ? a + load(out) : a
                UnsafeMutableRawPointer(out).storeBytes(of: sum, as: SIMD8<T>.self)
            } else {
                for j in 0..<count { out[j] = accumulate ? out[j] + a[j] : a[j] }
            }
        }
        tapOffsets.withUnsafeBufferPointer { offsetsBuffer in
            guard let offsets = offsetsBuffer.baseAddress else { return }
            var rb = 0
            if vectors == 1 {
                // Rows of one vector (output width <= 8): two row blocks, 8 rows, at once.
                while rb + 1 < rowBlocks {
                    let r0 = rb * 4, in0 = buffer + r0 * step
                    var (a0, a1, a2, a3) = (initial, initial, initial, initial)
                    var (a4, a5, a6, a7) = (initial, initial, initial, initial)
                    for k in 0..<K {
                        let wk = SIMD8<T>(repeating: weights[k]), p = in0 + offsets[k]
                        a0 += wk * load(p); a1 += wk * load(p + step)
                        a2 += wk * load(p + 2 * step); a3 += wk * load(p + 3 * step)
                        a4 += wk * load(p + 4 * step); a5 += wk * load(p + 5 * step)
                        a6 += wk * load(p + 6 * step); a7 += wk * load(p + 7 * step)
                    }
                    store(a0, row: r0, vector: 0); store(a1, row: r0 + 1, vector: 0)
                    store(a2, row: r0 + 2, vector: 0); store(a3, row: r0 + 3, vector: 0)
                    store(a4, row: r0 + 4, vector: 0); store(a5, row: r0 + 5, vector: 0)
                    store(a6, row: r0 + 6, vector: 0); store(a7, row: r0 + 7, vector: 0)
                    rb += 2
                }
            }
            while rb < rowBlocks {
                let r0 = rb * 4, in0 = buffer + r0 * step
                var v = 0
                while v + 1 < vectors {
                    var (a0, a1, a2, a3) = (initial, initial, initial, initial)
                    var (b0, b1, b2, b3) = (initial, initial, initial, initial)
                    for k in 0..<K {
                        let wk = SIMD8<T>(repeating: weights[k]), p = in0 + offsets[k] + v * 8
                        a0 += wk * load(p); b0 += wk * load(p + 8)
                        a1 += wk * load(p + step); b1 += wk * load(p + step + 8)
                        a2 += wk * load(p + 2 * step); b2 += wk * load(p + 2 * step + 8)
                        a3 += wk * load(p + 3 * step); b3 += wk * load(p + 3 * step + 8)
                    }
                    store(a0, row: r0, vector: v); store(b0, row: r0, vector: v + 1)
                    store(a1, row: r0 + 1, vector: v); store(b1, row: r0 + 1, vector: v + 1)
                    store(a2, row: r0 + 2, vector: v); store(b2, row: r0 + 2, vector: v + 1)
                    store(a3, row: r0 + 3, vector: v); store(b3, row: r0 + 3, vector: v + 1)
                    v += 2
                }
                if v < vectors {
                    var (a0, a1, a2, a3) = (initial, initial, initial, initial)
                    for k in 0..<K {
                        let wk = SIMD8<T>(repeating: weights[k]), p = in0 + offsets[k] + v * 8
                        a0 += wk * load(p); a1 += wk * load(p + step)
                        a2 += wk * load(p + 2 * step); a3 += wk * load(p + 3 * step)
                    }
                    store(a0, row: r0, vector: v); store(a1, row: r0 + 1, vector: v)
                    store(a2, row: r0 + 2, vector: v); store(a3, row: r0 + 3, vector: v)
                }
                rb += 1
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
    let planes = DepthwisePlanes.layouts(g)
    if let dx, let planes {
        depthwiseConvolutionGradX2D(DY, W, dx, images: n, channels: c, outputs: m, g, planes: planes.gradientX)
    } else if let dx {
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
    if let dw, let planes {
        depthwiseConvolutionGradW2D(DY, X, dw, images: n, channels: c, outputs: m, g, planes: planes.forward)
    } else if let dw {
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
