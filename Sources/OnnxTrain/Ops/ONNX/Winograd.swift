#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Winograd convolution F(m×m, 3×3) for float32 2-D convolutions with 3×3 kernels, unit strides and
/// dilations (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
///
/// Each m×m block of outputs ("tile") is computed from the (m+2)×(m+2) block of input under it:
///   Y_tile = Aᵀ [ Σ_c (G g_oc Gᵀ) ⊙ (Bᵀ d_c B) ] A
/// The sum over input channels at each of the (m+2)² transformed positions ξ is a matrix product,
/// so one convolution becomes (m+2)² GEMMs U_ξ [M/G, C/G] · V_ξ [C/G, tiles] and the multiplies per
/// output fall from 9·C to (m+2)²/m²·C: 4 for F(2×2) and 2.25 for F(4×4) with m = 4 (a 4x cut).
///
/// Layout and threading: tiles are taken a tile row at a time (all tiles of m output rows of one
/// image); a work item is a run of consecutive tile rows (of one or several images), so a batch of
/// small images fills a product as well as one big image does. Each thread transforms its item's
/// input into V [ξ][C/G][tiles], runs the (m+2)² products into Mo [ξ][M/G][tiles] with single-
/// threaded sgemm, and transforms Mo back into the output with the bias and FusedConv's epilogue
/// while the rows are in cache. The transforms run on eight tiles at a time in SIMD registers
/// (`WinogradTileReader`). ConvGrad's dX is such a convolution of dY; its dW is the adjoint of the
/// same transforms (`winogradGradW`).
///
/// The weights are transformed per call, as one [(m+2)², 9] · [9, M·C/G] product (`winogradWeights`):
/// it streams W once and writes U, (m+2)²/9 times W's size, so it costs little beside products of
/// 32+ tiles; and it needs no cache that would have to know the weight is constant. Where the
/// threads split the output channels instead (few tiles, many channels: ResNet's 7×7 layers at
/// 512 channels, U 36 MB) each thread transforms its outputs' weights a block at a time right
/// before their products (`winogradFusesWeights`), so U never goes through memory. A work item
/// holds about `winogradItemTiles` tiles, so each thread's buffers stay a few MB.

/// One Winograd variant: the 1-D transforms Bᵀ (input, n = m+2 points), Aᵀ (output, n -> m), its
/// adjoint A and G (weights, 3 -> n), applied in two passes for the 2-D forms.
protocol WinogradTransform {
    /// Output tile width m.
    static var m: Int { get }
    /// Bᵀ applied in place to n vectors `s` apart.
    static func input(_ d: UnsafeMutablePointer<SIMD8<Float>>, _ s: Int)
    /// Aᵀ: n vectors `s` apart -> m vectors `os` apart.
    static func output(_ d: UnsafePointer<SIMD8<Float>>, _ s: Int, _ o: UnsafeMutablePointer<SIMD8<Float>>, _ os: Int)
    /// A, the adjoint of `output`: m vectors `os` apart -> n vectors `s` apart (dW's transform of dY).
    static func outputAdjoint(_ o: UnsafePointer<SIMD8<Float>>, _ os: Int, _ d: UnsafeMutablePointer<SIMD8<Float>>, _ s: Int)
    /// G: three taps -> n values `s` apart (eight weights at a time, in float64).
    static func weight(_ g0: SIMD8<Double>, _ g1: SIMD8<Double>, _ g2: SIMD8<Double>, _ u: UnsafeMutablePointer<SIMD8<Double>>, _ s: Int)
}

extension WinogradTransform {
    /// Input tile width n = m + 2.
    static var n: Int { m + 2 }
}

/// F(2×2, 3×3): points 0, 1, -1 (and ∞).
enum WinogradF2: WinogradTransform {
    static var m: Int { 2 }

    @inline(__always)
    static func input(_ d: UnsafeMutablePointer<SIMD8<Float>>, _ s: Int) {
        let (d0, d1, d2, d3) = (d[0], d[s], d[2 * s], d[3 * s])
        d[0] = d0 - d2
        d[s] = d1 + d2
        d[2 * s] = d2 - d1
        d[3 * s] = d1 - d3
    }

    @inline(__always)
    static func output(_ d: UnsafePointer<SIMD8<Float>>, _ s: Int, _ o: UnsafeMutablePointer<SIMD8<Float>>, _ os: Int) {
        let (d0, d1, d2, d3) = (d[0], d[s], d[2 * s], d[3 * s])
        o[0] = d0 + d1 + d2
        o[os] = d1 - d2 - d3
    }

    @inline(__always)
    static func outputAdjoint(_ o: UnsafePointer<SIMD8<Float>>, _ os: Int, _ d: UnsafeMutablePointer<SIMD8<Float>>, _ s: Int) {
        let (o0, o1) = (o[0], o[os])
        d[0] = o0
        d[s] = o0 + o1
        d[2 * s] = o0 - o1
        d[3 * s] = -o1
    }

    @inline(__always)
    static func weight(_ g0: SIMD8<Double>, _ g1: SIMD8<Double>, _ g2: SIMD8<Double>, _ u: UnsafeMutablePointer<SIMD8<Double>>, _ s: Int) {
        u[0] = g0
        u[s] = (g0 + g1 + g2) / 2
        u[2 * s] = (g0 - g1 + g2) / 2
        u[3 * s] = g2
    }
}

/// F(4×4, 3×3): points 0, ±1, ±2 (and ∞).
enum WinogradF4: WinogradTransform {
    static var m: Int { 4 }

    @inline(__always)
    static func input(_ d: UnsafeMutablePointer<SIMD8<Float>>, _ s: Int) {
        let (d0, d1, d2, d3, d4, d5) = (d[0], d[s], d[2 * s], d[3 * s], d[4 * s], d[5 * s])
        let four = SIMD8<Float>(repeating: 4), five = SIMD8<Float>(repeating: 5), two = SIMD8<Float>(repeating: 2)
        let a = d4 - four * d2, b = d3 - four * d1          // rows 1, 2: a ± b
        let c = d4 - d2, e = two * (d3 - d1)                // rows 3, 4: c ± e
        d[0] = four * d0 - five * d2 + d4
        d[s] = a + b
        d[2 * s] = a - b
        d[3 * s] = c + e
        d[4 * s] = c - e
        d[5 * s] = four * d1 - five * d3 + d5
    }

    @inline(__always)
    static func output(_ d: UnsafePointer<SIMD8<Float>>, _ s: Int, _ o: UnsafeMutablePointer<SIMD8<Float>>, _ os: Int) {
        let (d0, d1, d2, d3, d4, d5) = (d[0], d[s], d[2 * s], d[3 * s], d[4 * s], d[5 * s])
        let p = d1 + d2, q = d1 - d2, r = d3 + d4, t = d3 - d4
        let two = SIMD8<Float>(repeating: 2), four = SIMD8<Float>(repeating: 4), eight = SIMD8<Float>(repeating: 8)
        o[0] = d0 + p + r
        o[os] = q + two * t
        o[2 * os] = p + four * r
        o[3 * os] = q + eight * t + d5
    }

    @inline(__always)
    static func outputAdjoint(_ o: UnsafePointer<SIMD8<Float>>, _ os: Int, _ d: UnsafeMutablePointer<SIMD8<Float>>, _ s: Int) {
        let (o0, o1, o2, o3) = (o[0], o[os], o[2 * os], o[3 * os])
        let two = SIMD8<Float>(repeating: 2), four = SIMD8<Float>(repeating: 4), eight = SIMD8<Float>(repeating: 8)
        let even = o0 + o2, odd = o1 + o3, even4 = o0 + four * o2, odd8 = two * o1 + eight * o3
        d[0] = o0
        d[s] = even + odd
        d[2 * s] = even - odd
        d[3 * s] = even4 + odd8
        d[4 * s] = even4 - odd8
        d[5 * s] = o3
    }

    @inline(__always)
    static func weight(_ g0: SIMD8<Double>, _ g1: SIMD8<Double>, _ g2: SIMD8<Double>, _ u: UnsafeMutablePointer<SIMD8<Double>>, _ s: Int) {
        u[0] = g0 / 4
        u[s] = -(g0 + g1 + g2) / 6
        u[2 * s] = -(g0 - g1 + g2) / 6
        u[3 * s] = g0 / 24 + g1 / 12 + g2 / 6
        u[4 * s] = g0 / 24 - g1 / 12 + g2 / 6
        u[5 * s] = g2
    }
}

