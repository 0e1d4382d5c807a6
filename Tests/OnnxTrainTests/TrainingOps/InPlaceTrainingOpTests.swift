import Foundation
import OnnxTrain
import XCTest

/// The in-place writes onnxruntime's training runtime relies on but a plain onnxruntime
/// InferenceSession does not show for alias-declared outputs (so the recorded cases cannot check
/// them): BatchNormInternal's running statistics, ZeroGradient and InPlaceAccumulator v1 write
/// into the caller's input storage, and sequence-fed parameters are updated where they live.
final class InPlaceTrainingOpTests: XCTestCase {
    func testBatchNormInternalUpdatesRunningStatsInPlace() throws {
        let x = Tensor(shape: [2, 2, 2], scalars: [Float(1), 2, 3, 5, -1, 0, 4, 6])
        let scale = Tensor(shape: [2], scalars: [Float(1), 1]), bias = Tensor(shape: [2], scalars: [Float(0), 0])
        let mean = Tensor(shape: [2], scalars: [Float(0.5), -0.5]), variance = Tensor(shape: [2], scalars: [Float(1), 2])
        let out = try runTrainingOp("BatchNormInternal", "com.microsoft", [x, scale, bias, mean, variance], outputs: 5)
        // Channel 0 holds 1, 2, -1, 0: mean 0.5, biased variance 1.25; channel 1 holds 3, 5, 4, 6: mean 4.5, variance 1.25.
        let expectedMean: [Float] = [0.9 * 0.5 + 0.1 * 0.5, 0.9 * -0.5 + 0.1 * 4.5]
        let expectedVar: [Float] = [0.9 * 1 + 0.1 * 1.25, 0.9 * 2 + 0.1 * 1.25]
        for (got, want) in [(mean, expectedMean), (out[1], expectedMean), (variance, expectedVar), (out[2], expectedVar)] {
            for (g, w) in zip(got.scalars(as: Float.self), want) { XCTAssertEqual(g, w, accuracy: 1e-6) }
        }
        XCTAssertTrue(out[1].sharesStorage(with: mean), "running_mean must alias input_mean")
    }

    func testZeroGradientZeroesItsInput() throws {
        let g = Tensor(shape: [3], scalars: [Float(1), -2, 3])
        let out = try runTrainingOp("ZeroGradient", "com.microsoft", [g, Tensor(shape: [1], scalars: [true])])
        XCTAssertEqual(out[0].scalars(as: Float.self), [0, 0, 0])
        XCTAssertEqual(g.scalars(as: Float.self), [0, 0, 0])
    }

    func testInPlaceAccumulatorWritesItsBuffer() throws {
        let buffer = Tensor(shape: [2, 2], scalars: [Float(1), 2, 3, 4])
        _ = try runTrainingOp("InPlaceAccumulator", "com.microsoft", [buffer, Tensor(shape: [2], scalars: [Float(10), 20])])
        XCTAssertEqual(buffer.scalars(as: Float.self), [11, 22, 13, 24])
        // update_signal false leaves the buffer as it was (onnxruntime returns old_sum).
        let out = try runTrainingOp("InPlaceAccumulator", "com.microsoft", [buffer, Tensor(shape: [2], scalars: [Float(10), 20]), Tensor(shape: [1], scalars: [false])])
        XCTAssertEqual(out[0].scalars(as: Float.self), [11, 22, 13, 24])
        XCTAssertEqual(buffer.scalars(as: Float.self), [11, 22, 13, 24])
    }

