import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// Every gradient rule against float64 central finite differences, over its attribute variants
/// (broadcast shapes, axes, keepdims, opsets where the axes move to an input, pads, strides,
/// groups, ...). The worst relative error seen over the suite is 3.6e-9; each check allows 1e-7.
final class GradientRuleTests: XCTestCase {
    typealias C = GradientCheck

    override class func tearDown() {
        print("[gradient rules] worst relative error against finite differences: \(GradientCheck.worstSeen)")
        super.tearDown()
    }
    static func r(_ shape: [Int], _ lo: Double = -1, _ hi: Double = 1, _ seed: UInt64 = 1) -> Tensor {
        GradientCheck.random(shape, lo, hi, seed: seed)
    }

    // MARK: Elementwise arithmetic with broadcasting

    func testAddSubMulDivBroadcast() throws {
        let shapes: [([Int], [Int])] = [([2, 3], [2, 3]), ([2, 3], [3]), ([2, 1, 4], [3, 1]), ([2, 3], []), ([1, 3], [2, 1])]
        for op in ["Add", "Sub", "Mul", "Div"] {
            for (a, b) in shapes {
                let bValues = op == "Div" ? Self.r(b, 0.5, 2, 2) : Self.r(b, -1, 1, 2)
                try C(op, [Self.r(a), bValues]).run()
            }
        }
    }

    func testPowBaseAndExponent() throws {
        try C("Pow", [Self.r([2, 3], 0.5, 2), Self.r([3], -1.5, 2.5, 3)]).run()
        try C("Pow", [Self.r([2, 3], 0.5, 2), Tensor(shape: [], scalars: [2.0])]).run()
        try C("Pow", [Self.r([2, 3], 0.5, 2), Tensor(shape: [], scalars: [2.0])], wrt: [0]).run()
    }

    func testVariadicSumMeanMaxMin() throws {
        for op in ["Sum", "Mean", "Max", "Min"] {
            try C(op, [Self.r([2, 3], -1, 1, 1), Self.r([3], -1, 1, 2), Self.r([2, 1], -1, 1, 3)]).run()
            try C(op, [Self.r([4])]).run()
        }
    }

    func testWherePReluClip() throws {
        let cond = Tensor(shape: [2, 3], scalars: [true, false, true, false, false, true])
        try C("Where", [cond, Self.r([2, 3]), Self.r([3], -1, 1, 5)]).run()
        try C("PRelu", [Self.r([2, 3, 4]), Self.r([3, 1], 0.1, 0.5, 4)]).run()
        try C("PRelu", [Self.r([2, 3]), Self.r([1], 0.1, 0.5, 4)]).run()
        try C("Clip", [Self.r([3, 4], -2, 2), Tensor(scalar: -0.5), Tensor(scalar: 0.7)], wrt: [0]).run()
        try C("Clip", [Self.r([3, 4], -2, 2), nil, Tensor(scalar: 0.7)], wrt: [0]).run()
        try C("Clip", opset: 10, [Self.r([3, 4], -2, 2)], attributes: ["min": .float(-0.5), "max": .float(0.5)]).run()
    }

    // MARK: Unary math and activations

