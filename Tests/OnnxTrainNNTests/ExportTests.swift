import Foundation
import OnnxTrain
import OnnxTrainNN
import OnnxTrainTestSupport
import XCTest

/// `exportONNX`: the written model gives PyTorch's outputs in an `InferenceSession` and in
/// `onnx-train infer`, and its initializers load back by name. With NN_EXPORT_DIR set, the
/// exports are kept there (Tests/Fixtures/scripts/check_torch_nn_export.py runs them in onnxruntime).
final class ExportTests: XCTestCase {
    func exportDirectory() throws -> (String, keep: Bool) {
        if let dir = ProcessInfo.processInfo.environment["NN_EXPORT_DIR"] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return (dir, true)
        }
        let dir = NSTemporaryDirectory() + "onnx-train-nn-export-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return (dir, false)
    }

    func check(_ name: String, _ model: some UnaryModule, tolerance: Float, file: StaticString = #filePath, line: UInt = #line) throws {
        let torch = try TorchCase(name)
        try model.loadStateDict(contentsOf: torch.weights)
        model.train()
        let (dir, keep) = try exportDirectory()
        defer { if !keep { try? FileManager.default.removeItem(atPath: dir) } }
        let path = "\(dir)/\(name).onnx"
        let example = torch.rows(torch.x, from: 0)
        try model.exportONNX(to: path, example: example)
        XCTAssertTrue(model.training, "exportONNX restores training mode", file: file, line: line)
        let expected = try torch.expected("output")

        let session = try InferenceSession(path: path)
        let out = try XCTUnwrap(try session.run(tensors: ["input": example.value])["output"], file: file, line: line)
        let dSession = maxDifference(out.scalars(as: Float.self), expected, "\(name) session", file: file, line: line)
        XCTAssertLessThan(dSession, tolerance, file: file, line: line)

        try Npy.write(example.value, to: "\(dir)/\(name)_input.npy")
        let r = try CLI.run(["infer", path, "--input", "input=\(dir)/\(name)_input.npy", "--output", "\(dir)/\(name)_out.npz"])
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        let cli = try XCTUnwrap(try Npz.readDictionary(contentsOf: "\(dir)/\(name)_out.npz")["output"], file: file, line: line)
        let dCLI = maxDifference(cli.scalars(as: Float.self), expected, "\(name) infer", file: file, line: line)
        XCTAssertLessThan(dCLI, tolerance, file: file, line: line)

        // Every parameter and running statistic is an initializer under its state_dict name
        // (num_batches_tracked is not read by the graph, and torch.onnx leaves it out too).
        let initializers = try Model(contentsOf: path).graph.initializers
        for (key, value) in model.stateDict() where value.dtype.isFloatingPoint {
            XCTAssertEqual(initializers[key]?.shape, value.shape, key, file: file, line: line)
        }
        print("\(name) export vs PyTorch: InferenceSession \(dSession), onnx-train infer \(dCLI)")
    }

    // Measured: 4.5e-8, 3.0e-7, 7.5e-8, 3.0e-8, 3.0e-8 (both in-process and through the CLI).
    func testNetExport() throws { try check("net", ProposalNet(), tolerance: 1e-7) }
    func testEncoderExport() throws { try check("encoder", TinyEncoder(), tolerance: 1e-6) }
    func testConvZooExport() throws { try check("convzoo", ConvZoo(), tolerance: 1e-6) }
    func testRecurrentZooExport() throws { try check("rnnzoo", RecurrentZoo(), tolerance: 1e-7) }
    func testCrossAttentionExport() throws { try check("attention", SequenceFirst(CrossAttention()), tolerance: 1e-7) }

    func testExportedInitializersLoadBack() throws {
        let torch = try TorchCase("net")
        let source = ProposalNet()
        try source.loadStateDict(contentsOf: torch.weights)
        let (dir, keep) = try exportDirectory()
        defer { if !keep { try? FileManager.default.removeItem(atPath: dir) } }
        try source.exportONNX(to: dir + "/roundtrip.onnx", example: torch.rows(torch.x, from: 0))
        let copy = ProposalNet()
        try copy.loadStateDict(contentsOf: dir + "/roundtrip.onnx")
        for (name, value) in source.stateDict() {
            XCTAssertEqual(copy.stateDict()[name]?.scalars(as: Float.self), value.scalars(as: Float.self), name)
        }
    }
}
