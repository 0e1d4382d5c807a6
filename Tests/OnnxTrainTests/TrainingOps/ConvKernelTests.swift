@testable import OnnxTrain
import XCTest

/// The convolution kernels picked by shape (Ops/ONNX/ConvKernels.swift: direct depthwise loops,
/// several images per GEMM for small images, 1×1 convolutions without im2col): the forward
/// against plain float64 loops, ConvGrad against central differences of the forward (float64),
/// and float32 against float64. Tolerances sit just above the largest differences measured (printed
/// by each test), relative to the largest value: forward 1.4e-15, central differences 1.6e-9,
/// large-image gradients 4.6e-15, float32 9.6e-7.
final class ConvKernelTests: XCTestCase {
    /// One case: input and weight shapes and the Conv attributes; which kernel it takes is in the label.
    struct Case {
        let label: String
        let x: [Int], w: [Int]
        let strides: [Int], pads: [Int], dilations: [Int], group: Int
        var attributes: [String: Attribute] {
            ["strides": .ints(strides), "pads": .ints(pads), "dilations": .ints(dilations), "group": .int(group),
             "kernel_shape": .ints(Array(w.dropFirst(2)))]
        }
    }

    static let cases: [Case] = [
        // group == C: the direct depthwise loops, multiplier 1 and 2, odd strides, pads and dilations.
        Case(label: "depthwise 3x3 stride 1 pad 1", x: [2, 3, 5, 6], w: [3, 1, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], group: 3),
        Case(label: "depthwise x2 stride 2x1 asymmetric pads dilation 2x1", x: [1, 2, 7, 5], w: [4, 1, 3, 2], strides: [2, 1], pads: [2, 0, 1, 1], dilations: [2, 1], group: 2),
        Case(label: "depthwise 5x5 stride 2 batch 3", x: [3, 4, 6, 7], w: [4, 1, 5, 5], strides: [2, 2], pads: [2, 2, 2, 2], dilations: [1, 1], group: 4),
        // Wide rows: the 2-D forward's eight-column SIMD interior, stride 1 and 2, dilation 2.
        Case(label: "depthwise 3x3 wide rows", x: [1, 2, 3, 21], w: [2, 1, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], group: 2),
        Case(label: "depthwise 5x5 stride 2 wide rows", x: [2, 2, 5, 23], w: [2, 1, 5, 5], strides: [2, 2], pads: [2, 2, 2, 2], dilations: [1, 1], group: 2),
        Case(label: "depthwise x2 3x3 dilation 2 stride 1x3 wide rows", x: [1, 2, 4, 40], w: [4, 1, 3, 3], strides: [1, 3], pads: [2, 1, 0, 2], dilations: [2, 2], group: 2),
        // The 2-D phase-split buffer: rows not a multiple of 4, odd widths, large pads, multiplier 3, 1×1.
        Case(label: "depthwise 5x5 pad 2 on 7x7", x: [2, 3, 7, 7], w: [3, 1, 5, 5], strides: [1, 1], pads: [2, 2, 2, 2], dilations: [1, 1], group: 3),
        Case(label: "depthwise 3x3 stride 2 pad 1 odd width", x: [1, 2, 9, 17], w: [2, 1, 3, 3], strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], group: 2),
        Case(label: "depthwise x3 stride 3x2 dilation 2x3 large pads", x: [1, 2, 6, 19], w: [6, 1, 2, 3], strides: [3, 2], pads: [3, 4, 2, 5], dilations: [2, 3], group: 2),
        Case(label: "depthwise 1x1 kernel", x: [1, 2, 3, 9], w: [2, 1, 1, 1], strides: [1, 1], pads: [0, 0, 0, 0], dilations: [1, 1], group: 2),
        Case(label: "depthwise 1-D", x: [2, 3, 9], w: [3, 1, 3], strides: [2], pads: [1, 2], dilations: [1], group: 3),
        // The 2-D correlation's blocks of eight accumulators: rows of one vector in 8-row blocks
        // plus a 4-row rest (11 rows of 6), vector pairs plus a single (28 and 21 columns), and
        // MobileNetV3's depthwise shapes (14x14 5x5, 56x56 3x3 stride 2) at batch 3 and 1.
        Case(label: "depthwise x2 3x3 11 rows of 6 batch 3", x: [3, 3, 11, 6], w: [6, 1, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], group: 3),
        Case(label: "depthwise 3x3 28x28 batch 3", x: [3, 4, 28, 28], w: [4, 1, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], group: 4),
        Case(label: "depthwise 5x5 14x14 batch 3", x: [3, 5, 14, 14], w: [5, 1, 5, 5], strides: [1, 1], pads: [2, 2, 2, 2], dilations: [1, 1], group: 5),
        Case(label: "depthwise 3x3 stride 2 56x56 batch 1", x: [1, 3, 56, 56], w: [3, 1, 3, 3], strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], group: 3),
        Case(label: "depthwise 5x5 stride 2 13x42", x: [1, 2, 13, 42], w: [2, 1, 5, 5], strides: [2, 2], pads: [2, 2, 2, 2], dilations: [1, 1], group: 2),
        // Small images, batch > 1: several images per GEMM.
        Case(label: "blocked 3x3 groups 2 stride 2", x: [3, 4, 5, 4], w: [6, 2, 3, 3], strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], group: 2),
        Case(label: "blocked 2x3 dilation 2 non-square", x: [4, 3, 6, 7], w: [5, 3, 2, 3], strides: [1, 2], pads: [0, 1, 2, 0], dilations: [2, 1], group: 1),
        Case(label: "blocked 1x1 direct", x: [3, 5, 2, 3], w: [4, 5, 1, 1], strides: [1, 1], pads: [0, 0, 0, 0], dilations: [1, 1], group: 1),
        // Direct 1×1 of 512K+ multiply-adds per image and group (convDirectImageMinWork), batch > 1:
        // one product per image, no blocking (64·64·128); just under it (64·63·128) blocked.
        Case(label: "per-image 1x1 direct batch 2 groups 2 P 128", x: [2, 128, 8, 16], w: [128, 64, 1, 1], strides: [1, 1], pads: [0, 0, 0, 0], dilations: [1, 1], group: 2),
        Case(label: "blocked 1x1 direct just under the per-image work", x: [2, 63, 8, 16], w: [64, 63, 1, 1], strides: [1, 1], pads: [0, 0, 0, 0], dilations: [1, 1], group: 1),
        Case(label: "blocked 1x1 stride 2", x: [2, 4, 5, 5], w: [3, 4, 1, 1], strides: [2, 2], pads: [0, 0, 0, 0], dilations: [1, 1], group: 1),
        // One image: 1×1 without im2col/col2im; large images (P >= 256) keep one GEMM per image.
        Case(label: "1x1 direct batch 1 groups 2", x: [1, 4, 3, 5], w: [6, 2, 1, 1], strides: [1, 1], pads: [0, 0, 0, 0], dilations: [1, 1], group: 2),
        Case(label: "per-image 3x3 batch 2 large image", x: [2, 2, 16, 17], w: [3, 2, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], group: 1),
        Case(label: "per-image 3x3 batch 1", x: [1, 16, 16, 16], w: [2, 16, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], group: 1),
        Case(label: "per-image 1x1 batch 2 large image", x: [2, 3, 16, 16], w: [2, 3, 1, 1], strides: [1, 1], pads: [0, 0, 0, 0], dilations: [1, 1], group: 1),
        // One image of 128+ positions: tiles of output rows shared by the threads (17 rows: uneven).
        Case(label: "tiled 3x3 batch 1 odd rows", x: [1, 3, 17, 9], w: [4, 3, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], group: 1),
        Case(label: "tiled 3x3 stride 2 batch 1 groups 2", x: [1, 4, 33, 19], w: [6, 2, 3, 3], strides: [2, 2], pads: [1, 0, 1, 1], dilations: [1, 1], group: 2),
        Case(label: "per-image 3x3 stride 2 wide rows (im2col's eight-lane even copy)", x: [1, 2, 9, 40], w: [3, 2, 3, 3], strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], group: 1),
        Case(label: "tiled 1x1 direct batch 1", x: [1, 3, 16, 11], w: [5, 3, 1, 1], strides: [1, 1], pads: [0, 0, 0, 0], dilations: [1, 1], group: 1),
        // Products larger than OpenBLAS's small-matrix kernel takes, cut for it (convGemm): the cnn
        // benchmark's 5×5 layers. Forward and dX by columns of C, the first layer's dW along k.
        Case(label: "per-image 5x5 pad 2 32x32 (products cut by columns and along k)", x: [2, 3, 32, 32], w: [16, 3, 5, 5], strides: [1, 1], pads: [2, 2, 2, 2], dilations: [1, 1], group: 1),
        Case(label: "per-image 5x5 pad 2 16x16 32 outputs (products cut by columns)", x: [2, 16, 16, 16], w: [32, 16, 5, 5], strides: [1, 1], pads: [2, 2, 2, 2], dilations: [1, 1], group: 1),
        // ResNet's 7×7 stride-2 stem (3 channels, 18×17 outputs): dW unfolds runs of output rows.
        Case(label: "per-image 7x7 stride 2 pad 3 (ResNet stem)", x: [2, 3, 36, 34], w: [4, 3, 7, 7], strides: [2, 2], pads: [3, 3, 3, 3], dilations: [1, 1], group: 1),
        Case(label: "tiled 3-D batch 1", x: [1, 2, 5, 6, 7], w: [3, 2, 3, 2, 3], strides: [1, 1, 1], pads: [1, 0, 1, 1, 1, 1], dilations: [1, 1, 1], group: 1),
    ]

    func testForwardMatchesPlainLoops() throws {
        try checkForward()
    }

    /// With a tile limit of 100 im2col elements every image is cut into tiles of one output row
    /// (batches of several images too), so each tile starts and ends at every kind of row: in the
    /// top or bottom padding, partly outside on the left or right.
    func testForwardInTilesOfOneRowMatchesPlainLoops() throws {
        let (limit, width, threads) = (convTileElements, convTileMinWidth, Parallel.threadCount)
        defer { convTileElements = limit; convTileMinWidth = width; Parallel.threadCount = threads }
        convTileElements = 100
        convTileMinWidth = 1
        Parallel.threadCount = 2
        try checkForward()
    }

    /// The float64 forward of every case against plain loops, within `tolerance`.
    private func checkForward(file: StaticString = #filePath, line: UInt = #line) throws {
        var largest = 0.0
        for (i, c) in Self.cases.enumerated() {
            let x = randomDoubles(c.x, seed: UInt64(100 + i)), w = randomDoubles(c.w, seed: UInt64(200 + i))
            let b = randomDoubles([c.w[0]], seed: UInt64(300 + i))
            let y = try runTrainingOp("Conv", "", [x, w, b], attributes: c.attributes, opset: 11)[0]
            let expected = referenceConv(x, w, b, c)
            XCTAssertEqual(y.shape, expected.shape, c.label)
            // Relative to the largest output (at least 1): the 400-term sums of the 5×5 cases reach 60.
            let worst = maxDifference(y, expected) / max(1, maxAbs(expected))
            largest = max(largest, worst)
            XCTAssertLessThanOrEqual(worst, 3e-15, "\(c.label): forward differs from plain loops by \(worst) (relative)", file: file, line: line)
        }
        print("ConvKernelTests: forward vs plain loops, largest relative difference \(largest)")
    }

    func testConvGradMatchesFiniteDifferences() throws {
        for (i, c) in Self.cases.enumerated() where c.x.reduce(1, *) <= 400 {
            let x = randomDoubles(c.x, seed: UInt64(400 + i)), w = randomDoubles(c.w, seed: UInt64(500 + i))
            let b = randomDoubles([c.w[0]], seed: UInt64(600 + i))
            let attrs = c.attributes
            let y = try runTrainingOp("Conv", "", [x, w, b], attributes: attrs, opset: 11)[0]
            let dy = randomDoubles(y.shape, seed: UInt64(700 + i))
            let grads = try runTrainingOp("ConvGrad", "com.microsoft", [dy, x, w], attributes: attrs, outputs: 3)
            try checkTrainingGradient(of: { try runTrainingOp("Conv", "", [$0[0], $0[1], $0[2]], attributes: attrs, opset: 11)[0] },
                                      at: [x, w, b], dY: dy, wrt: [0, 1, 2], analytic: grads, label: c.label, tolerance: 5e-9)
        }
    }

    /// The large-image cases are too big for finite differences over every element: their
    /// gradients are checked against the same formulas as plain loops (dX and dW are the adjoints
    /// of `referenceConv` in x and w).
    func testConvGradLargeImagesMatchPlainLoops() throws {
        try checkLargeImageGradients()
    }

    /// With a limit of 100 im2col elements the per-image dW unfolds one output row at a time and
    /// adds each row's product onto dW (`rowRuns` in ConvGrad): every run starts and ends at every
    /// kind of row (in the top or bottom padding, partly outside on the left or right).
    func testConvGradInRunsOfOneRowMatchesPlainLoops() throws {
        let limit = convTileElements
        defer { convTileElements = limit }
        convTileElements = 100
        try checkLargeImageGradients()
    }

    private func checkLargeImageGradients() throws {
        var largest = 0.0
        for (i, c) in Self.cases.enumerated() where c.x.reduce(1, *) > 400 {
            let x = randomDoubles(c.x, seed: UInt64(800 + i)), w = randomDoubles(c.w, seed: UInt64(900 + i))
            let y = try runTrainingOp("Conv", "", [x, w], attributes: c.attributes, opset: 11)[0]
            let dy = randomDoubles(y.shape, seed: UInt64(1000 + i))
            let grads = try runTrainingOp("ConvGrad", "com.microsoft", [dy, x, w], attributes: c.attributes, outputs: 3)
            let (dx, dw, db) = referenceConvGrad(dy, x, w, c)
            for (got, want, name) in [(grads[0], dx, "dX"), (grads[1], dw, "dW"), (grads[2], db, "dB")] {
                let worst = maxDifference(got, want) / max(1, maxAbs(want))
                largest = max(largest, worst)
                XCTAssertLessThanOrEqual(worst, 1e-14, "\(c.label): \(name) differs from plain loops by \(worst) (relative)")
            }
        }
        print("ConvKernelTests: large-image ConvGrad vs plain loops, largest relative difference \(largest)")
    }

    /// float32 runs the same kernels through sgemm: within float rounding of the float64 results.
    func testFloat32MatchesFloat64() throws {
        var largest = 0.0
        for (i, c) in Self.cases.enumerated() {
            let x = randomDoubles(c.x, seed: UInt64(1100 + i)), w = randomDoubles(c.w, seed: UInt64(1200 + i))
            let b = randomDoubles([c.w[0]], seed: UInt64(1300 + i))
            let y = try runTrainingOp("Conv", "", [x, w, b], attributes: c.attributes, opset: 11)[0]
            let dy = randomDoubles(y.shape, seed: UInt64(1400 + i))
            let y32 = try runTrainingOp("Conv", "", [float32(x), float32(w), float32(b)], attributes: c.attributes, opset: 11)[0]
            let g64 = try runTrainingOp("ConvGrad", "com.microsoft", [dy, x, w], attributes: c.attributes, outputs: 3)
            let g32 = try runTrainingOp("ConvGrad", "com.microsoft", [float32(dy), float32(x), float32(w)], attributes: c.attributes, outputs: 3)
            XCTAssertEqual(y32.dtype, .float32, c.label)
            for (got, want, name) in [(y32, y, "Y"), (g32[0], g64[0], "dX"), (g32[1], g64[1], "dW"), (g32[2], g64[2], "dB")] {
                let worst = maxDifference(got, want) / max(1, maxAbs(want))
                largest = max(largest, worst)
                XCTAssertLessThanOrEqual(worst, 2e-6, "\(c.label): float32 \(name) differs from float64 by \(worst) (relative to its largest value)")
            }
        }
        print("ConvKernelTests: float32 vs float64, largest relative difference \(largest)")
    }

    /// convGemm cuts float32 products into pieces for OpenBLAS's small-matrix kernel: by columns of
    /// C (each piece the same dot products as the whole), along k (partial sums added onto C), on
    /// one thread or spread over the pool (outside a parallel region), with beta 0 and 1. Every
    /// element is within the float32 bound of its float64 dot product: |error| <= (k + 2)·u·(Σ|a·b|
    /// + |beta·c|), u = 2⁻²⁴ (the largest ratio to that bound is printed).
    func testConvGemmPiecesMatchFloat64() throws {
        struct Product { let label: String, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, beta: Float, inRegion: Bool }
        let products = [
            Product(label: "NN by columns (cnn conv1 forward)", transA: false, transB: false, m: 16, n: 1024, k: 75, beta: 0, inRegion: true),
            Product(label: "NN by columns, beta 1, uneven last piece", transA: false, transB: false, m: 32, n: 250, k: 400, beta: 1, inRegion: true),
            Product(label: "TN by columns (cnn conv2 dX)", transA: true, transB: false, m: 400, n: 256, k: 32, beta: 0, inRegion: true),
            Product(label: "NT by columns", transA: false, transB: true, m: 16, n: 1000, k: 75, beta: 1, inRegion: true),
            Product(label: "NT along k (cnn conv1 dW), beta 1", transA: false, transB: true, m: 75, n: 16, k: 1030, beta: 1, inRegion: true),
            Product(label: "TT along k, beta 0", transA: true, transB: true, m: 75, n: 16, k: 1030, beta: 0, inRegion: true),
            Product(label: "NN by columns over the pool threads", transA: false, transB: false, m: 16, n: 4096, k: 75, beta: 1, inRegion: false),
            Product(label: "NT whole (too wide to cut)", transA: false, transB: true, m: 400, n: 32, k: 256, beta: 1, inRegion: true),
        ]
        var largest = 0.0
        for (i, p) in products.enumerated() {
            let a = randomDoubles([p.m * p.k], seed: UInt64(1500 + i)).scalars(as: Double.self).map { Float($0) }
            let b = randomDoubles([p.k * p.n], seed: UInt64(1600 + i)).scalars(as: Double.self).map { Float($0) }
            let c0 = randomDoubles([p.m * p.n], seed: UInt64(1700 + i)).scalars(as: Double.self).map { Float($0) }
            let (lda, ldb) = (p.transA ? p.m : p.k, p.transB ? p.k : p.n)
            var c = c0
            a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                let (pa, pb, pc) = (pa.baseAddress!, pb.baseAddress!, pc.baseAddress!)
                let run = { convGemm(transA: p.transA, transB: p.transB, m: p.m, n: p.n, k: p.k, a: pa, lda: lda,
                                     b: pb, ldb: ldb, beta: p.beta, c: pc, ldc: p.n) }
                // Inside a parallel region (one chunk runs it), as the per-image kernels call it.
                if p.inRegion { Parallel.forRange(2) { r in if r.contains(0) { run() } } } else { run() }
            } } }
            for i in 0..<p.m {
                for j in 0..<p.n {
                    var sum = Double(p.beta) * Double(c0[i * p.n + j]), bound = abs(sum)
                    for t in 0..<p.k {
                        let x = Double(p.transA ? a[t * lda + i] : a[i * lda + t]), y = Double(p.transB ? b[j * ldb + t] : b[t * ldb + j])
                        sum += x * y; bound += abs(x * y)
                    }
                    let ratio = abs(Double(c[i * p.n + j]) - sum) / (Double(p.k + 2) * 0x1p-24 * bound)
                    largest = max(largest, ratio)
                    if ratio > 1 { XCTFail("\(p.label): C[\(i), \(j)] = \(c[i * p.n + j]), float64 \(sum): \(ratio) x the bound"); return }
                }
            }
        }
        print("ConvKernelTests: convGemm pieces vs float64, largest error / bound \(largest)")
    }

    /// FusedConv applies Z and Relu to each tile of the convolution (ConvEpilogue), to each output
    /// row the blocked kernel scatters, and to the whole output after the depthwise kernel: bit for
    /// bit Relu(Conv + Z) of the standalone
    /// Conv, with Z and without, float32 and float64.
    func testFusedConvEpilogueMatchesConvAddRelu() throws {
        for (i, c) in Self.cases.enumerated() {
            for float in [false, true] {
                let cast = { (t: Tensor) in float ? self.float32(t) : t }
                let x = cast(randomDoubles(c.x, seed: UInt64(1500 + i))), w = cast(randomDoubles(c.w, seed: UInt64(1600 + i)))
                let b = cast(randomDoubles([c.w[0]], seed: UInt64(1700 + i)))
                let y = try runTrainingOp("Conv", "", [x, w, b], attributes: c.attributes, opset: 11)[0]
                let z = cast(randomDoubles(y.shape, seed: UInt64(1800 + i)))
                let attributes = c.attributes.merging(["activation": .string("Relu")]) { $1 }
                for withZ in [false, true] {
                    let fused = try runTrainingOp("FusedConv", "com.microsoft", [x, w, b] + (withZ ? [z] : []), attributes: attributes)[0]
                    let sums = withZ ? zip(doubles(y), doubles(z)).map { float ? Double(Float($0) + Float($1)) : $0 + $1 } : doubles(y)
                    let expected = sums.map { $0 < 0 ? 0 : $0 }
                    XCTAssertEqual(fused.shape, y.shape, c.label)
                    XCTAssertEqual(doubles(fused), expected, "\(c.label): FusedConv (Z \(withZ), float32 \(float)) differs from Relu(Conv + Z)")
                }
            }
        }
    }

    // MARK: - plain loops

    /// Visits every (image, output channel, output position, input channel in group, kernel tap)
    /// that lands inside the image: body(flat x index, flat w index, flat y index).
    private func forEachTap(_ c: Case, _ body: (Int, Int, Int) -> Void) {
        let n = c.x[0], ch = c.x[1], m = c.w[0], r = c.x.count - 2
        let spatial = Array(c.x.dropFirst(2)), kernel = Array(c.w.dropFirst(2))
        let out = Array(outputShape(c).dropFirst(2))
        let cg = ch / c.group, mg = m / c.group
        let inSize = spatial.reduce(1, *), outSize = out.reduce(1, *), kSize = kernel.reduce(1, *)
        for b in 0..<n {
            for o in 0..<m {
                let gi = o / mg
                for p in 0..<outSize {
                    var pos = [Int](repeating: 0, count: r), rem = p
                    for d in stride(from: r - 1, through: 0, by: -1) { pos[d] = rem % out[d]; rem /= out[d] }
                    for ci in 0..<cg {
                        for k in 0..<kSize {
                            var tap = [Int](repeating: 0, count: r), kr = k
                            for d in stride(from: r - 1, through: 0, by: -1) { tap[d] = kr % kernel[d]; kr /= kernel[d] }
                            var flat = 0, inside = true
                            for d in 0..<r {
                                let at = pos[d] * c.strides[d] - c.pads[d] + tap[d] * c.dilations[d]
                                if at < 0 || at >= spatial[d] { inside = false }
                                flat = flat * spatial[d] + at
                            }
                            if !inside { continue }
                            body((b * ch + gi * cg + ci) * inSize + flat, (o * cg + ci) * kSize + k, (b * m + o) * outSize + p)
                        }
                    }
                }
            }
        }
    }

    private func outputShape(_ c: Case) -> [Int] {
        let r = c.x.count - 2
        var shape = [c.x[0], c.w[0]]
        for d in 0..<r {
            let padded: Int = c.x[d + 2] + c.pads[d] + c.pads[d + r]
            let extent: Int = c.dilations[d] * (c.w[d + 2] - 1) + 1
            shape.append((padded - extent) / c.strides[d] + 1)
        }
        return shape
    }

    private func referenceConv(_ x: Tensor, _ w: Tensor, _ b: Tensor, _ c: Case) -> Tensor {
        let shape = outputShape(c), xs = x.scalars(as: Double.self), ws = w.scalars(as: Double.self), bs = b.scalars(as: Double.self)
        let outSize = shape.dropFirst(2).reduce(1, *)
        var y = (0..<shape.reduce(1, *)).map { bs[($0 / outSize) % c.w[0]] }
        forEachTap(c) { xi, wi, yi in y[yi] += ws[wi] * xs[xi] }
        return Tensor(shape: shape, scalars: y)
    }

    private func referenceConvGrad(_ dy: Tensor, _ x: Tensor, _ w: Tensor, _ c: Case) -> (Tensor, Tensor, Tensor) {
        let xs = x.scalars(as: Double.self), ws = w.scalars(as: Double.self), dys = dy.scalars(as: Double.self)
        var dx = [Double](repeating: 0, count: xs.count), dw = [Double](repeating: 0, count: ws.count)
        forEachTap(c) { xi, wi, yi in
            dx[xi] += ws[wi] * dys[yi]
            dw[wi] += xs[xi] * dys[yi]
        }
        let m = c.w[0], outSize = dy.count / (c.x[0] * m)
        var db = [Double](repeating: 0, count: m)
        for (i, v) in dys.enumerated() { db[(i / outSize) % m] += v }
        return (Tensor(shape: c.x, scalars: dx), Tensor(shape: c.w, scalars: dw), Tensor(shape: [m], scalars: db))
    }

    private func float32(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, scalars: t.scalars(as: Double.self).map { Float($0) }) }

    private func doubles(_ t: Tensor) -> [Double] {
        t.dtype == .float32 ? t.scalars(as: Float.self).map(Double.init) : t.scalars(as: Double.self)
    }

    private func maxDifference(_ a: Tensor, _ b: Tensor) -> Double {
        guard a.shape == b.shape else { XCTFail("shapes \(a.shape) and \(b.shape) differ"); return .infinity }
        return zip(doubles(a), doubles(b)).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }

    private func maxAbs(_ t: Tensor) -> Double { doubles(t).reduce(0) { max($0, abs($1)) } }
}
