@testable import OnnxTrain
import XCTest

/// Winograd F(2×2, 3×3) and F(4×4, 3×3) (Ops/ONNX/Winograd.swift) against float64 loops over the
/// same float32 inputs: Conv (bias, pads 0 to 4 and asymmetric, groups, odd sizes, images smaller
/// than a tile, rows of tiles that end in a partial group of eight, batches), FusedConv's Z + Relu
/// epilogue, and ConvGrad's dX and dW (dB sums dY). Errors are max |y - y64| / max |y64| per
/// output; the largest measured are printed, and the bounds sit just above them: F(2×2) forward
/// 2.0e-7, dX 2.3e-7 and dW 2.5e-7 (bound 3e-7; the fused weight transform's dX 3.04e-7 on the
/// 32-channel case, bound 3.5e-7), F(4×4) forward 4.1e-6 and dX 4.3e-6 (bound 5e-6) and dW 2.6e-6 (bound 4e-6); im2col + sgemm on the same cases
/// 4.8e-7 (bound 5e-7). F(4×4)'s transforms (points 0, ±1, ±2; Aᵀ weights
/// up to 8) cost about ten times im2col's rounding; it is the variant the kernel uses.
final class WinogradTests: XCTestCase {
    struct Case {
        let label: String
        let x: [Int], w: [Int]
        let pads: [Int]   // top, left, bottom, right
        let group: Int
        var attributes: [String: Attribute] {
            ["pads": .ints(pads), "group": .int(group), "kernel_shape": .ints([3, 3])]
        }
        var output: [Int] {
            [x[0], w[0], x[2] + pads[0] + pads[2] - 2, x[3] + pads[1] + pads[3] - 2]
        }
    }

    static let cases: [Case] = [
        Case(label: "pad 0, odd sizes", x: [1, 3, 5, 7], w: [4, 3, 3, 3], pads: [0, 0, 0, 0], group: 1),
        Case(label: "pad 1, batch 2, tiles crossing both edges", x: [2, 4, 9, 11], w: [5, 4, 3, 3], pads: [1, 1, 1, 1], group: 1),
        Case(label: "pad 2", x: [1, 2, 6, 6], w: [3, 2, 3, 3], pads: [2, 2, 2, 2], group: 1),
        Case(label: "asymmetric pads", x: [2, 3, 7, 8], w: [2, 3, 3, 3], pads: [0, 1, 2, 0], group: 1),
        Case(label: "asymmetric pads 2", x: [1, 2, 8, 5], w: [3, 2, 3, 3], pads: [2, 0, 1, 2], group: 1),
        Case(label: "pads past the kernel (dX reads dY at negative pads)", x: [2, 2, 5, 6], w: [3, 2, 3, 3], pads: [3, 0, 1, 4], group: 1),
        Case(label: "groups 2, batch 2", x: [2, 6, 10, 13], w: [4, 3, 3, 3], pads: [1, 1, 1, 1], group: 2),
        Case(label: "groups 3, one output per group", x: [1, 6, 6, 9], w: [3, 2, 3, 3], pads: [1, 0, 1, 2], group: 3),
        Case(label: "image smaller than a tile, batch 3", x: [3, 2, 3, 3], w: [2, 2, 3, 3], pads: [1, 1, 1, 1], group: 1),
        Case(label: "wide rows: a full and a partial group of eight tiles", x: [1, 3, 4, 41], w: [2, 3, 3, 3], pads: [1, 1, 1, 1], group: 1),
        Case(label: "tall image", x: [1, 2, 23, 5], w: [3, 2, 3, 3], pads: [1, 1, 1, 1], group: 1),
        Case(label: "16+ channels, batch 2", x: [2, 20, 12, 14], w: [17, 20, 3, 3], pads: [1, 1, 1, 1], group: 1),
        Case(label: "groups 2 of 16, wide", x: [1, 32, 6, 35], w: [32, 16, 3, 3], pads: [1, 1, 1, 1], group: 2),
        Case(label: "narrow 7x7, batch 4: lanes across images", x: [4, 8, 7, 7], w: [6, 8, 3, 3], pads: [1, 1, 1, 1], group: 1),
        Case(label: "narrow 14x14, batch 1", x: [1, 5, 14, 14], w: [7, 5, 3, 3], pads: [1, 1, 1, 1], group: 1),
        Case(label: "narrow 4x4, batch 5, one tile per image", x: [5, 4, 4, 4], w: [3, 4, 3, 3], pads: [1, 1, 1, 1], group: 1),
        Case(label: "narrow 8x8, batch 3, groups 2", x: [3, 6, 8, 8], w: [4, 3, 3, 3], pads: [1, 1, 1, 1], group: 2),
        Case(label: "32 channels 7x7, batch 2: 8 tiles, the threads split the outputs", x: [2, 32, 7, 7], w: [32, 32, 3, 3], pads: [1, 1, 1, 1], group: 1),
    ]

