import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// PyTorch exports (MLP, CNN, GPT-style transformer at opsets 14 and 17) run through the same
/// path as `onnx-train infer`, compared with onnxruntime's outputs to 1e-4 relative.
final class InferenceFixtureTests: XCTestCase {
    func testPyTorchExportsMatchOnnxruntime() throws {
        let cases = try Fixtures.cases(in: "inference")
        XCTAssertEqual(cases.count, 10, "the fixture list changed; update this test deliberately")
        for name in cases {
            let testCase = try BackendTestCase(directory: Fixtures.path("inference/\(name)"))
            XCTAssertFalse(testCase.dataSets.isEmpty, "\(name) has no data sets")
            for set in testCase.dataSets {
                var feeds: [String: Value] = [:]
                for (info, value) in zip(testCase.model.graph.feedInputs, set.inputs) { feeds[info.name] = value }
                let outputs = try runModel(testCase.model, feeds: feeds)
                XCTAssertEqual(outputs.count, set.outputs.count, name)
                for ((outName, actual), expected) in zip(outputs, set.outputs) {
                    assertMatches(actual, expected, tolerance: Tolerance(rtol: 1e-4, atol: 1e-6), "\(name)/\(outName)")
                }
            }
        }
    }

    /// The dynamic-batch MLP accepts another batch size and rejects a mismatched feature width.
    func testSymbolicBatchDimension() throws {
        let model = try Model(contentsOf: Fixtures.path("inference/mlp_dynamic_opset17/model.onnx"))
        let session = try InferenceSession(model: model)
        guard let input = session.inputs.first, case .tensor(_, let shape?) = input.type, let width = shape.last,
              case .value(let features) = width else {
            return XCTFail("unexpected input declaration")
        }
        let ok = try session.run(tensors: [input.name: Tensor(zeros: .float32, shape: [7, features])])
        XCTAssertEqual(ok.values.first?.shape.first, 7)
        XCTAssertThrowsError(try session.run(tensors: [input.name: Tensor(zeros: .float32, shape: [7, features + 1])])) { error in
            XCTAssertTrue("\(error)".contains(input.name), "\(error)")
        }
    }
}