/// Which kernel a float32 3×3 unit-stride convolution takes: `nil` lets `winogradTile` decide by
/// shape; 0 forces im2col, 2 or 4 forces F(2×2) or F(4×4) wherever the kernel applies (tests).
nonisolated(unsafe) var winogradOverride: Int? = nil

/// The Winograd tile width (2 or 4) for a convolution, or nil for im2col + GEMM: float32 is the
/// caller's test; here 2-D, 3×3, unit strides and dilations, and the shapes where F(4×4) measured
/// faster than im2col + sgemm (single thread, minimum of 12 runs; F(2×2) was slower than F(4×4) on
/// every shape measured, so it is only a test variant):
/// - 32+ channels per group in and out (16 in and out at 112×112: even);
/// - 32+ tiles in the batch: with fewer the weight transform (U is 4x W) is not paid back (14×14
///   batch 1 at 256 channels, 16 tiles: 2.58 against 2.43 ms; 7×7 batch 1 at 512, 4 tiles: 15.5
///   against 3.1), with 32 it is (7×7 batch 8 at 512: 30.9 against 37.0 ms; 14×14 batch 2 at 256:
///   3.7 against 9.4; 8×8 batch 8 at 64: 0.36 against 0.59);
/// - outputs 3+ high and wide: a 2×2 output uses a quarter of a 4×4 tile (batch 32 at 256
///   channels: 8.4 against 2.8 ms); 3×3 already wins (batch 32 at 128: 1.03 against 1.60).
/// Images up to 7 tiles wide fill the SIMD lanes by gathering tiles across rows and images
/// (`winogradGatherTilesX`): 7×7 batch 32 at 512 channels 45.0 ms (55.2 with eight tiles of one
/// row in the lanes, 82.3 by im2col), 8×8 batch 32 at 64 1.40 (2.45, 2.68), 4×4 batch 32 at 128
/// 1.06 (2.39, 2.42), 28×28 batch 1 at 128 1.24 (1.34, 2.61).
/// Wide images: 64 channels at 224×224 31.6 against 43.2 ms, 128 at 112 18.9 / 40.3, 256 at 56
/// 16.1 / 38.2, 512 at 28 21.6 / 39.3, 128 at 28 1.29 / 2.51.
///
/// `cachedWeights` (a session keeps the node's U, `WinogradWeightCache`): the tile width to run
/// with the kept U, or nil for the per-call rules above. Four layers of Conv+Relu at batch 1, 2
/// threads, min of 3 interleaved rounds (loaded machine, 6.8-8.5), im2col / F(4×4) per call /
/// F(4×4) kept / F(2×2) kept: 14×14 at 256 channels 5.40 / 5.56 / 3.29 / 4.07 ms; 13×13 64 -> 256
/// (SqueezeNet) 1.21 / 1.55 / 0.74 / 0.96; 13×13 48 -> 192 0.73 / 0.88 / 0.44 / 0.63; 28×28 at
/// 128 5.40 / 2.75 / 2.15 / 4.22; one layer at 512 channels, where reading U bounds the products
/// (F(4×4)'s U is 38 MB, F(2×2)'s 17): 14×14 5.96 / - / 4.10 / 3.87, 7×7 1.95 / - / 2.24 / 1.17.
/// Hence with fewer than 32 tiles F(4×4), or F(2×2) above 256×256 channels or below 8 tiles; with
/// 32 to 63 tiles F(4×4) kept where U is at most `winogradKeptTilesU` bytes (28×28 at 512
/// channels gained 3% for 38 MB: 28×28 at 256 9.59 / 9.31); from 64 tiles the per-call rules.
func winogradTile(images n: Int, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry, cachedWeights: Bool = false) -> Int? {
    guard g.rank == 2, g.kernel == [3, 3], g.strides == [1, 1], g.dilations == [1, 1], group > 0,
          c % group == 0, m % group == 0, c > 0, m > 0, g.outputSize > 0 else { return nil }
    if let forced = winogradOverride { return forced == 0 ? nil : forced }
    let channels = min(c / group, m / group), (height, width) = (g.output[0], g.output[1])
    let tiles = n * ((height + 3) / 4) * ((width + 3) / 4)
    guard channels >= 32, height >= 3, width >= 3 else { return nil }
    if cachedWeights {
        let products = m * (c / group)
        if tiles < 32 { return tiles < 8 || products > 256 * 256 ? 2 : 4 }
        return tiles < 64 && 36 * products * MemoryLayout<Float>.size <= winogradKeptTilesU ? 4 : nil
    }
    return tiles >= 32 ? 4 : nil
}

/// The largest F(4×4) U kept for a convolution of 32 to 63 tiles (`winogradTile(cachedWeights:)`).
let winogradKeptTilesU = 4 << 20

/// The Winograd tile width for ConvGrad's dW (`winogradGradW`), or nil for im2col + GEMM: where
/// `winogradTile` takes Winograd and the batch has at least `winogradGradWTiles` F(4×4) tiles.
/// Z, the (m+2)² products' sum [36, M, C/G], is written and read whatever the tiles, so few tiles
/// do not pay it back: dW alone, 2 threads, minimum of 7 runs on a loaded machine, im2col against
/// Winograd: 512 channels at 7×7 batch 8 (32 tiles) 49 against 81 ms, batch 32 (128 tiles) 174
/// against 140; 256 at 14×14 batch 8 (128 tiles) 50 against 26-30; 128 at 28×28 batch 8 47
/// against 20-24; 64 at 56×56 batch 8 53 against 36, batch 32 219 against 144.
func winogradGradWTile(images n: Int, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry) -> Int? {
    guard let tile = winogradTile(images: n, channels: c, outputs: m, group: group, g) else { return nil }
    if winogradOverride != nil { return tile }
    return n * ((g.output[0] + 3) / 4) * ((g.output[1] + 3) / 4) >= winogradGradWTiles ? tile : nil
}

/// The fewest F(4×4) tiles in the batch for which `winogradGradWTile` takes Winograd.
let winogradGradWTiles = 128

/// The floats a work item's buffers aim for (their tiles are the products' width): see
/// `winogradConvolution`.
nonisolated(unsafe) var winogradItemFloats = 1 << 22

/// A work item's tiles: about this many where `winogradItemFloats` allows more (wider products gain
/// little, and every thread's buffers add to the peak memory).
nonisolated(unsafe) var winogradItemTiles = 64

/// Below this many tiles per thread, `winogradConvolution`'s threads split the output channels.
nonisolated(unsafe) var winogradSplitTiles = 64

/// How many chunks of the output channels `winogradConvolution`'s threads split a convolution of
/// `tiles` tiles and `outputs` outputs per group into: the thread count below `winogradSplitTiles`
/// tiles per thread (with 16+ outputs per thread), else 1.
func winogradOutputChunks(tiles: Int, outputs mg: Int) -> Int {
    let threads = Parallel.threadCount
    return tiles < winogradSplitTiles * threads && mg >= 16 * threads ? threads : 1
}

/// Outputs per block of `winogradConvolution`'s fused weight transform (see `winogradFusesWeights`):
/// 32 at 512 channels is 2.4 MB of transformed weights per thread. ResNet-18 224×224 batch 8's
/// layer4 (7×7, 512 channels) against blocks of 0 (U first), 16 and 64, profiled per node
/// (interleaved, loaded machine, normalised by the nodes the change leaves alone): forward 0.150-
/// 0.164, 0.142-0.154, 0.128-0.141 (32), 0.181-0.187; ConvGrad 0.378-0.385, 0.341-0.372, 0.334-0.377, 0.389-0.427.
let winogradFusedBlock = 32

/// Whether a forward or dX by Winograd transforms its weights inside its threads, a block of
/// `winogradFusedBlock` outputs at a time right before their products, instead of into U first:
/// where the threads split the output channels (few tiles, many channels: 7×7 at 512 channels,
/// where U is 36 MB, 4x W, written and then read back from memory on every call).
func winogradFusesWeights(images: Int, outputs mg: Int, output: (Int, Int), tile tm: Int) -> Bool {
    let tiles = images * ((output.0 + tm - 1) / tm) * ((output.1 + tm - 1) / tm)
    return winogradOutputChunks(tiles: tiles, outputs: mg) > 1
}