    /// The tuning globals as the kernel had them before each test, restored after it (a test that
    /// fails inside `forcing` still leaves them as they were).
    private var savedTuning: (override: Int?, itemFloats: Int, itemTiles: Int, splitTiles: Int, gatherTilesX: Int)?

    override func setUp() {
        super.setUp()
        savedTuning = (winogradOverride, winogradItemFloats, winogradItemTiles, winogradSplitTiles, winogradGatherTilesX)
    }

    override func tearDown() {
        if let saved = savedTuning {
            (winogradOverride, winogradItemFloats, winogradItemTiles, winogradSplitTiles, winogradGatherTilesX) =
                (saved.override, saved.itemFloats, saved.itemTiles, saved.splitTiles, saved.gatherTilesX)
        }
        super.tearDown()
    }

    /// Runs `body` with the kernel forced to F(tile×tile) (0: im2col), one tile row per work item
    /// when `smallItems` (so items start and end at every kind of row and cross images), and the
    /// gathering transforms (eight tiles of an item in the lanes, across rows and images) or the
    /// column phases (eight tiles of one row) for every image width when `gather` is set.
    private func forcing<R>(_ tile: Int, smallItems: Bool = false, gather: Bool? = nil, _ body: () throws -> R) rethrows -> R {
        let (saved, items, narrow) = (winogradOverride, winogradItemFloats, winogradGatherTilesX)
        defer { winogradOverride = saved; winogradItemFloats = items; winogradGatherTilesX = narrow }
        winogradOverride = tile
        if smallItems { winogradItemFloats = 1 }
        if let gather { winogradGatherTilesX = gather ? Int.max : 0 }
        return try body()
    }

    /// The forward (bias, `epilogue` Relu with Z when given) and dX of case `c` through the kernel
    /// entries with the weights transformed inside the threads, `block` outputs at a time
    /// (`fusedBlock`; 3 leaves partial blocks and runs shorter than eight kernels, 8 runs of whole
    /// vectors), instead of into U first. The outputs start as NaN: every value is written.
    private func fusedEntries(_ c: Case, tile: Int, block: Int, x: Tensor, w: Tensor, b: Tensor, dy: Tensor, z: Tensor? = nil) throws -> (y: [Float], dx: [Float]) {
        let g = try ConvGeometry(input: [c.x[2], c.x[3]], kernel: [3, 3], pads: c.pads)
        let (px, pw, pb, pdy) = (x.scalars(as: Float.self), w.scalars(as: Float.self), b.scalars(as: Float.self), dy.scalars(as: Float.self))
        let pz = z?.scalars(as: Float.self) ?? []
        var y = [Float](repeating: .nan, count: c.output.reduce(1, *)), dx = [Float](repeating: .nan, count: c.x.reduce(1, *))
        try pz.withUnsafeBufferPointer { zb in
            try y.withUnsafeMutableBufferPointer { yb in
                let epilogue = z == nil ? nil : ConvEpilogue<Float>(z: zb.baseAddress, relu: true)
                try winogradForward(tile: tile, px, pw, bias: pb, yb.baseAddress!, images: c.x[0], channels: c.x[1], outputs: c.w[0],
                                    group: c.group, g, epilogue: epilogue, fusedBlock: block)
            }
        }
        try dx.withUnsafeMutableBufferPointer { dxb in
            try winogradGradX(tile: tile, pdy, pw, dxb.baseAddress!, images: c.x[0], channels: c.x[1], outputs: c.w[0],
                              group: c.group, g, fusedBlock: block)
        }
        return (y, dx)
    }

