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
    struct Case {
        let label: String
        let x: [Int], w: [Int], strides: [Int], pads: [Int]
        var attributes: [String: Attribute] {
            ["strides": .ints(strides), "pads": .ints(pads), "kernel_shape": .ints(Array(w.dropFirst(2)))]
        }
    }

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
            let x = float32Values(c.x, seed: UInt64(10 + i)), w = float32Values(c.w, seed: UInt64(20 + i))
            let b = float32Values([c.w[0]], seed: UInt64(30 + i))
            let (expected, magnitude) = reference(x, w, b, c)
            let z = float32Values(expected.shape, seed: UInt64(40 + i))
            let P = expected.shape[2] * expected.shape[3], K = c.w[2] * c.w[3]
            let direct = K == 1 && c.strides == [1, 1]
            var fusedAttributes = c.attributes
            fusedAttributes["activation"] = .string("Relu")
            var fused = Tensor(shape: [0], scalars: [Float]()), tiled = fused, y = fused, y64 = fused
            try withSplit(true) {
                XCTAssertTrue(convSplitsOutputs(images: 1, outputs: c.w[0], rows: c.w[1] * K, positions: P, direct: direct), c.label)
                fused = try runTrainingOp("FusedConv", "com.microsoft", [float32(x), float32(w), float32(b), float32(z)],
                                          attributes: fusedAttributes)[0]
                y = try runTrainingOp("Conv", "", [float32(x), float32(w)], attributes: c.attributes, opset: 11)[0]
                y64 = try runTrainingOp("Conv", "", [x, w, b], attributes: c.attributes, opset: 11)[0]
            }
            try withSplit(false) {
                XCTAssertFalse(convSplitsOutputs(images: 1, outputs: c.w[0], rows: c.w[1] * K, positions: P, direct: direct), c.label)
                tiled = try runTrainingOp("FusedConv", "com.microsoft", [float32(x), float32(w), float32(b), float32(z)],
                                          attributes: fusedAttributes)[0]
            }
            let zs = z.scalars(as: Double.self), bs = b.scalars(as: Double.self)
            let fusedExpected = Tensor(shape: expected.shape, scalars: zip(expected.scalars(as: Double.self), zs).map { max(0, $0 + $1) })
            let fusedMagnitude = Tensor(shape: expected.shape, scalars: zip(magnitude.scalars(as: Double.self), zs).map { $0 + abs($1) })
            let terms = c.w[1] * K + 2
            largest = max(largest, try check(fused, fusedExpected, fusedMagnitude, terms: terms, "\(c.label) FusedConv"))
            // Conv without bias: the reference less the bias.
            let plain = expected.scalars(as: Double.self).enumerated().map { $1 - bs[($0 / P) % c.w[0]] }
            largest = max(largest, try check(y, Tensor(shape: expected.shape, scalars: plain), magnitude, terms: terms, "\(c.label) Conv"))
            XCTAssertEqual(fused.shape, tiled.shape, c.label)
            let (f, t) = (fused.scalars(as: Float.self), tiled.scalars(as: Float.self))
            largestTiled = max(largestTiled, zip(f, t).map { abs($0 - $1) }.max() ?? 0)
            largest = max(largest, try check(fused, Tensor(shape: tiled.shape, scalars: t.map(Double.init)), fusedMagnitude,
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

    // MARK: - Helpers

    /// Values in [-2, 2] that float32 holds exactly, as a float64 tensor.
    private func float32Values(_ shape: [Int], seed: UInt64) -> Tensor {
        Tensor(shape: shape, scalars: randomDoubles(shape, seed: seed).scalars(as: Double.self).map { Double(Float($0)) })
    }

    private func float32(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, scalars: t.scalars(as: Double.self).map { Float($0) }) }

    /// Every element of `got` (float32) within (terms + 2)·u·magnitude of `want`; returns the largest ratio.
    private func check(_ got: Tensor, _ want: Tensor, _ magnitude: Tensor, terms: Int, _ label: String,
                       file: StaticString = #filePath, line: UInt = #line) throws -> Double {
        XCTAssertEqual(got.shape, want.shape, label, file: file, line: line)
        XCTAssertEqual(got.dtype, .float32, label, file: file, line: line)
        let (g, w, m) = (got.scalars(as: Float.self).map(Double.init), want.scalars(as: Double.self), magnitude.scalars(as: Double.self))
        var largest = 0.0
        for i in 0..<w.count {
            let bound = Double(terms + 2) * pow(2, -24) * m[i] + 1e-30
            let ratio = abs(g[i] - w[i]) / bound
            if ratio > 1 {
                XCTFail("\(label): element \(i) is \(g[i]), expected \(w[i]), bound \(bound)", file: file, line: line)
                return ratio
            }
            largest = max(largest, ratio)
        }
        return largest
    }

    /// 2-D convolution (group 1) in float64 loops, and per output Σ|w·x| + |b| (the rounding bound's scale).
    private func reference(_ x: Tensor, _ w: Tensor, _ b: Tensor, _ c: Case) -> (Tensor, Tensor) {
        let (n, ch, ih, iw) = (c.x[0], c.x[1], c.x[2], c.x[3]), (m, kh, kw) = (c.w[0], c.w[2], c.w[3])
        let (sh, sw) = (c.strides[0], c.strides[1]), (pt, pl, pb, pr) = (c.pads[0], c.pads[1], c.pads[2], c.pads[3])
        let oh = (ih + pt + pb - kh) / sh + 1, ow = (iw + pl + pr - kw) / sw + 1
        let xs = x.scalars(as: Double.self), ws = w.scalars(as: Double.self), bs = b.scalars(as: Double.self)
        var y = [Double](repeating: 0, count: n * m * oh * ow), mag = y
        for img in 0..<n {
            for o in 0..<m {
                for r in 0..<oh {
                    for j in 0..<ow {
                        var sum = bs[o], abssum = abs(bs[o])
                        for ci in 0..<ch {
                            for ky in 0..<kh {
                                let yy = r * sh - pt + ky
                                if yy < 0 || yy >= ih { continue }
                                for kx in 0..<kw {
                                    let xx = j * sw - pl + kx
                                    if xx < 0 || xx >= iw { continue }
                                    let p = ws[((o * ch + ci) * kh + ky) * kw + kx] * xs[((img * ch + ci) * ih + yy) * iw + xx]
                                    sum += p; abssum += abs(p)
                                }
                            }
                        }
                        let at = ((img * m + o) * oh + r) * ow + j
                        y[at] = sum; mag[at] = abssum
                    }
                }
            }
        }
        return (Tensor(shape: [n, m, oh, ow], scalars: y), Tensor(shape: [n, m, oh, ow], scalars: mag))
    }
}
