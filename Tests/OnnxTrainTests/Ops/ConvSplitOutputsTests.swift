@testable import OnnxTrain
import XCTest

/// `convolutionSplittingOutputs` (ConvKernels.swift): one image of few positions with the threads
/// splitting the output channels. Conv and FusedConv (bias, Z, Relu) in float32 against float64
/// loops over the same inputs, per element within (K + 2)·u·(Σ|w·x| + |b| + |z|), u = 2⁻²⁴ (the
/// bound of any order of the multiply-adds; the largest ratio to it is printed); float64 against
/// the loops within 1e-14 relative; and float32 against the tiled path (the split turned off)
/// within the same bound (the largest difference is printed: the same dot products, so 0 where
/// OpenBLAS sums each in the same order whatever the block of C).
final class ConvSplitOutputsTests: XCTestCase {
    typealias Case = Conv2DCase

    /// Batch 1; output channels not a multiple of 8 or of the thread count; 1×1 direct (the image
    /// is its own column matrix), 1×1 stride 2 (ResNet's downsample), 3×3 stride 1 and 2 with pads,
    /// a 7×7 image with 3×3 (ResNet's last stage: too few tiles for Winograd), and 5×5.
    static let cases: [Case] = [
        Case(label: "1x1 direct 7x6, 21 outputs", x: [1, 40, 7, 6], w: [21, 40, 1, 1], strides: [1, 1], pads: [0, 0, 0, 0]),
        Case(label: "1x1 stride 2 9x9, 24 outputs", x: [1, 16, 9, 9], w: [24, 16, 1, 1], strides: [2, 2], pads: [0, 0, 0, 0]),
        Case(label: "3x3 pad 1 7x7, 35 outputs", x: [1, 12, 7, 7], w: [35, 12, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1]),
        Case(label: "3x3 stride 2 pad 1 odd 11x9, 16 outputs", x: [1, 8, 11, 9], w: [16, 8, 3, 3], strides: [2, 2], pads: [1, 1, 1, 1]),
        Case(label: "5x5 asymmetric pads 10x12, 9 outputs", x: [1, 5, 10, 12], w: [9, 5, 5, 5], strides: [1, 1], pads: [2, 1, 1, 2]),
        Case(label: "3x3 pad 1 14x14, 64 outputs, 96 channels", x: [1, 96, 14, 14], w: [64, 96, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1]),
    ]

    /// Runs `body` with the split taken from one output per thread on 2 threads (restored after).
    private func withSplit(_ on: Bool, _ body: () throws -> Void) rethrows {
        let (outputs, positions, threads) = (convSplitMinOutputs, convSplitMaxPositions, Parallel.threadCount)
        defer { convSplitMinOutputs = outputs; convSplitMaxPositions = positions; Parallel.threadCount = threads }
        Parallel.threadCount = 2
        convSplitMinOutputs = 1
        convSplitMaxPositions = on ? 1024 : 0
        try body()
    }