    /// The forward and dX with the weights transformed per block of outputs inside the threads
    /// (`winogradFusesWeights`; U's values, each block's products by sgemm) against the float64
    /// loops within the unfused kernel's bounds: items of one tile row, gathered lanes and column
    /// phases, blocks of 3 and 8 outputs.
    func testFusedWeightsMatchFloat64Loops() throws {
        var largest = 0.0, largestX = 0.0
        for (i, c) in Self.cases.enumerated() {
            let x = float32(randomDoubles(c.x, seed: UInt64(230 + i))), w = float32(randomDoubles(c.w, seed: UInt64(250 + i)))
            let b = float32(randomDoubles([c.w[0]], seed: UInt64(270 + i))), dy = float32(randomDoubles(c.output, seed: UInt64(290 + i)))
            let expected = referenceConv(doubles(x), doubles(w), doubles(b), c)
            let (dx, _, _) = referenceConvGrad(doubles(dy), doubles(x), doubles(w), c)
            for tile in [2, 4] { for smallItems in [false, true] { for gather in [false, true] { for block in [3, 8] {
                let variant = "tile \(tile) (small items \(smallItems), gather \(gather), block \(block))"
                let (y, gx) = try forcing(tile, smallItems: smallItems, gather: gather) {
                    try fusedEntries(c, tile: tile, block: block, x: x, w: w, b: b, dy: dy)
                }
                let error = relativeError(y.map(Double.init), expected), errorX = relativeError(gx.map(Double.init), dx)
                largest = max(largest, error); largestX = max(largestX, errorX)
                XCTAssertLessThanOrEqual(error, bound(tile), "\(c.label): \(variant) fused forward error \(error)")
                XCTAssertLessThanOrEqual(errorX, bound(tile), "\(c.label): \(variant) fused dX error \(errorX)")
            } } } }
            // FusedConv's epilogue on the fused path: bit for bit Relu(Conv + Z) of the same kernel.
            let z = float32(randomDoubles(c.output, seed: UInt64(310 + i)))
            let y = try fusedEntries(c, tile: 4, block: 3, x: x, w: w, b: b, dy: dy).y
            let fused = try fusedEntries(c, tile: 4, block: 3, x: x, w: w, b: b, dy: dy, z: z).y
            let sums = zip(y, z.scalars(as: Float.self)).map { $0 + $1 }
            XCTAssertEqual(fused, sums.map { $0 < 0 ? 0 : $0 }, "\(c.label): fused weights, the epilogue differs from Relu(Conv + Z)")
        }
        print("WinogradTests: fused weight transform vs float64, largest relative error: forward \(largest), dX \(largestX)")
    }

