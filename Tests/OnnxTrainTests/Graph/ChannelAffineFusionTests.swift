import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// ChannelAffineFusion (per-channel BatchNormalization, Mul, Add, Sub, Div by constants and an
/// activation as one ChannelAffine, folded into a preceding Conv by ConvFusion) and SumAsAdd.
extension GraphOptimizationTests {
    static let channels = 5

    /// x [2, 5, 6, 7] (-> Conv 5 -> 5, 3x3, pads 1 with `conv`) -> BatchNormalization ->
    /// Mul by Unsqueeze(w) -> Add Unsqueeze(b) -> Relu, as onnx's zoo Inception v2 and DenseNet-121
    /// (opset 9, Unsqueeze axes as an attribute) write every BatchNormalization.
    func zooBatchNormModel(conv: Bool, tail: [Node]? = nil, constants: [String: Tensor] = [:]) -> Model {
        let c = Self.channels
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(2), .value(c), .value(6), .value(7)]))]
        g.setInitializer("W", Self.random([c, c, 3, 3], seed: 80, scale: 0.4))
        g.setInitializer("scale", Self.random([c], seed: 81))
        g.setInitializer("beta", Self.random([c], seed: 82))
        g.setInitializer("mean", Self.random([c], seed: 83, scale: 0.3))
        g.setInitializer("var", Tensor(shape: [c], scalars: [Float(0.5), 1.5, 0.01, 2, 0.8]))
        g.setInitializer("sc_w", Self.random([c], seed: 84, scale: 2))
        g.setInitializer("sc_b", Self.random([c], seed: 85))
        for (k, t) in constants { g.setInitializer(k, t) }
        if conv {
            g.nodes.append(Node(opType: "Conv", name: "conv", inputs: ["x", "W"], outputs: ["c"],
                                attributes: ["pads": .ints([1, 1, 1, 1]), "kernel_shape": .ints([3, 3])]))
        }
        g.nodes += [
            Node(opType: "BatchNormalization", name: "bn", inputs: [conv ? "c" : "x", "scale", "beta", "mean", "var"], outputs: ["n"],
                 attributes: ["epsilon": .float(1e-5)]),
            Node(opType: "Unsqueeze", inputs: ["sc_w"], outputs: ["u1"], attributes: ["axes": .ints([1, 2])]),
            Node(opType: "Mul", inputs: ["n", "u1"], outputs: ["m"]),
            Node(opType: "Unsqueeze", inputs: ["sc_b"], outputs: ["u2"], attributes: ["axes": .ints([1, 2])]),
            Node(opType: "Add", inputs: ["m", "u2"], outputs: ["a"]),
        ]
        g.nodes += tail ?? [Node(opType: "Relu", inputs: ["a"], outputs: ["y"])]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 9]
        return m
    }

    /// The model's per-channel parameters in float64.
    func zooParameters(_ model: Model) throws -> [String: [Double]] {
        var p: [String: [Double]] = [:]
        for name in ["scale", "beta", "mean", "var", "sc_w", "sc_b"] { p[name] = try XCTUnwrap(model.graph.initializers[name]).doubles() }
        return p
    }

    /// Largest |actual − expected| / max(1, |expected|).
    func largestRelativeDifference(_ actual: Tensor, _ expected: [Double]) throws -> Double {
        let a = try actual.doubles()
        XCTAssertEqual(a.count, expected.count)
        return zip(a, expected).reduce(0) { max($0, abs($1.0 - $1.1) / max(1, abs($1.1))) }
    }

    /// DenseNet's pre-activation (BatchNormalization, Mul, Add, Relu on a value no Conv makes)
    /// becomes one ChannelAffine; its output against the ops' definitions evaluated in float64
    /// from the same float32 inputs (measured 1.2e-7 relative: float32 rounding), and against the
    /// graph run op by op.
    func testPreActivationBatchNormMulAddReluBecomesOneChannelAffine() throws {
        let model = zooBatchNormModel(conv: false)
        let m = try optimized(model)
        XCTAssertEqual(opTypes(m), ["ChannelAffine"])
        XCTAssertEqual(m.graph.nodes[0].domain, internalDomain)
        XCTAssertEqual(m.graph.nodes[0].string("activation"), "Relu")
        let x = Self.random([2, Self.channels, 6, 7], seed: 86, scale: 3)
        let y = try XCTUnwrap(InferenceSession(model: model).run(tensors: ["x": x])["y"])
        let p = try zooParameters(model)
        let xs = try x.doubles()
        let inner = 42
        let expected = xs.indices.map { i -> Double in
            let c = (i / inner) % Self.channels
            let n = (xs[i] - p["mean"]![c]) / (p["var"]![c] + Double(Float(1e-5))).squareRoot() * p["scale"]![c] + p["beta"]![c]
            return max(0, n * p["sc_w"]![c] + p["sc_b"]![c])
        }
        let worst = try largestRelativeDifference(y, expected)
        print("ChannelAffine (bn+mul+add+relu) vs float64 definition: largest relative difference \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-6)
        let plain = try assertSameOutputs(model, ["x": x], tolerance: 1e-6, "bn+mul+add+relu")
        print("ChannelAffine vs ops one by one: largest relative difference \(plain)")
    }

    /// After a Conv the same chain folds into the convolution: one FusedConv with Relu.
    func testConvBatchNormMulAddReluFoldsIntoOneFusedConv() throws {
        let model = zooBatchNormModel(conv: true)
        let m = try optimized(model)
        XCTAssertEqual(opTypes(m), ["FusedConv"])
        XCTAssertEqual(m.graph.nodes[0].string("activation"), "Relu")
        XCTAssertEqual(m.graph.nodes[0].inputs.count, 3, "no Z: the activation came with the ChannelAffine")
        for name in ["W", "scale", "sc_w", "sc_b"] { XCTAssertNil(m.graph.initializers[name], "\(name) was folded and dropped") }
        let worst = try assertSameOutputs(model, ["x": Self.random([2, Self.channels, 6, 7], seed: 87)], tolerance: 1e-5, "conv+bn+mul+add+relu")
        print("Conv+BN+Mul+Add+Relu as FusedConv vs ops one by one: largest relative difference \(worst)")
        // Without the new pass, ConvFusion folds the BatchNormalization alone, as before.
        XCTAssertEqual(try withPassesDisabled("channel-affine") { opTypes(try optimized(model)) }, ["Conv", "ElementwiseChain"])
    }

    /// Sub with the constant on either side, Div of the value by a scalar, a per-channel
    /// constant of shape [1, C, 1, 1], and LeakyRelu: the composed map against float64.
    func testSubDivAndScalarStepsCompose() throws {
        let c = Self.channels
        let tail = [
            Node(opType: "Sub", inputs: ["k", "a"], outputs: ["s1"]),
            Node(opType: "Div", inputs: ["s1", "two"], outputs: ["d"]),
            Node(opType: "Sub", inputs: ["d", "row"], outputs: ["s2"]),
            Node(opType: "LeakyRelu", inputs: ["s2"], outputs: ["y"], attributes: ["alpha": .float(0.1)]),
        ]
        let k = Self.random([c, 1, 1], seed: 88), row = Self.random([1, c, 1, 1], seed: 89)
        let model = zooBatchNormModel(conv: false, tail: tail, constants: ["k": k, "two": Tensor(scalar: Float(2.5)), "row": row])
        let m = try optimized(model)
        XCTAssertEqual(opTypes(m), ["ChannelAffine"])
        XCTAssertEqual(m.graph.nodes[0].string("activation"), "LeakyRelu")
        let x = Self.random([2, c, 6, 7], seed: 90, scale: 3)
        let y = try XCTUnwrap(InferenceSession(model: model).run(tensors: ["x": x])["y"])
        let p = try zooParameters(model), ks = try k.doubles(), rows = try row.doubles()
        let xs = try x.doubles()
        let expected = xs.indices.map { i -> Double in
            let ch = (i / 42) % c
            let n = (xs[i] - p["mean"]![ch]) / (p["var"]![ch] + Double(Float(1e-5))).squareRoot() * p["scale"]![ch] + p["beta"]![ch]
            let v = (ks[ch] - (n * p["sc_w"]![ch] + p["sc_b"]![ch])) / 2.5 - rows[ch]
            return v < 0 ? Double(Float(0.1)) * v : v
        }
        let worst = try largestRelativeDifference(y, expected)
        print("ChannelAffine (bn+mul+add+sub+div+sub+leakyrelu) vs float64 definition: largest relative difference \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-6)
        try assertSameOutputs(model, ["x": x], tolerance: 1e-6, "sub/div chain")
    }

    /// What is not a per-channel map stays: a lone scalar Mul (left to ElementwiseFusion), an
    /// operand that varies along another axis, a constant divided by the value, training-mode
    /// BatchNormalization, and a value between the ops that a graph output reads.
    func testNonChannelStepsStay() throws {
        let c = Self.channels
        func model(_ nodes: [Node], _ constants: [String: Tensor], outputs: [String] = ["y"]) -> Model {
            var g = Graph()
            g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(2), .value(c), .value(6), .value(7)]))]
            for (k, t) in constants { g.setInitializer(k, t) }
            g.nodes = nodes
            g.outputs = outputs.map { ValueInfo(name: $0, type: nil) }
            var m = Model(graph: g)
            m.opsetImports = ["": 15]
            return m
        }
        let scalar = model([Node(opType: "Mul", inputs: ["x", "k"], outputs: ["y"])], ["k": Tensor(scalar: Float(3))])
        XCTAssertEqual(opTypes(try optimized(scalar)), ["Mul"])
        let spatial = model([Node(opType: "Mul", inputs: ["x", "k"], outputs: ["y"])], ["k": Self.random([c, 6, 1], seed: 91)])
        XCTAssertEqual(opTypes(try optimized(spatial)), ["Mul"])
        let reciprocal = model([Node(opType: "Div", inputs: ["k", "x"], outputs: ["y"])], ["k": Self.random([c, 1, 1], seed: 92)])
        XCTAssertEqual(opTypes(try optimized(reciprocal)), ["Div"])
        let stats = ["s": Self.random([c], seed: 93), "b": Self.random([c], seed: 94), "m": Self.random([c], seed: 95),
                     "v": Tensor(shape: [c], scalars: [Float](repeating: 1, count: c))]
        let training = model([Node(opType: "BatchNormalization", inputs: ["x", "s", "b", "m", "v"], outputs: ["y"],
                                   attributes: ["training_mode": .int(1)])], stats)
        XCTAssertEqual(opTypes(try optimized(training)), ["BatchNormalization"])
        let fetched = model([Node(opType: "BatchNormalization", inputs: ["x", "s", "b", "m", "v"], outputs: ["n"]),
                             Node(opType: "Relu", inputs: ["n"], outputs: ["y"])], stats, outputs: ["y", "n"])
        XCTAssertEqual(opTypes(try optimized(fetched)), ["ChannelAffine", "Relu"], "n is an output: the Relu stays apart")
        try assertSameOutputs(fetched, ["x": Self.random([2, c, 6, 7], seed: 96)], tolerance: 1e-6, "n fetched")
    }

    /// A two-input Sum (zoo ResNet-50's residual) fuses into FusedConv as Add does; a
    /// three-input Sum stays.
    func testTwoInputSumFusesAsAdd() throws {
        var model = convModel(activation: Node(opType: "Relu", inputs: [""], outputs: [""]))
        let k = try XCTUnwrap(model.graph.nodes.firstIndex { $0.opType == "Add" })
        model.graph.nodes[k].opType = "Sum"
        let m = try optimized(model)
        XCTAssertEqual(opTypes(m), ["FusedConv"])
        XCTAssertEqual(m.graph.nodes[0].inputs.last, "z")
        let worst = try assertSameOutputs(model, convFeeds(), tolerance: 1e-5, "conv+bn+sum+relu")
        print("Conv+BN+Sum+Relu as FusedConv vs ops one by one: largest relative difference \(worst)")
        model.graph.nodes[k].inputs.append("z")
        XCTAssertEqual(opTypes(try optimized(model)).filter { $0 == "Sum" }.count, 1)
        try assertSameOutputs(model, convFeeds(), tolerance: 1e-5, "three-input sum")
        // Broadcasting as Add does: a [4, 1, 1] operand.
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(2), .value(4), .value(3), .value(3)]))]
        g.setInitializer("k", Self.random([4, 1, 3], seed: 97))
        g.nodes = [Node(opType: "Sum", inputs: ["x", "k"], outputs: ["y"])]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var broadcast = Model(graph: g)
        broadcast.opsetImports = ["": 13]
        XCTAssertEqual(opTypes(try optimized(broadcast)), ["Add"])
        try assertSameOutputs(broadcast, ["x": Self.random([2, 4, 3, 3], seed: 98)], tolerance: 0, "sum broadcast")
    }
}