    func testSplitOutputsMatchesFloat64Loops() throws {
        var largest = 0.0, largestDouble = 0.0, largestTiled: Float = 0
        for (i, c) in Self.cases.enumerated() {
            let x = float32ExactValues(c.x, seed: UInt64(10 + i)), w = float32ExactValues(c.w, seed: UInt64(20 + i))
            let b = float32ExactValues([c.w[0]], seed: UInt64(30 + i))
            let (expected, magnitude) = conv2DReference(x, w, b, c)
            let z = float32ExactValues(expected.shape, seed: UInt64(40 + i))
            let P = expected.shape[2] * expected.shape[3], K = c.w[2] * c.w[3]
            let direct = K == 1 && c.strides == [1, 1]
            var fusedAttributes = c.attributes
            fusedAttributes["activation"] = .string("Relu")
            var fused = Tensor(shape: [0], scalars: [Float]()), tiled = fused, y = fused, y64 = fused
            try withSplit(true) {
                XCTAssertTrue(convSplitsOutputs(images: 1, outputs: c.w[0], rows: c.w[1] * K, positions: P, direct: direct), c.label)
                fused = try runTrainingOp("FusedConv", "com.microsoft", [narrowedToFloat32(x), narrowedToFloat32(w), narrowedToFloat32(b), narrowedToFloat32(z)],
                                          attributes: fusedAttributes)[0]
                y = try runTrainingOp("Conv", "", [narrowedToFloat32(x), narrowedToFloat32(w)], attributes: c.attributes, opset: 11)[0]
                y64 = try runTrainingOp("Conv", "", [x, w, b], attributes: c.attributes, opset: 11)[0]
            }
            try withSplit(false) {
                XCTAssertFalse(convSplitsOutputs(images: 1, outputs: c.w[0], rows: c.w[1] * K, positions: P, direct: direct), c.label)
                tiled = try runTrainingOp("FusedConv", "com.microsoft", [narrowedToFloat32(x), narrowedToFloat32(w), narrowedToFloat32(b), narrowedToFloat32(z)],
                                          attributes: fusedAttributes)[0]
            }
            let zs = z.scalars(as: Double.self), bs = b.scalars(as: Double.self)
            let fusedExpected = Tensor(shape: expected.shape, scalars: zip(expected.scalars(as: Double.self), zs).map { max(0, $0 + $1) })
            let fusedMagnitude = Tensor(shape: expected.shape, scalars: zip(magnitude.scalars(as: Double.self), zs).map { $0 + abs($1) })
            let terms = c.w[1] * K + 2
            largest = max(largest, checkWithinFloat32Bound(fused, fusedExpected, fusedMagnitude, terms: terms, "\(c.label) FusedConv"))
            // Conv without bias: the reference less the bias.
            let plain = expected.scalars(as: Double.self).enumerated().map { $1 - bs[($0 / P) % c.w[0]] }
            largest = max(largest, checkWithinFloat32Bound(y, Tensor(shape: expected.shape, scalars: plain), magnitude, terms: terms, "\(c.label) Conv"))
            XCTAssertEqual(fused.shape, tiled.shape, c.label)
            let (f, t) = (fused.scalars(as: Float.self), tiled.scalars(as: Float.self))
            largestTiled = max(largestTiled, zip(f, t).map { abs($0 - $1) }.max() ?? 0)
            largest = max(largest, checkWithinFloat32Bound(fused, Tensor(shape: tiled.shape, scalars: t.map(Double.init)), fusedMagnitude,
                                             terms: 2 * terms, "\(c.label) against the tiled path"))
            let worst = zip(y64.scalars(as: Double.self), expected.scalars(as: Double.self)).map { abs($0 - $1) }.max() ?? 0
            let scale = max(1, expected.scalars(as: Double.self).map(abs).max() ?? 0)
            largestDouble = max(largestDouble, worst / scale)
            XCTAssertLessThanOrEqual(worst / scale, 1e-14, "\(c.label): float64 Conv differs from the loops by \(worst / scale)")
            XCTAssertTrue(f.contains(0) && f.contains { $0 > 0 }, "\(c.label): Relu cut nothing or everything")
        }
        print("ConvSplitOutputsTests: largest ratio to the float32 bound \(largest), float64 relative difference \(largestDouble), "
              + "largest difference from the tiled path \(largestTiled)")
    }

    /// Where the split applies: batch 1 on 2+ threads, at most 1024 positions, 48+ outputs per thread.
    func testSplitOutputsChoice() {
        let threads = Parallel.threadCount
        defer { Parallel.threadCount = threads }
        Parallel.threadCount = 2
        XCTAssertTrue(convSplitsOutputs(images: 1, outputs: 1024, rows: 256, positions: 196, direct: true))     // ResNet-50 14×14 1×1
        XCTAssertTrue(convSplitsOutputs(images: 1, outputs: 512, rows: 4608, positions: 49, direct: false))    // 3×3 at 7×7
        XCTAssertFalse(convSplitsOutputs(images: 1, outputs: 256, rows: 64, positions: 3136, direct: true))    // 56×56: by columns
        XCTAssertTrue(convSplitsOutputs(images: 1, outputs: 96, rows: 480, positions: 196, direct: true))     // Inception 14×14
        XCTAssertFalse(convSplitsOutputs(images: 1, outputs: 64, rows: 512, positions: 196, direct: true))     // few outputs
        XCTAssertFalse(convSplitsOutputs(images: 2, outputs: 1024, rows: 256, positions: 196, direct: true))   // a batch
        Parallel.threadCount = 1
        XCTAssertFalse(convSplitsOutputs(images: 1, outputs: 1024, rows: 256, positions: 196, direct: true))
    }
}