    func testForwardMatchesFloat64Loops() throws {
        var largest = [0: 0.0, 2: 0.0, 4: 0.0]
        for (i, c) in Self.cases.enumerated() {
            let x = float32(randomDoubles(c.x, seed: UInt64(10 + i))), w = float32(randomDoubles(c.w, seed: UInt64(30 + i)))
            let b = float32(randomDoubles([c.w[0]], seed: UInt64(50 + i)))
            let expected = referenceConv(doubles(x), doubles(w), doubles(b), c)
            for tile in [0, 2, 4] {
                for smallItems in [false, true] { for gather in [false, true] {
                    let y = try forcing(tile, smallItems: smallItems, gather: gather) {
                        try runTrainingOp("Conv", "", [x, w, b], attributes: c.attributes, opset: 11)[0]
                    }
                    XCTAssertEqual(y.shape, c.output, c.label)
                    let error = relativeError(doubles(y), expected)
                    largest[tile] = max(largest[tile]!, error)
                    XCTAssertLessThanOrEqual(error, bound(tile), "\(c.label): tile \(tile) (small items \(smallItems), gather \(gather)) forward error \(error)")
                } }
            }
        }
        print("WinogradTests: forward vs float64, largest relative error: im2col \(largest[0]!), F2 \(largest[2]!), F4 \(largest[4]!)")
    }

    /// FusedConv's Z and Relu applied per output row by the Winograd output transform: bit for bit
    /// Relu(Conv + Z) of the standalone Conv through the same kernel.
    func testFusedConvEpilogueMatchesConvAddRelu() throws {
        for (i, c) in Self.cases.enumerated() {
            let x = float32(randomDoubles(c.x, seed: UInt64(70 + i))), w = float32(randomDoubles(c.w, seed: UInt64(90 + i)))
            let b = float32(randomDoubles([c.w[0]], seed: UInt64(110 + i))), z = float32(randomDoubles(c.output, seed: UInt64(130 + i)))
            let attributes = c.attributes.merging(["activation": .string("Relu")]) { $1 }
            for tile in [2, 4] { for gather in [false, true] {
                try forcing(tile, gather: gather) {
                    let y = doubles(try runTrainingOp("Conv", "", [x, w, b], attributes: c.attributes, opset: 11)[0])
                    for withZ in [false, true] {
                        let fused = try runTrainingOp("FusedConv", "com.microsoft", [x, w, b] + (withZ ? [z] : []), attributes: attributes)[0]
                        let sums = withZ ? zip(y, doubles(z)).map { Double(Float($0) + Float($1)) } : y
                        XCTAssertEqual(doubles(fused), sums.map { $0 < 0 ? 0 : $0 }, "\(c.label): tile \(tile) (gather \(gather)) FusedConv (Z \(withZ)) differs from Relu(Conv + Z)")
                    }
                }
            } }
        }
    }

    /// ConvGrad's dX by Winograd (dY ⋆ flipped Wᵀ over dY padded by 2 - pads) and dW (the adjoint
    /// of the forward's tile transforms, Gᵀ [Σ_tiles (A dY Aᵀ) ⊙ (Bᵀ d B)] G) against the adjoint of
    /// the float64 loops; dB (channel sums) within float32 rounding of theirs.
    func testConvGradMatchesFloat64Loops() throws {
        var largest = [0: 0.0, 2: 0.0, 4: 0.0], largestW = [0: 0.0, 2: 0.0, 4: 0.0]
        for (i, c) in Self.cases.enumerated() {
            let x = float32(randomDoubles(c.x, seed: UInt64(150 + i))), w = float32(randomDoubles(c.w, seed: UInt64(170 + i)))
            let dy = float32(randomDoubles(c.output, seed: UInt64(190 + i)))
            let (dx, dw, db) = referenceConvGrad(doubles(dy), doubles(x), doubles(w), c)
            for tile in [0, 2, 4] {
                for smallItems in [false, true] { for gather in [false, true] {
                    let grads = try forcing(tile, smallItems: smallItems, gather: gather) {
                        try runTrainingOp("ConvGrad", "com.microsoft", [dy, x, w], attributes: c.attributes, outputs: 3)
                    }
                    XCTAssertEqual(grads[0].shape, c.x, c.label)
                    XCTAssertEqual(grads[1].shape, c.w, c.label)
                    let error = relativeError(doubles(grads[0]), dx), errorW = relativeError(doubles(grads[1]), dw)
                    largest[tile] = max(largest[tile]!, error)
                    largestW[tile] = max(largestW[tile]!, errorW)
                    let variant = "tile \(tile) (small items \(smallItems), gather \(gather))"
                    XCTAssertLessThanOrEqual(error, bound(tile), "\(c.label): \(variant) dX error \(error)")
                    XCTAssertLessThanOrEqual(errorW, boundW(tile), "\(c.label): \(variant) dW error \(errorW)")
                    XCTAssertLessThanOrEqual(relativeError(doubles(grads[2]), db), 1e-6, "\(c.label): dB")
                } }
            }
            // dX alone (the kernel returns before the dW/dB loops), and dW alone.
            let only = try forcing(4) {
                try runTrainingOp("ConvGrad", "com.microsoft", [dy, x, w], attributes: c.attributes, outputs: 1)[0]
            }
            XCTAssertLessThanOrEqual(relativeError(doubles(only), dx), bound(4), "\(c.label): dX alone")
            let onlyW = try forcing(4) { try convGradW(dy, x, w, c.attributes) }
            XCTAssertLessThanOrEqual(relativeError(doubles(onlyW), dw), boundW(4), "\(c.label): dW alone")
        }
        print("WinogradTests: ConvGrad vs float64, largest relative error of dX: im2col \(largest[0]!), F2 \(largest[2]!), F4 \(largest[4]!); "
              + "of dW: im2col \(largestW[0]!), F2 \(largestW[2]!), F4 \(largestW[4]!)")
    }

