@testable import OnnxTrain
import XCTest

/// FusedConv's epilogue (Z and Relu) inside the depthwise kernels, against Conv then Z then Relu
/// (bit-identical) and float64 loops over the same float32 inputs. Per element the float32 result must lie within
/// (K + 2)·u·(Σ|w·x| + |b|), u = 2⁻²⁴, of the float64 one: the bound of any order of K fused or
/// unfused multiply-adds (the largest ratio to it is printed).
final class DepthwiseEpilogueTests: XCTestCase {
    struct Case {
        let label: String
        let x: [Int], w: [Int], strides: [Int], pads: [Int], group: Int
        var attributes: [String: Attribute] {
            ["strides": .ints(strides), "pads": .ints(pads), "group": .int(group), "kernel_shape": .ints(Array(w.dropFirst(2)))]
        }
    }

    /// FusedConv's Z and Relu on a depthwise convolution, applied by the depthwise kernels to each
    /// output plane as it is finished: bit-identical in float32 to Conv, then Z added, then Relu
    /// (the same operations on the same values), and within the float32 bound of float64 loops.
    /// The 2-D kernels (strides 1 and 2, 3×3 and 5×5, multiplier 2, MobileNetV3's 72-channel 3×3
    /// stride 2 at 28×28) and the general loops (1-D, rank 3), batch 1 and 2.
    func testDepthwiseFusedEpilogueMatchesConvAddRelu() throws {
        let cases = [
            Case(label: "3x3 stride 1, 30 wide", x: [1, 3, 9, 30], w: [3, 1, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1], group: 3),
            Case(label: "3x3 stride 2, 72 channels 28x28", x: [1, 72, 28, 28], w: [72, 1, 3, 3], strides: [2, 2], pads: [1, 1, 1, 1], group: 72),
            Case(label: "5x5 stride 1, batch 2, 24 channels 14x14", x: [2, 24, 14, 14], w: [24, 1, 5, 5], strides: [1, 1], pads: [2, 2, 2, 2], group: 24),
            Case(label: "5x5 stride 2, multiplier 2", x: [1, 4, 14, 13], w: [8, 1, 5, 5], strides: [2, 2], pads: [2, 2, 2, 2], group: 4),
        ]
        var largest = 0.0
        for (i, c) in cases.enumerated() {
            let x = float32Values(c.x, seed: UInt64(50 + i)), w = float32Values(c.w, seed: UInt64(60 + i))
            let b = float32Values([c.w[0]], seed: UInt64(70 + i))
            let (expected, magnitude) = reference(x, w, b, c)
            let z = float32Values(expected.shape, seed: UInt64(80 + i))
            var fusedAttributes = c.attributes
            fusedAttributes["activation"] = .string("Relu")
            let fused = try runTrainingOp("FusedConv", "com.microsoft", [float32(x), float32(w), float32(b), float32(z)],
                                          attributes: fusedAttributes)[0]
            let y = try runTrainingOp("Conv", "", [float32(x), float32(w), float32(b)], attributes: c.attributes, opset: 11)[0]
            let unfused = zip(y.scalars(as: Float.self), z.scalars(as: Double.self)).map { v, zv -> Float in
                let s = v + Float(zv)
                return s < 0 ? 0 : s
            }
            XCTAssertEqual(fused.scalars(as: Float.self), unfused, "\(c.label): FusedConv differs from Conv + Z + Relu")
            let zs = z.scalars(as: Double.self)
            let fusedExpected = Tensor(shape: expected.shape, scalars: zip(expected.scalars(as: Double.self), zs).map { max(0, $0 + $1) })
            let fusedMagnitude = Tensor(shape: expected.shape, scalars: zip(magnitude.scalars(as: Double.self), zs).map { $0 + abs($1) })
            largest = max(largest, try check(fused, fusedExpected, fusedMagnitude, terms: c.w.dropFirst().reduce(1, *) + 1, c.label))
        }
        // The general loops (rank 3): the same epilogue per plane.
        let x = float32Values([2, 3, 40], seed: 90), w = float32Values([6, 1, 3], seed: 91), b = float32Values([6], seed: 92)
        let z = float32Values([2, 6, 20], seed: 93)
        let attributes: [String: Attribute] = ["strides": .ints([2]), "pads": .ints([1, 1]), "group": .int(3), "kernel_shape": .ints([3]),
                                               "activation": .string("Relu")]
        let fused = try runTrainingOp("FusedConv", "com.microsoft", [float32(x), float32(w), float32(b), float32(z)], attributes: attributes)[0]
        var plain = attributes
        plain["activation"] = nil
        let y = try runTrainingOp("Conv", "", [float32(x), float32(w), float32(b)], attributes: plain, opset: 11)[0]
        let unfused = zip(y.scalars(as: Float.self), z.scalars(as: Double.self)).map { v, zv -> Float in
            let s = v + Float(zv)
            return s < 0 ? 0 : s
        }
        XCTAssertEqual(fused.shape, [2, 6, 20])
        XCTAssertEqual(fused.scalars(as: Float.self), unfused, "1-D depthwise: FusedConv differs from Conv + Z + Relu")
        XCTAssertTrue(unfused.contains(0) && unfused.contains { $0 > 0 }, "1-D depthwise: Relu cut nothing or everything")
        print("DepthwiseEpilogueTests: depthwise FusedConv, largest ratio to the float32 bound \(largest)")
    }

