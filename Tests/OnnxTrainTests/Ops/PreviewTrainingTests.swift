import XCTest
@testable import OnnxTrain

/// The preview-training Gradient op against hand-derived gradients (the onnx backend cases
/// test_gradient_of_add / _and_mul, which the 1.22 data set no longer ships) and a broadcast case.
final class PreviewTrainingTests: XCTestCase {
    private func run(_ nodes: [Node], inputs: [String: Tensor], outputs: [String]) throws -> [String: Tensor] {
        var g = Graph()
        g.inputs = inputs.keys.sorted().map { ValueInfo(name: $0, type: nil) }
        g.outputs = outputs.map { ValueInfo(name: $0, type: nil) }
        g.nodes = nodes
        var m = Model(graph: g)
        m.opsetImports = ["": 17, "ai.onnx.preview.training": 1]
        return try InferenceSession(model: m).run(tensors: inputs, fetches: outputs)
    }

    private func gradient(_ xs: [String], _ y: String, outputs: [String]) -> Node {
        Node(opType: "Gradient", domain: "ai.onnx.preview.training", inputs: xs, outputs: outputs,
             attributes: ["xs": .strings(xs), "y": .string(y)])
    }

    func testGradientOfAddAndMul() throws {
        // d = a * (a + b): dd/da = 2a + b, dd/db = a.
        let r = try run([Node(opType: "Add", inputs: ["a", "b"], outputs: ["c"]), Node(opType: "Mul", inputs: ["c", "a"], outputs: ["d"]),
                         gradient(["a", "b"], "d", outputs: ["da", "db"])],
                        inputs: ["a": Tensor(scalar: Float(1)), "b": Tensor(scalar: Float(2))], outputs: ["d", "da", "db"])
        XCTAssertEqual(r["d"]!.scalars(as: Float.self), [3])
        XCTAssertEqual(r["da"]!.scalars(as: Float.self), [4])
        XCTAssertEqual(r["db"]!.scalars(as: Float.self), [1])
    }

    func testGradientSumsOverBroadcastAxes() throws {
        // y = x * w / 2 - x with x [2, 3], w [3]: dsum(y)/dw = column sums of x / 2, dsum(y)/dx = w / 2 - 1.
        let x = Tensor(shape: [2, 3], scalars: [Float(1), 2, 3, 4, 5, 6]), w = Tensor(shape: [3], scalars: [Float(2), 4, 6])
        let r = try run([Node(opType: "Mul", inputs: ["x", "w"], outputs: ["p"]), Node(opType: "Div", inputs: ["p", "two"], outputs: ["q"]),
                         Node(opType: "Sub", inputs: ["q", "x"], outputs: ["y"]), gradient(["x", "w"], "y", outputs: ["dx", "dw"])],
                        inputs: ["x": x, "w": w, "two": Tensor(scalar: Float(2))], outputs: ["dx", "dw"])
        XCTAssertEqual(r["dw"]!.scalars(as: Float.self), [2.5, 3.5, 4.5])
        XCTAssertEqual(r["dx"]!.scalars(as: Float.self), [0, 1, 2, 0, 1, 2])
    }

    func testGradientRejectsOpsItCannotDifferentiate() {
        XCTAssertThrowsError(try run([Node(opType: "Floor", inputs: ["a"], outputs: ["b"]), gradient(["a"], "b", outputs: ["da"])],
                                     inputs: ["a": Tensor(scalar: Float(1.5))], outputs: ["da"]))
    }
}
