import OnnxTrain
import XCTest

/// Every gradient kernel against central differences of its forward, in float64.
///
/// For a forward f and a fixed random dY, L(x) = Σ dY ⊙ f(x); the kernel's output for dY must
/// equal ∂L/∂x, estimated as (L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h with h = 1e-5 (truncation error
/// ~1e-10 for these smooth functions; inputs stay away from kinks such as Relu's 0 and
/// MaxPool's ties). Forwards come from the op registry (ONNX ops and the com.microsoft forwards).
final class FiniteDifferenceTests: XCTestCase {
    // MARK: - element-wise activations

    func testReluGrad() throws {
        let x = awayFromZero(randomDoubles([3, 4], seed: 1))
        let dy = randomDoubles([3, 4], seed: 2)
        let analytic = try runTrainingOp("ReluGrad", ms, [dy, x])[0]
        try checkTrainingGradient(of: { try runTrainingOp("Relu", "", [$0[0]], opset: 14)[0] }, at: [x], dY: dy, wrt: [0], analytic: [analytic])
    }

    func testSigmoidAndTanhGradFromOutputs() throws {
        let x = randomDoubles([2, 5], seed: 3), dy = randomDoubles([2, 5], seed: 4)
        for (forward, grad) in [("Sigmoid", "SigmoidGrad"), ("Tanh", "TanhGrad")] {
            let y = try runTrainingOp(forward, "", [x], opset: 13)[0]
            let analytic = try runTrainingOp(grad, ms, [dy, y])[0]
            try checkTrainingGradient(of: { try runTrainingOp(forward, "", [$0[0]], opset: 13)[0] }, at: [x], dY: dy, wrt: [0], analytic: [analytic], label: grad)
        }
    }

    func testGeluFamilyGrads() throws {
        let x = randomDoubles([2, 3, 4], seed: 5), dy = randomDoubles([2, 3, 4], seed: 6), b = randomDoubles([4], seed: 7)
        let cases: [(forward: String, grad: String, attrs: [String: Attribute])] = [
            ("Gelu", "GeluGrad", [:]), ("FastGelu", "FastGeluGrad", [:]), ("QuickGelu", "QuickGeluGrad", ["alpha": .float(1.3)]),
        ]
        for c in cases {
            let analytic = try runTrainingOp(c.grad, ms, [dy, x], attributes: c.attrs)[0]
            try checkTrainingGradient(of: { try runTrainingOp(c.forward, ms, [$0[0]], attributes: c.attrs)[0] }, at: [x], dY: dy, wrt: [0],
                              analytic: [analytic], label: c.grad)
        }
        // Bias forms: the gradient with respect to X of f(X + B).
        for (forward, grad) in [("BiasGelu", "BiasGeluGrad_dX"), ("FastGelu", "BiasFastGeluGrad_dX")] {
            let analytic = try runTrainingOp(grad, ms, [dy, x, b])[0]
            try checkTrainingGradient(of: { try runTrainingOp(forward, ms, [$0[0], $0[1]])[0] }, at: [x, b], dY: dy, wrt: [0], analytic: [analytic], label: grad)
        }
    }

    func testLeakyReluGrad() throws {
        let x = awayFromZero(randomDoubles([3, 4], seed: 8)), dy = randomDoubles([3, 4], seed: 9)
        let alpha: [String: Attribute] = ["alpha": .float(0.2)]
        let analytic = try runTrainingOp("LeakyReluGrad", ms, [dy, x], attributes: alpha)[0]
        try checkTrainingGradient(of: { try runTrainingOp("LeakyRelu", "", [$0[0]], attributes: alpha, opset: 16)[0] }, at: [x], dY: dy, wrt: [0], analytic: [analytic])
    }

    // MARK: - softmax family

