@testable import OnnxTrain
import XCTest

/// FusedConv's epilogue (Z and Relu) inside the depthwise kernels, against Conv then Z then Relu
/// (bit-identical) and float64 loops over the same float32 inputs. Per element the float32 result must lie within
/// (K + 2)·u·(Σ|w·x| + |b|), u = 2⁻²⁴, of the float64 one: the bound of any order of K fused or
/// unfused multiply-adds (the largest ratio to it is printed).
final class DepthwiseEpilogueTests: XCTestCase {
    typealias Case = Conv2DCase

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
            let x = float32ExactValues(c.x, seed: UInt64(50 + i)), w = float32ExactValues(c.w, seed: UInt64(60 + i))
            let b = float32ExactValues([c.w[0]], seed: UInt64(70 + i))
            let (expected, magnitude) = conv2DReference(x, w, b, c)
            let z = float32ExactValues(expected.shape, seed: UInt64(80 + i))
            var fusedAttributes = c.attributes
            fusedAttributes["activation"] = .string("Relu")
            let fused = try runTrainingOp("FusedConv", "com.microsoft", [narrowedToFloat32(x), narrowedToFloat32(w), narrowedToFloat32(b), narrowedToFloat32(z)],
                                          attributes: fusedAttributes)[0]
            let y = try runTrainingOp("Conv", "", [narrowedToFloat32(x), narrowedToFloat32(w), narrowedToFloat32(b)], attributes: c.attributes, opset: 11)[0]
            let unfused = zip(y.scalars(as: Float.self), z.scalars(as: Double.self)).map { v, zv -> Float in
                let s = v + Float(zv)
                return s < 0 ? 0 : s
            }
            XCTAssertEqual(fused.scalars(as: Float.self), unfused, "\(c.label): FusedConv differs from Conv + Z + Relu")
            let zs = z.scalars(as: Double.self)
            let fusedExpected = Tensor(shape: expected.shape, scalars: zip(expected.scalars(as: Double.self), zs).map { max(0, $0 + $1) })
            let fusedMagnitude = Tensor(shape: expected.shape, scalars: zip(magnitude.scalars(as: Double.self), zs).map { $0 + abs($1) })
            largest = max(largest, checkWithinFloat32Bound(fused, fusedExpected, fusedMagnitude, terms: c.w.dropFirst().reduce(1, *) + 1, c.label))
        }
        // The general loops (rank 3): the same epilogue per plane.
        let x = float32ExactValues([2, 3, 40], seed: 90), w = float32ExactValues([6, 1, 3], seed: 91), b = float32ExactValues([6], seed: 92)
        let z = float32ExactValues([2, 6, 20], seed: 93)
        let attributes: [String: Attribute] = ["strides": .ints([2]), "pads": .ints([1, 1]), "group": .int(3), "kernel_shape": .ints([3]),
                                               "activation": .string("Relu")]
        let fused = try runTrainingOp("FusedConv", "com.microsoft", [narrowedToFloat32(x), narrowedToFloat32(w), narrowedToFloat32(b), narrowedToFloat32(z)], attributes: attributes)[0]
        var plain = attributes
        plain["activation"] = nil
        let y = try runTrainingOp("Conv", "", [narrowedToFloat32(x), narrowedToFloat32(w), narrowedToFloat32(b)], attributes: plain, opset: 11)[0]
        let unfused = zip(y.scalars(as: Float.self), z.scalars(as: Double.self)).map { v, zv -> Float in
            let s = v + Float(zv)
            return s < 0 ? 0 : s
        }
        XCTAssertEqual(fused.shape, [2, 6, 20])
        XCTAssertEqual(fused.scalars(as: Float.self), unfused, "1-D depthwise: FusedConv differs from Conv + Z + Relu")
        XCTAssertTrue(unfused.contains(0) && unfused.contains { $0 > 0 }, "1-D depthwise: Relu cut nothing or everything")
        print("DepthwiseEpilogueTests: depthwise FusedConv, largest ratio to the float32 bound \(largest)")
    }
}
