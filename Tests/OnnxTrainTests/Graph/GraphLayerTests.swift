import XCTest
@testable import OnnxTrain

/// The graph layer: the producer/consumer index, fresh names, static types and shapes, and the
/// passes (inlining, constant folding, dead-node removal).
final class GraphLayerTests: XCTestCase {
    /// x -> Relu -> r; (r, w) -> MatMul -> y; Shape(x) -> s (unused); a Constant feeding Add.
    func sample() -> Graph {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.symbol("batch"), .value(4)]))]
        g.setInitializer("w", Tensor(shape: [4, 3], scalars: [Float](repeating: 0.1, count: 12)))
        g.nodes = [
            Node(opType: "MatMul", name: "mm", inputs: ["r", "w"], outputs: ["m"]),
            Node(opType: "Relu", name: "relu", inputs: ["x"], outputs: ["r"]),
            Node(opType: "Shape", name: "shape", inputs: ["x"], outputs: ["s"]),
            Node(opType: "Constant", name: "c", outputs: ["k"], attributes: ["value": .tensor(Tensor(shape: [3], scalars: [Float(1), 2, 3]))]),
            Node(opType: "Add", name: "add", inputs: ["m", "k"], outputs: ["y"]),
        ]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        return g
    }

    func testIndexOrdersProducersBeforeConsumers() {
        let index = GraphIndex(sample())
        XCTAssertFalse(index.hasCycle)
        XCTAssertEqual(index.order, [1, 2, 3, 0, 4])
        XCTAssertEqual(index.producer["r"]?.node, 1)
        XCTAssertEqual(index.consumers["x"], [1, 2])
        XCTAssertTrue(index.isConstant("w"))
        let (keep, values) = index.ancestors(of: ["y"])
        XCTAssertEqual(keep, [true, true, false, true, true])
        XCTAssertTrue(values.isSuperset(of: ["x", "w", "r", "m", "k"]))
    }

    func testIndexReportsCyclesAndDuplicateWriters() {
        var g = Graph()
        g.nodes = [Node(opType: "Relu", name: "a", inputs: ["q"], outputs: ["p"]),
                   Node(opType: "Relu", name: "b", inputs: ["p"], outputs: ["q"]),
                   Node(opType: "Relu", name: "c", inputs: ["p"], outputs: ["p2"]),
                   Node(opType: "Relu", name: "d", inputs: ["p"], outputs: ["p2"])]
        let index = GraphIndex(g)
        XCTAssertTrue(index.hasCycle)
        XCTAssertEqual(index.duplicates.map(\.value), ["p2"])
        XCTAssertThrowsError(try InferenceSession(model: { var m = Model(graph: g); m.opsetImports = ["": 17]; return m }())) { error in
            let message = (error as? OnnxTrainError)?.message ?? ""
            XCTAssertTrue(message.contains("cycle") && message.contains("produced by both"), message)
        }
    }

    func testBuilderNamesNeverCollide() {
        var b = GraphBuilder(sample())
        XCTAssertEqual(b.freshName("r"), "r_1")
        XCTAssertEqual(b.freshName("r"), "r_2")
        XCTAssertEqual(b.freshName("new"), "new")
        let outs = b.add("Relu", name: "relu", inputs: ["y"], outputs: 1)
        XCTAssertEqual(b.graph.nodes.last?.name, "relu_1")
        XCTAssertEqual(outs, ["relu_1_output_0"])
        let optional = b.add("Split", inputs: ["y"], outputs: 3, outputNames: ["a", "", ""])
        XCTAssertEqual(b.graph.nodes.last?.outputs, ["a"], "trailing omitted outputs are left off")
        XCTAssertEqual(optional, ["a", "", ""])
    }

    func testTypeInferenceKeepsSymbolicDimensions() {
        let types = TypeInference(graph: sample(), opsets: ["": 17])
        XCTAssertEqual(types["r"], TensorInfo(dtype: .float32, shape: [.symbol("batch"), .value(4)]))
        XCTAssertEqual(types["m"], TensorInfo(dtype: .float32, shape: [.symbol("batch"), .value(3)]))
        XCTAssertEqual(types["y"], TensorInfo(dtype: .float32, shape: [.symbol("batch"), .value(3)]))
        XCTAssertEqual(types["s"], TensorInfo(dtype: .int64, shape: [.value(2)]))
    }

    func testTypeInferenceOfShapeOps() {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(2), .value(3), .value(4)]))]
        g.setInitializer("shape", Tensor(shape: [2], scalars: [Int64(6), -1]))
        g.setInitializer("axes", Tensor(shape: [1], scalars: [Int64(1)]))
        g.nodes = [
            Node(opType: "Reshape", inputs: ["x", "shape"], outputs: ["a"]),
            Node(opType: "Transpose", inputs: ["x"], outputs: ["b"], attributes: ["perm": .ints([2, 0, 1])]),
            Node(opType: "ReduceSum", inputs: ["x", "axes"], outputs: ["c"], attributes: ["keepdims": .int(0)]),
            Node(opType: "Unsqueeze", inputs: ["c", "axes"], outputs: ["d"]),
            Node(opType: "Conv", inputs: ["x4", "k"], outputs: ["e"], attributes: ["strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1])]),
            Node(opType: "Gather", inputs: ["x", "idx"], outputs: ["f"], attributes: ["axis": .int(1)]),
            Node(opType: "Equal", inputs: ["x", "x"], outputs: ["g"]),
        ]
        g.inputs += [ValueInfo(name: "x4", type: .tensor(.float32, shape: [.symbol("n"), .value(3), .value(8), .value(8)])),
                     ValueInfo(name: "k", type: .tensor(.float32, shape: [.value(5), .value(3), .value(3), .value(3)])),
                     ValueInfo(name: "idx", type: .tensor(.int64, shape: [.value(7)]))]
        let t = TypeInference(graph: g, opsets: ["": 17])
        XCTAssertEqual(t["a"]?.shape, [.value(6), .value(4)])
        XCTAssertEqual(t["b"]?.shape, [.value(4), .value(2), .value(3)])
        XCTAssertEqual(t["c"]?.shape, [.value(2), .value(4)])
        XCTAssertEqual(t["d"]?.shape, [.value(2), .value(1), .value(4)])
        XCTAssertEqual(t["e"]?.shape, [.symbol("n"), .value(5), .value(4), .value(4)])
        XCTAssertEqual(t["f"]?.shape, [.value(2), .value(7), .value(4)])
        XCTAssertEqual(t["g"]?.dtype, .bool)
    }

    /// Expand to a shape computed at run time (BERT's token type ids, expanded to Shape(input)):
    /// the rank is the larger of x's and the shape input's static length, x's dimensions other
    /// than 1 stay, the others are unknown; a shape input of unknown length leaves the rank unknown.
    func testTypeInferenceOfExpandToAComputedShape() {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(1), .value(4)])),
                    ValueInfo(name: "ids", type: .tensor(.int64, shape: [.symbol("batch"), .value(7)])),
                    ValueInfo(name: "anyShape", type: .tensor(.int64, shape: [.unknown]))]
        g.nodes = [
            Node(opType: "Shape", inputs: ["ids"], outputs: ["s2"]),
            Node(opType: "Expand", inputs: ["x", "s2"], outputs: ["e2"]),
            Node(opType: "Concat", inputs: ["s2", "s2"], outputs: ["s4"], attributes: ["axis": .int(0)]),
            Node(opType: "Expand", inputs: ["x", "s4"], outputs: ["e4"]),
            Node(opType: "Expand", inputs: ["x", "anyShape"], outputs: ["eAny"]),
        ]
        let t = TypeInference(graph: g, opsets: ["": 17])
        XCTAssertEqual(t["e2"], TensorInfo(dtype: .float32, shape: [.unknown, .value(4)]))
        XCTAssertEqual(t["e4"], TensorInfo(dtype: .float32, shape: [.unknown, .unknown, .unknown, .value(4)]))
        XCTAssertEqual(t["eAny"]?.dtype, .float32)
        XCTAssertNil(t["eAny"]?.shape)
    }

    /// Slice with constant starts, ends and steps gives the length the kernel gives on every
    /// clamping case (bounds past either end, negative and extreme steps); an axis of unknown
    /// length, or a start computed at run time, stays unknown; opset 9's attributes count too;
    /// and a Reshape to Concat(Slice(Shape(x)), [-1]) (ViT's patch embedding) keeps its rank.
    func testTypeInferenceOfSlice() throws {
        let bounds: [Int64] = [.min, -12, -10, -3, -1, 0, 1, 4, 9, 10, 12, .max]
        let steps: [Int64] = [.min, -4, -1, 1, 3, .max]
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(2), .value(10), .symbol("n")]))]
        g.setInitializer("axis1", Tensor(shape: [1], scalars: [Int64(-2)]))
        var cases: [String] = []
        for start in bounds { for end in bounds { for step in steps {
            let k = cases.count
            g.setInitializer("start\(k)", Tensor(shape: [1], scalars: [start]))
            g.setInitializer("end\(k)", Tensor(shape: [1], scalars: [end]))
            g.setInitializer("step\(k)", Tensor(shape: [1], scalars: [step]))
            g.nodes.append(Node(opType: "Slice", inputs: ["x", "start\(k)", "end\(k)", "axis1", "step\(k)"], outputs: ["y\(k)"]))
            cases.append("y\(k)")
        } } }
        g.outputs = cases.map { ValueInfo(name: $0, type: nil) }
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        let t = TypeInference(graph: g, opsets: ["": 17])
        let run = try InferenceSession(model: m).run(tensors: ["x": Tensor(zeros: .float32, shape: [2, 10, 3])])
        for y in cases {
            let length = try XCTUnwrap(run[y]).shape[1]
            XCTAssertEqual(t[y]?.shape, [.value(2), .value(length), .symbol("n")], y)
        }

        var h = Graph()
        h.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(2), .value(10), .symbol("n")])),
                    ValueInfo(name: "runtimeStart", type: .tensor(.int64, shape: [.value(1)])),
                    ValueInfo(name: "image", type: .tensor(.float32, shape: [.value(1), .value(192), .value(14), .value(14)]))]
        h.setInitializer("zero", Tensor(shape: [1], scalars: [Int64(0)]))
        h.setInitializer("two", Tensor(shape: [1], scalars: [Int64(2)]))
        h.setInitializer("minusOne", Tensor(shape: [1], scalars: [Int64(-1)]))
        h.nodes = [
            Node(opType: "Slice", inputs: ["x", "zero", "two", "minusOne"], outputs: ["unknownAxis"]),
            Node(opType: "Slice", inputs: ["x", "runtimeStart", "two"], outputs: ["runtime"]),
            Node(opType: "Shape", inputs: ["image"], outputs: ["shape"]),
            Node(opType: "Slice", inputs: ["shape", "zero", "two"], outputs: ["leading"]),
            Node(opType: "Concat", inputs: ["leading", "minusOne"], outputs: ["target"], attributes: ["axis": .int(0)]),
            Node(opType: "Reshape", inputs: ["image", "target"], outputs: ["patches"]),
        ]
        let u = TypeInference(graph: h, opsets: ["": 17])
        XCTAssertEqual(u["unknownAxis"]?.shape, [.value(2), .value(10), .unknown])
        XCTAssertEqual(u["runtime"]?.shape, [.unknown, .unknown, .unknown])
        XCTAssertEqual(u["leading"]?.shape, [.value(2)])
        XCTAssertEqual(u["target"]?.shape, [.value(3)])
        // The target's entries are followed (Shape → Slice → Concat): [1, 192, -1] of 1·192·14·14.
        XCTAssertEqual(u["patches"]?.shape, [.value(1), .value(192), .value(196)])

        var old = Graph()
        old.inputs = g.inputs
        old.nodes = [Node(opType: "Slice", inputs: ["x"], outputs: ["y"],
                          attributes: ["starts": .ints([-3, 1]), "ends": .ints([.max, 2]), "axes": .ints([1, 0])])]
        XCTAssertEqual(TypeInference(graph: old, opsets: ["": 9])["y"]?.shape, [.value(1), .value(3), .symbol("n")])
    }

    /// GatherGrad and GatherNDGrad (shape, indices, dY) give dY's type in the shape input's
    /// values, and the gradients after them keep it (BERT's pooler Gather made its whole backward
    /// pass int64, the shape input's type, so no pass reading types touched it).
    func testTypeInferenceOfGatherGradients() {
        var g = Graph()
        g.inputs = [ValueInfo(name: "dy", type: .tensor(.float32, shape: [.value(8), .value(4)])),
                    ValueInfo(name: "dy64", type: .tensor(.float64, shape: [.value(2), .value(4)])),
                    ValueInfo(name: "ind", type: .tensor(.int64, shape: [.value(2), .value(1)]))]
        g.setInitializer("shape", Tensor(shape: [3], scalars: [Int64(8), 5, 4]))
        g.setInitializer("idx", Tensor(scalar: Int64(0)))
        g.nodes = [
            Node(opType: "GatherGrad", domain: "com.microsoft", inputs: ["shape", "idx", "dy"], outputs: ["dx"], attributes: ["axis": .int(1)]),
            Node(opType: "LayerNormalizationGrad", domain: "com.microsoft", inputs: ["dx", "dx", "dx", "dx", "dx"], outputs: ["dln"]),
            Node(opType: "GatherNDGrad", domain: "com.microsoft", inputs: ["shape", "ind", "dy64"], outputs: ["dnd"]),
            Node(opType: "Shape", inputs: ["dy"], outputs: ["s"]),
            Node(opType: "GatherGrad", domain: "com.microsoft", inputs: ["s", "idx", "dy"], outputs: ["unknownShape"]),
        ]
        let t = TypeInference(graph: g, opsets: ["": 17, "com.microsoft": 1])
        XCTAssertEqual(t["dx"], TensorInfo(dtype: .float32, shape: [.value(8), .value(5), .value(4)]))
        XCTAssertEqual(t["dln"]?.dtype, .float32)
        XCTAssertEqual(t["dnd"], TensorInfo(dtype: .float64, shape: [.value(8), .value(5), .value(4)]))
        XCTAssertEqual(t["unknownShape"]?.dtype, .float32)
        XCTAssertNil(t["unknownShape"]?.shape)
    }

    func testConstantFoldingAndDeadNodes() throws {
        var model = Model(graph: sample())
        model.opsetImports = ["": 17]
        // Shape(x) has a symbolic dimension: it stays. The Constant folds into an initializer.
        try ConstantFolding().run(&model)
        XCTAssertNil(model.graph.nodes.first { $0.opType == "Constant" })
        XCTAssertEqual(model.graph.initializers["k"]?.scalars(as: Float.self), [1, 2, 3])
        // The unused Shape node goes with dead-node removal.
        XCTAssertNil(model.graph.nodes.first { $0.opType == "Shape" })
        XCTAssertEqual(model.graph.nodes.map(\.opType).sorted(), ["Add", "MatMul", "Relu"])
        // Shape of a static value folds to its dimensions.
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(2), .value(5)]))]
        g.nodes = [Node(opType: "Shape", inputs: ["x"], outputs: ["s"]),
                   Node(opType: "Reshape", inputs: ["x", "s"], outputs: ["y"])]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        try ConstantFolding().run(&m)
        XCTAssertEqual(m.graph.initializers["s"]?.scalars(as: Int64.self), [2, 5])
        XCTAssertEqual(m.graph.nodes.map(\.opType), ["Reshape"])
    }

    func testInliningRunsBeforeCompile() throws {
        // A model-local function Double(x) = x + x, called twice: inlined with distinct names.
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(2)]))]
        g.nodes = [Node(opType: "Double", domain: "local", name: "d1", inputs: ["x"], outputs: ["a"]),
                   Node(opType: "Double", domain: "local", name: "d2", inputs: ["a"], outputs: ["b"])]
        g.outputs = [ValueInfo(name: "b", type: nil)]
        var model = Model(graph: g)
        model.opsetImports = ["": 17, "local": 1]
        model.functions = [Function(name: "Double", domain: "local", inputs: ["i"], outputs: ["o"], attributeNames: [],
                                    nodes: [Node(opType: "Add", name: "add", inputs: ["i", "i"], outputs: ["o"])], opsetImports: ["": 17])]
        var inlined = model
        try InlineFunctions().run(&inlined)
        XCTAssertTrue(inlined.functions.isEmpty)
        XCTAssertEqual(inlined.graph.nodes.map(\.opType), ["Add", "Add"])
        let out = try InferenceSession(model: model).run(["x": .tensor(Tensor(shape: [2], scalars: [Float(1), -2]))])
        XCTAssertEqual(out["b"]?.tensor?.scalars(as: Float.self), [4, -8])
        // Switching passes off never switches inlining off: a session needs it to run the model at all.
        for names in ["inline-functions", "all", "inline-functions,constant-folding"] {
            let again = try withPassesDisabled(names) { try InferenceSession(model: model).run(["x": .tensor(Tensor(shape: [2], scalars: [Float(1), -2]))]) }
            XCTAssertEqual(again["b"]?.tensor?.scalars(as: Float.self), [4, -8], names)
        }
    }
}