    func testUnaryMath() throws {
        let cases: [(String, Double, Double)] = [
            ("Identity", -2, 2), ("Neg", -2, 2), ("Abs", 0.1, 2), ("Exp", -2, 2), ("Log", 0.2, 3), ("Sqrt", 0.2, 3),
            ("Reciprocal", 0.5, 2), ("Sin", -3, 3), ("Cos", -3, 3), ("Tan", -1, 1), ("Sinh", -2, 2), ("Cosh", -2, 2),
            ("Tanh", -2, 2), ("Sigmoid", -3, 3), ("Atan", -3, 3), ("Asin", -0.9, 0.9), ("Acos", -0.9, 0.9),
            ("Asinh", -3, 3), ("Acosh", 1.2, 3), ("Atanh", -0.9, 0.9), ("Erf", -2, 2), ("Softplus", -3, 3),
            ("Softsign", -3, 3), ("Relu", 0.05, 2), ("Mish", -3, 3),
        ]
        for (op, lo, hi) in cases { try C(op, opset: 18, [Self.r([3, 4], lo, hi)]).run() }
        // Relu on both sides of 0 (away from the kink).
        try C("Relu", [Tensor(shape: [4], scalars: [-1.5, -0.3, 0.4, 2.0])]).run()
        try C("Abs", [Tensor(shape: [4], scalars: [-1.5, -0.3, 0.4, 2.0])]).run()
        // Cast and CastLike to the same type (the check runs in float64); CastLike's second input
        // only gives the type.
        try C("Cast", [Self.r([3, 4])], attributes: ["to": .int(Int(DType.float64.rawValue))]).run()
        try C("CastLike", opset: 15, [Self.r([3, 4]), Self.r([1])], wrt: [0]).run()
    }

    func testParameterisedActivations() throws {
        let x = Tensor(shape: [2, 5], scalars: [-3.5, -2.0, -0.7, -0.2, 0.3, 0.9, 1.7, 2.4, 3.6, -1.1])
        try C("LeakyRelu", [x], attributes: ["alpha": .float(0.2)]).run()
        try C("Elu", [x], attributes: ["alpha": .float(0.7)]).run()
        try C("Selu", [x]).run()
        try C("Celu", [x], attributes: ["alpha": .float(1.5)]).run()
        try C("ThresholdedRelu", [x], attributes: ["alpha": .float(0.5)]).run()
        try C("HardSigmoid", [x], attributes: ["alpha": .float(0.3), "beta": .float(0.4)]).run()
        try C("HardSwish", [x]).run()
        try C("Gelu", opset: 20, [x]).run()
        try C("Gelu", opset: 20, [x], attributes: ["approximate": .string("tanh")]).run()
    }

    func testSoftmaxFamily() throws {
        for op in ["Softmax", "LogSoftmax"] {
            for opset in [11, 13] {
                for axis in [-1, 0, 1] {
                    try C(op, opset: opset, [Self.r([2, 3, 4], -2, 2)], attributes: ["axis": .int(axis)]).run()
                }
            }
        }
    }

    func testCumSum() throws {
        for reverse in [0, 1] {
            for exclusive in [0, 1] {
                try C("CumSum", [Self.r([3, 4]), Tensor(scalar: Int64(1))],
                      attributes: ["reverse": .int(reverse), "exclusive": .int(exclusive)], constants: [1]).run()
            }
        }
    }

    // MARK: Reductions

    func testReductions() throws {
        let ops = ["ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSumExp",
                   "ReduceLogSum", "ReduceProd", "ReduceMax", "ReduceMin"]
        for op in ops {
            let x = op == "ReduceLogSum" || op == "ReduceProd" || op == "ReduceL1" ? Self.r([2, 3, 4], 0.5, 2) : Self.r([2, 3, 4], -2, 2)
            for keepdims in [0, 1] {
                for axes in [[1], [0, 2], [-1], []] {
                    let axesFromInput = op == "ReduceSum" ? true : false
                    // opset 13 (axes attribute except ReduceSum) and opset 18 (axes input).
                    if axesFromInput {
                        try C(op, opset: 13, [x, axes.isEmpty ? nil : C.ints(axes)], attributes: ["keepdims": .int(keepdims)], constants: [1]).run()
                    } else {
                        var attributes: [String: Attribute] = ["keepdims": .int(keepdims)]
                        if !axes.isEmpty { attributes["axes"] = .ints(axes) }
                        try C(op, opset: 13, [x], attributes: attributes).run()
                    }
                    try C(op, opset: 18, [x, axes.isEmpty ? nil : C.ints(axes)], attributes: ["keepdims": .int(keepdims)], constants: [1]).run()
                }
            }
        }
        // Axes computed at run time (a graph input, not a constant).
        try C("ReduceMean", opset: 18, [Self.r([2, 3, 4]), C.ints([1])], attributes: ["keepdims": .int(0)], wrt: [0]).run()
        try C("ReduceSum", opset: 13, [Self.r([2, 3, 4]), C.ints([0, 2])], attributes: ["keepdims": .int(0)], wrt: [0]).run()
    }

