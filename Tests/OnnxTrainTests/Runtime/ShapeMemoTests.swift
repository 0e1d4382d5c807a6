import XCTest
@testable import OnnxTrain

/// The executor's memo of steps that compute from shapes and initializers only (a causal mask
/// from Shape, Range and LessOrEqual; a ConstantOfShape of an input's shape): kept from one run
/// to the next while the shapes are the same, recomputed when they change, never for random ops.
final class ShapeMemoTests: XCTestCase {
    /// x [B, T, T] -> out = (j <= i ? x : -1e9) · ConstantOfShape(shape(x), 2), and the mask.
    func maskGraph() -> Graph {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: nil))]
        g.outputs = [ValueInfo(name: "out", type: nil)]
        g.setInitializer("axis2", Tensor(scalar: Int64(2)))
        g.setInitializer("zero", Tensor(scalar: Int64(0)))
        g.setInitializer("one", Tensor(scalar: Int64(1)))
        g.setInitializer("axes0", Tensor(shape: [1], scalars: [Int64(0)]))
        g.setInitializer("axes1", Tensor(shape: [1], scalars: [Int64(1)]))
        g.setInitializer("neg", Tensor(scalar: Float(-1e9)))
        g.nodes = [
            Node(opType: "Shape", name: "shape", inputs: ["x"], outputs: ["s"]),
            Node(opType: "Gather", name: "gather", inputs: ["s", "axis2"], outputs: ["t"]),
            Node(opType: "Range", name: "range", inputs: ["zero", "t", "one"], outputs: ["r"]),
            Node(opType: "Unsqueeze", name: "row", inputs: ["r", "axes0"], outputs: ["rr"]),
            Node(opType: "Unsqueeze", name: "col", inputs: ["r", "axes1"], outputs: ["rc"]),
            Node(opType: "LessOrEqual", name: "mask", inputs: ["rr", "rc"], outputs: ["mask"]),
            Node(opType: "Where", name: "where", inputs: ["mask", "x", "neg"], outputs: ["masked"]),
            Node(opType: "ConstantOfShape", name: "twos", inputs: ["s"], outputs: ["twos"],
                 attributes: ["value": .tensor(Tensor(shape: [1], scalars: [Float(2)]))]),
            Node(opType: "Mul", name: "mul", inputs: ["masked", "twos"], outputs: ["out"]),
        ]
        return g
    }

    func session(_ g: Graph) throws -> InferenceSession {
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        var options = SessionOptions()
        options.optimize = false
        return try InferenceSession(model: m, options: options)
    }

    func testMaskIsKeptWhileTheShapeStays() throws {
        let session = try session(maskGraph())
        let kinds = Dictionary(uniqueKeysWithValues: zip(session.executor.steps.map(\.node.name), session.executor.memoKind))
        XCTAssertEqual(kinds, ["shape": 1, "gather": 2, "range": 2, "row": 2, "col": 2, "mask": 2, "twos": 2, "where": 0, "mul": 0])
        var previous: (mask: Tensor, shape: [Int])?
        for (run, (b, t)) in [(2, 4), (2, 4), (3, 5), (3, 5), (2, 4), (1, 4)].enumerated() {
            let values = (0..<(b * t * t)).map { Float(($0 * 7 + run * 13) % 31) - 15 }
            let x = Tensor(shape: [b, t, t], scalars: values)
            let result = try session.run(["x": .tensor(x)], fetches: ["out", "mask"])
            let out = try XCTUnwrap(result["out"]?.tensor), mask = try XCTUnwrap(result["mask"]?.tensor)
            var want: [Float] = []
            for k in 0..<b { for i in 0..<t { for j in 0..<t { want.append((j <= i ? values[(k * t + i) * t + j] : -1e9) * 2) } } }
            XCTAssertEqual(out.shape, [b, t, t])
            XCTAssertEqual(out.scalars(as: Float.self), want, "run \(run) shape \([b, t, t])")
            XCTAssertEqual(mask.shape, [t, t])
            XCTAssertEqual(mask.scalars(as: Bool.self), (0..<(t * t)).map { $0 % t <= $0 / t })
            // x shaped as in the run before: the mask is the tensor that run computed (a new batch
            // size is a new Shape value, and everything computed from it is computed again).
            if let previous {
                XCTAssertEqual(mask.sharesStorage(with: previous.mask), previous.shape == [b, t, t], "run \(run)")
            }
            previous = (mask, [b, t, t])
        }
    }

    func testRandomOpsAreNotKept() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: nil))]
        g.outputs = [ValueInfo(name: "out", type: nil)]
        g.nodes = [
            Node(opType: "Shape", name: "shape", inputs: ["x"], outputs: ["s"]),
            Node(opType: "ConstantOfShape", name: "zeros", inputs: ["s"], outputs: ["z"],
                 attributes: ["value": .tensor(Tensor(shape: [1], scalars: [Float(0)]))]),
            Node(opType: "RandomUniformLike", name: "random", inputs: ["z"], outputs: ["u"]),
            Node(opType: "Add", name: "add", inputs: ["u", "x"], outputs: ["out"]),
        ]
        let session = try session(g)
        let kinds = Dictionary(uniqueKeysWithValues: zip(session.executor.steps.map(\.node.name), session.executor.memoKind))
        XCTAssertEqual(kinds, ["shape": 1, "zeros": 2, "random": 0, "add": 0])
        let x = Tensor(zeros: .float32, shape: [64])
        let a = try XCTUnwrap(session.run(["x": .tensor(x)])["out"]?.tensor).scalars(as: Float.self)
        let b = try XCTUnwrap(session.run(["x": .tensor(x)])["out"]?.tensor).scalars(as: Float.self)
        XCTAssertNotEqual(a, b, "a new draw on every run")
        XCTAssertTrue(a.allSatisfy { $0 >= 0 && $0 < 1 })
    }
}
