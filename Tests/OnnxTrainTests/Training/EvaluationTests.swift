import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// Issue 15 items 2, 3 and 5: eval graphs with BatchNormalization (training_mode 0 keeping the
/// running-stat outputs, which onnxruntime refuses), evaluation and export that never build the
/// training graph, and the walkthrough's gradient graph whose labels [1] and input [32, 10] share
/// the symbolic dimension 'batch_size'.
final class EvaluationTests: XCTestCase {
    static let root = TrainingFixtureTests.root

    // MARK: BatchNorm eval graphs (resnet_ce_adamw, written by make_training_fixtures.py)

    /// The trained state (onnxruntime's, running statistics included) evaluated on held-out data:
    /// the eval graph's loss and the exported model's logits must equal onnxruntime's run of the
    /// same network exported from PyTorch in eval mode.
    func testResNetWithBatchNormEvaluatesAndExportsLikeOnnxRuntime() throws {
        let folder = Self.root.appendingPathComponent("training/resnet_ce_adamw")
        let module = try TrainingModule.forEvaluation(path: folder.path, params: folder.appendingPathComponent("expected_checkpoint").path)
        let reference = try Npz.readDictionary(contentsOf: folder.appendingPathComponent("expected_eval.npz").path)
        let input = try XCTUnwrap(reference["input"]), labels = try XCTUnwrap(reference["labels"])
        let logits = try XCTUnwrap(reference["logits"]).scalars(as: Float.self)
        let statistics = module.state.parameters.filter { $0.name.contains("running_") }
        XCTAssertEqual(statistics.count, 12)
        let before = statistics.map { $0.data.scalars(as: Float.self) }

        // Eval graph: the mean loss over the two batches of 8 (the graph's batch is static).
        let batches = try Batches(arrays: ["input": input, "labels": labels], names: module.evalInputNames, batchSize: 8)
        var loss = 0.0
        for k in 0..<batches.count { loss += Double(try module.eval().evalStep(named: batches.batch(k)).loss) / Double(batches.count) }
        let expectedLoss = Double(try XCTUnwrap(reference["loss"]).scalars(as: Float.self)[0])
        XCTAssertEqual(loss, expectedLoss, accuracy: 1e-6 * abs(expectedLoss), "eval loss")
        // Inference mode passes the running statistics through: nothing changed.
        XCTAssertEqual(statistics.map { $0.data.scalars(as: Float.self) }, before)

        // Export the logits ("output" in the eval graph) and run the written model.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("resnet-export-\(getpid()).onnx").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try module.exportModelForInferencing(to: path, outputs: ["output"])
        let session = try InferenceSession(path: path)
        XCTAssertEqual(session.inputs.map(\.name), ["input"])
        var worst = 0.0
        for k in 0..<batches.count {
            let got = try XCTUnwrap(session.run(tensors: ["input": batches.batch(k)["input"]!])["output"]).scalars(as: Float.self)
            for (i, v) in got.enumerated() { worst = max(worst, Double(abs(v - logits[k * got.count + i]))) }
        }
        print("[resnet_ce_adamw] eval loss \(loss) vs \(expectedLoss); exported logits max difference \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-5)
        // The exported BatchNormalizations have Y only, as onnxruntime requires in inference mode.
        let batchNorms = try Model(contentsOf: path).graph.nodes.filter { $0.opType == "BatchNormalization" }
        XCTAssertEqual(batchNorms.count, 6)
        XCTAssertTrue(batchNorms.allSatisfy { $0.outputs.count == 1 }, "\(batchNorms.map(\.outputs))")

        // The commands: eval, export, and run with eval steps before and after training.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("resnet-cli-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let test = dir.appendingPathComponent("test.npz").path
        try Npz.write(["input": input, "labels": labels], to: test)
        let checkpoint = folder.appendingPathComponent("expected_checkpoint").path
        let e = try runCLI(["eval", folder.path, "--params", checkpoint, "--data", test, "--batch-size", "8"])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertTrue(e.stdout.contains("16 examples"), e.stdout)
        XCTAssertTrue(e.stdout.contains(String(format: "%.4f", expectedLoss)), "\(e.stdout) vs \(expectedLoss)")
        let x = try runCLI(["export", folder.path, "--params", checkpoint, "--output", dir.appendingPathComponent("m.onnx").path])
        XCTAssertEqual(x.status, 0, x.stderr)
        let r = try runCLI(["run", folder.path, "--data", folder.appendingPathComponent("data.npz").path, "--eval-data", test,
                            "--batch-size", "8", "--steps", "4", "--lr", "0.01", "--no-shuffle", "--out", dir.appendingPathComponent("run").path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = RunArtifacts.parseMetrics(try String(contentsOf: dir.appendingPathComponent("run/metrics.csv"), encoding: .utf8))
        XCTAssertGreaterThanOrEqual(rows.compactMap(\.evalLoss).count, 2, "\(rows)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/model.onnx").path))
    }

    // MARK: Evaluation without the training graph

    /// An artifact folder whose training graph holds an op without a kernel: eval and export work
    /// (the eval loss equals the intact folder's), a train step names the op.
    func testEvalAndExportDoNotBuildTheTrainingGraph() throws {
        let source = Self.root.appendingPathComponent("training/mlp_ce_adamw")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("unknown-op-artifacts-\(getpid())")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.copyItem(at: source, to: folder)
        defer { try? FileManager.default.removeItem(at: folder) }
        var training = try Model(contentsOf: source.appendingPathComponent("training_model.onnx").path)
        let index = try XCTUnwrap(training.graph.nodes.firstIndex { $0.opType == "ReluGrad" })
        training.graph.nodes[index].opType = "NoSuchTrainingOp"
        try training.write(to: folder.appendingPathComponent("training_model.onnx").path)

        let data = try Npz.readDictionary(contentsOf: source.appendingPathComponent("data.npz").path)
        let intact = try TrainingModule.forEvaluation(path: source.path, params: nil)
        let broken = try TrainingModule.forEvaluation(path: folder.path, params: nil)
        let batch = try Batches(arrays: data, names: broken.evalInputNames, batchSize: 8).batch(0)
        XCTAssertEqual(try broken.evalStep(named: batch).loss, try intact.evalStep(named: batch).loss)
        let exported = folder.appendingPathComponent("model.onnx").path
        try broken.exportModelForInferencing(to: exported, outputs: RunArtifacts.inferenceOutputs(of: broken))
        XCTAssertNoThrow(try InferenceSession(path: exported))
        XCTAssertThrowsError(try broken.trainStep(named: batch)) { error in
            XCTAssertTrue("\(error)".contains("NoSuchTrainingOp"), "\(error)")
        }

        // The commands: eval and export succeed on that folder.
        let evalRun = try runCLI(["eval", folder.path, "--data", source.appendingPathComponent("data.npz").path, "--batch-size", "8"])
        XCTAssertEqual(evalRun.status, 0, evalRun.stderr)
        XCTAssertTrue(evalRun.stdout.contains("32 examples"), evalRun.stdout)
        let exportRun = try runCLI(["export", folder.path, "--output", folder.appendingPathComponent("cli.onnx").path])
        XCTAssertEqual(exportRun.status, 0, exportRun.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("cli.onnx").path))
    }