/// Images at most this many tiles wide take `winogradConvolution`'s gathering transforms (eight
/// tiles of the work item in the lanes, whatever their rows and images); wider ones split rows
/// into column phases (eight tiles of one row in the lanes).
nonisolated(unsafe) var winogradGatherTilesX = 7

/// The weights of a convolution in the Winograd domain, as one product: U [ξ, R] = Gk [ξ, 9] · Wᵀ
/// [9, R] for W's R = rows·(its second axis) 3×3 kernels, where Gk [(r, s), (ky, kx)] = G[r, ky]·G[s, kx]
/// (G g Gᵀ written out; the coefficients computed in float64 and rounded once, the sum of nine
/// products in float32). U_ξ keeps W's kernel order: for a forward weight [G·outs, ins, 3, 3] that
/// is [G][outs][ins], each group's U_ξ an [outs, ins] matrix; `flipped` rotates each kernel by 180°
/// (ConvGrad's dX, whose weight is read transposed). U is written to `U` (ξ·R floats, from
/// `WinogradWeightBlock`).
///
/// The product is a loop of its own rather than sgemm: with K = 9 OpenBLAS first zeroes U (beta 0)
/// then reads and rewrites it, three passes over a U of up to 36 MB where one write is needed
/// (512 channels: U is 4x W). Eight kernels at a time, each U element the sum of its nine
/// products in tap order by fused multiply-adds, as sgemm's kernel sums them.
func winogradWeights<F: WinogradTransform>(_: F.Type, _ W: UnsafePointer<Float>, kernels: Int, flipped: Bool, into U: UnsafeMutablePointer<Float>) {
    let nn = F.n * F.n, gk = winogradTapMatrix(F.self, flipped: flipped)
    gk.withUnsafeBufferPointer { pg in
        guard let g = pg.baseAddress else { return }
        let blocks = kernels / 8
        // Blocks of eight kernels, about 64 KB of U per chunk so small layers stay on one thread.
        Parallel.forRange(blocks, minimumChunk: max(1, 2048 / nn)) { range in
            winogradWeightRun(g, nn: nn, W + range.lowerBound * 72, count: range.count * 8, into: U + range.lowerBound * 8, stride: kernels)
        }
        winogradWeightRun(g, nn: nn, W + blocks * 72, count: kernels - blocks * 8, into: U + blocks * 8, stride: kernels)
    }
}

/// `winogradWeights` for `count` consecutive kernels of W on the calling thread: U[ξ·stride + r] =
/// Σ_tap Gk[ξ, tap]·W[r·9 + tap] (`g` is Gk [nn, 9]), eight kernels at a time, each sum of nine
/// products in tap order by fused multiply-adds; the last count % 8 one at a time, the same sums.
@inline(__always)
func winogradWeightRun(_ g: UnsafePointer<Float>, nn: Int, _ W: UnsafePointer<Float>, count: Int,
                       into U: UnsafeMutablePointer<Float>, stride: Int) {
    let blocks = count / 8
    for block in 0..<blocks {
        let r = block * 8
        let w = W + r * 9
        var taps = (SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(),
                    SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>())
        withUnsafeMutableBytes(of: &taps) { raw in
            let t = raw.baseAddress!.assumingMemoryBound(to: SIMD8<Float>.self)
            #if ONNX_TRAIN_X86_64_V3 && arch(x86_64)
            // Taps 0…7 of the eight kernels (rows of W, 9 floats apart) transposed; tap 8 gathered.
            @inline(__always) func row(_ l: Int) -> SIMD8<Float> { UnsafeRawPointer(w + l * 9).loadUnaligned(as: SIMD8<Float>.self) }
            winogradTranspose8(row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7), count: 8, into: t)
            t[8] = SIMD8(w[8], w[17], w[26], w[35], w[44], w[53], w[62], w[71])
            #else
            for tap in 0..<9 { t[tap] = SIMD8(w[tap], w[9 + tap], w[18 + tap], w[27 + tap], w[36 + tap], w[45 + tap], w[54 + tap], w[63 + tap]) }
            #endif
            for xi in 0..<nn {
                let gx = g + xi * 9
                var sum = t[0] * SIMD8(repeating: gx[0])
                for tap in 1..<9 { sum = sum.addingProduct(t[tap], SIMD8(repeating: gx[tap])) }
                UnsafeMutableRawPointer(U + xi * stride + r).storeBytes(of: sum, as: SIMD8<Float>.self)
            }
        }
    }
    for r in (blocks * 8)..<count {
        for xi in 0..<nn {
            var sum = W[r * 9] * g[xi * 9]
            for tap in 1..<9 { sum = sum.addingProduct(W[r * 9 + tap], g[xi * 9 + tap]) }
            U[xi * stride + r] = sum
        }
    }
}

/// Gk [(r, s), (ky, kx)] = G[r, ky]·G[s, kx] [(m+2)², 9], the transform G g Gᵀ of each unit tap
/// written out (computed in float64, rounded once); `flipped` reads tap (ky, kx) as (2 − ky, 2 − kx).
func winogradTapMatrix<F: WinogradTransform>(_: F.Type, flipped: Bool) -> [Float] {
    let n = F.n
    // G [n, 3]: the transform of each unit tap.
    var g = [Double](repeating: 0, count: n * 3)
    withUnsafeTemporaryAllocation(of: SIMD8<Double>.self, capacity: n) { u in
        for k in 0..<3 {
            F.weight(SIMD8(repeating: k == 0 ? 1 : 0), SIMD8(repeating: k == 1 ? 1 : 0), SIMD8(repeating: k == 2 ? 1 : 0), u.baseAddress!, 1)
            for r in 0..<n { g[r * 3 + k] = u[r][0] }
        }
    }
    var gk = [Float](repeating: 0, count: n * n * 9)
    for r in 0..<n { for s in 0..<n { for ky in 0..<3 { for kx in 0..<3 {
        gk[(r * n + s) * 9 + (flipped ? 8 - (ky * 3 + kx) : ky * 3 + kx)] = Float(g[r * 3 + ky] * g[s * 3 + kx])
    } } } }
    return gk
}

/// The block the transformed weights U are written to: one block, kept between calls at the size of
/// the largest U so far (36 MB for a 512×512 F(4×4) layer; a fresh allocation each call faults every
/// page), and handed to one caller at a time (a second caller meanwhile allocates its own). Through
/// the tensor buffer cache every layer's U kept a block of its own size: Inception v1's ten 3×3
/// layers held 42 MB of idle U blocks, which lifted its batch-32 inference peak above onnxruntime's.
enum WinogradWeightBlock {
    private static let slot = Mutex<(address: Int, count: Int)?>(nil)

    /// A block of at least `count` floats (contents undefined).
    static func take(_ count: Int) throws -> (UnsafeMutablePointer<Float>, Int) {
        let (kept, stale) = slot.withLock { s -> ((Int, Int)?, Int?) in
            guard let block = s else { return (nil, nil) }
            s = nil
            return block.count >= count ? (block, nil) : (nil, block.address)
        }
        if let kept, let pointer = UnsafeMutablePointer<Float>(bitPattern: kept.0) { return (pointer, kept.1) }
        if let stale { free(UnsafeMutableRawPointer(bitPattern: stale)) }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, max(count, 16) * MemoryLayout<Float>.size) == 0, let raw else {
            throw KernelError("Winograd weights of \(count) floats cannot be allocated: out of memory")
        }
        return (raw.assumingMemoryBound(to: Float.self), count)
    }

    /// Gives back a block from `take`: kept if it is the largest, else freed.
    static func give(_ block: (UnsafeMutablePointer<Float>, Int)) {
        let freed = slot.withLock { s -> Int? in
            let address = Int(bitPattern: block.0)
            guard let current = s else { s = (address, block.1); return nil }
            if current.count >= block.1 { return address }
            s = (address, block.1)
            return current.address
        }
        if let freed { free(UnsafeMutableRawPointer(bitPattern: freed)) }
    }
}

