import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// End-to-end tests of the built `onnx-train` binary: output, files written, stderr and exit codes.
final class CLITests: XCTestCase {
    func run(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> CLI.Result {
        try CLI.run(arguments, file: file, line: line)
    }

    func assertFails(_ arguments: [String], code: Int32, mentioning fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        try CLI.assertFails(arguments, code: code, mentioning: fragments, file: file, line: line)
    }

    func testInspectTinyModel() throws {
        let r = try run(["inspect", DataFixtures.data("tiny.onnx")])
        XCTAssertEqual(r.status, 0, r.stderr)
        for expected in ["ir_version: 8", "producer: make_data_fixtures", "  ai.onnx 17", "  x: tensor(float) [batch, 3]",
                         "  y: tensor(float) [batch, 3]", "  s: tensor(int64) [2]", "initializers: 1 (12 bytes)",
                         "ops: 3 nodes", "    Add 1", "    Relu 1", "    Shape 1", "not yet supported: none (every op has a kernel)"] {
            XCTAssertTrue(r.stdout.contains(expected + "\n"), "missing '\(expected)' in:\n\(r.stdout)")
        }
    }

    func testInspectListsOpsWithoutKernelsInsteadOfFailing() throws {
        let r = try run(["inspect", DataFixtures.data("nokernel.onnx")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("not yet supported: 1 op type\n  com.example.nokernel FrobnicateNotReal (opset 3)\n"), r.stdout)
    }

    func testInspectOnnxruntimeTrainingModel() throws {
        // onnxruntime-training's training graph: com.microsoft gradient ops, many domains imported.
        let path = DataFixtures.root + "/training/mlp_ce_adamw/training_model.onnx"
        let r = try run(["inspect", path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("  com.microsoft 1\n"), r.stdout)
        XCTAssertTrue(r.stdout.contains("  com.microsoft:\n"), r.stdout)
        XCTAssertTrue(r.stdout.contains("InPlaceAccumulatorV2 "), r.stdout)
        // Every com.microsoft op is either listed as unsupported or has a registered kernel.
        let model = try Model(contentsOf: path)
        for node in model.graph.nodes where node.domain == "com.microsoft" {
            let supported = OpRegistry.standard.resolve(domain: node.domain, opType: node.opType, opset: 1) != nil
            XCTAssertEqual(r.stdout.contains("  com.microsoft \(node.opType) (opset 1)\n"), !supported, node.opType)
        }
    }

    func testInferWritesEveryOutputToNpz() throws {
        let dir = try DataFixtures.temporaryDirectory(self)
        let r = try run(["infer", DataFixtures.data("tiny.onnx"), "--inputs", DataFixtures.data("tiny_feeds.npz"), "--output", dir + "/out.npz"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = try Npz.readDictionary(contentsOf: dir + "/out.npz")
        let expected = try Npz.readDictionary(contentsOf: DataFixtures.data("tiny_expected.npz"))
        XCTAssertEqual(Set(out.keys), ["y", "s"])
        XCTAssertEqual(out["y"]?.scalars(as: Float.self), expected["y"]?.scalars(as: Float.self))
        XCTAssertEqual(out["y"]?.shape, [2, 3])
        XCTAssertEqual(out["s"]?.scalars(as: Int64.self), [2, 3])
    }

    /// `onnx-train infer` on the PyTorch exports (MLP, CNN, GPT at opsets 14 and 17), fed straight
    /// from each ONNX test-data folder, matches onnxruntime's outputs to 1e-4 relative.
    func testInferMatchesOnnxruntimeOnPyTorchExports() throws {
        let dir = try DataFixtures.temporaryDirectory(self)
        let inference = Fixtures.path("inference")
        for name in ["mlp_opset14", "mlp_opset17", "cnn_opset14", "cnn_opset17", "gpt_opset14", "gpt_opset17"] {
            let data = "\(inference)/\(name)/test_data_set_0"
            let r = try run(["infer", "\(inference)/\(name)/model.onnx", "--inputs", data, "--output", "\(dir)/\(name).npz"])
            XCTAssertEqual(r.status, 0, "\(name): \(r.stderr)")
            let out = try Npz.readDictionary(contentsOf: "\(dir)/\(name).npz")
            let model = try Model(contentsOf: "\(inference)/\(name)/model.onnx")
            for (i, info) in model.graph.outputs.enumerated() {
                let expected = try TensorProtoFiles.read(contentsOf: "\(data)/output_\(i).pb").tensor
                let actual = try XCTUnwrap(out[info.name], "\(name): no output \(info.name)")
                if let reason = compareTensors(actual, expected, tolerance: Tolerance(rtol: 1e-4, atol: 1e-6), label: "\(name)/\(info.name)") {
                    XCTFail(reason)
                }
            }
        }
    }

    func testInferWithNpyInputAndPbFolders() throws {
        let dir = try DataFixtures.temporaryDirectory(self)
        // --input NAME=FILE.npy, outputs to a folder of .pb files.
        var r = try run(["infer", DataFixtures.data("tiny.onnx"), "--input", "x=" + DataFixtures.data("tiny_x.npy"), "--output", dir + "/pb"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let outputs = try TensorProtoFiles.readFolder(dir + "/pb")
        XCTAssertEqual(outputs.map(\.name), ["y", "s"])
        XCTAssertEqual(outputs[0].tensor.scalars(as: Float.self), [0, 0, 0, 0, 0, 1.5])
        // A folder of .pb as --inputs (an unnamed TensorProto feeds the input at its position).
        try FileManager.default.createDirectory(atPath: dir + "/feeds", withIntermediateDirectories: true)
        try TensorProtoFiles.write(try Npy.read(contentsOf: DataFixtures.data("tiny_x.npy")), name: "", to: dir + "/feeds/input_0.pb")
        r = try run(["infer", DataFixtures.data("tiny.onnx"), "--inputs", dir + "/feeds", "--output", dir + "/o.safetensors"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let st = try SafeTensors.read(contentsOf: dir + "/o.safetensors").dictionary
        XCTAssertEqual(st["y"]?.scalars(as: Float.self), [0, 0, 0, 0, 0, 1.5])
        XCTAssertEqual(st["s"]?.scalars(as: Int64.self), [2, 3])
        // Without --output, a summary.
        r = try run(["infer", DataFixtures.data("tiny.onnx"), "--inputs", DataFixtures.data("tiny_feeds.npz")])
        XCTAssertEqual(r.stdout, "y: tensor(float) [2, 3] [0.0, 0.0, 0.0, 0.0, 0.0, 1.5]\ns: tensor(int64) [2] [2, 3]\n")
    }

    func testBadFilesGiveOneLineAndAStableCode() throws {
        let dir = try DataFixtures.temporaryDirectory(self)
        FileManager.default.createFile(atPath: dir + "/empty.onnx", contents: Data())
        var rng = SplitMix(seed: 3)
        FileManager.default.createFile(atPath: dir + "/random.onnx", contents: Data((0..<512).map { _ in UInt8(truncatingIfNeeded: rng.next()) }))
        for command in ["inspect", "infer"] {
            try assertFails([command, dir + "/empty.onnx"], code: 4, mentioning: ["empty.onnx", "empty"])
            try assertFails([command, dir + "/random.onnx"], code: 4, mentioning: ["random.onnx"])
            try assertFails([command, dir + "/missing.onnx"], code: 3, mentioning: ["missing.onnx"])
            try assertFails([command, dir], code: 3, mentioning: [dir])
        }
    }

    func testInferErrorsMapToTheirCodes() throws {
        let tiny = DataFixtures.data("tiny.onnx")
        try assertFails(["infer", DataFixtures.data("nokernel.onnx"), "--input", "x=" + DataFixtures.data("tiny_x.npy")],
                        code: 6, mentioning: ["FrobnicateNotReal", "com.example.nokernel", "opset 3"])
        try assertFails(["infer", tiny], code: 5, mentioning: ["missing input 'x'"])
        try assertFails(["infer", tiny, "--input", "x=" + DataFixtures.data("int64.npy")], code: 5, mentioning: ["tensor(float)", "tensor(int64)"])
        try assertFails(["infer", tiny, "--input", "q=" + DataFixtures.data("tiny_x.npy"), "--input", "x=" + DataFixtures.data("tiny_x.npy")],
                        code: 5, mentioning: ["unknown input 'q'"])
        try assertFails(["infer", tiny, "--input", "x=" + DataFixtures.data("fortran.npy")], code: 4, mentioning: ["fortran.npy", "Fortran"])
        try assertFails(["infer", tiny, "--inputs", DataFixtures.data("bad_member.npz")], code: 4, mentioning: ["bad_member.npz", "broken"])
        try assertFails(["infer", tiny, "--inputs", DataFixtures.data("nothing.npz")], code: 3, mentioning: ["nothing.npz"])
        try assertFails(["infer", tiny, "--inputs", DataFixtures.data("tiny_feeds.npz"), "--output", "/proc/forbidden/out.npz"],
                        code: 3, mentioning: ["/proc/forbidden/out.npz"])
        let usage = try run(["infer", tiny, "--input", "x"])
        XCTAssertEqual(usage.status, 64, "argument parser's usage code")
    }

    func testHelpDocumentsExitCodes() throws {
        for command in [["--help"], ["inspect", "--help"], ["infer", "--help"]] {
            let r = try run(command)
            XCTAssertEqual(r.status, 0)
            XCTAssertTrue(r.stdout.contains("Exit codes:"), "\(command): \(r.stdout)")
        }
    }
}