    // MARK: Matrix products

    func testMatMulShapes() throws {
        let cases: [([Int], [Int])] = [([3, 4], [4, 5]), ([2, 3, 4], [4, 5]), ([2, 3, 4], [2, 4, 5]), ([1, 3, 4], [2, 4, 5]),
                                       ([2, 1, 3, 4], [3, 4, 2]), ([4], [4, 5]), ([3, 4], [4]), ([4], [4]), ([2, 3, 4], [4])]
        for (a, b) in cases { try C("MatMul", [Self.r(a, -1, 1, 1), Self.r(b, -1, 1, 2)]).run() }
    }

    func testGemmVariants() throws {
        for transA in [0, 1] {
            for transB in [0, 1] {
                let a = transA == 1 ? Self.r([4, 3]) : Self.r([3, 4])
                let b = transB == 1 ? Self.r([5, 4], -1, 1, 2) : Self.r([4, 5], -1, 1, 2)
                for c in [Self.r([5], -1, 1, 3), Self.r([3, 5], -1, 1, 3), Self.r([3, 1], -1, 1, 3), Tensor(shape: [], scalars: [0.5])] {
                    try C("Gemm", [a, b, c], attributes: ["transA": .int(transA), "transB": .int(transB),
                                                           "alpha": .float(0.75), "beta": .float(1.5)]).run()
                }
            }
        }
        try C("Gemm", [Self.r([3, 4]), Self.r([4, 5], -1, 1, 2)]).run()
    }

    // MARK: Convolution and pooling

    func testConv() throws {
        try C("Conv", [Self.r([2, 2, 5, 5]), Self.r([3, 2, 3, 3], -1, 1, 2), Self.r([3], -1, 1, 3)]).run()
        try C("Conv", [Self.r([1, 4, 6, 6]), Self.r([4, 2, 3, 3], -1, 1, 2), Self.r([4], -1, 1, 3)],
              attributes: ["strides": .ints([2, 2]), "pads": .ints([1, 0, 1, 2]), "group": .int(2), "dilations": .ints([1, 2])]).run()
        try C("Conv", [Self.r([2, 2, 7]), Self.r([3, 2, 3], -1, 1, 2)], attributes: ["strides": .ints([2]), "pads": .ints([1, 1])]).run()
        try C("Conv", [Self.r([1, 2, 5, 5]), Self.r([2, 2, 3, 3], -1, 1, 2)], attributes: ["auto_pad": .string("SAME_UPPER"), "strides": .ints([2, 2])]).run()
    }