/// The Winograd weights U of one Conv or FusedConv node whose weight is a constant of its session
/// (`NodeContext.isConstantInput`: an initializer of an inference session, never a training
/// graph's fed weights): computed on the first run that takes Winograd and read by every later
/// run, on any thread, until the session is freed. The bytes come from the session's
/// `KernelCacheBudget`; where it refuses them the node transforms per call as without a cache.
/// Each run checks that its weight is the tensor U was computed from (same storage and shape)
/// and recomputes U otherwise.
final class WinogradWeightCache: Sendable {
    /// U of one weight tensor at one tile width, freed (and its bytes released) with the last
    /// reference: a run that replaces it leaves it to the runs still reading it.
    final class Transformed: @unchecked Sendable {
        let source: TensorStorage, shape: [Int], tile: Int
        let pointer: UnsafeMutablePointer<Float>
        let bytes: Int
        let budget: KernelCacheBudget
        init(source: TensorStorage, shape: [Int], tile: Int, pointer: UnsafeMutablePointer<Float>, bytes: Int, budget: KernelCacheBudget) {
            self.source = source
            self.shape = shape
            self.tile = tile
            self.pointer = pointer
            self.bytes = bytes
            self.budget = budget
        }
        deinit {
            free(pointer)
            budget.release(bytes)
        }
        func fits(_ w: Tensor, tile: Int) -> Bool { source === w.storage && shape == w.shape && self.tile == tile }
    }

    let budget: KernelCacheBudget
    private let kept = Mutex<Transformed?>(nil)
    init(budget: KernelCacheBudget) { self.budget = budget }

    /// U [ξ][M][C/G] of the forward weight `w` (float32 [M, C/G, 3, 3], its elements at `W`) at
    /// `tile`, kept or computed now; nil when the budget cannot hold it.
    func weights(_ w: Tensor, _ W: UnsafePointer<Float>, tile: Int) throws -> Transformed? {
        if let t = kept.withLock({ $0 }), t.fits(w, tile: tile) { return t }
        let kernels = w.shape[0] * w.shape[1], nn = (tile + 2) * (tile + 2)
        let bytes = nn * kernels * MemoryLayout<Float>.size
        guard budget.reserve(bytes) else { return nil }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, max(bytes, 64)) == 0, let raw else {
            budget.release(bytes)
            throw KernelError("Winograd weights of \(bytes) bytes cannot be allocated: out of memory")
        }
        let U = raw.assumingMemoryBound(to: Float.self)
        if tile == 2 {
            winogradWeights(WinogradF2.self, W, kernels: kernels, flipped: false, into: U)
        } else {
            winogradWeights(WinogradF4.self, W, kernels: kernels, flipped: false, into: U)
        }
        let made = Transformed(source: w.storage, shape: w.shape, tile: tile, pointer: U, bytes: bytes, budget: budget)
        // Two threads may both compute it on a first run: the first kept wins, the other is freed.
        return kept.withLock { current in
            if let current, current.fits(w, tile: tile) { return current }
            current = made
            return made
        }
    }
}

