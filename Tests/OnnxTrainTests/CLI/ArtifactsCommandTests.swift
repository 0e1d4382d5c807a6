import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// `onnx-train artifacts` through the built binary: the README's commands, the files it writes,
/// and one clear line for each kind of bad input.
extension CLITests {
    static let repository = Fixtures.repository

    func temporaryFolder() throws -> String {
        let path = NSTemporaryDirectory() + "onnx-train-artifacts-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testArtifactsThenRunAsTheReadmeShows() throws {
        let root = Self.repository
        let folder = try temporaryFolder()
        let art = folder + "/digits-artifacts"
        let made = try run(["artifacts", root + "/Examples/digits/model.onnx", "--loss", "cross-entropy", "--optimizer", "adamw",
                            "--out", art, "--gradient-graph"])
        XCTAssertEqual(made.status, 0, made.stderr)
        XCTAssertTrue(made.stdout.contains("trained: 6 parameters (50826 values); frozen: none"), made.stdout)
        for file in ["training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint", "gradient_graph.onnx"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: art + "/" + file), file)
        }
        // The same files onnxruntime made from the same model: same parameters, same trajectory.
        let trained = try run(["run", art, "--data", root + "/Examples/digits/train.npz", "--eval-data", root + "/Examples/digits/test.npz",
                               "--batch-size", "32", "--epochs", "1", "--lr", "0.002", "--no-shuffle", "--out", folder + "/run", "--quiet"])
        XCTAssertEqual(trained.status, 0, trained.stderr)
        let ours = try String(contentsOfFile: folder + "/run/metrics.csv", encoding: .utf8)
        let theirs = try run(["run", root + "/Examples/digits", "--data", root + "/Examples/digits/train.npz", "--eval-data", root + "/Examples/digits/test.npz",
                              "--batch-size", "32", "--epochs", "1", "--lr", "0.002", "--no-shuffle", "--out", folder + "/ort-run", "--quiet"])
        XCTAssertEqual(theirs.status, 0, theirs.stderr)
        let reference = try String(contentsOfFile: folder + "/ort-run/metrics.csv", encoding: .utf8)
        let losses = { (csv: String) in csv.split(separator: "\n").dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false)[2] } }
        XCTAssertEqual(losses(ours), losses(reference), "metrics from our artifacts and onnxruntime's differ")
        // The gradient graph trains too.
        let graph = try run(["run", art + "/gradient_graph.onnx", "--params", art + "/checkpoint", "--data", root + "/Examples/digits/train.npz",
                             "--batch-size", "32", "--steps", "3", "--lr", "0.002", "--out", folder + "/graph-run", "--quiet"])
        XCTAssertEqual(graph.status, 0, graph.stderr)
        // inspect names no op without a gradient rule.
        let inspected = try run(["inspect", root + "/Examples/digits/model.onnx"])
        XCTAssertTrue(inspected.stdout.contains("without a gradient rule: none"), inspected.stdout)
    }

    func testRunTrainsAnInferenceModelDirectly() throws {
        // run MODEL.onnx --loss ...: the artifacts are built in memory, saved in OUT/artifacts, and
        // the run equals one on the artifact folder `artifacts` writes (same metrics).
        let root = Self.repository
        let folder = try temporaryFolder()
        let common = ["--data", root + "/Examples/digits/train.npz", "--batch-size", "32", "--steps", "6", "--lr", "0.002", "--no-shuffle", "--quiet"]
        let direct = try run(["run", root + "/Examples/digits/model.onnx", "--loss", "cross-entropy", "--out", folder + "/direct"] + common)
        XCTAssertEqual(direct.status, 0, direct.stderr)
        for file in ["training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/direct/artifacts/" + file), file)
        }
        let made = try run(["artifacts", root + "/Examples/digits/model.onnx", "--loss", "cross-entropy", "--out", folder + "/art"])
        XCTAssertEqual(made.status, 0, made.stderr)
        let viaFolder = try run(["run", folder + "/art", "--out", folder + "/via-folder"] + common)
        XCTAssertEqual(viaFolder.status, 0, viaFolder.stderr)
        XCTAssertEqual(try String(contentsOfFile: folder + "/direct/metrics.csv", encoding: .utf8),
                       try String(contentsOfFile: folder + "/via-folder/metrics.csv", encoding: .utf8))
        try assertFails(["run", root + "/Examples/digits", "--loss", "mse", "--out", folder + "/x"] + common, code: 5, mentioning: ["not a model file"])
    }

    func testArtifactsBadInputIsOneLine() throws {
        let root = Self.repository
        let folder = try temporaryFolder()
        let model = root + "/Examples/digits/model.onnx"
        try assertFails(["artifacts", model, "--loss", "hinge", "--out", folder + "/a"], code: 5, mentioning: ["unknown loss 'hinge'"])
        try assertFails(["artifacts", model, "--loss", "mse", "--optimizer", "lion", "--out", folder + "/a"], code: 5, mentioning: ["unknown optimizer 'lion'"])
        try assertFails(["artifacts", model, "--loss", "mse", "--frozen", "fc9.weight", "--out", folder + "/a"], code: 5,
                        mentioning: ["no initializer 'fc9.weight'", "fc1.weight"])
        try assertFails(["artifacts", model, "--loss", "output:nothing", "--out", folder + "/a"], code: 5, mentioning: ["no output 'nothing'"])
        try assertFails(["artifacts", root + "/Examples/digits/no-such.onnx", "--loss", "mse", "--out", folder + "/a"], code: 3, mentioning: ["no-such.onnx"])
    }

    func testArtifactsStopAtAnOpWithoutAGradientRule() throws {
        // Hardmax has no gradient: the message names the op, the node and the parameter behind it.
        var graph = Graph()
        graph.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(2), .value(3)]))]
        graph.setInitializer("w", Tensor(shape: [3, 3], scalars: [Float](repeating: 0.5, count: 9)))
        graph.nodes = [Node(opType: "MatMul", name: "mm", inputs: ["x", "w"], outputs: ["h"]),
                       Node(opType: "Hardmax", name: "hardmax", inputs: ["h"], outputs: ["y"])]
        graph.outputs = [ValueInfo(name: "y", type: .tensor(.float32, shape: [.value(2), .value(3)]))]
        var model = Model(graph: graph)
        model.irVersion = 8
        model.opsetImports = ["": 17]
        let folder = try temporaryFolder()
        try model.write(to: folder + "/m.onnx")
        try assertFails(["artifacts", folder + "/m.onnx", "--loss", "mse", "--out", folder + "/a"], code: 6,
                        mentioning: ["no gradient rule for Hardmax", "'hardmax'", "'w'"])
        let inspected = try run(["inspect", folder + "/m.onnx"])
        XCTAssertTrue(inspected.stdout.contains("without a gradient rule: 1 op type"), inspected.stdout)
        XCTAssertTrue(inspected.stdout.contains("  ai.onnx Hardmax"), inspected.stdout)
    }
}