    func testOptimizersUpdateSequenceFedParametersWhereTheyLive() throws {
        let w = Tensor(shape: [2], scalars: [Float(1), 2]), g = Tensor(shape: [2], scalars: [Float(0.5), -1])
        var graph = Graph()
        graph.nodes = [Node(opType: "SGDOptimizerV2", domain: "com.microsoft", inputs: ["lr", "w", "g"], outputs: ["done"])]
        graph.inputs = [ValueInfo(name: "lr", type: nil), ValueInfo(name: "w", type: nil), ValueInfo(name: "g", type: nil)]
        graph.outputs = [ValueInfo(name: "done", type: nil)]
        var model = Model(graph: graph)
        model.opsetImports = ["": 17, "com.microsoft": 1]
        let session = try InferenceSession(model: model)
        let result = try session.run(["lr": .tensor(Tensor(shape: [1], scalars: [Float(0.1)])),
                                      "w": .sequence([.tensor(w)], elementType: nil), "g": .sequence([.tensor(g)], elementType: nil)])
        XCTAssertEqual(result["done"]?.tensor?.scalars(as: Bool.self), [true])
        XCTAssertEqual(w.scalars(as: Float.self), [0.95, 2.1])
    }

    /// AdamW on a 13- and a 5-element tensor (full SIMD vectors plus a padded tail), float32 and
    /// float64, both modes: every element must equal a plain scalar loop in onnxruntime's order of
    /// operations bit for bit, and w, m, v must be updated where they live.
    func testAdamWMatchesTheScalarFormulaExactly() throws {
        for mode in [0, 1] {
            try checkAdamW(Float.self, mode: mode)
            try checkAdamW(Double.self, mode: mode)
        }
    }

    private func checkAdamW<T: FloatElement & TensorElement>(_ type: T.Type, mode: Int) throws {
        let (alpha, beta, epsilon, decay, lr, step): (Float, Float, Float, Float, Float, Int64) = (0.9, 0.999, 1e-6, 0.01, 0.05, 3)
        var graph = Graph()
        graph.nodes = [Node(opType: "AdamWOptimizer", domain: "com.microsoft", inputs: ["lr", "step", "w", "g", "m", "v"], outputs: ["done"],
                            attributes: ["alpha": .float(alpha), "beta": .float(beta), "epsilon": .float(epsilon),
                                         "weight_decay": .float(decay), "adam_mode": .int(mode)])]
        graph.inputs = ["lr", "step", "w", "g", "m", "v"].map { ValueInfo(name: $0, type: nil) }
        graph.outputs = [ValueInfo(name: "done", type: nil)]
        var model = Model(graph: graph)
        model.opsetImports = ["": 17, "com.microsoft": 1]
        func values(_ n: Int, _ f: (Int) -> Double) -> [T] { (0..<n).map { T(fromDouble: f($0)) } }
        let sizes = [13, 5]
        let w = sizes.map { n in Tensor(shape: [n], scalars: values(n) { sin(Double($0) + 1) }) }
        let g = sizes.map { n in Tensor(shape: [n], scalars: values(n) { cos(Double($0) * 0.7) }) }
        let m = sizes.map { n in Tensor(shape: [n], scalars: values(n) { 0.1 * sin(Double($0) * 0.3) }) }
        let v = sizes.map { n in Tensor(shape: [n], scalars: values(n) { 0.01 * Double($0 % 4) }) }
        let before = (w.map { $0.scalars(as: T.self) }, g.map { $0.scalars(as: T.self) }, m.map { $0.scalars(as: T.self) }, v.map { $0.scalars(as: T.self) })
        func seq(_ ts: [Tensor]) -> Value { .sequence(ts.map { .tensor($0) }, elementType: nil) }
        let result = try InferenceSession(model: model).run(["lr": .tensor(Tensor(shape: [1], scalars: [lr])),
                                                             "step": .tensor(Tensor(shape: [1], scalars: [step])),
                                                             "w": seq(w), "g": seq(g), "m": seq(m), "v": seq(v)])
        XCTAssertEqual(result["done"]?.tensor?.scalars(as: Bool.self), [true])
        // The reference: onnxruntime's constants in float32, then one scalar loop in T.
        let ac = T(1 - Float(pow(Double(alpha), Double(step)))), bc = T(1 - Float(pow(Double(beta), Double(step))))
        let lrc = T(lr * ((1 - Float(pow(Double(beta), Double(step)))).squareRoot() / (1 - Float(pow(Double(alpha), Double(step))))))
        let (a, b, eps, wd, lrT) = (T(alpha), T(beta), T(epsilon), T(decay), T(lr))
        for k in sizes.indices {
            for i in 0..<sizes[k] {
                let gi = before.1[k][i]
                let mi = a * before.2[k][i] + (1 - a) * gi
                let vi = b * before.3[k][i] + (1 - b) * gi * gi
                var wi = before.0[k][i]
                if mode == 0 {
                    wi = wi - wi * lrT * wd
                    wi = wi - (lrT * mi) / (ac * ((vi / bc).squareRoot() + eps))
                } else {
                    wi = wi - lrc * mi / (vi.squareRoot() + eps)
                    wi = wi - lrT * wd * wi
                }
                let label = "\(T.self) mode \(mode) tensor \(k) element \(i)"
                XCTAssertEqual(m[k].scalars(as: T.self)[i], mi, label)
                XCTAssertEqual(v[k].scalars(as: T.self)[i], vi, label)
                XCTAssertEqual(w[k].scalars(as: T.self)[i], wi, label)
            }
        }
    }