    // MARK: - Helpers

    /// Values in [-2, 2] that float32 holds exactly, as a float64 tensor.
    private func float32Values(_ shape: [Int], seed: UInt64) -> Tensor {
        Tensor(shape: shape, scalars: randomDoubles(shape, seed: seed).scalars(as: Double.self).map { Double(Float($0)) })
    }

    private func float32(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, scalars: t.scalars(as: Double.self).map { Float($0) }) }

    private func doubles(_ t: Tensor) -> [Double] {
        t.dtype == .float32 ? t.scalars(as: Float.self).map(Double.init) : t.scalars(as: Double.self)
    }

    /// Every element of `got` within (terms + 2)·u·magnitude of `want`; returns the largest ratio.
    private func check(_ got: Tensor, _ want: Tensor, _ magnitude: Tensor, terms: Int, _ label: String,
                       file: StaticString = #filePath, line: UInt = #line) throws -> Double {
        XCTAssertEqual(got.shape, want.shape, label, file: file, line: line)
        XCTAssertEqual(got.dtype, .float32, label, file: file, line: line)
        let (g, w, m) = (doubles(got), want.scalars(as: Double.self), magnitude.scalars(as: Double.self))
        var largest = 0.0
        for i in 0..<w.count {
            let bound = Double(terms + 2) * pow(2, -24) * m[i] + 1e-30
            let ratio = abs(g[i] - w[i]) / bound
            if ratio > 1 {
                XCTFail("\(label): element \(i) is \(g[i]), float64 \(w[i]), bound \(bound)", file: file, line: line)
                return ratio
            }
            largest = max(largest, ratio)
        }
        return largest
    }

    /// 2-D convolution in float64 loops, and per output Σ|w·x| + |b| (the rounding bound's scale).
    private func reference(_ x: Tensor, _ w: Tensor, _ b: Tensor, _ c: Case) -> (Tensor, Tensor) {
        let (n, ch, ih, iw) = (c.x[0], c.x[1], c.x[2], c.x[3]), (m, cg, kh, kw) = (c.w[0], c.w[1], c.w[2], c.w[3])
        let (sh, sw) = (c.strides[0], c.strides[1]), (pt, pl, pb, pr) = (c.pads[0], c.pads[1], c.pads[2], c.pads[3])
        let oh = (ih + pt + pb - kh) / sh + 1, ow = (iw + pl + pr - kw) / sw + 1, mg = m / c.group
        let xs = x.scalars(as: Double.self), ws = w.scalars(as: Double.self), bs = b.scalars(as: Double.self)
        var y = [Double](repeating: 0, count: n * m * oh * ow), mag = y
        for img in 0..<n {
            for o in 0..<m {
                let g = o / mg
                for r in 0..<oh {
                    for j in 0..<ow {
                        var sum = bs[o], abssum = abs(bs[o])
                        for ci in 0..<cg {
                            for ky in 0..<kh {
                                let yy = r * sh - pt + ky
                                if yy < 0 || yy >= ih { continue }
                                for kx in 0..<kw {
                                    let xx = j * sw - pl + kx
                                    if xx < 0 || xx >= iw { continue }
                                    let p = ws[((o * cg + ci) * kh + ky) * kw + kx] * xs[((img * ch + g * cg + ci) * ih + yy) * iw + xx]
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
