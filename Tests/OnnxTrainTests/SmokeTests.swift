import XCTest
@testable import OnnxTrain
final class SmokeTests: XCTestCase {
    func testAdd() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "a", type: .tensor(.float32, shape: [.value(2)])), ValueInfo(name: "b", type: .tensor(.float32, shape: [.value(2)]))]
        g.outputs = [ValueInfo(name: "c", type: nil)]
        g.nodes = [Node(opType: "Add", inputs: ["a", "b"], outputs: ["c"])]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        let s = try InferenceSession(model: m)
        let r = try s.run(tensors: ["a": Tensor(shape: [2], scalars: [Float(1), 2]), "b": Tensor(shape: [2], scalars: [Float(3), 4])])
        XCTAssertEqual(r["c"]!.scalars(as: Float.self), [4, 6])
    }
}