    // MARK: The walkthrough's gradient graph (gradient/walkthrough, make_gradient_fixtures.py)

    /// The example the graph was exported with (input [32, 10], labels [1], both 'batch_size'):
    /// it runs, gives onnxruntime's outputs, and says once that 'batch_size' has two sizes.
    func testWalkthroughGradientGraphRunsOnItsOwnExample() throws {
        let folder = Self.root.appendingPathComponent("gradient/walkthrough")
        let model = try Model(contentsOf: folder.appendingPathComponent("gradient_graph.onnx").path)
        var feeds = try Npz.readDictionary(contentsOf: folder.appendingPathComponent("params.npz").path)
        for (name, t) in try Npz.readDictionary(contentsOf: folder.appendingPathComponent("example.npz").path) { feeds[name] = t }
        XCTAssertEqual(feeds["input"]?.shape, [32, 10])
        XCTAssertEqual(feeds["labels"]?.shape, [1])
        let expected = try Npz.readDictionary(contentsOf: folder.appendingPathComponent("example_expected.npz").path)

        final class Warnings: @unchecked Sendable { var lines: [String] = [] }
        let warnings = Warnings()
        var options = SessionOptions()
        options.warn = { warnings.lines.append($0) }
        let session = try InferenceSession(model: model, options: options)
        for _ in 0..<2 {
            let results = try session.run(tensors: feeds)
            XCTAssertEqual(Set(results.keys), Set(expected.keys))
            for (name, want) in expected {
                let got = try XCTUnwrap(results[name])
                XCTAssertEqual(got.shape, want.shape, name)
                XCTAssertNil(trainingTensorMismatch(got, want, label: name, rtol: 1e-5, atol: 1e-6))
            }
        }
        XCTAssertEqual(warnings.lines.count, 1, "\(warnings.lines)")
        XCTAssertTrue(warnings.lines.first?.contains("input 'labels' dimension 0 ('batch_size') is 1, but 'batch_size' is 32 in input 'input'") == true,
                      "\(warnings.lines)")

        // Fixed dimensions, ranks and element types are still checked.
        var wrong = feeds
        wrong["input"] = Tensor(zeros: .float32, shape: [32, 9])
        XCTAssertThrowsError(try session.run(tensors: wrong)) { XCTAssertTrue("\($0)".contains("input 'input' dimension 1 must be 10"), "\($0)") }
        wrong = feeds
        wrong["labels"] = Tensor(zeros: .float32, shape: [1])
        XCTAssertThrowsError(try session.run(tensors: wrong)) { XCTAssertTrue("\($0)".contains("must be tensor(int64)"), "\($0)") }
        wrong = feeds
        wrong["labels"] = Tensor(zeros: .int64, shape: [1, 1])
        XCTAssertThrowsError(try session.run(tensors: wrong)) { XCTAssertTrue("\($0)".contains("must have rank 1"), "\($0)") }

        // `infer` on the same feeds: exit 0, one warning line, onnxruntime's outputs.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("walkthrough-infer-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Npz.write(feeds, to: dir.appendingPathComponent("feeds.npz").path)
        let r = try runCLI(["infer", folder.appendingPathComponent("gradient_graph.onnx").path, "--inputs", dir.appendingPathComponent("feeds.npz").path,
                            "--output", dir.appendingPathComponent("out.npz").path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").filter { $0.contains("batch_size") }.count, 1, r.stderr)
        let written = try Npz.readDictionary(contentsOf: dir.appendingPathComponent("out.npz").path)
        for (name, want) in expected {
            XCTAssertNil(trainingTensorMismatch(try XCTUnwrap(written[name], name), want, label: name, rtol: 1e-5, atol: 1e-6))
        }
    }

    /// `run` trains the walkthrough graph on per-example labels (the replay against onnxruntime's
    /// 20 SGD steps is TrainingFixtureTests.testGradientGraphWalkthrough).
    func testWalkthroughGradientGraphTrainsWithRun() throws {
        let folder = Self.root.appendingPathComponent("gradient/walkthrough")
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("walkthrough-run-\(getpid())")
        defer { try? FileManager.default.removeItem(at: out) }
        let r = try runCLI(["run", folder.appendingPathComponent("gradient_graph.onnx").path,
                            "--params", folder.appendingPathComponent("params.npz").path,
                            "--data", folder.appendingPathComponent("data.npz").path,
                            "--optimizer", "sgd", "--lr", "0.01", "--batch-size", "8", "--steps", "8", "--no-shuffle", "--out", out.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = RunArtifacts.parseMetrics(try String(contentsOf: out.appendingPathComponent("metrics.csv"), encoding: .utf8))
        let losses = rows.compactMap(\.loss)
        XCTAssertEqual(losses.count, 8)
        let expected = try Npz.readDictionary(contentsOf: folder.appendingPathComponent("expected.npz").path)["losses"]!.scalars(as: Float.self)
        for (got, want) in zip(losses, expected) { XCTAssertEqual(got, Double(want), accuracy: 1e-6 * abs(Double(want))) }
    }

    // MARK: helpers

    /// Runs the built onnx-train binary.
    func runCLI(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> CLI.Result {
        try CLI.run(arguments, file: file, line: line)
    }
}