    func testAdamWModeZeroWithoutBiasCorrectionIsRejected() {
        XCTAssertThrowsError(try runTrainingOp("AdamWOptimizer", "com.microsoft", [], attributes: ["correct_bias": .int(0)]))
    }

    func testUnknownAttributesAreIgnored() throws {
        let out = try runTrainingOp("ReluGrad", "com.microsoft", [Tensor(shape: [2], scalars: [Float(1), 1]), Tensor(shape: [2], scalars: [Float(-1), 1])],
                           attributes: ["not_in_the_schema": .int(3)])
        XCTAssertEqual(out[0].scalars(as: Float.self), [0, 1])
    }

    func testOutOfRangeIndicesThrowInsteadOfCrashing() {
        let shape = Tensor(shape: [1], scalars: [Int64(3)])
        XCTAssertThrowsError(try runTrainingOp("GatherGrad", "com.microsoft", [shape, Tensor(shape: [1], scalars: [Int64(3)]), Tensor(shape: [1], scalars: [Float(1)])]))
        XCTAssertThrowsError(try runTrainingOp("GatherElementsGrad", "com.microsoft", [Tensor(shape: [1], scalars: [Float(1)]), shape, Tensor(shape: [1], scalars: [Int64(-4)])]))
        XCTAssertThrowsError(try runTrainingOp("SoftmaxCrossEntropyLossGrad", "com.microsoft",
                                      [Tensor(scalar: Float(1)), Tensor(shape: [1, 2], scalars: [Float(-0.7), -0.7]), Tensor(shape: [1], scalars: [Int64(2)])]))
        // Scalars where a rank >= 1 tensor is needed.
        let scalar = Tensor(scalar: Float(1))
        XCTAssertThrowsError(try runTrainingOp("FusedMatMul", "com.microsoft", [scalar, scalar]))
        XCTAssertThrowsError(try runTrainingOp("GatherGrad", "com.microsoft", [Tensor(shape: [0], scalars: [Int64]()), Tensor(scalar: Int64(0)), scalar]))
        XCTAssertThrowsError(try runTrainingOp("SplitTraining", "com.microsoft", [scalar, Tensor(shape: [0], scalars: [Int64]())]))
        XCTAssertThrowsError(try runTrainingOp("ConcatTraining", "com.microsoft", [scalar, scalar], attributes: ["axis": .int(0)]))
        XCTAssertThrowsError(try runTrainingOp("MaxPoolGrad", "", [Tensor(shape: [1, 1, 1], scalars: [Float(1)]), Tensor(shape: [1, 1, 1], scalars: [Int64(99)])],
                                      attributes: ["kernel_shape": .ints([2])]))
    }
}
