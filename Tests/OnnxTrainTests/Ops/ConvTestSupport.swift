@testable import OnnxTrain
import XCTest

// The float64 reference and the float32 rounding bound the convolution kernel tests share
// (DepthwiseEpilogueTests, ConvSplitOutputsTests).

/// One 2-D convolution: input x [N, C, H, W], weights w [M, C/group, kH, kW].
struct Conv2DCase {
    let label: String
    let x: [Int], w: [Int], strides: [Int], pads: [Int]
    var group = 1
    var attributes: [String: Attribute] {
        ["strides": .ints(strides), "pads": .ints(pads), "group": .int(group), "kernel_shape": .ints(Array(w.dropFirst(2)))]
    }
}

/// Values in [-2, 2] that float32 holds exactly, as a float64 tensor.
func float32ExactValues(_ shape: [Int], seed: UInt64) -> Tensor {
    Tensor(shape: shape, scalars: randomDoubles(shape, seed: seed).scalars(as: Double.self).map { Double(Float($0)) })
}

/// A float64 tensor as float32.
func narrowedToFloat32(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, scalars: t.scalars(as: Double.self).map { Float($0) }) }

/// Every element of `got` (float32) within (terms + 2)·u·magnitude of `want`, u = 2⁻²⁴ (the bound of
/// any order of `terms` multiply-adds); returns the largest ratio to the bound.
func checkWithinFloat32Bound(_ got: Tensor, _ want: Tensor, _ magnitude: Tensor, terms: Int, _ label: String,
                             file: StaticString = #filePath, line: UInt = #line) -> Double {
    XCTAssertEqual(got.shape, want.shape, label, file: file, line: line)
    XCTAssertEqual(got.dtype, .float32, label, file: file, line: line)
    let (g, w, m) = (got.scalars(as: Float.self).map(Double.init), want.scalars(as: Double.self), magnitude.scalars(as: Double.self))
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

/// A grouped 2-D convolution in float64 loops, and per output Σ|w·x| + |b| (the rounding bound's scale).
func conv2DReference(_ x: Tensor, _ w: Tensor, _ b: Tensor, _ c: Conv2DCase) -> (Tensor, Tensor) {
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