    func testPooling() throws {
        let x = Self.r([2, 2, 6, 6])
        try C("MaxPool", [x], attributes: ["kernel_shape": .ints([2, 2]), "strides": .ints([2, 2])]).run()
        try C("MaxPool", [x], attributes: ["kernel_shape": .ints([3, 3]), "strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1])]).run()
        try C("MaxPool", [Self.r([1, 2, 9])], attributes: ["kernel_shape": .ints([3]), "dilations": .ints([2])]).run()
        try C("AveragePool", [x], attributes: ["kernel_shape": .ints([3, 3]), "strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1])]).run()
        try C("AveragePool", [x], attributes: ["kernel_shape": .ints([3, 3]), "strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1]),
                                                "count_include_pad": .int(1)]).run()
        try C("GlobalAveragePool", [x]).run()
        try C("GlobalMaxPool", [x]).run()
    }

    // MARK: Normalization, dropout, loss

    func testLayerNormalization() throws {
        for axis in [-1, 1] {
            try C("LayerNormalization", [Self.r([2, 3, 4]), Self.r(axis == -1 ? [4] : [3, 4], 0.5, 1.5, 2), Self.r(axis == -1 ? [4] : [3, 4], -1, 1, 3)],
                  attributes: ["axis": .int(axis), "epsilon": .float(1e-5)]).run()
        }
        try C("LayerNormalization", [Self.r([2, 5]), Self.r([5], 0.5, 1.5, 2)]).run()
    }

    func testBatchNormalization() throws {
        let x = Self.r([3, 2, 2, 2]), scale = Self.r([2], 0.5, 1.5, 2), bias = Self.r([2], -1, 1, 3)
        let mean = Self.r([2], -0.5, 0.5, 4), variance = Self.r([2], 0.5, 1.5, 5)
        // Training mode (com.microsoft BatchNormInternal, what the artifact builder emits).
        try C("BatchNormInternal", domain: "com.microsoft", [x, scale, bias, mean, variance],
              attributes: ["epsilon": .float(1e-5), "momentum": .float(0.9), "training_mode": .int(1)], outputs: 5, wrt: [0, 1, 2]).run()
        // Inference mode (frozen statistics).
        try C("BatchNormalization", [x, scale, bias, mean, variance], wrt: [0, 1, 2]).run()
        try C("BatchNormalization", [Self.r([4, 3]), Self.r([3], 0.5, 1.5, 2), Self.r([3], -1, 1, 3), Self.r([3], -0.5, 0.5, 4), Self.r([3], 0.5, 1.5, 5)],
              wrt: [0, 1, 2]).run()
    }

    func testDropout() throws {
        // Training mode: the same seed draws the same mask in every run, so differences see one fixed mask.
        var training = C("Dropout", [Self.r([4, 5]), Tensor(scalar: 0.3), Tensor(scalar: true)], outputs: 2, wrt: [0], constants: [1, 2])
        training.freshSessions = true
        try training.run()
        try C("Dropout", [Self.r([4, 5])], outputs: 1).run()
    }

    func testSoftmaxCrossEntropyLoss() throws {
        let labels = C.ints([2, 0, 1, 2])
        for reduction in ["mean", "sum", "none"] {
            try C("SoftmaxCrossEntropyLoss", [Self.r([4, 3], -2, 2), labels], attributes: ["reduction": .string(reduction)], outputs: 2).run()
        }
        try C("SoftmaxCrossEntropyLoss", [Self.r([4, 3], -2, 2), labels, Self.r([3], 0.5, 2, 9)], wrt: [0]).run()
        try C("SoftmaxCrossEntropyLoss", [Self.r([4, 3], -2, 2), labels], attributes: ["ignore_index": .int(0)]).run()
        try C("SoftmaxCrossEntropyLoss", [Self.r([2, 3, 2], -2, 2), C.ints([0, 2, 1, 1], shape: [2, 2])]).run()
    }

    // MARK: Shape and movement

    func testReshapeFamily() throws {
        try C("Reshape", [Self.r([2, 3, 4]), C.ints([4, -1])], constants: [1]).run()
        try C("Flatten", [Self.r([2, 3, 4])], attributes: ["axis": .int(2)]).run()
        try C("Squeeze", [Self.r([2, 1, 4]), C.ints([1])], constants: [1]).run()
        try C("Unsqueeze", [Self.r([2, 4]), C.ints([0, 2])], constants: [1]).run()
        try C("Squeeze", opset: 11, [Self.r([2, 1, 4])], attributes: ["axes": .ints([1])]).run()
        try C("Transpose", [Self.r([2, 3, 4])], attributes: ["perm": .ints([1, 2, 0])]).run()
        try C("Transpose", [Self.r([2, 3])]).run()
        try C("Expand", [Self.r([3, 1]), C.ints([2, 3, 4])], constants: [1]).run()
        try C("Trilu", [Self.r([3, 4]), Tensor(scalar: Int64(1))], attributes: ["upper": .int(0)], constants: [1]).run()
    }

    func testConcatSplit() throws {
        try C("Concat", [Self.r([2, 3]), Self.r([2, 1], -1, 1, 2), Self.r([2, 2], -1, 1, 3)], attributes: ["axis": .int(1)]).run()
        try C("Concat", [Self.r([1, 3]), Self.r([2, 3], -1, 1, 2)], attributes: ["axis": .int(-2)]).run()
        try C("Split", [Self.r([2, 6]), C.ints([1, 2, 3])], attributes: ["axis": .int(1)], outputs: 3, lossOutputs: [0, 2], constants: [1]).run()
        try C("Split", [Self.r([4, 3])], outputs: 2, lossOutputs: [0, 1]).run()
    }

    func testSliceGatherScatter() throws {
        try C("Slice", [Self.r([4, 6]), C.ints([1, -5]), C.ints([3, 100]), C.ints([0, 1]), C.ints([1, 2])], constants: [1, 2, 3, 4]).run()
        try C("Slice", opset: 9, [Self.r([4, 6])], attributes: ["starts": .ints([1]), "ends": .ints([3]), "axes": .ints([1])]).run()
        try C("Gather", [Self.r([5, 3]), C.ints([0, 4, 0, 2], shape: [2, 2])], attributes: ["axis": .int(0)]).run()
        try C("Gather", [Self.r([2, 5]), C.ints([-1, 1])], attributes: ["axis": .int(1)]).run()
        try C("GatherElements", [Self.r([3, 3]), C.ints([0, 2, 1, 1, 0, 0], shape: [2, 3])], attributes: ["axis": .int(0)]).run()
        try C("GatherND", [Self.r([2, 3, 4]), C.ints([0, 1, 1, 2], shape: [2, 2])]).run()
        try C("ScatterElements", [Self.r([3, 3]), C.ints([1, 0, 2, 0, 2, 1], shape: [2, 3]), Self.r([2, 3], -1, 1, 4)],
              attributes: ["axis": .int(0)], wrt: [0, 2]).run()
        try C("ScatterND", [Self.r([4, 3]), C.ints([1, 3], shape: [2, 1]), Self.r([2, 3], -1, 1, 4)], wrt: [0, 2]).run()
    }

    func testTilePad() throws {
        try C("Tile", [Self.r([2, 3]), C.ints([2, 3])], constants: [1]).run()
        for mode in ["constant", "reflect", "edge", "wrap"] {
            try C("Pad", opset: 19, [Self.r([3, 4]), C.ints([1, 2, 2, 1])], attributes: ["mode": .string(mode)], constants: [1]).run()
        }
        try C("Pad", [Self.r([3, 4]), C.ints([-1, 1, 0, -2])], constants: [1]).run()
        try C("Pad", opset: 19, [Self.r([2, 3, 4]), C.ints([1, 2]), nil, C.ints([1])], attributes: ["mode": .string("reflect")], constants: [1, 3]).run()
    }

    // MARK: Ops onnxruntime could not differentiate

    func testConvTranspose() throws {
        try C("ConvTranspose", [Self.r([2, 3, 4, 4]), Self.r([3, 2, 3, 3], -1, 1, 2), Self.r([2], -1, 1, 3)]).run()
        try C("ConvTranspose", [Self.r([1, 4, 3, 3]), Self.r([4, 1, 3, 2], -1, 1, 2), Self.r([2], -1, 1, 3)],
              attributes: ["strides": .ints([2, 1]), "pads": .ints([1, 0, 0, 1]), "group": .int(2), "output_padding": .ints([1, 0])]).run()
        try C("ConvTranspose", [Self.r([2, 2, 5]), Self.r([2, 3, 3], -1, 1, 2)], attributes: ["dilations": .ints([2]), "strides": .ints([2])]).run()
    }

    func testTopK() throws {
        try C("TopK", [Self.r([3, 5]), C.ints([2])], outputs: 2, constants: [1]).run()
        try C("TopK", [Self.r([4, 3]), C.ints([3])], attributes: ["axis": .int(0), "largest": .int(0)], outputs: 2, constants: [1]).run()
    }

    func testGroupAndInstanceNormalization() throws {
        try C("GroupNormalization", opset: 21, [Self.r([2, 4, 3]), Self.r([4], 0.5, 1.5, 2), Self.r([4], -1, 1, 3)],
              attributes: ["num_groups": .int(2)]).run()
        try C("GroupNormalization", opset: 18, [Self.r([2, 6, 2, 2]), Self.r([3], 0.5, 1.5, 2), Self.r([3], -1, 1, 3)],
              attributes: ["num_groups": .int(3)]).run()
        try C("InstanceNormalization", [Self.r([2, 3, 4]), Self.r([3], 0.5, 1.5, 2), Self.r([3], -1, 1, 3)]).run()
        try C("InstanceNormalization", opset: 11, [Self.r([2, 3, 2, 3]), Self.r([3], 0.5, 1.5, 2), Self.r([3], -1, 1, 3)]).run()
    }

    func testEinsum() throws {
        try C("Einsum", [Self.r([3, 4]), Self.r([4, 5], -1, 1, 2)], attributes: ["equation": .string("ij,jk->ik")]).run()
        try C("Einsum", [Self.r([2, 3, 4]), Self.r([2, 4, 5], -1, 1, 2)], attributes: ["equation": .string("bij,bjk->bik")]).run()
        try C("Einsum", [Self.r([3, 4])], attributes: ["equation": .string("ij->i")]).run()
        try C("Einsum", [Self.r([3, 4]), Self.r([4], -1, 1, 2)], attributes: ["equation": .string("ij,j")]).run()
        try C("Einsum", [Self.r([2, 3, 4]), Self.r([4, 5], -1, 1, 2)], attributes: ["equation": .string("...j,jk->...k")]).run()
        try C("Einsum", [Self.r([3]), Self.r([4], -1, 1, 2)], attributes: ["equation": .string("i,j->ij")]).run()
    }

    func testResize() throws {
        let x = Self.r([1, 2, 3, 4])
        let empty = Tensor(shape: [0], scalars: [Float]())
        for mode in ["nearest", "linear", "cubic"] {
            for transform in ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"] {
                try C("Resize", opset: 13, [x, nil, Tensor(shape: [4], scalars: [Float(1), 1, 2, 1.5])],
                      attributes: ["mode": .string(mode), "coordinate_transformation_mode": .string(transform)], constants: [2]).run()
            }
            try C("Resize", opset: 13, [x, nil, empty, C.ints([1, 2, 5, 3])], attributes: ["mode": .string(mode)], constants: [2, 3]).run()
        }
        try C("Resize", opset: 18, [x, nil, Tensor(shape: [2], scalars: [Float(0.5), 0.75])],
              attributes: ["mode": .string("linear"), "axes": .ints([2, 3]), "antialias": .int(1)], constants: [2]).run()
        try C("Upsample", opset: 9, [x, Tensor(shape: [4], scalars: [Float(1), 1, 2, 2])], attributes: ["mode": .string("nearest")], constants: [1]).run()
    }

    func testTrainingOpsInForwardGraphs() throws {
        let labels = C.ints([2, 0, 1, 2])
        let probabilities = Tensor(shape: [4, 3], scalars: [0.2, 0.3, 0.5, 0.6, 0.3, 0.1, 0.25, 0.25, 0.5, 0.1, 0.1, 0.8])
        try C("SoftmaxCrossEntropy", domain: "com.microsoft", [Self.r([4, 3], -2, 2), probabilities], outputs: 2, wrt: [0]).run()
        try C("SparseSoftmaxCrossEntropy", [Self.r([4, 3], -2, 2), labels], attributes: ["reduction": .string("sum")], outputs: 2).run()
        try C("SoftmaxCrossEntropyLossInternal", domain: "com.microsoft", [Self.r([4, 3], -2, 2), labels], outputs: 2).run()
        try C("SimplifiedLayerNormalization", [Self.r([2, 3, 4]), Self.r([4], 0.5, 1.5, 2)], outputs: 2).run()
        try C("ConcatTraining", domain: "com.microsoft", [Self.r([2, 3]), Self.r([2, 2], -1, 1, 2)], attributes: ["axis": .int(1)], outputs: 2).run()
    }

    // MARK: The engine

    func testFanOutIsSummedAndIntegerPathsCarryNoGradient() throws {
        // y = x * x + Shape-dependent constant: the two uses of x add up, the Shape path gets nothing.
        var graph = Graph()
        graph.inputs = [ValueInfo(name: "x", type: .tensor(.float64, shape: [.value(3)]))]
        graph.nodes = [
            Node(opType: "Mul", name: "sq", inputs: ["x", "x"], outputs: ["sq"]),
            Node(opType: "Shape", name: "shape", inputs: ["x"], outputs: ["s"]),
            Node(opType: "Cast", name: "cast", inputs: ["s"], outputs: ["sf"], attributes: ["to": .int(11)]),
            Node(opType: "Add", name: "add", inputs: ["sq", "sf"], outputs: ["y"]),
            Node(opType: "ReduceSum", name: "sum", inputs: ["y"], outputs: ["loss"], attributes: ["keepdims": .int(0)]),
        ]
        graph.outputs = [ValueInfo(name: "loss", type: nil)]
        let result = try Autodiff.differentiate(graph, opsets: ["": 17], loss: "loss", parameters: ["x"])
        XCTAssertFalse(result.graph.nodes.contains { $0.name.hasPrefix("shape_Grad") || $0.name.hasPrefix("cast_Grad") })
        var model = Model(graph: result.graph)
        model.opsetImports = ["": 17, "com.microsoft": 1]
        model.graph.outputs = [ValueInfo(name: result.gradients[0].gradient, type: nil)]
        let out = try InferenceSession(model: model).run(["x": .tensor(Tensor(shape: [3], scalars: [1.0, -2.0, 0.5]))])
        XCTAssertEqual(out[result.gradients[0].gradient]?.tensor?.scalars(as: Double.self), [2.0, -4.0, 1.0])
    }

    func testMissingRuleNamesOpNodeAndParameter() throws {
        var graph = Graph()
        graph.inputs = [ValueInfo(name: "w", type: .tensor(.float32, shape: [.value(3)]))]
        graph.nodes = [
            Node(opType: "Hardmax", name: "hm", inputs: ["w"], outputs: ["h"]),
            Node(opType: "ReduceSum", name: "sum", inputs: ["h"], outputs: ["loss"], attributes: ["keepdims": .int(0)]),
        ]
        XCTAssertThrowsError(try Autodiff.differentiate(graph, opsets: ["": 17], loss: "loss", parameters: ["w"])) { error in
            let message = (error as? OnnxTrainError)?.message ?? ""
            XCTAssertTrue(message.contains("Hardmax") && message.contains("'hm'") && message.contains("'w'"), message)
        }
    }

    func testParameterThatDoesNotReachTheLossIsReported() throws {
        var graph = Graph()
        graph.inputs = [ValueInfo(name: "a", type: .tensor(.float32, shape: [.value(2)])), ValueInfo(name: "b", type: .tensor(.float32, shape: [.value(2)]))]
        graph.nodes = [Node(opType: "ReduceSum", name: "sum", inputs: ["a"], outputs: ["loss"], attributes: ["keepdims": .int(0)])]
        XCTAssertThrowsError(try Autodiff.differentiate(graph, opsets: ["": 17], loss: "loss", parameters: ["a", "b"])) { error in
            XCTAssertTrue(((error as? OnnxTrainError)?.message ?? "").contains("'b' does not affect the loss"))
        }
    }
}