    /// float64 keeps the exact im2col path even where float32 would take Winograd.
    func testFloat64KeepsIm2col() throws {
        let c = Self.cases[11]
        let x = randomDoubles(c.x, seed: 210), w = randomDoubles(c.w, seed: 211), b = randomDoubles([c.w[0]], seed: 212)
        let y = try forcing(4) { try runTrainingOp("Conv", "", [x, w, b], attributes: c.attributes, opset: 11)[0] }
        XCTAssertLessThanOrEqual(relativeError(doubles(y), referenceConv(doubles(x), doubles(w), doubles(b), c)), 1e-14)
    }

    /// The shape rule: 3×3 unit stride and dilation, 32+ channels per group on both sides, 32+
    /// F(4×4) tiles in the batch (128+ for dW), outputs 3+ high and wide; all else keeps im2col.
    func testDispatchRule() throws {
        func geometry(_ h: Int, _ w: Int, kernel: [Int] = [3, 3], strides: [Int] = [1, 1], dilations: [Int] = [1, 1]) throws -> ConvGeometry {
            try ConvGeometry(input: [h, w], kernel: kernel, strides: strides, dilations: dilations, pads: [1, 1, 1, 1])
        }
        XCTAssertEqual(winogradTile(images: 1, channels: 64, outputs: 64, group: 1, try geometry(56, 56)), 4)
        XCTAssertEqual(winogradTile(images: 1, channels: 128, outputs: 128, group: 1, try geometry(28, 28)), 4)
        XCTAssertEqual(winogradTile(images: 8, channels: 256, outputs: 256, group: 1, try geometry(14, 14)), 4)
        XCTAssertEqual(winogradTile(images: 2, channels: 256, outputs: 256, group: 1, try geometry(14, 14)), 4)   // 32 tiles
        XCTAssertEqual(winogradTile(images: 8, channels: 512, outputs: 512, group: 1, try geometry(7, 7)), 4)
        XCTAssertEqual(winogradTile(images: 32, channels: 64, outputs: 64, group: 1, try geometry(8, 8)), 4)
        XCTAssertEqual(winogradTile(images: 32, channels: 128, outputs: 128, group: 1, try geometry(3, 3)), 4)
        XCTAssertEqual(winogradTile(images: 1, channels: 64, outputs: 128, group: 2, try geometry(56, 56)), 4)
        XCTAssertNil(winogradTile(images: 1, channels: 256, outputs: 256, group: 1, try geometry(14, 14)))   // 16 tiles
        XCTAssertNil(winogradTile(images: 4, channels: 512, outputs: 512, group: 1, try geometry(7, 7)))     // 16 tiles
        XCTAssertNil(winogradTile(images: 32, channels: 256, outputs: 256, group: 1, try geometry(2, 2)))    // 2×2 outputs
        XCTAssertNil(winogradTile(images: 32, channels: 16, outputs: 64, group: 1, try geometry(8, 8)))      // 16 input channels
        XCTAssertNil(winogradTile(images: 1, channels: 3, outputs: 64, group: 1, try geometry(224, 224)))    // 3 input channels
        XCTAssertNil(winogradTile(images: 1, channels: 16, outputs: 16, group: 1, try geometry(112, 112)))
        XCTAssertNil(winogradTile(images: 1, channels: 64, outputs: 64, group: 64, try geometry(56, 56)))    // depthwise
        XCTAssertNil(winogradTile(images: 1, channels: 64, outputs: 64, group: 1, try geometry(56, 56, strides: [2, 2])))
        XCTAssertNil(winogradTile(images: 1, channels: 64, outputs: 64, group: 1, try geometry(56, 56, dilations: [2, 2])))
        XCTAssertNil(winogradTile(images: 1, channels: 64, outputs: 64, group: 1, try geometry(56, 56, kernel: [5, 5])))
        // ConvGrad's dW: also 128+ tiles in the batch.
        XCTAssertEqual(winogradGradWTile(images: 1, channels: 64, outputs: 64, group: 1, try geometry(56, 56)), 4)      // 196 tiles
        XCTAssertEqual(winogradGradWTile(images: 8, channels: 256, outputs: 256, group: 1, try geometry(14, 14)), 4)    // 128
        XCTAssertEqual(winogradGradWTile(images: 32, channels: 512, outputs: 512, group: 1, try geometry(7, 7)), 4)     // 128
        XCTAssertNil(winogradGradWTile(images: 8, channels: 512, outputs: 512, group: 1, try geometry(7, 7)))           // 32
        XCTAssertNil(winogradGradWTile(images: 4, channels: 256, outputs: 256, group: 1, try geometry(14, 14)))         // 64
        XCTAssertNil(winogradGradWTile(images: 8, channels: 16, outputs: 64, group: 1, try geometry(56, 56)))           // 16 channels
        // The weights transformed inside the threads where they split the outputs: 7×7 at 512
        // channels, batch 8 (32 tiles), not 14×14 at 256 channels, batch 8 (128 tiles).
        XCTAssertEqual(winogradFusesWeights(images: 8, outputs: 512, output: (7, 7), tile: 4), Parallel.threadCount > 1)
        XCTAssertFalse(winogradFusesWeights(images: 8, outputs: 256, output: (14, 14), tile: 4))
        XCTAssertFalse(winogradFusesWeights(images: 8, outputs: 16, output: (7, 7), tile: 4))
    }

