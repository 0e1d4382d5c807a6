import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// TypeInference: ConstantOfShape of a shape computed at run time has the rank of that shape's
/// length (ViT's class token is expanded to the batch through Shape, ConstantOfShape, Where and
/// Expand), so the Linear layers after it still become MatMulBias.
final class ConstantOfShapeRankTests: XCTestCase {
    func testRankOfConstantOfShapeFromAComputedShape() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "a", type: .tensor(.float32, shape: [.symbol("N"), .value(5), .value(4)])),
                    ValueInfo(name: "n", type: .tensor(.int64, shape: [.value(3)]))]
        var g2 = RandomGenerator(seed: 5)
        g.setInitializer("b", Tensor(shape: [4, 3], scalars: (0..<12).map { _ in Float(g2.nextDouble() - 0.5) }))
        g.setInitializer("zeros", Tensor(shape: [3], scalars: [Int64(0), 0, 0]))
        g.setInitializer("bias", Tensor(shape: [3], scalars: [Float(0.25), -0.5, 1]))
        g.nodes = [
            // n's length (3, static), as a computed value: ones of that length, the shape Expand reads.
            Node(opType: "Shape", inputs: ["n"], outputs: ["len"]),
            Node(opType: "ConstantOfShape", inputs: ["len"], outputs: ["ones"],
                 attributes: ["value": .tensor(Tensor(shape: [1], scalars: [Int64(1)]))]),
            // Where(…, ones, target) in ViT: broadcast with a shape of static length, here an Add.
            Node(opType: "Add", inputs: ["ones", "zeros"], outputs: ["target"]),
            Node(opType: "Expand", inputs: ["a", "target"], outputs: ["e"]),
            Node(opType: "MatMul", inputs: ["e", "b"], outputs: ["p"]),
            Node(opType: "Add", inputs: ["bias", "p"], outputs: ["y"]),
        ]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var model = Model(graph: g)
        model.opsetImports = ["": 17]
        let types = TypeInference(graph: model.graph, opsets: model.opsetImports)
        XCTAssertEqual(types["ones"]?.rank, 1)
        XCTAssertEqual(types["target"]?.shape, [.value(3)])
        XCTAssertEqual(types["e"]?.rank, 3)
        let ops = opTypes(try optimized(model))
        XCTAssertTrue(ops.contains("MatMulBias"), "\(ops)")
        // The same values as MatMul then Add.
        var r = RandomGenerator(seed: 9)
        let a = Tensor(shape: [2, 5, 4], scalars: (0..<40).map { _ in Float(r.nextDouble() * 2 - 1) })
        let feeds = ["a": a, "n": Tensor(shape: [3], scalars: [Int64(7), 8, 9])]
        let fused = try InferenceSession(model: model).run(tensors: feeds)["y"]!.doubles()
        let plain = try withPassesDisabled("all") { try InferenceSession(model: model).run(tensors: feeds)["y"]!.doubles() }
        XCTAssertEqual(fused.count, 30)
        for i in fused.indices { XCTAssertEqual(fused[i], plain[i], accuracy: 1e-6) }
    }
}