    func testSoftmaxAndLogSoftmaxGrads() throws {
        let x = randomDoubles([2, 3, 4], seed: 10), dy = randomDoubles([2, 3, 4], seed: 11)
        // (forward op, its opset, grad op, axis): opset 11 forwards coerce to 2-D like SoftmaxGrad.
        let cases: [(String, Int, String, Int)] = [
            ("Softmax", 11, "SoftmaxGrad", 1), ("LogSoftmax", 11, "LogSoftmaxGrad", 1),
            ("Softmax", 13, "SoftmaxGrad_13", -1), ("LogSoftmax", 13, "LogSoftmaxGrad_13", 1),
        ]
        for (forward, opset, grad, axis) in cases {
            let attrs: [String: Attribute] = ["axis": .int(axis)]
            let y = try runTrainingOp(forward, "", [x], attributes: attrs, opset: opset)[0]
            let analytic = try runTrainingOp(grad, ms, [dy, y], attributes: attrs)[0]
            try checkTrainingGradient(of: { try runTrainingOp(forward, "", [$0[0]], attributes: attrs, opset: opset)[0] }, at: [x], dY: dy, wrt: [0],
                              analytic: [analytic], label: "\(grad) axis \(axis)")
        }
    }

    // MARK: - gathers

    func testGatherGrads() throws {
        let data = randomDoubles([3, 4], seed: 12)
        let idx = Tensor(shape: [2, 2], scalars: [Int64(1), 3, -1, 1])  // duplicates accumulate
        let dy = randomDoubles([3, 2, 2], seed: 13)
        let shape = Tensor(shape: [2], scalars: [Int64(3), 4])
        let g = try runTrainingOp("GatherGrad", ms, [shape, idx, dy], attributes: ["axis": .int(1)])[0]
        try checkTrainingGradient(of: { try runTrainingOp("Gather", "", [$0[0], idx], attributes: ["axis": .int(1)], opset: 13)[0] },
                          at: [data], dY: dy, wrt: [0], analytic: [g], label: "GatherGrad")

        let eidx = Tensor(shape: [2, 4], scalars: [Int64(2), 0, 1, 2, 2, 2, -3, 0])
        let edy = randomDoubles([2, 4], seed: 14)
        let ge = try runTrainingOp("GatherElementsGrad", ms, [edy, shape, eidx], attributes: ["axis": .int(0)])[0]
        try checkTrainingGradient(of: { try runTrainingOp("GatherElements", "", [$0[0], eidx], opset: 13)[0] }, at: [data], dY: edy, wrt: [0],
                          analytic: [ge], label: "GatherElementsGrad")

        let nd = randomDoubles([2, 3, 2], seed: 15)
        let ndIdx = Tensor(shape: [2, 2, 1], scalars: [Int64(1), 1, 0, 2])
        let ndy = randomDoubles([2, 2, 2], seed: 16)
        let ndShape = Tensor(shape: [3], scalars: [Int64(2), 3, 2])
        let gn = try runTrainingOp("GatherNDGrad", ms, [ndShape, ndIdx, ndy], attributes: ["batch_dims": .int(1)])[0]
        try checkTrainingGradient(of: { try runTrainingOp("GatherND", "", [$0[0], ndIdx], attributes: ["batch_dims": .int(1)], opset: 13)[0] },
                          at: [nd], dY: ndy, wrt: [0], analytic: [gn], label: "GatherNDGrad")
    }

    // MARK: - losses

    func testSoftmaxCrossEntropyLossGrad() throws {
        let scores = randomDoubles([3, 4, 2], seed: 17)
        let labels = Tensor(shape: [3, 2], scalars: [Int64(0), 3, 2, 1, 1, 3])
        let weight = randomDoubles([4], seed: 18, low: 0.3, high: 1.5)
        let dy = Tensor(scalar: 0.7)
        for reduction in ["mean", "sum"] {
            let attrs: [String: Attribute] = ["reduction": .string(reduction), "ignore_index": .int(1)]
            let logProb = try runTrainingOp("SoftmaxCrossEntropyLoss", "", [scores, labels, weight], attributes: attrs, opset: 13, outputs: 2)[1]
            let analytic = try runTrainingOp("SoftmaxCrossEntropyLossGrad", ms, [dy, logProb, labels, weight], attributes: attrs)[0]
            try checkTrainingGradient(of: { try runTrainingOp("SoftmaxCrossEntropyLoss", "", [$0[0], labels, weight], attributes: attrs, opset: 13, outputs: 2)[0] },
                              at: [scores], dY: dy, wrt: [0], analytic: [analytic], label: "SoftmaxCrossEntropyLossGrad \(reduction)")
        }
        // reduction none: dY has the labels' shape.
        let none: [String: Attribute] = ["reduction": .string("none")]
        let dyNone = randomDoubles([3, 2], seed: 19)
        let logProb = try runTrainingOp("SoftmaxCrossEntropyLoss", "", [scores, labels], attributes: none, opset: 13, outputs: 2)[1]
        let analytic = try runTrainingOp("SoftmaxCrossEntropyLossGrad", ms, [dyNone, logProb, labels], attributes: none)[0]
        try checkTrainingGradient(of: { try runTrainingOp("SoftmaxCrossEntropyLoss", "", [$0[0], labels], attributes: none, opset: 13, outputs: 2)[0] },
                          at: [scores], dY: dyNone, wrt: [0], analytic: [analytic], label: "SoftmaxCrossEntropyLossGrad none")
    }