    /// The column phases (`winogradPhases`, four phases split eight floats at a time by vector
    /// shuffles, one phase copied as a run) against a plain loop, bit for bit: rows inside and
    /// outside the plane, pads 0 to 5, widths around the vector blocks' 32 columns.
    func testPhasesMatchPlainLoop() {
        for phases in [1, 2, 4] { for columns in [1, 3, 5, 8, 31, 32, 33, 36, 40, 41, 63, 64, 65, 70, 97, 130] { for padLeft in 0...5 {
            let rows = 3, length = (columns + padLeft + phases - 1) / phases + 9
            let plane = (0..<(rows * columns)).map { Float($0) + 0.5 }
            for firstRow in [-2, 0, 1] {
                let count = 4
                var got = [Float](repeating: .nan, count: count * phases * length)
                plane.withUnsafeBufferPointer { p in
                    got.withUnsafeMutableBufferPointer { g in
                        winogradPhases(p.baseAddress!, rows: rows, columns: columns, firstRow: firstRow, padLeft: padLeft,
                                       count: count, phases: phases, length: length, into: g.baseAddress!)
                    }
                }
                var want = [Float](repeating: 0, count: count * phases * length)
                for k in 0..<count { for q in 0..<phases { for j in 0..<length {
                    let (row, column) = (firstRow + k, j * phases + q - padLeft)
                    if row >= 0, row < rows, column >= 0, column < columns { want[(k * phases + q) * length + j] = plane[row * columns + column] }
                } } }
                XCTAssertEqual(got, want, "phases \(phases), \(columns) columns, pad \(padLeft), first row \(firstRow)")
            }
        } } }
    }

