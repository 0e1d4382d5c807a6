import XCTest
@testable import OnnxTrain

/// What torch.onnx's exporters write that the artifacts builder must handle or report
/// (Tests/Oracle/pytorch_oracle.py checks the real exports against PyTorch).
final class ExportedModelTests: XCTestCase {
    /// x [2, 6] -> SplitToSequence(split 2, axis 1) -> SequenceAt 0, 1, -1 -> a + 2b + 3c -> sum.
    static func splitModel() -> Model {
        var graph = Graph()
        graph.inputs = [ValueInfo(name: "x", type: .tensor(.float64, shape: [.value(2), .value(6)]))]
        graph.setInitializer("two", Tensor(scalar: Int64(2)))
        graph.setInitializer("p0", Tensor(scalar: Int64(0)))
        graph.setInitializer("p1", Tensor(scalar: Int64(1)))
        graph.setInitializer("plast", Tensor(scalar: Int64(-1)))
        graph.setInitializer("k2", Tensor(scalar: 2.0))
        graph.setInitializer("k3", Tensor(scalar: 3.0))
        graph.nodes = [
            Node(opType: "SplitToSequence", name: "split", inputs: ["x", "two"], outputs: ["seq"], attributes: ["axis": .int(1)]),
            Node(opType: "SequenceAt", name: "at0", inputs: ["seq", "p0"], outputs: ["a"]),
            Node(opType: "SequenceAt", name: "at1", inputs: ["seq", "p1"], outputs: ["b"]),
            Node(opType: "SequenceAt", name: "atlast", inputs: ["seq", "plast"], outputs: ["c"]),
            Node(opType: "Mul", name: "b2", inputs: ["b", "k2"], outputs: ["b2"]),
            Node(opType: "Mul", name: "c3", inputs: ["c", "k3"], outputs: ["c3"]),
            Node(opType: "Add", name: "ab", inputs: ["a", "b2"], outputs: ["ab"]),
            Node(opType: "Add", name: "abc", inputs: ["ab", "c3"], outputs: ["y"]),
            Node(opType: "ReduceSum", name: "sum", inputs: ["y"], outputs: ["loss"], attributes: ["keepdims": .int(0)]),
        ]
        graph.outputs = [ValueInfo(name: "y", type: nil), ValueInfo(name: "loss", type: nil)]
        var model = Model(graph: graph)
        model.opsetImports = ["": 18]
        return model
    }

    func testSplitToSequenceBecomesSplitWithTheSameValuesAndAGradient() throws {
        let model = Self.splitModel()
        var rewritten = model
        try SplitToSequenceAsSplit().run(&rewritten)
        XCTAssertFalse(rewritten.graph.nodes.contains { $0.opType == "SplitToSequence" || $0.opType == "SequenceAt" })
        let x = Tensor(shape: [2, 6], scalars: (0..<12).map { Double($0) * 0.5 - 2 })
        let before = try InferenceSession(model: model).run(["x": .tensor(x)])
        let after = try InferenceSession(model: rewritten).run(["x": .tensor(x)])
        XCTAssertEqual(after["y"]?.tensor?.scalars(as: Double.self), before["y"]?.tensor?.scalars(as: Double.self))
        // d loss / dx: the pieces' weights 1, 2, 3 over columns 0-1, 2-3, 4-5.
        let result = try Autodiff.differentiate(rewritten.graph, opsets: rewritten.opsetImports, loss: "loss", parameters: ["x"])
        var gradModel = Model(graph: result.graph)
        gradModel.opsetImports = ["": 18, "com.microsoft": 1]
        gradModel.graph.outputs = [ValueInfo(name: result.gradients[0].gradient, type: nil)]
        let grad = try InferenceSession(model: gradModel).run(["x": .tensor(x)])[result.gradients[0].gradient]?.tensor
        XCTAssertEqual(grad?.scalars(as: Double.self), [1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3])
    }

    func testSplitToSequenceUsedOtherwiseIsLeftAlone() throws {
        var model = Self.splitModel()
        model.graph.outputs.append(ValueInfo(name: "seq", type: nil))
        let before = model.graph.nodes
        try SplitToSequenceAsSplit().run(&model)
        XCTAssertEqual(model.graph.nodes.map(\.opType), before.map(\.opType))
    }

    /// A Conv (its bias named `convBias`) -> pool -> MatMul with a weight named `fcWeight`.
    static func convModel(convBias: String, fcWeight: String) -> Model {
        var graph = Graph()
        graph.inputs = [ValueInfo(name: "input", type: .tensor(.float32, shape: [.value(2), .value(1), .value(4), .value(4)]))]
        graph.setInitializer("conv.weight", Tensor(shape: [2, 1, 3, 3], scalars: (0..<18).map { Float($0) * 0.05 - 0.4 }))
        graph.setInitializer(convBias, Tensor(shape: [2], scalars: [Float(0.1), -0.2]))
        graph.setInitializer(fcWeight, Tensor(shape: [2, 3], scalars: (0..<6).map { Float($0) * 0.1 - 0.3 }))
        graph.setInitializer("shape", Tensor(shape: [2], scalars: [Int64(2), 2]))
        graph.nodes = [
            Node(opType: "Conv", name: "conv", inputs: ["input", "conv.weight", convBias], outputs: ["c"], attributes: ["pads": .ints([1, 1, 1, 1])]),
            Node(opType: "GlobalAveragePool", name: "pool", inputs: ["c"], outputs: ["p"]),
            Node(opType: "Reshape", name: "flat", inputs: ["p", "shape"], outputs: ["f"]),
            Node(opType: "MatMul", name: "fc", inputs: ["f", fcWeight], outputs: ["output"]),
        ]
        graph.outputs = [ValueInfo(name: "output", type: nil)]
        var model = Model(graph: graph)
        model.opsetImports = ["": 18]
        return model
    }

    /// Initializers named as exporters name folded constants, and a Conv reading BatchNorm
    /// parameters with no BatchNormalization after it, are reported (never guessed away).
    func testArtifactsWarnAboutFoldedOrMergedParameters() throws {
        let folded = try TrainingArtifacts.build(from: Self.convModel(convBias: "bn.bias", fcWeight: "val_41"),
                                                 options: .init(loss: .crossEntropy, optimizer: .sgd))
        XCTAssertEqual(folded.warnings.count, 2, "\(folded.warnings)")
        XCTAssertTrue(folded.warnings.contains { $0.contains("val_41") && $0.contains("optimize=False") }, "\(folded.warnings)")
        XCTAssertTrue(folded.warnings.contains { $0.contains("'conv'") && $0.contains("'bn.bias'") }, "\(folded.warnings)")
        // The same model under its source names says nothing.
        let clean = try TrainingArtifacts.build(from: Self.convModel(convBias: "conv.bias", fcWeight: "fc.weight"),
                                                options: .init(loss: .crossEntropy, optimizer: .sgd))
        XCTAssertEqual(clean.warnings, [])
    }
}