extension TrainingFixtureTests {
    /// The README's library snippet for making a model trainable, as written there.
    func testReadmeArtifactsSnippet() throws {
        let previous = FileManager.default.currentDirectoryPath
        FileManager.default.changeCurrentDirectoryPath(CLITests.repository)
        defer { FileManager.default.changeCurrentDirectoryPath(previous) }
        let out = NSTemporaryDirectory() + "onnx-train-readme-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: out) }

        // --- README snippet (the folder name is the only change) ---
        let model = try Model(contentsOf: "Examples/digits/model.onnx")
        let artifacts = try TrainingArtifacts.build(from: model, options: .init(loss: .crossEntropy, optimizer: .adamW))
        try artifacts.write(to: out)
        let module = try TrainingModule(trainingModel: artifacts.trainingModel, state: artifacts.checkpoint, evalModel: artifacts.evalModel)
        let optimizer = try Optimizer(model: artifacts.optimizerModel, module: module)
        let batch = try Npz.readDictionary(contentsOf: "Examples/digits/train.npz")
        let loss = try module.trainStep(named: ["input": batch["input"]!, "labels": batch["labels"]!]).loss
        try optimizer.step()
        // --- end ---

        XCTAssertEqual(Double(loss), 2.3, accuracy: 0.1, "the first loss of a 10-class model starts near ln 10")
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/checkpoint"))
    }
}