    /// The transformed weights (`winogradWeights`, a loop of fused multiply-adds in tap order) against
    /// float64 sums of the same float32 coefficients (largest relative error measured 3.9e-8, bound
    /// 1e-7) and against the sgemm it replaces (U = Gk · Wᵀ, K = 9; 1.2e-7 measured, bound 2e-7: its
    /// small-matrix kernel sums in another order), for kernel counts with and without a partial
    /// block of eight, flipped or not.
    func testWeightsMatchFloat64AndSgemm() {
        var largest = 0.0, largestSgemm = 0.0
        for kernels in [1, 7, 8, 9, 23, 64, 4099] { for flipped in [false, true] {
            let w: [Float] = (0..<(kernels * 9)).map { (i: Int) -> Float in
                let angle: Double = Double(i) * 0.37 + Double(kernels)
                let scale: Float = 1 + Float(i % 5)
                return Float(sin(angle)) * scale
            }
            let gk = winogradTapMatrix(WinogradF4.self, flipped: flipped), nn = 36
            var u = [Float](repeating: .nan, count: nn * kernels), viaSgemm = [Float](repeating: .nan, count: nn * kernels)
            w.withUnsafeBufferPointer { pw in
                u.withUnsafeMutableBufferPointer { pu in
                    winogradWeights(WinogradF4.self, pw.baseAddress!, kernels: kernels, flipped: flipped, into: pu.baseAddress!)
                }
                gk.withUnsafeBufferPointer { pg in
                    viaSgemm.withUnsafeMutableBufferPointer { pv in
                        BLAS.gemm(transA: false, transB: true, m: nn, n: kernels, k: 9, alpha: Float(1), a: pg.baseAddress!, lda: 9,
                                  b: pw.baseAddress!, ldb: 9, beta: Float(0), c: pv.baseAddress!, ldc: kernels)
                    }
                }
            }
            var want = [Double](repeating: 0, count: nn * kernels)
            for xi in 0..<nn { for r in 0..<kernels { for t in 0..<9 {
                let coefficient: Double = Double(gk[xi * 9 + t]), tap: Double = Double(w[r * 9 + t])
                want[xi * kernels + r] += coefficient * tap
            } } }
            let error = relativeError(u.map(Double.init), want), errorSgemm = relativeError(u.map(Double.init), viaSgemm.map(Double.init))
            largest = max(largest, error)
            largestSgemm = max(largestSgemm, errorSgemm)
            XCTAssertLessThanOrEqual(error, 1e-7, "\(kernels) kernels, flipped \(flipped)")
            XCTAssertLessThanOrEqual(errorSgemm, 2e-7, "\(kernels) kernels, flipped \(flipped): against sgemm")
        } }
        print("WinogradTests: transformed weights, largest relative error against float64 \(largest), against sgemm \(largestSgemm)")
    }