/// A float32 2-D correlation with a 3×3 kernel at unit strides by Winograd F(m×m, 3×3).
///
/// X [N, C, ih, iw], U from `winogradWeights` [ξ][G][M/G][C/G] (`transposedWeights`: [ξ][G][C/G][M/G]),
/// bias [M]? -> Y [N, M, oh, ow], where
/// output (y, x) reads input rows y - padTop ..< y - padTop + 3 and columns likewise (zeros outside
/// the image; any pads, the pads at the end are implied by oh and ow). `epilogue` (FusedConv's Z
/// and Relu) is applied to each output row right after its tile row is written. Without U, each
/// thread transforms W's weights itself, `fusedBlock` outputs at a time.
func winogradConvolution<F: WinogradTransform>(_: F.Type, _ X: UnsafePointer<Float>, _ U: UnsafePointer<Float>?, weights W: UnsafePointer<Float>? = nil,
                                               fusedBlock block: Int = winogradFusedBlock, transposedWeights: Bool, bias: UnsafePointer<Float>?,
                                               _ Y: UnsafeMutablePointer<Float>, images: Int, channels c: Int, outputs m: Int, group: Int,
                                               input: (Int, Int), output: (Int, Int), padTop: Int, padLeft: Int,
                                               epilogue: ConvEpilogue<Float>?) {
    let tm = F.m, n = F.n, nn = n * n, cg = c / group, mg = m / group
    let (ih, iw) = input, (oh, ow) = output, I = ih * iw, P = oh * ow
    let tilesY = (oh + tm - 1) / tm, tilesX = (ow + tm - 1) / tm, tileRows = images * tilesY
    // A work item's buffers V and Mo take nn·(C/G + M/G)·tiles floats: `winogradItemTiles` tiles
    // but at most `winogradItemFloats` (16 MB), and at least one tile row (64 and 128 tiles measured
    // as fast as 256 or 16 MB's worth, at 64 to 512 channels; a 16 MB item per thread took Inception
    // v1's batch-32 peak memory above onnxruntime's, 128 tiles left it 6 MiB above). The items come in a multiple of the thread count where the
    // rows allow, so the threads get equal shares. With fewer tiles than `winogradSplitTiles` per
    // thread, the threads split the output channels instead: each transforms the same input, and
    // reads only its share of U (at 14×14 and 512 channels U is 36 MB, the products are narrow and
    // bound by reading it).
    let threads = Parallel.threadCount
    let mChunks = winogradOutputChunks(tiles: tileRows * tilesX, outputs: mg)
    let budget = min(winogradItemFloats, nn * (cg + mg) * winogradItemTiles)
    var rowsPerItem = max(1, budget / max(nn * (cg + mg) * tilesX, 1))
    if mChunks == 1 {
        let wanted = (tileRows + rowsPerItem - 1) / rowsPerItem
        let even = min(tileRows, (wanted + threads - 1) / threads * threads)
        rowsPerItem = (tileRows + even - 1) / even
    }
    rowsPerItem = min(rowsPerItem, tileRows)
    let rowItems = (tileRows + rowsPerItem - 1) / rowsPerItem
    let maxTiles = rowsPerItem * tilesX, mMax = (mg + mChunks - 1) / mChunks
    let reader = WinogradTileReader(size: n, step: tm, rows: ih, columns: iw, padTop: padTop, padLeft: padLeft,
                                    tilesX: tilesX, tilesY: tilesY)
    let gather = reader.gather
    // Without U: each thread transforms `block` outputs' weights at a time into `Ub` and
    // multiplies them at once, while they are in its cache (`winogradFusesWeights`).
    let fusedBlock = U == nil ? max(1, min(block, mMax)) : 0
    let gk = U == nil ? winogradTapMatrix(F.self, flipped: transposedWeights) : []
    Parallel.forRange(rowItems * mChunks) { range in
        let Ub = UnsafeMutablePointer<Float>.allocate(capacity: max(1, nn * fusedBlock * cg))
        defer { Ub.deallocate() }
        let V = UnsafeMutablePointer<Float>.allocate(capacity: nn * cg * maxTiles)
        let Mo = UnsafeMutablePointer<Float>.allocate(capacity: nn * mMax * maxTiles)
        let phases = UnsafeMutablePointer<Float>.allocate(capacity: reader.bufferCount(tileRows: rowsPerItem))
        let d = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: nn)
        let o = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: n * n)
        // Lane staging for the gathering transforms: [nn][8] floats (zeros in unused lanes).
        let lanesBuffer = UnsafeMutablePointer<Float>.allocate(capacity: nn * 8)
        lanesBuffer.initialize(repeating: 0, count: nn * 8)
        defer { V.deallocate(); Mo.deallocate(); phases.deallocate(); d.deallocate(); o.deallocate(); lanesBuffer.deallocate() }
        for item in range {
            let ri = item / mChunks, mc = item % mChunks
            let u0 = ri * rowsPerItem, u1 = min(u0 + rowsPerItem, tileRows), T = (u1 - u0) * tilesX
            let o0 = mg * mc / mChunks, mo = mg * (mc + 1) / mChunks - o0
            for gi in 0..<group {
                // V [ξ][C/G][T] = Bᵀ d B for every tile and input channel of the group.
                for ch in 0..<cg {
                    let planes = X + (gi * cg + ch) * I
                    reader.read({ b in planes + b * c * I }, tileRows: u0, u1, phases: phases, lanes: lanesBuffer, into: d) { t, lanes in
                        for j in 0..<n { F.input(d + j, n) }
                        for k in 0..<n { F.input(d + k * n, 1) }
                        winogradStore(d, count: nn, lanes: lanes, to: V + ch * T + t, stride: cg * T)
                    }
                }
                // Mo_ξ [M/G, T] = U_ξ [M/G, C/G] · V_ξ [C/G, T] (single-threaded: inside the region).
                if let U {
                    for xi in 0..<nn {
                        let u = U + (xi * group + gi) * mg * cg
                        BLAS.gemm(transA: transposedWeights, transB: false, m: mo, n: T, k: cg, alpha: Float(1),
                                  a: transposedWeights ? u + o0 : u + o0 * cg, lda: transposedWeights ? mg : cg, b: V + xi * cg * T, ldb: T,
                                  beta: Float(0), c: Mo + xi * mo * T, ldc: T)
                    }
                } else if let W {
                    // Outputs first..<first + ms of the group at a time: Ub_ξ [ms, C/G] (transposed: [C/G, ms],
                    // kernels (k, first...) of W [G·C/G, M/G] in runs of ms), the same values as U's rows.
                    gk.withUnsafeBufferPointer { pg in
                        guard let g = pg.baseAddress else { return }
                        for s0 in stride(from: 0, to: mo, by: fusedBlock) {
                            let ms = min(fusedBlock, mo - s0), first = o0 + s0
                            if transposedWeights {
                                for k in 0..<cg {
                                    winogradWeightRun(g, nn: nn, W + ((gi * cg + k) * mg + first) * 9, count: ms, into: Ub + k * ms, stride: cg * ms)
                                }
                            } else {
                                winogradWeightRun(g, nn: nn, W + (gi * mg + first) * cg * 9, count: ms * cg, into: Ub, stride: ms * cg)
                            }
                            for xi in 0..<nn {
                                BLAS.gemm(transA: transposedWeights, transB: false, m: ms, n: T, k: cg, alpha: Float(1),
                                          a: Ub + xi * ms * cg, lda: transposedWeights ? ms : cg, b: V + xi * cg * T, ldb: T,
                                          beta: Float(0), c: Mo + (xi * mo + s0) * T, ldc: T)
                            }
                        }
                    }
                }
                // Y tile = Aᵀ Mo A + bias, then the epilogue on each finished output row.
                for oc in o0..<(o0 + mo) where gather {
                    let channel = gi * mg + oc, start = SIMD8<Float>(repeating: bias?[channel] ?? 0)
                    for t in stride(from: 0, to: T, by: 8) {
                        let lanes = min(8, T - t)
                        winogradLoad(Mo + (oc - o0) * T + t, stride: mo * T, count: nn, lanes: lanes, into: d)
                        for j in 0..<n { F.output(d + j, n, o + j, n) }
                        for i in 0..<tm { F.output(o + i * n, 1, d + i * tm, 1) }
                        for xi in 0..<(tm * tm) {
                            UnsafeMutableRawPointer(lanesBuffer + xi * 8).storeBytes(of: d[xi] + start, as: SIMD8<Float>.self)
                        }
                        for l in 0..<lanes {
                            let ti = t + l, u = u0 + ti / tilesX, tx = ti % tilesX, b = u / tilesY, ty = u % tilesY
                            let rows = min(tm, oh - ty * tm), columns = min(tm, ow - tx * tm)
                            let dst = Y + (b * m + channel) * P + ty * tm * ow + tx * tm
                            for i in 0..<rows { for j in 0..<columns { dst[i * ow + j] = lanesBuffer[(i * tm + j) * 8 + l] } }
                        }
                    }
                    if let epilogue {
                        for u in u0..<u1 {
                            let b = u / tilesY, ty = u % tilesY
                            epilogue.apply(Y, (b * m + channel) * P + ty * tm * ow, min(tm, oh - ty * tm) * ow)
                        }
                    }
                }
                for oc in o0..<(o0 + mo) where !gather {
                    let channel = gi * mg + oc, start = SIMD8<Float>(repeating: bias?[channel] ?? 0)
                    for u in u0..<u1 {
                        let b = u / tilesY, ty = u % tilesY, t0 = (u - u0) * tilesX
                        let planeOffset = (b * m + channel) * P, dst = Y + planeOffset
                        let rows = min(tm, oh - ty * tm)
                        for tx in stride(from: 0, to: tilesX, by: 8) {
                            let lanes = min(8, tilesX - tx)
                            winogradLoad(Mo + (oc - o0) * T + t0 + tx, stride: mo * T, count: nn, lanes: lanes, into: d)
                            // o [m, n] = Aᵀ d (per column), then d [m, m] = o A (per row of o).
                            for j in 0..<n { F.output(d + j, n, o + j, n) }
                            for i in 0..<tm { F.output(o + i * n, 1, d + i * tm, 1) }
                            for i in 0..<rows {
                                let line = dst + (ty * tm + i) * ow
                                if tm == 4 {
                                    // Eight tiles' four columns interleaved into 32 consecutive outputs.
                                    winogradInterleave4(d[i * 4] + start, d[i * 4 + 1] + start, d[i * 4 + 2] + start, d[i * 4 + 3] + start,
                                                        count: min(32, ow - tx * 4), to: line + tx * 4, scratch: lanesBuffer)
                                    continue
                                }
                                for j in 0..<tm {
                                    let v = d[i * tm + j] + start
                                    for l in 0..<lanes {
                                        let x = (tx + l) * tm + j
                                        if x < ow { line[x] = v[l] }
                                    }
                                }
                            }
                        }
                        if let epilogue {
                            for i in 0..<rows { epilogue.apply(Y, planeOffset + (ty * tm + i) * ow, ow) }
                        }
                    }
                }
            }
        }
    }
}

/// Writes (a₀ b₀ c₀ e₀ a₁ b₁ c₁ e₁ … a₇ b₇ c₇ e₇), its first `count` floats, to `line` (through
/// `scratch`, 32 floats, when fewer than 32).
@inline(__always)
func winogradInterleave4(_ a: SIMD8<Float>, _ b: SIMD8<Float>, _ c: SIMD8<Float>, _ e: SIMD8<Float>, count: Int,
                         to line: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
    let v0 = SIMD8<Float>(a[0], b[0], c[0], e[0], a[1], b[1], c[1], e[1])
    let v1 = SIMD8<Float>(a[2], b[2], c[2], e[2], a[3], b[3], c[3], e[3])
    let v2 = SIMD8<Float>(a[4], b[4], c[4], e[4], a[5], b[5], c[5], e[5])
    let v3 = SIMD8<Float>(a[6], b[6], c[6], e[6], a[7], b[7], c[7], e[7])
    let dst = count == 32 ? line : scratch
    UnsafeMutableRawPointer(dst).storeBytes(of: v0, as: SIMD8<Float>.self)
    UnsafeMutableRawPointer(dst + 8).storeBytes(of: v1, as: SIMD8<Float>.self)
    UnsafeMutableRawPointer(dst + 16).storeBytes(of: v2, as: SIMD8<Float>.self)
    UnsafeMutableRawPointer(dst + 24).storeBytes(of: v3, as: SIMD8<Float>.self)
    if count < 32 { line.update(from: scratch, count: count) }
}

/// Stores the first `lanes` lanes of `count` vectors `d` to `count` rows `stride` floats apart.
@inline(__always)
func winogradStore(_ d: UnsafePointer<SIMD8<Float>>, count: Int, lanes: Int, to dst: UnsafeMutablePointer<Float>, stride: Int) {
    for xi in 0..<count {
        let p = dst + xi * stride
        if lanes == 8 {
            UnsafeMutableRawPointer(p).storeBytes(of: d[xi], as: SIMD8<Float>.self)
        } else {
            for l in 0..<lanes { p[l] = d[xi][l] }
        }
    }
}

/// Loads `count` vectors of `lanes` floats (zeros after them) from rows `stride` floats apart.
@inline(__always)
func winogradLoad(_ src: UnsafePointer<Float>, stride: Int, count: Int, lanes: Int, into d: UnsafeMutablePointer<SIMD8<Float>>) {
    for xi in 0..<count {
        let p = src + xi * stride
        if lanes == 8 {
            d[xi] = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
        } else {
            var v = SIMD8<Float>()
            for l in 0..<lanes { v[l] = p[l] }
            d[xi] = v
        }
    }
}

