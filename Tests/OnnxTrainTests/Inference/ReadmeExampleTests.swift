import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// The README's library snippet, as written there (paths relative to the repository root).
final class ReadmeExampleTests: XCTestCase {
    func testReadmeInferenceSnippet() throws {
        let root = URL(fileURLWithPath: Fixtures.root).deletingLastPathComponent().deletingLastPathComponent().path
        let previous = FileManager.default.currentDirectoryPath
        FileManager.default.changeCurrentDirectoryPath(root)
        defer { FileManager.default.changeCurrentDirectoryPath(previous) }

        let session = try InferenceSession(path: "Tests/Fixtures/inference/mlp_opset17/model.onnx")
        let outputs = try session.run(tensors: ["input": Tensor(zeros: .float32, shape: [4, 20])])

        XCTAssertEqual(outputs.count, 1)
        XCTAssertEqual(outputs.values.first?.shape, [4, 10])
    }
}