    /// ConvGrad with only its dW output requested.
    private func convGradW(_ dy: Tensor, _ x: Tensor, _ w: Tensor, _ attributes: [String: Attribute]) throws -> Tensor {
        var graph = Graph()
        graph.nodes = [Node(opType: "ConvGrad", domain: "com.microsoft", inputs: ["dy", "x", "w"], outputs: ["", "dw"], attributes: attributes)]
        graph.inputs = ["dy", "x", "w"].map { ValueInfo(name: $0, type: nil) }
        graph.outputs = [ValueInfo(name: "dw", type: nil)]
        var model = Model(graph: graph)
        model.opsetImports = ["": 17, "com.microsoft": 1]
        let result = try InferenceSession(model: model).run(["dy": .tensor(dy), "x": .tensor(x), "w": .tensor(w)])
        guard let dw = result["dw"]?.tensor else { throw KernelError("ConvGrad produced no dW") }
        return dw
    }

    // MARK: - float64 loops

    private func bound(_ tile: Int) -> Double { [0: 5e-7, 2: 3.5e-7, 4: 5e-6][tile]! }
    /// F(2,3)'s dW: 2.7e-7 with its tile products on OpenBLAS's AVX-512 kernels, 5.0e-7 where OpenBLAS
    /// runs its Haswell ones (`OPENBLAS_CORETYPE=Haswell`) and the products go to oneDNN's sgemm
    /// (`DnnlGemm`): another summation order.
    private func boundW(_ tile: Int) -> Double { [0: 5e-7, 2: 6e-7, 4: 4e-6][tile]! }

    private func referenceConv(_ x: [Double], _ w: [Double], _ b: [Double], _ c: Case) -> [Double] {
        var y = [Double](repeating: 0, count: c.output.reduce(1, *))
        let outSize = c.output[2] * c.output[3]
        for i in 0..<y.count { y[i] = b[(i / outSize) % c.w[0]] }
        forEachTap(c) { xi, wi, yi in y[yi] += w[wi] * x[xi] }
        return y
    }

    private func referenceConvGrad(_ dy: [Double], _ x: [Double], _ w: [Double], _ c: Case) -> ([Double], [Double], [Double]) {
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: w.count)
        forEachTap(c) { xi, wi, yi in
            dx[xi] += w[wi] * dy[yi]
            dw[wi] += x[xi] * dy[yi]
        }
        let m = c.w[0], outSize = c.output[2] * c.output[3]
        var db = [Double](repeating: 0, count: m)
        for (i, v) in dy.enumerated() { db[(i / outSize) % m] += v }
        return (dx, dw, db)
    }

    /// Every (image, output channel, output position, input channel, tap) inside the image:
    /// body(flat x index, flat w index, flat y index).
    private func forEachTap(_ c: Case, _ body: (Int, Int, Int) -> Void) {
        let (n, ch, h, wd) = (c.x[0], c.x[1], c.x[2], c.x[3]), m = c.w[0], (oh, ow) = (c.output[2], c.output[3])
        let cg = ch / c.group, mg = m / c.group
        for b in 0..<n { for o in 0..<m { for r in 0..<oh { for s in 0..<ow { for ci in 0..<cg { for ky in 0..<3 { for kx in 0..<3 {
            let (y, x) = (r - c.pads[0] + ky, s - c.pads[1] + kx)
            guard y >= 0, y < h, x >= 0, x < wd else { continue }
            body(((b * ch + (o / mg) * cg + ci) * h + y) * wd + x, (o * cg + ci) * 9 + ky * 3 + kx, ((b * m + o) * oh + r) * ow + s)
        } } } } } } }
    }

    private func relativeError(_ got: [Double], _ want: [Double]) -> Double {
        guard got.count == want.count else { XCTFail("\(got.count) values, expected \(want.count)"); return .infinity }
        let scale = want.reduce(0) { max($0, abs($1)) }
        return zip(got, want).reduce(0) { max($0, abs($1.0 - $1.1)) } / max(scale, .leastNormalMagnitude)
    }

    private func float32(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, scalars: t.scalars(as: Double.self).map { Float($0) }) }

    private func doubles(_ t: Tensor) -> [Double] {
        t.dtype == .float32 ? t.scalars(as: Float.self).map(Double.init) : t.scalars(as: Double.self)
    }
}