/// Reads a plane's tiles as the Winograd transforms take them, eight tiles at a time in SIMD lanes:
/// tile (ty, tx) is the `size`×`size` patch at row ty·step − padTop, column tx·step − padLeft of
/// the plane (zeros outside it); the forward reads n×n input patches m apart, dW also m×m patches
/// of dY. Images at least `winogradGatherTilesX` + 1 tiles wide split each input row into `step`
/// column phases (phase q holds columns q, q + step, ...), so the same element of eight
/// neighbouring tiles is eight consecutive floats; narrower ones gather any eight tiles of a run
/// of tile rows, across rows and images, from zero-padded copies of their rows, so a 7×7 image's
/// four tiles do not leave half the lanes idle.
struct WinogradTileReader {
    let size: Int, step: Int, rows: Int, columns: Int, padTop: Int, padLeft: Int, tilesX: Int, tilesY: Int
    let gather: Bool
    /// A phase's floats (tilesX + 1 used, then zeros, so the loads past the last tile read zeros),
    /// or a gathered row's (tilesX·step + size − step columns).
    let length: Int

    init(size: Int, step: Int, rows: Int, columns: Int, padTop: Int, padLeft: Int, tilesX: Int, tilesY: Int) {
        self.size = size; self.step = step; self.rows = rows; self.columns = columns
        self.padTop = padTop; self.padLeft = padLeft; self.tilesX = tilesX; self.tilesY = tilesY
        gather = tilesX <= winogradGatherTilesX
        length = gather ? tilesX * step + size - step : (tilesX + 1 + 7) / 8 * 8 + 8
    }

    /// The floats of the `phases` buffer `read` needs for runs of up to `tileRows` tile rows (a
    /// gathered buffer has 8 more: the last tile's rows are loaded 8 floats at a time).
    func bufferCount(tileRows: Int) -> Int { gather ? tileRows * size * length + 8 : size * step * length }

    /// Reads the tiles of tile rows u0..<u1 (tile row u: image u / tilesY, row u % tilesY of
    /// `plane(image)`) into `d`, eight at a time: d[k·size + j] holds element (k, j) of the run's
    /// tiles t..<t + lanes (numbered (u − u0)·tilesX + tx), then `body(t, lanes)` runs; the other
    /// lanes hold leftovers. `phases` holds `bufferCount` floats, `lanes` size²·8.
    @inline(__always)
    func read(_ plane: (Int) -> UnsafePointer<Float>, tileRows u0: Int, _ u1: Int, phases: UnsafeMutablePointer<Float>,
              lanes lanesBuffer: UnsafeMutablePointer<Float>, into d: UnsafeMutablePointer<SIMD8<Float>>, _ body: (Int, Int) -> Void) {
        let p = size, pp = size * size
        if gather {
            for u in u0..<u1 {
                winogradPhases(plane(u / tilesY), rows: rows, columns: columns, firstRow: (u % tilesY) * step - padTop, padLeft: padLeft,
                               count: p, phases: 1, length: length, into: phases + (u - u0) * p * length)
            }
            let T = (u1 - u0) * tilesX
            #if ONNX_TRAIN_X86_64_V3 && arch(x86_64)
            if p <= 8 {
                // Eight tiles' rows k loaded as eight vectors and transposed in registers, so their
                // element (k, j) is vector j (scalar stores into `lanes` then vector loads of them
                // stalled on store forwarding). Unused lanes repeat the run's first tile.
                var row = 0, column = 0   // the next tile's tile row in the run and its column
                // The next tile's offset in `phases` (scalars: a vector of offsets filled lane by
                // lane went through the stack and stalled the same way).
                @inline(__always) func next(_ used: Bool) -> Int {
                    guard used else { return 0 }
                    let offset = row * p * length + column * step
                    column += 1
                    if column == tilesX { column = 0; row += 1 }
                    return offset
                }
                for t in stride(from: 0, to: T, by: 8) {
                    let lanes = min(8, T - t)
                    let o0 = next(true), o1 = next(lanes > 1), o2 = next(lanes > 2), o3 = next(lanes > 3)
                    let o4 = next(lanes > 4), o5 = next(lanes > 5), o6 = next(lanes > 6), o7 = next(lanes > 7)
                    for k in 0..<p {
                        let base = phases + k * length
                        @inline(__always) func load(_ offset: Int) -> SIMD8<Float> {
                            UnsafeRawPointer(base + offset).loadUnaligned(as: SIMD8<Float>.self)
                        }
                        winogradTranspose8(load(o0), load(o1), load(o2), load(o3), load(o4), load(o5), load(o6), load(o7),
                                           count: p, into: d + k * p)
                    }
                    body(t, lanes)
                }
                return
            }
            #endif
            for t in stride(from: 0, to: T, by: 8) {
                let lanes = min(8, T - t)
                for l in 0..<lanes {
                    let ti = t + l, base = phases + (ti / tilesX) * p * length + (ti % tilesX) * step
                    for k in 0..<p { for j in 0..<p { lanesBuffer[(k * p + j) * 8 + l] = base[k * length + j] } }
                }
                for xi in 0..<pp { d[xi] = UnsafeRawPointer(lanesBuffer + xi * 8).loadUnaligned(as: SIMD8<Float>.self) }
                body(t, lanes)
            }
            return
        }
        for u in u0..<u1 {
            winogradPhases(plane(u / tilesY), rows: rows, columns: columns, firstRow: (u % tilesY) * step - padTop, padLeft: padLeft,
                           count: p, phases: step, length: length, into: phases)
            let t0 = (u - u0) * tilesX
            for tx in stride(from: 0, to: tilesX, by: 8) {
                for k in 0..<p {
                    let row = phases + k * step * length + tx
                    for j in 0..<p {
                        d[k * p + j] = UnsafeRawPointer(row + (j % step) * length + j / step).loadUnaligned(as: SIMD8<Float>.self)
                    }
                }
                body(t0 + tx, min(8, tilesX - tx))
            }
        }
    }
}

/// Splits `count` rows of a plane, from `firstRow` on (rows outside the plane are zeros), into
/// `phases` column phases of `length` floats each: phases[(k·phases + q)·length + j] holds column
/// j·phases + q - padLeft of row firstRow + k, zero outside the plane.
@inline(__always)
func winogradPhases(_ plane: UnsafePointer<Float>, rows: Int, columns: Int, firstRow: Int, padLeft: Int,
                    count: Int, phases: Int, length: Int, into dst: UnsafeMutablePointer<Float>) {
    for k in 0..<count {
        let row = firstRow + k, base = dst + k * phases * length
        guard row >= 0 && row < rows else {
            base.update(repeating: 0, count: phases * length)
            continue
        }
        let src = plane + row * columns
        // j in vectorLow..<vectorHigh: every phase's column inside the row, split eight j at a
        // time by `winogradDeinterleave4` (four phases; the rest one float at a time).
        var vectorLow = 0, vectorHigh = 0
        #if ONNX_TRAIN_X86_64_V3 && arch(x86_64)
        if phases == 4 {
            vectorLow = (padLeft + 3) / 4
            let end = min(length, (columns + padLeft) / 4)
            vectorHigh = vectorLow
            while vectorHigh + 8 <= end {
                winogradDeinterleave4(src + (4 * vectorHigh - padLeft), into: base + vectorHigh, length)
                vectorHigh += 8
            }
        }
        #endif
        for q in 0..<phases {
            let out = base + q * length
            // Columns j·phases + q - padLeft inside 0..<columns: j in lo..<hi.
            let first = padLeft - q
            let lo = min(length, max(0, first <= 0 ? 0 : (first + phases - 1) / phases))
            let hi = max(lo, min(length, (columns + padLeft - q + phases - 1) / phases))
            if lo > 0 { out.update(repeating: 0, count: lo) }
            if phases == 1 {
                (out + lo).update(from: src + (lo - padLeft), count: hi - lo)
            } else {
                var s = src + (lo * phases + q - padLeft), j = lo
                while j < hi {
                    if j == vectorLow && vectorHigh > vectorLow {
                        // lo <= vectorLow and vectorHigh <= hi for every phase: skip the vector part.
                        s += (vectorHigh - j) * phases
                        j = vectorHigh
                        continue
                    }
                    out[j] = s.pointee
                    s += phases
                    j += 1
                }
            }
            if hi < length { (out + hi).update(repeating: 0, count: length - hi) }
        }
    }
}