    func testSoftmaxCrossEntropyLossInternalGrad() throws {
        let scores = randomDoubles([4, 5], seed: 20)
        let labels = Tensor(shape: [4], scalars: [Int64(1), 4, 2, 4])
        let weight = randomDoubles([5], seed: 21, low: 0.3, high: 1.5)
        let ignore = Tensor(scalar: Int64(2))
        let dy = Tensor(scalar: 1.3)
        let outs = try runTrainingOp("SoftmaxCrossEntropyLossInternal", ms, [scores, labels, weight, ignore], outputs: 2)
        let analytic = try runTrainingOp("SoftmaxCrossEntropyLossInternalGrad", ms, [dy, outs[1], labels, weight, ignore])[0]
        try checkTrainingGradient(of: { try runTrainingOp("SoftmaxCrossEntropyLossInternal", ms, [$0[0], labels, weight, ignore], outputs: 2)[0] },
                          at: [scores], dY: dy, wrt: [0], analytic: [analytic])
    }

    func testLegacyCrossEntropyGrads() throws {
        let logits = randomDoubles([2, 3, 4], seed: 22), dy = Tensor(scalar: 0.8)
        // Dense probabilities summing to one per row.
        let raw = randomDoubles([2, 3, 4], seed: 23, low: 0.1, high: 1).scalars(as: Double.self)
        var normalized = raw
        for row in 0..<6 {
            let total: Double = raw[(row * 4)..<(row * 4 + 4)].reduce(0, +)
            for c in 0..<4 { normalized[row * 4 + c] = raw[row * 4 + c] / total }
        }
        let probs = Tensor(shape: [2, 3, 4], scalars: normalized)
        for reduction in ["mean", "sum"] {
            let attrs: [String: Attribute] = ["reduction": .string(reduction)]
            let lp = try runTrainingOp("SoftmaxCrossEntropy", ms, [logits, probs], attributes: attrs, outputs: 2)[1]
            let analytic = try runTrainingOp("SoftmaxCrossEntropyGrad", ms, [dy, lp, probs], attributes: attrs)[0]
            try checkTrainingGradient(of: { try runTrainingOp("SoftmaxCrossEntropy", ms, [$0[0], probs], attributes: attrs, outputs: 2)[0] },
                              at: [logits], dY: dy, wrt: [0], analytic: [analytic], label: "SoftmaxCrossEntropyGrad \(reduction)")
        }
        let labels = Tensor(shape: [2, 3], scalars: [Int64(0), 3, 2, 1, 1, 3])
        let weight = randomDoubles([2, 3], seed: 24, low: 0.2, high: 1)
        for reduction in ["mean", "sum"] {
            let attrs: [String: Attribute] = ["reduction": .string(reduction)]
            let lp = try runTrainingOp("SparseSoftmaxCrossEntropy", "", [logits, labels, weight], attributes: attrs, opset: 12, outputs: 2)[1]
            let analytic = try runTrainingOp("SparseSoftmaxCrossEntropyGrad", "", [dy, lp, labels, weight], attributes: attrs, opset: 12)[0]
            try checkTrainingGradient(of: { try runTrainingOp("SparseSoftmaxCrossEntropy", "", [$0[0], labels, weight], attributes: attrs, opset: 12, outputs: 2)[0] },
                              at: [logits], dY: dy, wrt: [0], analytic: [analytic], label: "SparseSoftmaxCrossEntropyGrad \(reduction)")
        }
    }

    // MARK: - dropout

