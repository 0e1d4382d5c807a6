import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// ChannelShuffleFusion: ShuffleNet's channel shuffle (Reshape, Transpose (0, 2, 1, 3, 4), Reshape)
/// read by a depthwise Conv becomes one ShuffledDepthwiseConv reading the channels in place.
final class ChannelShuffleFusionTests: XCTestCase {
    struct Geometry {
        var batch = 2, groups = 3, perGroup = 4, height = 9, width = 7
        var stride = 1, pad = 1, kernel = 3, multiplier = 1, bias = true
        var channels: Int { groups * perGroup }
    }

    /// x [N, C, H, W] -> Reshape [N, g, C/g, H, W] -> Transpose (0, 2, 1, 3, 4) -> Reshape [N, C, H, W]
    /// -> Conv (group C, W [C·multiplier, 1, k, k]) -> y; `extraReader` also reads the shuffled value.
    func shuffleModel(_ s: Geometry, splitShape: [Int64]? = nil, backShape: [Int64]? = nil, perm: [Int] = [0, 2, 1, 3, 4],
                      extraReader: Bool = false, dtype: DType = .float32, declaredShape: Bool = true) throws -> Model {
        let c = s.channels
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(dtype, shape: declaredShape ? [s.batch, c, s.height, s.width].map { .value($0) }
                                                                             : [.unknown, .unknown, .unknown, .unknown]))]
        let split = splitShape ?? [Int64(s.batch), Int64(s.groups), Int64(s.perGroup), Int64(s.height), Int64(s.width)]
        let back = backShape ?? [Int64(s.batch), Int64(c), Int64(s.height), Int64(s.width)]
        g.setInitializer("split", Tensor(shape: [split.count], scalars: split))
        g.setInitializer("back", Tensor(shape: [back.count], scalars: back))
        let w = GraphOptimizationTests.random([c * s.multiplier, 1, s.kernel, s.kernel], seed: 90, scale: 0.7)
        let b = GraphOptimizationTests.random([c * s.multiplier], seed: 91)
        g.setInitializer("W", try w.cast(to: dtype))
        if s.bias { g.setInitializer("B", try b.cast(to: dtype)) }
        g.nodes = [
            Node(opType: "Reshape", inputs: ["x", "split"], outputs: ["r"]),
            Node(opType: "Transpose", inputs: ["r"], outputs: ["t"], attributes: ["perm": .ints(perm)]),
            Node(opType: "Reshape", inputs: ["t", "back"], outputs: ["s"]),
            Node(opType: "Conv", name: "dw", inputs: ["s", "W"] + (s.bias ? ["B"] : []), outputs: ["y"],
                 attributes: ["group": .int(c), "kernel_shape": .ints([s.kernel, s.kernel]), "strides": .ints([s.stride, s.stride]),
                              "pads": .ints([s.pad, s.pad, s.pad, s.pad])]),
        ]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        if extraReader {
            g.nodes.append(Node(opType: "Relu", inputs: ["s"], outputs: ["z"]))
            g.outputs.append(ValueInfo(name: "z", type: nil))
        }
        var m = Model(graph: g)
        m.opsetImports = ["": 13]
        return m
    }

    /// The depthwise convolution of the shuffled x in float64, from the definitions.
    func reference(_ s: Geometry, x: [Double], w: [Double], b: [Double]?) -> (values: [Double], magnitudes: [Double]) {
        let c = s.channels, k = s.kernel
        let oh = (s.height + 2 * s.pad - k) / s.stride + 1, ow = (s.width + 2 * s.pad - k) / s.stride + 1
        var y: [Double] = [], mag: [Double] = []
        for n in 0..<s.batch {
            for o in 0..<(c * s.multiplier) {
                let j = o / s.multiplier
                let source = (j % s.groups) * s.perGroup + j / s.groups
                for r in 0..<oh {
                    for q in 0..<ow {
                        var sum = b?[o] ?? 0, abs = Swift.abs(sum)
                        for ky in 0..<k {
                            for kx in 0..<k {
                                let iy = r * s.stride + ky - s.pad, ix = q * s.stride + kx - s.pad
                                guard iy >= 0, iy < s.height, ix >= 0, ix < s.width else { continue }
                                let p = w[o * k * k + ky * k + kx] * x[((n * c + source) * s.height + iy) * s.width + ix]
                                sum += p
                                abs += Swift.abs(p)
                            }
                        }
                        y.append(sum)
                        mag.append(abs)
                    }
                }
            }
        }
        return (y, mag)
    }

    /// Runs the model optimised and as written: the fused graph is a Reshape (a view of x) and
    /// the ShuffledDepthwiseConv, its output is bit for bit the plain graph's, and both are within
    /// float rounding ((k² + 1)·u of the sum of magnitudes) of the float64 definition.
    func check(_ s: Geometry, model: Model? = nil, dtype: DType = .float32,
               file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try model ?? shuffleModel(s, dtype: dtype)
        let m = try optimized(model)
        XCTAssertTrue(m.graph.nodes.contains { $0.opType == "ShuffledDepthwiseConv" && $0.domain == internalDomain }, "\(opTypes(m))",
                      file: file, line: line)
        XCTAssertFalse(m.graph.nodes.contains { $0.opType == "Conv" }, file: file, line: line)
        XCTAssertEqual(opTypes(m), ["Reshape", "ShuffledDepthwiseConv"], file: file, line: line)
        let x32 = GraphOptimizationTests.random([s.batch, s.channels, s.height, s.width], seed: 92, scale: 2)
        let x = try x32.cast(to: dtype)
        var plainOptions = SessionOptions()
        plainOptions.optimize = false
        let plain = try InferenceSession(model: model, options: plainOptions).run(tensors: ["x": x])
        let fast = try InferenceSession(model: model).run(tensors: ["x": x])
        let yPlain = try XCTUnwrap(plain["y"]), yFast = try XCTUnwrap(fast["y"])
        XCTAssertEqual(yFast.shape, yPlain.shape, file: file, line: line)
        XCTAssertEqual(yFast.dtype, dtype, file: file, line: line)
        let a = try yFast.doubles(), p = try yPlain.doubles()
        XCTAssertEqual(a.map(\.bitPattern), p.map(\.bitPattern), "not bit for bit the Conv of the shuffled copy", file: file, line: line)
        let w = try XCTUnwrap(model.graph.initializers["W"]).doubles()
        let b = try model.graph.initializers["B"].map { try $0.doubles() }
        let (expected, magnitude) = reference(s, x: try x.doubles(), w: w, b: b)
        XCTAssertEqual(a.count, expected.count, file: file, line: line)
        let u = dtype == .float32 ? Double(Float.ulpOfOne) / 2 : Double.ulpOfOne / 2
        let bound = Double(s.kernel * s.kernel + 1) * u
        var worst = 0.0
        for i in expected.indices {
            let error = abs(a[i] - expected[i])
            XCTAssertLessThanOrEqual(error, bound * magnitude[i] + 1e-300, "element \(i)", file: file, line: line)
            worst = max(worst, error / max(magnitude[i], 1e-300))
        }
        XCTAssertGreaterThan(magnitude.reduce(0, +), 0, file: file, line: line)
        print("ShuffledDepthwiseConv \(s): worst error / magnitude \(worst) (bound \(bound))")
    }

    func testShuffleIntoDepthwiseConvStrideOne() throws {
        try check(Geometry())
    }

    func testShuffleIntoDepthwiseConvStrideTwoOddSizes() throws {
        try check(Geometry(batch: 3, groups: 4, perGroup: 3, height: 11, width: 13, stride: 2, pad: 1))
    }

    func testShuffleIntoDepthwiseConvNoBiasWideRows() throws {
        try check(Geometry(batch: 1, groups: 2, perGroup: 5, height: 5, width: 21, stride: 1, pad: 0, kernel: 5, bias: false))
    }

    func testShuffleIntoDepthwiseConvFloat64() throws {
        try check(Geometry(stride: 2), dtype: .float64)
    }

    /// Reshape shapes written with 0 (copy the dimension) and -1 (inferred), as exporters write them.
    func testReshapeShapesWithZeroAndMinusOne() throws {
        let s = Geometry()
        try check(s, model: try shuffleModel(s, splitShape: [0, Int64(s.groups), -1, Int64(s.height), Int64(s.width)], backShape: [0, -1, Int64(s.height), Int64(s.width)]))
    }

    /// X's shape unknown to the pass (as after a FusedConv): the Reshapes' shapes give it.
    func testUnknownInputShapeWithPositiveReshapeShapes() throws {
        let s = Geometry(batch: 2, groups: 2, perGroup: 6, height: 8, width: 8, stride: 2)
        try check(s, model: try shuffleModel(s, declaredShape: false))
        // The batch as 0 (copied from X) in both, as ShuffleNet's batch-32 export writes it, or -1.
        try check(s, model: try shuffleModel(s, splitShape: [0, 2, 6, 8, 8], backShape: [0, 12, 8, 8], declaredShape: false))
        try check(s, model: try shuffleModel(s, splitShape: [-1, 2, 6, 8, 8], backShape: [-1, 12, 8, 8], declaredShape: false))
        // A 0 in the split would copy an unknown dimension: left alone.
        let m = try optimized(try shuffleModel(s, splitShape: [0, 2, 6, 8, 8], declaredShape: false))
        XCTAssertFalse(opTypes(m).contains("ShuffledDepthwiseConv"), "\(opTypes(m))")
    }

    /// A channel multiplier (W [2C, 1, k, k]) takes the kernel's fallback: the shuffled copy and Conv.
    func testChannelMultiplierFallsBackToTheShuffledCopy() throws {
        try check(Geometry(multiplier: 2))
    }

    /// The shuffled value read by another node: the graph stays as written (the shuffle is made anyway).
    func testShuffledValueReadElsewhereIsLeftAlone() throws {
        let m = try optimized(try shuffleModel(Geometry(), extraReader: true))
        XCTAssertFalse(opTypes(m).contains("ShuffledDepthwiseConv"), "\(opTypes(m))")
        XCTAssertTrue(opTypes(m).contains("Transpose"), "\(opTypes(m))")
    }

    /// Not a shuffle (another permutation, a back shape that is not [N, C, H, W]) or not a
    /// depthwise Conv: nothing changes.
    func testOtherPermutationsAndSplitsAreLeftAlone() throws {
        let s = Geometry()
        var dense = try shuffleModel(s)
        dense.graph.nodes[3].attributes["group"] = .int(s.groups)
        dense.graph.setInitializer("W", GraphOptimizationTests.random([s.channels, s.perGroup, 3, 3], seed: 93))
        let swapped = try shuffleModel(s, backShape: [Int64(s.batch), Int64(s.channels), Int64(s.width), Int64(s.height)], perm: [0, 2, 1, 4, 3])
        for model in [try shuffleModel(s, perm: [0, 1, 2, 3, 4]), swapped, dense] {
            let m = try optimized(model)
            XCTAssertFalse(opTypes(m).contains("ShuffledDepthwiseConv"), "\(opTypes(m))")
            XCTAssertTrue(opTypes(m).contains("Conv"), "\(opTypes(m))")
        }
    }
}