#if ONNX_TRAIN_X86_64_V3 && arch(x86_64)
/// Splits 32 consecutive floats `src` into four phases of eight: dst[q·stride + j] = src[4j + q].
@inline(__always)
func winogradDeinterleave4(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, _ stride: Int) {
    let raw = UnsafeRawPointer(src)
    let v0 = raw.loadUnaligned(as: SIMD8<Float>.self), v1 = raw.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
    let v2 = raw.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self), v3 = raw.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self)
    // Per 128-bit lane: t0 = (x0 x8 x1 x9 | x4 x12 x5 x13), t1 = (x2 x10 x3 x11 | x6 x14 x7 x15), t2, t3 from x16...
    let t0 = _mm256_castps_pd(_mm256_unpacklo_ps(v0, v1)), t1 = _mm256_castps_pd(_mm256_unpackhi_ps(v0, v1))
    let t2 = _mm256_castps_pd(_mm256_unpacklo_ps(v2, v3)), t3 = _mm256_castps_pd(_mm256_unpackhi_ps(v2, v3))
    // Phase q as (x_q x_{q+8} x_{q+16} x_{q+24} | x_{q+4} x_{q+12} x_{q+20} x_{q+28}), then in order.
    let order = unsafeBitCast(SIMD8<Int32>(0, 4, 1, 5, 2, 6, 3, 7), to: __m256i.self)
    let out = UnsafeMutableRawPointer(dst)
    out.storeBytes(of: _mm256_permutevar8x32_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(t0, t2)), order), as: SIMD8<Float>.self)
    out.storeBytes(of: _mm256_permutevar8x32_ps(_mm256_castpd_ps(_mm256_unpackhi_pd(t0, t2)), order), toByteOffset: 4 * stride, as: SIMD8<Float>.self)
    out.storeBytes(of: _mm256_permutevar8x32_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(t1, t3)), order), toByteOffset: 8 * stride, as: SIMD8<Float>.self)
    out.storeBytes(of: _mm256_permutevar8x32_ps(_mm256_castpd_ps(_mm256_unpackhi_pd(t1, t3)), order), toByteOffset: 12 * stride, as: SIMD8<Float>.self)
}

/// The 8×8 transpose of rows r0…r7: column j (r0[j], r1[j], …, r7[j]) to d[j], for j < count.
@inline(__always)
func winogradTranspose8(_ r0: SIMD8<Float>, _ r1: SIMD8<Float>, _ r2: SIMD8<Float>, _ r3: SIMD8<Float>,
                        _ r4: SIMD8<Float>, _ r5: SIMD8<Float>, _ r6: SIMD8<Float>, _ r7: SIMD8<Float>,
                        count: Int, into d: UnsafeMutablePointer<SIMD8<Float>>) {
    // Per 128-bit lane: t0 = (r0[0] r1[0] r0[1] r1[1] | r0[4] r1[4] r0[5] r1[5]) ...
    let t0 = _mm256_castps_pd(_mm256_unpacklo_ps(r0, r1)), t1 = _mm256_castps_pd(_mm256_unpackhi_ps(r0, r1))
    let t2 = _mm256_castps_pd(_mm256_unpacklo_ps(r2, r3)), t3 = _mm256_castps_pd(_mm256_unpackhi_ps(r2, r3))
    let t4 = _mm256_castps_pd(_mm256_unpacklo_ps(r4, r5)), t5 = _mm256_castps_pd(_mm256_unpackhi_ps(r4, r5))
    let t6 = _mm256_castps_pd(_mm256_unpacklo_ps(r6, r7)), t7 = _mm256_castps_pd(_mm256_unpackhi_ps(r6, r7))
    // s_j = (r0[j] r1[j] r2[j] r3[j] | r0[j+4] r1[j+4] r2[j+4] r3[j+4]), u_j the same of r4…r7.
    let s0 = _mm256_castpd_ps(_mm256_unpacklo_pd(t0, t2)), s1 = _mm256_castpd_ps(_mm256_unpackhi_pd(t0, t2))
    let s2 = _mm256_castpd_ps(_mm256_unpacklo_pd(t1, t3)), s3 = _mm256_castpd_ps(_mm256_unpackhi_pd(t1, t3))
    let u0 = _mm256_castpd_ps(_mm256_unpacklo_pd(t4, t6)), u1 = _mm256_castpd_ps(_mm256_unpackhi_pd(t4, t6))
    let u2 = _mm256_castpd_ps(_mm256_unpacklo_pd(t5, t7)), u3 = _mm256_castpd_ps(_mm256_unpackhi_pd(t5, t7))
    d[0] = SIMD8(lowHalf: s0.lowHalf, highHalf: u0.lowHalf)
    if count > 1 { d[1] = SIMD8(lowHalf: s1.lowHalf, highHalf: u1.lowHalf) }
    if count > 2 { d[2] = SIMD8(lowHalf: s2.lowHalf, highHalf: u2.lowHalf) }
    if count > 3 { d[3] = SIMD8(lowHalf: s3.lowHalf, highHalf: u3.lowHalf) }
    if count > 4 { d[4] = SIMD8(lowHalf: s0.highHalf, highHalf: u0.highHalf) }
    if count > 5 { d[5] = SIMD8(lowHalf: s1.highHalf, highHalf: u1.highHalf) }
    if count > 6 { d[6] = SIMD8(lowHalf: s2.highHalf, highHalf: u2.highHalf) }
    if count > 7 { d[7] = SIMD8(lowHalf: s3.highHalf, highHalf: u3.highHalf) }
}
#endif

/// Forward convolution by Winograd F(tile×tile, 3×3): the weights transformed, then
/// `winogradConvolution`. For `convolution` (Conv, FusedConv) where `winogradTile` chose it.
/// `fusedBlock` nil: the weights are transformed inside the threads where `winogradFusesWeights`
/// says, `winogradFusedBlock` outputs at a time; a count (tests): always, that many at a time.
/// `transformed`: U already computed from W (`WinogradWeightCache`), used as it is.
func winogradForward(tile: Int, _ X: UnsafePointer<Float>, _ W: UnsafePointer<Float>, bias: UnsafePointer<Float>?, _ Y: UnsafeMutablePointer<Float>,
                     images n: Int, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry, epilogue: ConvEpilogue<Float>?,
                     fusedBlock: Int? = nil, transformed: UnsafePointer<Float>? = nil) throws {
    func run<F: WinogradTransform>(_ f: F.Type) throws {
        if let transformed {
            winogradConvolution(f, X, transformed, transposedWeights: false, bias: bias, Y,
                                images: n, channels: c, outputs: m, group: group,
                                input: (g.input[0], g.input[1]), output: (g.output[0], g.output[1]),
                                padTop: g.padsBegin[0], padLeft: g.padsBegin[1], epilogue: epilogue)
            return
        }
        if let block = fusedBlock ?? (winogradFusesWeights(images: n, outputs: m / group, output: (g.output[0], g.output[1]), tile: f.m) ? winogradFusedBlock : nil) {
            winogradConvolution(f, X, nil, weights: W, fusedBlock: block, transposedWeights: false, bias: bias, Y,
                                images: n, channels: c, outputs: m, group: group,
                                input: (g.input[0], g.input[1]), output: (g.output[0], g.output[1]),
                                padTop: g.padsBegin[0], padLeft: g.padsBegin[1], epilogue: epilogue)
            return
        }
        let block = try WinogradWeightBlock.take(f.n * f.n * m * (c / group))
        defer { WinogradWeightBlock.give(block) }
        winogradWeights(f, W, kernels: m * (c / group), flipped: false, into: block.0)
        winogradConvolution(f, X, block.0, transposedWeights: false, bias: bias, Y,
                            images: n, channels: c, outputs: m, group: group,
                            input: (g.input[0], g.input[1]), output: (g.output[0], g.output[1]),
                            padTop: g.padsBegin[0], padLeft: g.padsBegin[1], epilogue: epilogue)
    }
    if tile == 2 { try run(WinogradF2.self) } else { try run(WinogradF4.self) }
}