    func testDropoutGrad() throws {
        let x = randomDoubles([3, 4], seed: 25), dy = randomDoubles([3, 4], seed: 26)
        let keep = randomDoubles([3, 4], seed: 27).scalars(as: Double.self).map { $0 > -0.5 }
        let mask = Tensor(shape: [3, 4], scalars: keep)
        let ratio = 0.3
        let analytic = try runTrainingOp("DropoutGrad", ms, [dy, mask, Tensor(scalar: ratio)])[0]
        // Dropout with a fixed mask: y = mask ⊙ x / (1 − ratio).
        let forward: ([Tensor]) throws -> Tensor = { t in
            Tensor(shape: [3, 4], scalars: zip(t[0].scalars(as: Double.self), keep).map { $1 ? $0 / (1 - ratio) : 0 })
        }
        try checkTrainingGradient(of: forward, at: [x], dY: dy, wrt: [0], analytic: [analytic])
    }

    // MARK: - convolution and pooling

    func testConvGrad() throws {
        let attrs: [String: Attribute] = ["strides": .ints([2, 1]), "pads": .ints([1, 0, 1, 2]), "dilations": .ints([2, 1]),
                                          "group": .int(2), "kernel_shape": .ints([3, 3])]
        let x = randomDoubles([2, 4, 6, 5], seed: 28), w = randomDoubles([6, 2, 3, 3], seed: 29), b = randomDoubles([6], seed: 30)
        let y = try runTrainingOp("Conv", "", [x, w, b], attributes: attrs, opset: 11)[0]
        let dy = randomDoubles(y.shape, seed: 31)
        let grads = try runTrainingOp("ConvGrad", ms, [dy, x, w], attributes: attrs, outputs: 3)
        try checkTrainingGradient(of: { try runTrainingOp("Conv", "", [$0[0], $0[1], $0[2]], attributes: attrs, opset: 11)[0] },
                          at: [x, w, b], dY: dy, wrt: [0, 1, 2], analytic: grads)
        // auto_pad SAME_UPPER is resolved to pads (onnxruntime would ignore it).
        let same: [String: Attribute] = ["auto_pad": .string("SAME_UPPER"), "strides": .ints([2])]
        let x1 = randomDoubles([1, 2, 7], seed: 32), w1 = randomDoubles([3, 2, 4], seed: 33)
        let y1 = try runTrainingOp("Conv", "", [x1, w1], attributes: same, opset: 11)[0]
        let dy1 = randomDoubles(y1.shape, seed: 34)
        let g1 = try runTrainingOp("ConvGrad", ms, [dy1, x1, w1], attributes: same, outputs: 2)
        try checkTrainingGradient(of: { try runTrainingOp("Conv", "", [$0[0], $0[1]], attributes: same, opset: 11)[0] },
                          at: [x1, w1], dY: dy1, wrt: [0, 1], analytic: g1, label: "ConvGrad SAME_UPPER")
    }

