import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// Helpers the graph-pass tests share (GraphOptimizationTests, ClipFusionTests, the fusion tests).
extension XCTestCase {
    /// Runs `body` with `ONNX_TRAIN_DISABLE_PASSES` set to `names` ("" switches none off), and
    /// unset again afterwards whatever `body` does: sessions read the switch when they are made.
    func withPassesDisabled<R>(_ names: String, _ body: () throws -> R) rethrows -> R {
        setenv("ONNX_TRAIN_DISABLE_PASSES", names, 1)
        defer { unsetenv("ONNX_TRAIN_DISABLE_PASSES") }
        return try body()
    }

    /// The model after the session's optimising pipeline.
    func optimized(_ model: Model) throws -> Model {
        var m = model
        try PassPipeline.optimizing().run(&m)
        return m
    }

    func opTypes(_ model: Model) -> [String] { model.graph.nodes.map(\.opType) }
}

/// The optimisation passes a session runs before it compiles a graph: each rewrite fires where it
/// should (the optimised graph is inspected), not where it must not (trainable weights, values
/// read elsewhere), and leaves the outputs within float rounding of the graph run as written.
final class GraphOptimizationTests: XCTestCase {
    // MARK: - Helpers

    /// Runs `model` with and without the optimisations and returns the largest difference of any
    /// output relative to max(1, |reference|); fails if the outputs' shapes or types differ.
    @discardableResult
    func assertSameOutputs(_ model: Model, _ feeds: [String: Tensor], fetches: [String]? = nil, tolerance: Double,
                           _ label: String, file: StaticString = #filePath, line: UInt = #line) throws -> Double {
        var plainOptions = SessionOptions()
        plainOptions.optimize = false
        let plain = try InferenceSession(model: model, options: plainOptions).run(tensors: feeds, fetches: fetches)
        let fast = try InferenceSession(model: model).run(tensors: feeds, fetches: fetches)
        XCTAssertEqual(Set(plain.keys), Set(fast.keys), label, file: file, line: line)
        var worst = 0.0
        for (name, reference) in plain {
            guard let actual = fast[name] else { continue }
            XCTAssertEqual(actual.shape, reference.shape, "\(label)/\(name)", file: file, line: line)
            XCTAssertEqual(actual.dtype, reference.dtype, "\(label)/\(name)", file: file, line: line)
            guard actual.shape == reference.shape, reference.dtype.isFloatingPoint else {
                XCTAssertEqual(try actual.doubles(), try reference.doubles(), "\(label)/\(name)", file: file, line: line)
                continue
            }
            for (a, r) in zip(try actual.doubles(), try reference.doubles()) {
                worst = max(worst, abs(a - r) / max(1, abs(r)))
            }
        }
        XCTAssertLessThanOrEqual(worst, tolerance, "\(label): largest relative difference", file: file, line: line)
        return worst
    }