/// dX of a 3×3 unit-stride convolution by Winograd: dX = dY ⋆ (W rotated 180°, in and out
/// swapped), a 3×3 unit-stride correlation over dY padded by 2 - pads (so output (y, x) of dX reads
/// dY rows y - (2 - padTop) ...). DY [N, M, oh, ow], W [M, C/G, 3, 3] -> dX [N, C, ih, iw].
/// `fusedBlock` as for `winogradForward`.
func winogradGradX(tile: Int, _ DY: UnsafePointer<Float>, _ W: UnsafePointer<Float>, _ DX: UnsafeMutablePointer<Float>,
                   images n: Int, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry, fusedBlock: Int? = nil) throws {
    func run<F: WinogradTransform>(_ f: F.Type) throws {
        if let block = fusedBlock ?? (winogradFusesWeights(images: n, outputs: c / group, output: (g.input[0], g.input[1]), tile: f.m) ? winogradFusedBlock : nil) {
            winogradConvolution(f, DY, nil, weights: W, fusedBlock: block, transposedWeights: true, bias: nil, DX,
                                images: n, channels: m, outputs: c, group: group,
                                input: (g.output[0], g.output[1]), output: (g.input[0], g.input[1]),
                                padTop: 2 - g.padsBegin[0], padLeft: 2 - g.padsBegin[1], epilogue: nil)
            return
        }
        let block = try WinogradWeightBlock.take(f.n * f.n * m * (c / group))
        defer { WinogradWeightBlock.give(block) }
        winogradWeights(f, W, kernels: m * (c / group), flipped: true, into: block.0)
        winogradConvolution(f, DY, block.0, transposedWeights: true, bias: nil, DX,
                            images: n, channels: m, outputs: c, group: group,
                            input: (g.output[0], g.output[1]), output: (g.input[0], g.input[1]),
                            padTop: 2 - g.padsBegin[0], padLeft: 2 - g.padsBegin[1], epilogue: nil)
    }
    if tile == 2 { try run(WinogradF2.self) } else { try run(WinogradF4.self) }
}

/// dW of a 3×3 unit-stride convolution by Winograd F(m×m, 3×3). The forward maps the weights g to
/// each output tile linearly, Y_tile = Aᵀ [(G g Gᵀ) ⊙ V] A with V = Bᵀ d B, so its adjoint is
///   dg = Gᵀ [ Σ_tiles (A dY_tile Aᵀ) ⊙ V ] G:
/// per transformed position ξ one product Z_ξ [M/G, C/G] = Σ_tiles Ŷ_ξ [M/G, tiles] · V_ξ [C/G, tiles]ᵀ
/// (Ŷ = A dY Aᵀ, zeros past the output's edge, so the tiles that overhang it add nothing), then
/// dW [M·C/G, 9] = Zᵀ · Gk (`winogradTapMatrix`): (m+2)²/m² = 2.25 multiplies per output and input
/// channel against im2col's 9. Runs of tile rows (of one or several images) of about
/// `winogradItemFloats` floats of V and Ŷ are transformed with the threads split over channels,
/// then their (m+2)²·G products summed into Z with the threads split over ξ.
/// X [N, C, ih, iw], DY [N, M, oh, ow] -> DW [M, C/G, 3, 3].
func winogradGradW(tile: Int, _ X: UnsafePointer<Float>, _ DY: UnsafePointer<Float>, _ DW: UnsafeMutablePointer<Float>,
                   images: Int, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry) {
    func run<F: WinogradTransform>(_: F.Type) {
        let tm = F.m, n = F.n, nn = n * n, cg = c / group, mg = m / group
        let (ih, iw) = (g.input[0], g.input[1]), (oh, ow) = (g.output[0], g.output[1]), I = ih * iw, P = oh * ow
        let tilesY = (oh + tm - 1) / tm, tilesX = (ow + tm - 1) / tm, tileRows = images * tilesY
        let input = WinogradTileReader(size: n, step: tm, rows: ih, columns: iw, padTop: g.padsBegin[0], padLeft: g.padsBegin[1],
                                       tilesX: tilesX, tilesY: tilesY)
        let gradient = WinogradTileReader(size: tm, step: tm, rows: oh, columns: ow, padTop: 0, padLeft: 0, tilesX: tilesX, tilesY: tilesY)
        let rowsPerRun = min(tileRows, max(1, winogradItemFloats / max(nn * (c + m) * tilesX, 1)))
        let maxTiles = rowsPerRun * tilesX
        let V = UnsafeMutablePointer<Float>.allocate(capacity: nn * c * maxTiles)      // [ξ][C][T]
        let Yh = UnsafeMutablePointer<Float>.allocate(capacity: nn * m * maxTiles)     // [ξ][M][T]
        let Z = UnsafeMutablePointer<Float>.allocate(capacity: nn * m * cg)            // [ξ][M][C/G]
        defer { V.deallocate(); Yh.deallocate(); Z.deallocate() }
        let phaseCount = max(input.bufferCount(tileRows: rowsPerRun), gradient.bufferCount(tileRows: rowsPerRun))
        for u0 in stride(from: 0, to: tileRows, by: rowsPerRun) {
            let u1 = min(u0 + rowsPerRun, tileRows), T = (u1 - u0) * tilesX
            // V_ξ = Bᵀ d B for every input channel, Ŷ_ξ = A dY Aᵀ for every output channel.
            Parallel.forRange(c + m) { planes in
                let phases = UnsafeMutablePointer<Float>.allocate(capacity: phaseCount)
                let lanesBuffer = UnsafeMutablePointer<Float>.allocate(capacity: nn * 8)
                let d = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: nn)
                let e = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: nn)
                defer { phases.deallocate(); lanesBuffer.deallocate(); d.deallocate(); e.deallocate() }
                for p in planes {
                    if p < c {
                        input.read({ b in X + (b * c + p) * I }, tileRows: u0, u1, phases: phases, lanes: lanesBuffer, into: d) { t, lanes in
                            for j in 0..<n { F.input(d + j, n) }
                            for k in 0..<n { F.input(d + k * n, 1) }
                            winogradStore(d, count: nn, lanes: lanes, to: V + p * T + t, stride: c * T)
                        }
                    } else {
                        let o = p - c
                        gradient.read({ b in DY + (b * m + o) * P }, tileRows: u0, u1, phases: phases, lanes: lanesBuffer, into: d) { t, lanes in
                            // e [n, m] = A dY (per column), then d [n, n] = e Aᵀ (per row of e).
                            for j in 0..<tm { F.outputAdjoint(d + j, tm, e + j, tm) }
                            for k in 0..<n { F.outputAdjoint(e + k * tm, 1, d + k * n, 1) }
                            winogradStore(d, count: nn, lanes: lanes, to: Yh + o * T + t, stride: m * T)
                        }
                    }
                }
            }
            // Z_ξ,g [M/G, C/G] (+)= Ŷ_ξ,g [M/G, T] · V_ξ,g [C/G, T]ᵀ (single-threaded: inside the region).
            let first = u0 == 0
            Parallel.forRange(nn * group) { products in
                for q in products {
                    let xi = q / group, gi = q % group
                    BLAS.gemm(transA: false, transB: true, m: mg, n: cg, k: T, alpha: Float(1),
                              a: Yh + (xi * m + gi * mg) * T, lda: T, b: V + (xi * c + gi * cg) * T, ldb: T,
                              beta: first ? Float(0) : Float(1), c: Z + (xi * m + gi * mg) * cg, ldc: cg)
                }
            }
        }
        // dW [M·C/G, 9] = Zᵀ [M·C/G, ξ] · Gk [ξ, 9]: Gᵀ Z_(o,c) G for every kernel.
        winogradTapMatrix(F.self, flipped: false).withUnsafeBufferPointer { gk in
            BLAS.gemm(transA: true, transB: false, m: m * cg, n: 9, k: nn, alpha: Float(1), a: Z, lda: m * cg,
                      b: gk.baseAddress!, ldb: 9, beta: Float(0), c: DW, ldc: 9)
        }
    }
    if tile == 2 { run(WinogradF2.self) } else { run(WinogradF4.self) }
}