extension GraphOptimizationTests {
    /// Identity and inference Dropout (no training_mode, or a constant false one) pass their input
    /// through; a Dropout in training mode or with its mask read, and an Identity naming a graph
    /// output, stay. The outputs are the ops' own (exactly).
    func testIdentityAndInferenceDropoutGo() throws {
        let model = elementwiseModel([("x", [3, 40])], ["ratio": Tensor(scalar: Float(0.3)), "no": Tensor(scalar: false),
                                                        "yes": Tensor(scalar: true)], [
            Node(opType: "Identity", inputs: ["x"], outputs: ["i"]),
            Node(opType: "Relu", inputs: ["i"], outputs: ["r"]),
            Node(opType: "Dropout", inputs: ["r", "ratio"], outputs: ["d1"]),
            Node(opType: "Dropout", inputs: ["d1", "ratio", "no"], outputs: ["d2"]),
            Node(opType: "Exp", inputs: ["d2"], outputs: ["e"]),
            Node(opType: "Dropout", inputs: ["e", "ratio", "yes"], outputs: ["t"]),
            Node(opType: "Dropout", inputs: ["e"], outputs: ["m", "mask"]),
            Node(opType: "Identity", inputs: ["e"], outputs: ["y"]),
        ], outputs: ["t", "m", "mask", "y"])
        var m = model
        try IdentityElimination().run(&m)
        XCTAssertEqual(opTypes(m), ["Relu", "Exp", "Dropout", "Dropout", "Identity"])
        XCTAssertEqual(m.graph.nodes[0].inputs, ["x"])
        XCTAssertEqual(m.graph.nodes[1].inputs, ["r"])
        try assertSameOutputs(model, ["x": Self.random([3, 40], seed: 99)], fetches: ["m", "mask", "y"], tolerance: 0, "identities")
        try assertSameOutputs(model, ["x": Self.random([3, 40], seed: 99)], fetches: ["d1", "y"], tolerance: 0, "a removed value fetched")
    }