    static func random(_ shape: [Int], seed: UInt64, scale: Double = 1) -> Tensor {
        var g = RandomGenerator(seed: seed)
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, scalars: (0..<n).map { _ in Float((g.nextDouble() * 2 - 1) * scale) })
    }

    /// x [2, 3, 8, 8] -> Conv (4 filters 3x3, pads 1) -> BatchNormalization -> Add z -> `activation`.
    func convModel(bias: Bool = true, add: Bool = true, activation: Node? = nil, weightsAreInputs: Bool = false) -> Model {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.symbol("N"), .value(3), .value(8), .value(8)]))]
        if add { g.inputs.append(ValueInfo(name: "z", type: .tensor(.float32, shape: [.symbol("N"), .value(4), .value(8), .value(8)]))) }
        g.setInitializer("W", Self.random([4, 3, 3, 3], seed: 1, scale: 0.5))
        if bias { g.setInitializer("B", Self.random([4], seed: 2)) }
        g.setInitializer("scale", Self.random([4], seed: 3))
        g.setInitializer("beta", Self.random([4], seed: 4))
        g.setInitializer("mean", Self.random([4], seed: 5, scale: 0.3))
        g.setInitializer("var", Tensor(shape: [4], scalars: [Float(0.5), 1.5, 0.01, 2]))
        if weightsAreInputs { g.inputs.append(ValueInfo(name: "W", type: .tensor(.float32, shape: [4, 3, 3, 3].map { .value($0) }))) }
        g.nodes = [
            Node(opType: "Conv", name: "conv", inputs: ["x", "W"] + (bias ? ["B"] : []), outputs: ["c"],
                 attributes: ["pads": .ints([1, 1, 1, 1]), "kernel_shape": .ints([3, 3])]),
            Node(opType: "BatchNormalization", name: "bn", inputs: ["c", "scale", "beta", "mean", "var"], outputs: ["n"],
                 attributes: ["epsilon": .float(1e-3)]),
        ]
        var last = "n"
        if add {
            g.nodes.append(Node(opType: "Add", name: "add", inputs: ["z", last], outputs: ["s"]))
            last = "s"
        }
        if var act = activation {
            act.inputs[0] = last
            act.outputs = ["y"]
            g.nodes.append(act)
        } else {
            g.nodes.append(Node(opType: "Identity", name: "out", inputs: [last], outputs: ["y"]))
        }
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    func convFeeds(batch: Int = 2, add: Bool = true) -> [String: Tensor] {
        var feeds = ["x": Self.random([batch, 3, 8, 8], seed: 10)]
        if add { feeds["z"] = Self.random([batch, 4, 8, 8], seed: 11) }
        return feeds
    }

    // MARK: - Conv fusion

    func testConvBatchNormAddReluBecomesOneFusedConv() throws {
        let model = convModel(activation: Node(opType: "Relu", inputs: [""], outputs: [""]))
        let m = try optimized(model)
        XCTAssertEqual(opTypes(m), ["FusedConv"])
        let fused = try XCTUnwrap(m.graph.nodes.first)
        XCTAssertEqual(fused.domain, "com.microsoft")
        XCTAssertEqual(fused.string("activation"), "Relu")
        XCTAssertEqual(fused.inputs.count, 4, "Z is the Add's other operand")
        XCTAssertEqual(fused.inputs[3], "z")
        XCTAssertNil(m.graph.initializers["scale"], "the folded BatchNormalization's parameters are dropped")
        let worst = try assertSameOutputs(model, convFeeds(), tolerance: 1e-5, "conv+bn+add+relu")
        print("conv+bn+add+relu: largest relative difference \(worst)")
    }

    func testConvActivationsFuseAsTheStandaloneOpsCompute() throws {
        let clipMin = Tensor(scalar: Float(0)), clipMax = Tensor(scalar: Float(0.5))
        let cases: [(String, Node, [String: Tensor])] = [
            ("LeakyRelu", Node(opType: "LeakyRelu", inputs: [""], outputs: [""], attributes: ["alpha": .float(0.2)]), [:]),
            ("Sigmoid", Node(opType: "Sigmoid", inputs: [""], outputs: [""]), [:]),
            ("Tanh", Node(opType: "Tanh", inputs: [""], outputs: [""]), [:]),
            ("HardSigmoid", Node(opType: "HardSigmoid", inputs: [""], outputs: [""], attributes: ["alpha": .float(0.3)]), [:]),
            ("Clip", Node(opType: "Clip", inputs: ["", "lo", "hi"], outputs: [""]), ["lo": clipMin, "hi": clipMax]),
        ]
        for (name, act, constants) in cases {
            for add in [false, true] {
                var model = convModel(bias: add, add: add, activation: act)
                for (k, t) in constants { model.graph.setInitializer(k, t) }
                let m = try optimized(model)
                XCTAssertEqual(opTypes(m), ["FusedConv"], "\(name) add=\(add)")
                XCTAssertEqual(m.graph.nodes.first?.string("activation"), name)
                try assertSameOutputs(model, convFeeds(add: add), tolerance: 1e-5, "\(name) add=\(add)")
            }
        }
    }

    func testConvBatchNormAloneFoldsIntoAConv() throws {
        let model = convModel(bias: false, add: false)
        let m = try optimized(model)
        XCTAssertEqual(opTypes(m), ["Conv", "Identity"])
        XCTAssertEqual(m.graph.nodes[0].inputs.count, 3, "the fold gives the Conv a bias")
        try assertSameOutputs(model, convFeeds(batch: 1, add: false), tolerance: 1e-5, "conv+bn")
    }

    /// Weights that are graph inputs (a training graph's parameters, or an overridable
    /// initializer) are not folded: the BatchNormalization stays.
    func testBatchNormIsNotFoldedIntoWeightsThatAreInputs() throws {
        let model = convModel(add: false, weightsAreInputs: true)
        let m = try optimized(model)
        XCTAssertEqual(opTypes(m), ["Conv", "ChannelAffine", "Identity"], "the BatchNormalization stays a per-channel map")
        var feeds = convFeeds(add: false)
        feeds["W"] = Self.random([4, 3, 3, 3], seed: 20)
        try assertSameOutputs(model, feeds, tolerance: 0, "conv+bn, W fed")
    }

    /// An IR 3 model lists every initializer among its inputs; there they are constants (onnxruntime
    /// refuses a feed for one): the BatchNormalization folds as in a newer model, and a feed of its
    /// folded scale is one clear error (it used to crash on the slot the fold removed).
    func testInitializersOfAnIR3ModelAreConstantsNotFeeds() throws {
        var model = convModel(add: false)
        model.irVersion = 3
        for name in ["W", "B", "scale", "beta", "mean", "var"] { model.graph.inputs.append(ValueInfo(name: name, type: nil)) }
        let session = try InferenceSession(model: model)
        XCTAssertEqual(session.inputs.map(\.name), ["x"])
        let y = try XCTUnwrap(try session.run(tensors: convFeeds(add: false))["y"])
        let folded = try XCTUnwrap(try InferenceSession(model: convModel(add: false)).run(tensors: convFeeds(add: false))["y"])
        XCTAssertEqual(y.shape, folded.shape)
        XCTAssertEqual(y.scalars(as: Float.self), folded.scalars(as: Float.self), "the same folded convolution")
        var feeds = convFeeds(add: false)
        feeds["scale"] = Self.random([4], seed: 30)
        XCTAssertThrowsError(try session.run(tensors: feeds)) { error in
            XCTAssertTrue("\(error)".contains("'scale' is an initializer of an IR version 3 model"), "\(error)")
        }
    }

    /// A value another node (or a graph output) reads stays computed: no fusion across it.
    func testValuesReadElsewhereAreNotFusedAway() throws {
        var model = convModel(add: false, activation: Node(opType: "Relu", inputs: [""], outputs: [""]))
        model.graph.outputs.append(ValueInfo(name: "n", type: nil))
        let m = try optimized(model)
        XCTAssertEqual(opTypes(m), ["Conv", "Relu"], "BatchNormalization folds; the Relu stays, as 'n' is an output")
        try assertSameOutputs(model, convFeeds(add: false), tolerance: 1e-5, "conv+bn, n fetched")
    }

    /// An intermediate value a fusion removed can still be fetched (the session compiles the
    /// graph as written for such a fetch).
    func testFetchingAFusedAwayValue() throws {
        let model = convModel(activation: Node(opType: "Relu", inputs: [""], outputs: [""]))
        try assertSameOutputs(model, convFeeds(), fetches: ["c", "n", "y"], tolerance: 1e-5, "fetch c, n, y")
    }

    /// Graphs no order can run (a node reading its own output, a cycle of elementwise nodes, as a
    /// fuzzed model had) are left to the executor, which names the nodes: the fusion walks along
    /// sole consumers used to follow such a loop forever.
    func testUnorderableGraphsAreNotOptimizedButReported() throws {
        func model(_ nodes: [Node]) -> Model {
            var g = Graph()
            g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(4)]))]
            g.nodes = nodes
            g.outputs = [ValueInfo(name: "y", type: nil)]
            var m = Model(graph: g)
            m.opsetImports = ["": 17]
            return m
        }
        let selfLoop = model([Node(opType: "Relu", name: "r", inputs: ["x"], outputs: ["a"]),
                              Node(opType: "Add", name: "loop", inputs: ["a", "b"], outputs: ["b"]),
                              Node(opType: "Neg", name: "n", inputs: ["a"], outputs: ["y"])])
        let cycle = model([Node(opType: "Relu", name: "r", inputs: ["x"], outputs: ["a"]),
                           Node(opType: "Add", name: "p", inputs: ["a", "c"], outputs: ["b"]),
                           Node(opType: "Abs", name: "q", inputs: ["b"], outputs: ["c"]),
                           Node(opType: "Neg", name: "n", inputs: ["a"], outputs: ["y"])])
        for (label, m, expected) in [("self loop", selfLoop, "reads its own output 'b'"), ("cycle", cycle, "has a cycle")] {
            XCTAssertEqual(opTypes(try optimized(m)), opTypes(m), label)
            XCTAssertThrowsError(try InferenceSession(model: m), label) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains(expected), "\(label): \(message)")
            }
        }
    }

    func testFloat64ConvFuses() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float64, shape: [.value(1), .value(2), .value(5), .value(5)]))]
        g.setInitializer("W", try Self.random([3, 2, 3, 3], seed: 30).cast(to: .float64))
        for (k, name) in ["s", "b", "m"].enumerated() { g.setInitializer(name, try Self.random([3], seed: UInt64(31 + k)).cast(to: .float64)) }
        g.setInitializer("v", Tensor(shape: [3], scalars: [0.7, 1.2, 3.0]))
        g.nodes = [Node(opType: "Conv", inputs: ["x", "W"], outputs: ["c"], attributes: ["strides": .ints([2, 2])]),
                   Node(opType: "BatchNormalization", inputs: ["c", "s", "b", "m", "v"], outputs: ["n"]),
                   Node(opType: "Tanh", inputs: ["n"], outputs: ["y"])]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var model = Model(graph: g)
        model.opsetImports = ["": 15]
        XCTAssertEqual(opTypes(try optimized(model)), ["FusedConv"])
        try assertSameOutputs(model, ["x": try Self.random([1, 2, 5, 5], seed: 40).cast(to: .float64)], tolerance: 1e-12, "float64")
    }

    // MARK: - MatMul + Add, Transposes

    /// a -> (Transpose) -> MatMul with b (an initializer, or with `bIsInput` a graph input) -> Add bias.
    func matmulModel(aShape: [Int], bShape: [Int], biasShape: [Int], transposeA: [Int]? = nil, transposeB: [Int]? = nil,
                     bIsInput: Bool = false) -> Model {
        var g = Graph()
        let aStored = transposeA.map { p in p.map { aShape[$0] } } ?? aShape
        g.inputs = [ValueInfo(name: "a", type: .tensor(.float32, shape: aStored.map { .value($0) }))]
        let bStored = transposeB.map { p in p.map { bShape[$0] } } ?? bShape
        if bIsInput {
            g.inputs.append(ValueInfo(name: "b", type: .tensor(.float32, shape: bStored.map { .value($0) })))
        } else {
            g.setInitializer("b", Self.random(bStored, seed: 50))
        }
        g.setInitializer("bias", Self.random(biasShape, seed: 51))
        var a = "a", b = "b"
        if let p = transposeA { g.nodes.append(Node(opType: "Transpose", inputs: ["a"], outputs: ["at"], attributes: ["perm": .ints(p)])); a = "at" }
        if let p = transposeB { g.nodes.append(Node(opType: "Transpose", inputs: ["b"], outputs: ["bt"], attributes: ["perm": .ints(p)])); b = "bt" }
        g.nodes += [Node(opType: "MatMul", inputs: [a, b], outputs: ["p"]), Node(opType: "Add", inputs: ["p", "bias"], outputs: ["y"])]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    func testMatMulAddBecomesGemmOnlyIn2D() throws {
        let twoD = matmulModel(aShape: [5, 4], bShape: [4, 3], biasShape: [3])
        XCTAssertEqual(opTypes(try optimized(twoD)), ["Gemm"])
        try assertSameOutputs(twoD, ["a": Self.random([5, 4], seed: 52)], tolerance: 1e-6, "2-D")
        let rowBias = matmulModel(aShape: [5, 4], bShape: [4, 3], biasShape: [1, 3])
        XCTAssertEqual(opTypes(try optimized(rowBias)), ["Gemm"])
        try assertSameOutputs(rowBias, ["a": Self.random([5, 4], seed: 53)], tolerance: 1e-6, "2-D, [1, N] bias")
        // A bias that broadcasts the product up ([2, 5, 3]) or a 3-D product keeps MatMul + Add.
        XCTAssertEqual(opTypes(try optimized(matmulModel(aShape: [5, 4], bShape: [4, 3], biasShape: [2, 5, 3]))), ["MatMul", "Add"])
        XCTAssertEqual(opTypes(try optimized(matmulModel(aShape: [2, 5, 4], bShape: [4, 3], biasShape: [5, 3]))), ["MatMul", "Add"],
                       "a 3-D product's bias of more than one row")
    }

    /// Rows [..., M, K] times a weight [K, N] plus a bias [N] (a transformer's Linear layer) become
    /// one MatMulBias, within the rounding bound of the float64 sum on every element, on shapes that
    /// run on one thread, split by rows and split by columns.
    func testBatchedMatMulAddBecomesMatMulBias() throws {
        for (aShape, n) in [([2, 5, 4], 3), ([4, 128, 64], 300), ([2, 8, 64], 2048), ([3, 2, 7, 9], 1)] {
            let k = aShape[aShape.count - 1]
            let model = matmulModel(aShape: aShape, bShape: [k, n], biasShape: [n])
            let g = try optimized(model)
            XCTAssertEqual(opTypes(g), ["MatMulBias"], "\(aShape) x [\(k), \(n)]")
            let a = Self.random(aShape, seed: 58)
            let y = try InferenceSession(model: model).run(tensors: ["a": a])["y"]
            XCTAssertEqual(y?.shape, Array(aShape.dropLast()) + [n])
            let av = try a.doubles(), bv = try XCTUnwrap(model.graph.initializers["b"]).doubles()
            let bias = try XCTUnwrap(model.graph.initializers["bias"]).doubles()
            let yv = try XCTUnwrap(y).doubles()
            // |fl(Σ) − Σ| <= (K + 1)·u·(Σ|a·b| + |bias|), u = 2^-24, for any order of the float32 sums.
            var worst = 0.0
            for r in 0..<(av.count / k) {
                for j in 0..<n {
                    var exact = bias[j], magnitude = abs(bias[j])
                    for p in 0..<k {
                        exact += av[r * k + p] * bv[p * n + j]
                        magnitude += abs(av[r * k + p] * bv[p * n + j])
                    }
                    worst = max(worst, abs(yv[r * n + j] - exact) / ((Double(k) + 1) * 0x1p-24 * magnitude))
                }
            }
            XCTAssertLessThanOrEqual(worst, 1, "\(aShape) x [\(k), \(n)]: error over the rounding bound")
            try assertSameOutputs(model, ["a": a], tolerance: 1e-6, "\(aShape) x [\(k), \(n)] against MatMul then Add")
        }
        // A weight stored [N, K] (PyTorch's Linear) and transposed: the Transpose becomes transB.
        let stored = matmulModel(aShape: [2, 5, 4], bShape: [4, 3], biasShape: [3], transposeB: [1, 0], bIsInput: true)
        let g = try optimized(stored)
        XCTAssertEqual(opTypes(g), ["MatMulBias"])
        XCTAssertEqual(g.graph.nodes[0].int("transB"), 1)
        XCTAssertEqual(g.graph.nodes[0].inputs[1], "b")
        try assertSameOutputs(stored, ["a": Self.random([2, 5, 4], seed: 59), "b": Self.random([3, 4], seed: 60)], tolerance: 1e-6,
                              "transposed weight")
    }

    /// Rows expanded to a shape computed at run time (BERT's embeddings: token type ids expanded
    /// to Shape(input)) keep a known rank, so the Linear layer after them still becomes one
    /// MatMulBias, equal to MatMul then Add within float rounding.
    func testMatMulBiasAfterExpandToAComputedShape() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "a", type: .tensor(.float32, shape: [.symbol("N"), .value(5), .value(4)]))]
        g.setInitializer("b", Self.random([4, 3], seed: 61))
        g.setInitializer("bias", Self.random([3], seed: 62))
        g.nodes = [
            Node(opType: "Shape", inputs: ["a"], outputs: ["s"]),
            Node(opType: "Expand", inputs: ["a", "s"], outputs: ["e"]),
            Node(opType: "MatMul", inputs: ["e", "b"], outputs: ["p"]),
            Node(opType: "Add", inputs: ["bias", "p"], outputs: ["y"]),
        ]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var model = Model(graph: g)
        model.opsetImports = ["": 17]
        XCTAssertEqual(opTypes(try optimized(model)), ["Shape", "Expand", "MatMulBias"])
        try assertSameOutputs(model, ["a": Self.random([2, 5, 4], seed: 63)], tolerance: 1e-6, "expanded rows")
    }

    func testTransposesBecomeMatMulFlags() throws {
        // B fed as [3, 4] and transposed: Gemm with transB. (A constant B's Transpose folds instead.)
        let gemm = matmulModel(aShape: [5, 4], bShape: [4, 3], biasShape: [3], transposeB: [1, 0], bIsInput: true)
        let g = try optimized(gemm)
        XCTAssertEqual(opTypes(g), ["Gemm"])
        XCTAssertEqual(g.graph.nodes[0].int("transB"), 1)
        try assertSameOutputs(gemm, ["a": Self.random([5, 4], seed: 54), "b": Self.random([3, 4], seed: 57)], tolerance: 1e-6, "gemm transB")
        XCTAssertEqual(opTypes(try optimized(matmulModel(aShape: [5, 4], bShape: [4, 3], biasShape: [3], transposeB: [1, 0]))), ["Gemm"],
                       "a constant B's Transpose is folded")
        // Batched A transposed in its last two axes: FusedMatMul with transA.
        let batched = matmulModel(aShape: [2, 3, 5, 4], bShape: [2, 3, 4, 6], biasShape: [6], transposeA: [0, 1, 3, 2])
        let b = try optimized(batched)
        XCTAssertEqual(opTypes(b), ["FusedMatMul", "Add"])
        XCTAssertEqual(b.graph.nodes[0].int("transA"), 1)
        try assertSameOutputs(batched, ["a": Self.random([2, 3, 4, 5], seed: 55)], tolerance: 1e-6, "batched transA")
        // A permutation that moves other axes is read in place by a StridedMatMul (StridedMatMulFusion).
        let other = matmulModel(aShape: [2, 3, 5, 4], bShape: [2, 3, 4, 6], biasShape: [6], transposeA: [1, 0, 2, 3])
        XCTAssertEqual(opTypes(try optimized(other)), ["StridedMatMul", "Add"])
        try assertSameOutputs(other, ["a": Self.random([3, 2, 5, 4], seed: 58)], tolerance: 1e-6, "batch axes swapped")
        // A weight read transposed by two products (a Linear layer's forward and backward) goes
        // once both read it through their flags.
        var shared = matmulModel(aShape: [5, 4], bShape: [4, 3], biasShape: [3], transposeB: [1, 0], bIsInput: true)
        shared.graph.inputs.append(ValueInfo(name: "d", type: .tensor(.float32, shape: [.value(5), .value(3)])))
        shared.graph.nodes.append(Node(opType: "FusedMatMul", domain: "com.microsoft", inputs: ["d", "bt"], outputs: ["dx"],
                                       attributes: ["transB": .int(1), "alpha": .float(1)]))
        shared.graph.outputs.append(ValueInfo(name: "dx", type: nil))
        shared.opsetImports["com.microsoft"] = 1
        XCTAssertEqual(opTypes(try optimized(shared)), ["Gemm", "FusedMatMul"])
        try assertSameOutputs(shared, ["a": Self.random([5, 4], seed: 63), "b": Self.random([3, 4], seed: 64), "d": Self.random([5, 3], seed: 65)],
                              tolerance: 1e-6, "weight read transposed twice")
    }

    /// A Transpose that another node also reads stays; the product still reads its source.
    func testSharedTransposeStays() throws {
        var model = matmulModel(aShape: [3, 5, 4], bShape: [3, 4, 2], biasShape: [2], transposeA: [0, 2, 1])
        model.graph.nodes.append(Node(opType: "Relu", inputs: ["at"], outputs: ["r"]))
        model.graph.outputs.append(ValueInfo(name: "r", type: nil))
        XCTAssertEqual(opTypes(try optimized(model)), ["Transpose", "FusedMatMul", "Add", "Relu"])
        try assertSameOutputs(model, ["a": Self.random([3, 4, 5], seed: 56)], tolerance: 1e-6, "shared transpose")
        // With a 2-D weight and a bias row the product and the bias become one MatMulBias, which
        // reads the Transpose's result (made anyway for the Relu).
        var linear = matmulModel(aShape: [3, 5, 4], bShape: [4, 2], biasShape: [2], transposeA: [0, 2, 1])
        linear.graph.nodes.append(Node(opType: "Relu", inputs: ["at"], outputs: ["r"]))
        linear.graph.outputs.append(ValueInfo(name: "r", type: nil))
        XCTAssertEqual(opTypes(try optimized(linear)), ["Transpose", "MatMulBias", "Relu"])
        try assertSameOutputs(linear, ["a": Self.random([3, 4, 5], seed: 56)], tolerance: 1e-6, "shared transpose, bias row")
    }

    /// A 2-D product whose result only a Transpose reads computes the transposed result directly
    /// with its operands swapped ((op(A)·op(B))ᵀ = op(B)ᵀ·op(A)ᵀ): a Linear weight's gradient made
    /// [in, out] and transposed back (Gemm transA of the rows), MatMul and FusedMatMul. Checked
    /// against float64 sums: the error stays within the rounding bound of a K-term float32 dot
    /// product (K·2⁻²⁴·Σ|aᵢbᵢ|).
    func testTransposedProductSwapsOperands() throws {
        let (m, n, k) = (7, 5, 9)
        // Each case: the product node, its operands' shapes, and op(A)[i, p], op(B)[p, j] read from the operands.
        let cases: [(String, Node, [Int], [Int], Bool, Bool)] = [
            ("Gemm transA", Node(opType: "Gemm", inputs: ["a", "b"], outputs: ["p"], attributes: ["transA": .int(1), "beta": .float(0), "alpha": .float(0.5)]),
             [k, m], [k, n], true, false),
            ("MatMul", Node(opType: "MatMul", inputs: ["a", "b"], outputs: ["p"]), [m, k], [k, n], false, false),
            ("FusedMatMul transB", Node(opType: "FusedMatMul", domain: "com.microsoft", inputs: ["a", "b"], outputs: ["p"],
                                        attributes: ["transB": .int(1), "alpha": .float(2)]), [m, k], [n, k], false, true),
        ]
        for (label, product, aShape, bShape, tA, tB) in cases {
            var g = Graph()
            g.inputs = [ValueInfo(name: "a", type: .tensor(.float32, shape: aShape.map { .value($0) })),
                        ValueInfo(name: "b", type: .tensor(.float32, shape: bShape.map { .value($0) }))]
            g.nodes = [product, Node(opType: "Transpose", inputs: ["p"], outputs: ["y"], attributes: ["perm": .ints([1, 0])])]
            g.outputs = [ValueInfo(name: "y", type: nil)]
            var model = Model(graph: g)
            model.opsetImports = ["": 17, "com.microsoft": 1]
            let o = try optimized(model)
            XCTAssertEqual(opTypes(o), [product.opType == "Gemm" ? "Gemm" : "FusedMatMul"], label)
            XCTAssertEqual(o.graph.nodes[0].inputs, ["b", "a"], label)
            XCTAssertEqual(o.graph.nodes[0].int("transA"), tB ? 0 : 1, label)
            XCTAssertEqual(o.graph.nodes[0].int("transB"), tA ? 0 : 1, label)
            let a = Self.random(aShape, seed: 61), b = Self.random(bShape, seed: 62)
            let y = try InferenceSession(model: model).run(tensors: ["a": a, "b": b])["y"]!
            XCTAssertEqual(y.shape, [n, m], label)
            let av = try a.doubles(), bv = try b.doubles(), yv = try y.doubles()
            let alpha = Double(product.float("alpha") ?? 1)
            for j in 0..<n {
                for i in 0..<m {
                    var sum = 0.0, magnitude = 0.0
                    for p in 0..<k {
                        let x = (tA ? av[p * m + i] : av[i * k + p]) * (tB ? bv[j * k + p] : bv[p * n + j])
                        sum += x
                        magnitude += abs(x)
                    }
                    XCTAssertEqual(yv[j * m + i], alpha * sum, accuracy: Double(k) * 0x1p-24 * abs(alpha) * magnitude + 1e-30, "\(label) [\(j), \(i)]")
                }
            }
        }
        // Read by another node too, the product stays as it is.
        var g = Graph()
        g.inputs = [ValueInfo(name: "a", type: .tensor(.float32, shape: [.value(m), .value(k)])),
                    ValueInfo(name: "b", type: .tensor(.float32, shape: [.value(k), .value(n)]))]
        g.nodes = [Node(opType: "MatMul", inputs: ["a", "b"], outputs: ["p"]),
                   Node(opType: "Transpose", inputs: ["p"], outputs: ["y"], attributes: ["perm": .ints([1, 0])]),
                   Node(opType: "Relu", inputs: ["p"], outputs: ["r"])]
        g.outputs = [ValueInfo(name: "y", type: nil), ValueInfo(name: "r", type: nil)]
        var shared = Model(graph: g)
        shared.opsetImports = ["": 17]
        XCTAssertEqual(opTypes(try optimized(shared)), ["MatMul", "Transpose", "Relu"])
    }

    // MARK: - Elementwise chains

    func elementwiseModel(_ inputs: [(String, [Int])], _ constants: [String: Tensor], _ nodes: [Node], outputs: [String]) -> Model {
        var g = Graph()
        g.inputs = inputs.map { ValueInfo(name: $0.0, type: .tensor(.float32, shape: $0.1.map { .value($0) })) }
        for (k, t) in constants.sorted(by: { $0.key < $1.key }) { g.setInitializer(k, t) }
        g.nodes = nodes
        g.outputs = outputs.map { ValueInfo(name: $0, type: nil) }
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    /// Gelu written out (x · 0.5 · (1 + erf(x / √2))) and x · sigmoid(x) become one node each and
    /// compute exactly what the ops compute one by one (the same functions per element).
    func testElementwiseChainsFuseExactly() throws {
        let gelu = elementwiseModel([("x", [4, 8, 33])], ["r2": Tensor(scalar: Float(1.4142135)), "one": Tensor(scalar: Float(1)), "half": Tensor(scalar: Float(0.5))], [
            Node(opType: "Div", inputs: ["x", "r2"], outputs: ["d"]),
            Node(opType: "Erf", inputs: ["d"], outputs: ["e"]),
            Node(opType: "Add", inputs: ["e", "one"], outputs: ["a"]),
            Node(opType: "Mul", inputs: ["x", "a"], outputs: ["m"]),
            Node(opType: "Mul", inputs: ["m", "half"], outputs: ["y"]),
        ], outputs: ["y"])
        let g = try optimized(gelu)
        XCTAssertEqual(opTypes(g), ["ElementwiseChain"])
        XCTAssertEqual(g.graph.nodes[0].domain, internalDomain)
        try assertSameOutputs(gelu, ["x": Self.random([4, 8, 33], seed: 60, scale: 3)], tolerance: 0, "gelu")
        let swish = elementwiseModel([("x", [1000])], [:], [
            Node(opType: "Sigmoid", inputs: ["x"], outputs: ["s"]),
            Node(opType: "Mul", inputs: ["x", "s"], outputs: ["y"]),
        ], outputs: ["y"])
        XCTAssertEqual(opTypes(try optimized(swish)), ["ElementwiseChain"])
        try assertSameOutputs(swish, ["x": Self.random([1000], seed: 61, scale: 5)], tolerance: 0, "swish")
    }

    /// The chain as the right operand of Sub and Div, a bias row broadcast over leading axes, and
    /// operands that broadcast both ways (the chain's start among them) all give the ops' own values.
    func testElementwiseChainOperandsAndBroadcasts() throws {
        let model = elementwiseModel([("x", [6, 70]), ("b", [70]), ("u", [6, 1]), ("v", [1, 70])], ["k": Tensor(scalar: Float(3))], [
            Node(opType: "Add", inputs: ["x", "b"], outputs: ["p"]),
            Node(opType: "Sub", inputs: ["k", "p"], outputs: ["q"]),
            Node(opType: "Abs", inputs: ["q"], outputs: ["r"]),
            Node(opType: "Div", inputs: ["k", "r"], outputs: ["s"]),
            Node(opType: "LeakyRelu", inputs: ["s"], outputs: ["y"], attributes: ["alpha": .float(0.1)]),
            Node(opType: "Add", inputs: ["u", "v"], outputs: ["w"]),
            Node(opType: "Tanh", inputs: ["w"], outputs: ["z"]),
        ], outputs: ["y", "z"])
        XCTAssertEqual(opTypes(try optimized(model)), ["ElementwiseChain", "ElementwiseChain"])
        let feeds = ["x": Self.random([6, 70], seed: 62), "b": Self.random([70], seed: 63), "u": Self.random([6, 1], seed: 64), "v": Self.random([1, 70], seed: 65)]
        try assertSameOutputs(model, feeds, tolerance: 0, "operands")
    }

    /// A [B, 1, T, T] mask under [B, H, T, T] scores (GPT-2's attention) as an operand, and a
    /// chain whose start broadcasts too (a mask minus per-head [H, 1, 1] values), large enough to
    /// be split across threads, stream in the fused loop and give the ops' own values.
    func testElementwiseChainStreamsMiddleAxisBroadcasts() throws {
        let model = elementwiseModel([("s", [4, 3, 64, 64]), ("m", [4, 1, 64, 64]), ("k", [3, 1, 1]), ("c", [])], [:], [
            Node(opType: "Mul", inputs: ["s", "c"], outputs: ["a"]),
            Node(opType: "Add", inputs: ["a", "m"], outputs: ["y"]),
            Node(opType: "Sub", inputs: ["m", "k"], outputs: ["p"]),
            Node(opType: "Exp", inputs: ["p"], outputs: ["q"]),
            Node(opType: "Mul", inputs: ["q", "s"], outputs: ["z"]),
        ], outputs: ["y", "z"])
        XCTAssertEqual(opTypes(try optimized(model)), ["ElementwiseChain", "ElementwiseChain"])
        let feeds = ["s": Self.random([4, 3, 64, 64], seed: 67, scale: 4), "m": Self.random([4, 1, 64, 64], seed: 68), "k": Self.random([3, 1, 1], seed: 69), "c": Tensor(scalar: Float(0.125))]
        try assertSameOutputs(model, feeds, tolerance: 0, "mask")
    }

    /// A last-axis Softmax after a chain (scores scaled and masked) or after a single op joins it
    /// and gives the same values (rows shorter and longer than a block); a Softmax along another
    /// axis stays.
    func testLastAxisSoftmaxJoinsTheChainBeforeIt() throws {
        let model = elementwiseModel([("s", [2, 3, 40, 40]), ("m", [2, 1, 40, 40]), ("v", [5, 300]), ("c", [])], [:], [
            Node(opType: "Mul", inputs: ["s", "c"], outputs: ["a"]),
            Node(opType: "Add", inputs: ["a", "m"], outputs: ["b"]),
            Node(opType: "Softmax", inputs: ["b"], outputs: ["y"]),
            Node(opType: "Div", inputs: ["v", "c"], outputs: ["d"]),
            Node(opType: "Softmax", inputs: ["d"], outputs: ["z"], attributes: ["axis": .int(1)]),
            Node(opType: "Neg", inputs: ["s"], outputs: ["e"]),
            Node(opType: "Softmax", inputs: ["e"], outputs: ["w"], attributes: ["axis": .int(2)]),
        ], outputs: ["y", "z", "w"])
        let m = try optimized(model)
        XCTAssertEqual(opTypes(m), ["ElementwiseChain", "ElementwiseChain", "Neg", "Softmax"])
        XCTAssertEqual(m.graph.nodes[0].outputs, ["y"])
        let feeds = ["s": Self.random([2, 3, 40, 40], seed: 70, scale: 20), "m": Self.random([2, 1, 40, 40], seed: 71, scale: 5),
                     "v": Self.random([5, 300], seed: 72, scale: 3), "c": Tensor(scalar: Float(0.3))]
        try assertSameOutputs(model, feeds, tolerance: 0, "softmax")
    }

    /// A value between two ops that a graph output (or another node) reads splits the chain.
    func testElementwiseChainKeepsValuesReadElsewhere() throws {
        let model = elementwiseModel([("x", [50])], ["two": Tensor(scalar: Float(2))], [
            Node(opType: "Mul", inputs: ["x", "two"], outputs: ["a"]),
            Node(opType: "Exp", inputs: ["a"], outputs: ["b"]),
            Node(opType: "Neg", inputs: ["b"], outputs: ["c"]),
            Node(opType: "Relu", inputs: ["c"], outputs: ["y"]),
            Node(opType: "Sqrt", inputs: ["b"], outputs: ["z"]),
        ], outputs: ["y", "z"])
        let m = try optimized(model)
        XCTAssertEqual(opTypes(m), ["ElementwiseChain", "ElementwiseChain", "Sqrt"], "b has two readers: Mul+Exp | Neg+Relu")
        try assertSameOutputs(model, ["x": Self.random([50], seed: 66)], fetches: ["y", "z", "b"], tolerance: 0, "split chain")
    }

    // MARK: - Pow

    /// Pow by a constant 2 or 3 becomes products (x·x is powf's own square; the cube rounds
    /// twice, measured within 1.2e-7 relative); other exponents, exponents a caller feeds and
    /// half bases stay Pow.
    func testPowBySmallIntegersBecomesProducts() throws {
        let model = elementwiseModel([("x", [5, 40]), ("p", [])], ["two": Tensor(scalar: Float(2)), "three": Tensor(shape: [1], scalars: [Float(3)]),
                                                               "half": Tensor(scalar: Float(2.5))], [
            Node(opType: "Pow", name: "square", inputs: ["x", "two"], outputs: ["s"]),
            Node(opType: "Pow", name: "cube", inputs: ["x", "three"], outputs: ["c"]),
            Node(opType: "Pow", name: "other", inputs: ["x", "half"], outputs: ["o"]),
            Node(opType: "Pow", name: "fed", inputs: ["x", "p"], outputs: ["f"]),
        ], outputs: ["s", "c", "o", "f"])
        var m = model
        try PowerToMul().run(&m)
        XCTAssertEqual(opTypes(m), ["Mul", "Mul", "Mul", "Pow", "Pow"])
        XCTAssertEqual(m.graph.nodes[0].inputs, ["x", "x"])
        XCTAssertEqual(m.graph.nodes[2].inputs, [m.graph.nodes[1].outputs[0], "x"])
        XCTAssertNil(m.graph.initializers["two"], "the exponent no node reads any more goes")
        let feeds = ["x": Self.random([5, 40], seed: 70, scale: 4), "p": Tensor(scalar: Float(3))]
        try assertSameOutputs(model, feeds, fetches: ["s"], tolerance: 0, "square")
        try assertSameOutputs(model, feeds, fetches: ["c", "o", "f"], tolerance: 2e-7, "cube")
        var half = model
        half.graph.inputs[0] = ValueInfo(name: "x", type: .tensor(.float16, shape: [.value(5), .value(40)]))
        try PowerToMul().run(&half)
        XCTAssertEqual(opTypes(half), ["Pow", "Pow", "Pow", "Pow"])
    }

    // MARK: - Fixtures and the switch

    /// The inference fixtures (PyTorch exports: MLP, CNN with BatchNormalization, GPT) give the
    /// same outputs optimised and not, and the passes do fire on them.
    func testFixtureModelsAgreeWithAndWithoutPasses() throws {
        for name in try Fixtures.cases(in: "inference") {
            let testCase = try BackendTestCase(directory: Fixtures.path("inference/\(name)"))
            let set = try XCTUnwrap(testCase.dataSets.first, name)
            var feeds: [String: Tensor] = [:]
            for (info, value) in zip(testCase.model.graph.feedInputs, set.inputs) { feeds[info.name] = value.tensor }
            let worst = try assertSameOutputs(testCase.model, feeds, tolerance: 1e-5, name)
            let before = opTypes(testCase.model), after = opTypes(try optimized(testCase.model))
            print("\(name): \(before.count) -> \(after.count) nodes, largest relative difference \(worst)")
            if name.hasPrefix("cnn") {
                XCTAssertFalse(after.contains("BatchNormalization"), "\(name): \(after)")
                // FusedConv, or NchwcConv where the `nchwc` pass then took the fused convolutions.
                XCTAssertTrue(after.contains("FusedConv") || after.contains("NchwcConv"), "\(name): \(after)")
            }
            if name.hasPrefix("gpt") { XCTAssertLessThan(after.count, before.count, "\(name): \(after)") }
        }
    }

    func testPassesSwitchOffByName() throws {
        let model = convModel(activation: Node(opType: "Relu", inputs: [""], outputs: [""]))
        let expected: [(String, [String])] = [
            ("conv-fusion", ["Conv", "ChannelAffine", "ElementwiseChain"]),
            ("conv-fusion,channel-affine", ["Conv", "BatchNormalization", "ElementwiseChain"]),
            ("conv-fusion, elementwise-fusion,channel-affine", ["Conv", "BatchNormalization", "Add", "Relu"]),
            ("all", opTypes(model)),
            ("", ["FusedConv"]),
        ]
        for (names, ops) in expected {
            XCTAssertEqual(try withPassesDisabled(names) { opTypes(try optimized(model)) }, ops, names)
        }
    }
}