    func testMaxPoolGrad() throws {
        let attrs: [String: Attribute] = ["kernel_shape": .ints([3, 3]), "strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1])]
        // Distinct values so no window has a tie.
        let x = Tensor(shape: [1, 2, 5, 5], scalars: (0..<50).map { Double(($0 * 37) % 50) / 10 - 2.5 })
        let pooled = try runTrainingOp("MaxPool", "", [x], attributes: attrs, opset: 12, outputs: 2)
        let dy = randomDoubles(pooled[0].shape, seed: 35)
        let analytic = try runTrainingOp("MaxPoolGrad", "", [dy, pooled[1]], attributes: attrs, outputType: x.shape)[0]
        try checkTrainingGradient(of: { try runTrainingOp("MaxPool", "", [$0[0]], attributes: attrs, opset: 12)[0] }, at: [x], dY: dy, wrt: [0],
                          analytic: [analytic])
    }

    func testAveragePoolGrad() throws {
        for include in [0, 1] {
            let attrs: [String: Attribute] = ["kernel_shape": .ints([2, 3]), "strides": .ints([2, 1]), "pads": .ints([1, 1, 0, 1]),
                                              "count_include_pad": .int(include)]
            let x = randomDoubles([1, 2, 5, 4], seed: 36)  // 5 → 3 with k 2, s 2, pads 1+0: the declared shape decides dX's size
            let y = try runTrainingOp("AveragePool", "", [x], attributes: attrs, opset: 11)[0]
            let dy = randomDoubles(y.shape, seed: 37)
            let analytic = try runTrainingOp("AveragePoolGrad", "", [dy], attributes: attrs, outputType: x.shape)[0]
            try checkTrainingGradient(of: { try runTrainingOp("AveragePool", "", [$0[0]], attributes: attrs, opset: 11)[0] }, at: [x], dY: dy, wrt: [0],
                              analytic: [analytic], label: "AveragePoolGrad count_include_pad \(include)")
        }
        // 3-D, where onnxruntime 1.19.2's kernel is wrong.
        let attrs3: [String: Attribute] = ["kernel_shape": .ints([2, 2, 2]), "pads": .ints([1, 0, 1, 1, 1, 0])]
        let x3 = randomDoubles([1, 1, 3, 3, 2], seed: 38)
        let y3 = try runTrainingOp("AveragePool", "", [x3], attributes: attrs3, opset: 11)[0]
        let dy3 = randomDoubles(y3.shape, seed: 39)
        let g3 = try runTrainingOp("AveragePoolGrad", "", [dy3], attributes: attrs3, outputType: x3.shape)[0]
        try checkTrainingGradient(of: { try runTrainingOp("AveragePool", "", [$0[0]], attributes: attrs3, opset: 11)[0] }, at: [x3], dY: dy3, wrt: [0],
                          analytic: [g3], label: "AveragePoolGrad 3-D")
    }

    // MARK: - normalization

    func testBatchNormalizationGrad() throws {
        let x = randomDoubles([3, 2, 4], seed: 40), scale = randomDoubles([2], seed: 41), bias = randomDoubles([2], seed: 42)
        let mean = Tensor(shape: [2], scalars: [0.0, 0.0]), variance = Tensor(shape: [2], scalars: [1.0, 1.0])
        let forward = try runTrainingOp("BatchNormInternal", ms, [x, scale, bias, mean.copied(), variance.copied()], outputs: 5)
        let dy = randomDoubles([3, 2, 4], seed: 43)
        let analytic = try runTrainingOp("BatchNormalizationGrad", ms, [dy, x, scale, forward[3], forward[4]], attributes: ["epsilon": .float(1e-5)], outputs: 3)
        try checkTrainingGradient(of: { try runTrainingOp("BatchNormInternal", ms, [$0[0], $0[1], $0[2], mean.copied(), variance.copied()], outputs: 5)[0] },
                          at: [x, scale, bias], dY: dy, wrt: [0, 1, 2], analytic: analytic)
    }

    func testLayerNormalizationGrads() throws {
        let x = randomDoubles([2, 3, 4], seed: 44), dy = randomDoubles([2, 3, 4], seed: 45)
        for axis in [-1, 1] {
            let normalized = axis == -1 ? [4] : [3, 4]
            let scale = randomDoubles(normalized, seed: 46, low: 0.5, high: 1.5), bias = randomDoubles(normalized, seed: 47)
            let attrs: [String: Attribute] = ["axis": .int(axis)]
            let f = try runTrainingOp("LayerNormalization", "", [x, scale, bias], attributes: attrs, opset: 17, outputs: 3)
            let g = try runTrainingOp("LayerNormalizationGrad", ms, [dy, x, scale, f[1], f[2]], attributes: attrs, outputs: 3)
            try checkTrainingGradient(of: { try runTrainingOp("LayerNormalization", "", [$0[0], $0[1], $0[2]], attributes: attrs, opset: 17, outputs: 3)[0] },
                              at: [x, scale, bias], dY: dy, wrt: [0, 1, 2], analytic: g, label: "LayerNormalizationGrad axis \(axis)")
            // The invertible form recovers x̂ from Y, scale and bias.
            let gi = try runTrainingOp("InvertibleLayerNormalizationGrad", ms, [dy, f[0], scale, bias, f[2]], attributes: attrs, outputs: 3)
            try checkTrainingGradient(of: { try runTrainingOp("LayerNormalization", "", [$0[0], $0[1], $0[2]], attributes: attrs, opset: 17, outputs: 3)[0] },
                              at: [x, scale, bias], dY: dy, wrt: [0, 1, 2], analytic: gi, label: "InvertibleLayerNormalizationGrad axis \(axis)")
            let s = try runTrainingOp("SimplifiedLayerNormalization", "", [x, scale], attributes: attrs, opset: 17, outputs: 2)
            let gs = try runTrainingOp("SimplifiedLayerNormalizationGrad", ms, [dy, x, scale, s[1]], attributes: attrs, outputs: 2)
            try checkTrainingGradient(of: { try runTrainingOp("SimplifiedLayerNormalization", "", [$0[0], $0[1]], attributes: attrs, opset: 17, outputs: 2)[0] },
                              at: [x, scale], dY: dy, wrt: [0, 1], analytic: gs, label: "SimplifiedLayerNormalizationGrad axis \(axis)")
        }
    }

    // MARK: - shapes and arithmetic

    func testSliceGrad() throws {
        let x = randomDoubles([4, 5], seed: 48)
        let starts = Tensor(shape: [2], scalars: [Int64(-3), 4]), ends = Tensor(shape: [2], scalars: [Int64(100), 0])
        let axes = Tensor(shape: [2], scalars: [Int64(0), -1]), steps = Tensor(shape: [2], scalars: [Int64(1), -2])
        let y = try runTrainingOp("Slice", "", [x, starts, ends, axes, steps], opset: 13)[0]
        let dy = randomDoubles(y.shape, seed: 49)
        let analytic = try runTrainingOp("SliceGrad", ms, [dy, Tensor(shape: [2], scalars: [Int64(4), 5]), starts, ends, axes, steps])[0]
        try checkTrainingGradient(of: { try runTrainingOp("Slice", "", [$0[0], starts, ends, axes, steps], opset: 13)[0] }, at: [x], dY: dy, wrt: [0],
                          analytic: [analytic])
    }

    /// Steps of Int64.max and Int64.min (a hostile model) once trapped SliceGrad's own clamp arithmetic:
    /// each axis keeps one element, at the start the Slice kernel picks, and the rest of dX is zero.
    func testSliceGradExtremeSteps() throws {
        let x = randomDoubles([5, 4, 3], seed: 53)
        let starts = Tensor(shape: [3], scalars: [Int64(1), 3, Int64.min]), ends = Tensor(shape: [3], scalars: [Int64.max, Int64.min, Int64.max])
        let axes = Tensor(shape: [3], scalars: [Int64(0), 1, 2]), steps = Tensor(shape: [3], scalars: [Int64.max, Int64.min, Int64.max])
        let y = try runTrainingOp("Slice", "", [x, starts, ends, axes, steps], opset: 13)[0]
        XCTAssertEqual(y.shape, [1, 1, 1])
        let dy = Tensor(shape: [1, 1, 1], scalars: [2.5])
        let dx = try runTrainingOp("SliceGrad", ms, [dy, Tensor(shape: [3], scalars: [Int64(5), 4, 3]), starts, ends, axes, steps])[0]
        XCTAssertEqual(dx.shape, [5, 4, 3])
        var expected = [Double](repeating: 0, count: 60)
        expected[1 * 12 + 3 * 3 + 0] = 2.5
        XCTAssertEqual(dx.scalars(as: Double.self), expected)
        try checkTrainingGradient(of: { try runTrainingOp("Slice", "", [$0[0], starts, ends, axes, steps], opset: 13)[0] }, at: [x], dY: dy, wrt: [0],
                          analytic: [dx])
    }

    func testDivGrad() throws {
        let a = randomDoubles([2, 1, 3], seed: 50), b = randomDoubles([4, 1], seed: 51, low: 0.5, high: 2)
        let dy = randomDoubles([2, 4, 3], seed: 52)
        let analytic = try runTrainingOp("DivGrad", ms, [dy, a, b], outputs: 2)
        try checkTrainingGradient(of: { try runTrainingOp("Div", "", [$0[0], $0[1]], opset: 14)[0] }, at: [a, b], dY: dy, wrt: [0, 1], analytic: analytic)
    }
}

// MARK: - helpers

private let ms = "com.microsoft"

/// Runs one node of `op` in `domain` on `inputs` (nil omits an optional input) and returns its
/// first `outputs` results. `outputType` declares output 0's shape (the pool gradients read it).
func runTrainingOp(_ op: String, _ domain: String, _ inputs: [Tensor?], attributes: [String: Attribute] = [:], opset: Int = 17,
          outputs: Int = 1, outputType: [Int]? = nil) throws -> [Tensor] {
    var graph = Graph()
    let inputNames = inputs.enumerated().map { $0.element == nil ? "" : "x\($0.offset)" }
    let outputNames = (0..<outputs).map { "y\($0)" }
    graph.nodes = [Node(opType: op, domain: domain, inputs: inputNames, outputs: outputNames, attributes: attributes)]
    graph.inputs = inputNames.filter { !$0.isEmpty }.map { ValueInfo(name: $0, type: nil) }
    graph.outputs = outputNames.enumerated().map { i, name in
        ValueInfo(name: name, type: i == 0 ? outputType.map { .tensor(nil, shape: $0.map { .value($0) }) } : nil)
    }
    var model = Model(graph: graph)
    model.opsetImports = ["": opset, ms: 1]
    var feeds: [String: Value] = [:]
    for (name, t) in zip(inputNames, inputs) { if let t { feeds[name] = .tensor(t) } }
    let result = try InferenceSession(model: model).run(feeds)
    return try outputNames.map { name in
        guard let t = result[name]?.tensor else { throw KernelError("\(op) produced no tensor '\(name)'") }
        return t
    }
}

/// A float64 tensor of uniform values in [low, high) from a fixed seed.
func randomDoubles(_ shape: [Int], seed: UInt64, low: Double = -2, high: Double = 2) -> Tensor {
    var rng = RandomGenerator(seed: seed)
    return Tensor(shape: shape, scalars: (0..<Tensor.elementCount(shape)).map { _ in low + (high - low) * rng.nextDouble() })
}

/// Moves values within 0.1 of zero out to ±0.1..0.2, so kinks at 0 stay out of the differences.
func awayFromZero(_ t: Tensor) -> Tensor {
    Tensor(shape: t.shape, scalars: t.scalars(as: Double.self).map { abs($0) < 0.1 ? ($0 < 0 ? -0.2 : 0.2) : $0 })
}

/// Checks `analytic[k]` against the central-difference gradient of L = Σ dY ⊙ forward(inputs)
/// with respect to `inputs[wrt[k]]`; reports the largest difference per input.
func checkTrainingGradient(of forward: ([Tensor]) throws -> Tensor, at inputs: [Tensor], dY: Tensor, wrt: [Int], analytic: [Tensor],
                   label: String = "", h: Double = 1e-5, tolerance: Double = 1e-6,
                   file: StaticString = #filePath, line: UInt = #line) throws {
    let weights = dY.scalars(as: Double.self)
    func loss(_ xs: [Tensor]) throws -> Double {
        let y = try forward(xs)
        XCTAssertEqual(y.count, weights.count, "\(label): forward output \(y.shape) vs dY \(dY.shape)", file: file, line: line)
        return zip(y.scalars(as: Double.self), weights).reduce(0) { $0 + $1.0 * $1.1 }
    }
    XCTAssertEqual(analytic.count, wrt.count, "\(label): one analytic gradient per input", file: file, line: line)
    for (k, j) in wrt.enumerated() where k < analytic.count {
        let g = analytic[k]
        XCTAssertEqual(g.dtype, .float64, "\(label): gradient \(k) dtype", file: file, line: line)
        XCTAssertEqual(g.shape, inputs[j].shape, "\(label): gradient for input \(j) has shape \(g.shape)", file: file, line: line)
        guard g.shape == inputs[j].shape, g.dtype == .float64 else { continue }
        let base = inputs[j].scalars(as: Double.self)
        let got = g.scalars(as: Double.self)
        var worst = 0.0, worstIndex = 0, worstExpected = 0.0
        for i in 0..<base.count {
            var plus = inputs, minus = inputs
            var p = base, m = base
            p[i] += h
            m[i] -= h
            plus[j] = Tensor(shape: inputs[j].shape, scalars: p)
            minus[j] = Tensor(shape: inputs[j].shape, scalars: m)
            let numeric = (try loss(plus) - loss(minus)) / (2 * h)
            let diff = abs(numeric - got[i]) / max(1, abs(numeric))
            if diff > worst || diff.isNaN { worst = diff; worstIndex = i; worstExpected = numeric }
        }
        XCTAssertLessThanOrEqual(worst, tolerance,
                                 "\(label): gradient for input \(j) differs from central differences by \(worst) at \(worstIndex) (kernel \(got[worstIndex]), numeric \(worstExpected))",
                                 file: file, line: line)
    }
}