    /// A training graph's Dropout of constant ratio 0 in training mode and the DropoutGrad of ratio
    /// 0 that reads its mask go: y = x and dx = dy exactly (what both kernels return). A Dropout of
    /// ratio 0.3 stays with its DropoutGrad, and so does a ratio-0 Dropout whose mask a graph
    /// output names or a DropoutGrad of another ratio reads.
    func testRatioZeroDropoutAndItsGradientGo() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(3), .value(40)])),
                    ValueInfo(name: "dy", type: .tensor(.float32, shape: [.value(3), .value(40)]))]
        for (name, t) in [("zero", Tensor(scalar: Float(0))), ("some", Tensor(scalar: Float(0.3))), ("yes", Tensor(scalar: true))] { g.setInitializer(name, t) }
        g.nodes = [
            Node(opType: "Dropout", inputs: ["x", "zero", "yes"], outputs: ["y", "mask"]),
            Node(opType: "DropoutGrad", domain: "com.microsoft", inputs: ["dy", "mask", "zero", "yes"], outputs: ["dx"]),
            Node(opType: "Exp", inputs: ["y"], outputs: ["e"]),
            Node(opType: "Exp", inputs: ["dx"], outputs: ["de"]),
            Node(opType: "Dropout", inputs: ["x", "some", "yes"], outputs: ["y2", "mask2"]),
            Node(opType: "DropoutGrad", domain: "com.microsoft", inputs: ["dy", "mask2", "some", "yes"], outputs: ["dx2"]),
            Node(opType: "Dropout", inputs: ["x", "zero", "yes"], outputs: ["y3", "mask3"]),
            Node(opType: "DropoutGrad", domain: "com.microsoft", inputs: ["dy", "mask3", "some", "yes"], outputs: ["dx3"]),
            Node(opType: "Dropout", inputs: ["x", "zero", "yes"], outputs: ["y4", "mask4"]),
        ]
        g.outputs = ["e", "de", "y2", "dx2", "y3", "dx3", "y4", "mask4"].map { ValueInfo(name: $0, type: nil) }
        var model = Model(graph: g)
        model.opsetImports = ["": 17, "com.microsoft": 1]
        var m = model
        try IdentityElimination().run(&m)
        XCTAssertEqual(opTypes(m), ["Exp", "Exp", "Dropout", "DropoutGrad", "Dropout", "DropoutGrad", "Dropout"])
        XCTAssertEqual(m.graph.nodes[0].inputs, ["x"])
        XCTAssertEqual(m.graph.nodes[1].inputs, ["dy"])
        let x = Self.random([3, 40], seed: 101), dy = Self.random([3, 40], seed: 102)
        // Optimised and plain graphs agree exactly; a ratio-0 mask keeps every element.
        try assertSameOutputs(model, ["x": x, "dy": dy], fetches: ["e", "de", "y3", "dx3", "y4", "mask4"], tolerance: 0, "ratio 0")
        let out = try InferenceSession(model: model).run(tensors: ["x": x, "dy": dy], fetches: ["y3", "mask4"])
        XCTAssertEqual(try out["y3"]!.doubles(), try x.doubles())
        XCTAssertEqual(out["mask4"]?.scalars(as: Bool.self), Array(repeating: true, count: 120))
    }
}
