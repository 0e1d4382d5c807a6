import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// End-to-end: runs the built `onnx-train run` on the committed fixtures.
final class RunCommandTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: Fixtures.root)

    var work: URL!

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        addTeardownBlock { [work] in try? FileManager.default.removeItem(at: work!) }
    }

    /// Runs the binary in `work`; returns (exit code, stderr).
    func run(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> (Int32, String) {
        let r = try CLI.run(arguments, in: work, file: file, line: line)
        return (r.status, r.stderr)
    }

    func losses(_ csv: URL) throws -> [Float] {
        let lines = try String(contentsOf: csv, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.first, "step,loss,learning_rate,batch")
        return lines.dropFirst().map { Float($0.split(separator: ",")[1])! }
    }

    func testArtifactRunMatchesOnnxRuntimeAndWritesCheckpoint() throws {
        let folder = Self.fixtures.appendingPathComponent("training/mlp_ce_adamw")
        let (status, stderr) = try run(["run", folder.path, "--data", folder.appendingPathComponent("data.npz").path, "--batch-size", "8",
                                        "--steps", "30", "--lr", "0.01", "--no-shuffle", "--log", "log.csv", "--out", "out"])
        XCTAssertEqual(status, 0, stderr)
        let expected = try Npz.readDictionary(contentsOf: folder.appendingPathComponent("expected.npz").path)
        let want = expected["losses"]!.scalars(as: Float.self)
        let got = try losses(work.appendingPathComponent("log.csv"))
        XCTAssertEqual(got.count, 30)
        for (a, b) in zip(got, want) { XCTAssertEqual(a, b, accuracy: 1e-6 * abs(b)) }
        let state = try CheckpointState.load(from: work.appendingPathComponent("out/checkpoint").path)
        XCTAssertEqual(state.optimizerGroups["group0"]?.step, 30)
        for p in state.parameters {
            let w = expected["param:\(p.name)"]!.scalars(as: Float.self)
            XCTAssertLessThanOrEqual(TrainingFixtureTests.relativeDifference(p.data.scalars(as: Float.self), w), 1e-4, p.name)
        }
    }

    func testGradientGraphRun() throws {
        let folder = Self.fixtures.appendingPathComponent("gradient/mlp")
        let (status, stderr) = try run(["run", folder.appendingPathComponent("gradient_graph.onnx").path,
                                        "--params", folder.appendingPathComponent("params.npz").path, "--optimizer", "sgd",
                                        "--data", folder.appendingPathComponent("data.npz").path, "--batch-size", "6",
                                        "--steps", "20", "--lr", "0.5", "--no-shuffle", "--log", "log.csv", "--out", "out"])
        XCTAssertEqual(status, 0, stderr)
        let want = try Npz.readDictionary(contentsOf: folder.appendingPathComponent("expected.npz").path)["losses"]!.scalars(as: Float.self)
        let got = try losses(work.appendingPathComponent("log.csv"))
        XCTAssertEqual(got.count, 20)
        for (a, b) in zip(got, want) { XCTAssertEqual(a, b, accuracy: 1e-6 * abs(b)) }
        XCTAssertEqual(try CheckpointState.load(from: work.appendingPathComponent("out/checkpoint").path).parameters.count, 4)
    }

    func testBadInputsGiveOneLineAndKeepTheCheckpoint() throws {
        let folder = Self.fixtures.appendingPathComponent("training/mlp_ce_sgd")
        let data = try Npz.readDictionary(contentsOf: folder.appendingPathComponent("data.npz").path)
        let input = data["input"]!, labels = data["labels"]!
        try Npz.write(["input": input], to: work.appendingPathComponent("nolabels.npz").path)
        var bad = labels.copied()
        try bad.withUnsafeMutableBufferPointer(as: Int64.self) { $0[13] = 9 }
        try Npz.write(["input": input, "labels": bad], to: work.appendingPathComponent("badlabel.npz").path)
        try Npz.write(["input": input, "labels": Batches.rows(of: labels, from: 0, count: 30)], to: work.appendingPathComponent("odd.npz").path)
        var checkpoint = try Data(contentsOf: folder.appendingPathComponent("checkpoint"))
        checkpoint[4] = UInt8(ascii: "X")
        try checkpoint.write(to: work.appendingPathComponent("wrong.ckpt"))
        try checkpoint.prefix(200).write(to: work.appendingPathComponent("short.ckpt"))

        let common = ["run", folder.path, "--batch-size", "8", "--steps", "5", "--lr", "0.05", "--no-shuffle"]
        let dataFile = folder.appendingPathComponent("data.npz").path
        let cases: [([String], String)] = [
            (["--data", "nolabels.npz"], "no array 'labels' (the graph expects: input, labels"),
            (["--data", "badlabel.npz"], "label 9 at element 13, outside the 4 classes"),
            (["--data", "odd.npz"], "'labels' has 30 rows, which do not split into 4 equal batches"),
            (["--data", dataFile, "--params", "wrong.ckpt"], "wrong file identifier 'XDTC'"),
            (["--data", dataFile, "--params", "short.ckpt"], "not a valid onnxruntime checkpoint"),
            (["--data", dataFile, "--params", Self.fixtures.appendingPathComponent("checkpoint/mlp/ort_full.ckpt").path],
             "checkpoint parameter 'fc1.weight' has shape [5, 4], the graph expects [32, 16]"),
        ]
        for (extra, message) in cases {
            let (status, stderr) = try run(common + extra + ["--out", "untouched"])
            XCTAssertTrue((1...127).contains(status), "\(extra): exit \(status)")
            XCTAssertTrue(stderr.contains(message), "\(extra): \(stderr)")
            XCTAssertEqual(stderr.split(separator: "\n").count, 1, stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: work.appendingPathComponent("untouched/checkpoint").path))
        }

        // A diverging run stops at the first non-finite loss and keeps the last good state.
        let (status, stderr) = try run(["run", folder.path, "--batch-size", "8", "--steps", "30", "--lr", "1e30", "--no-shuffle",
                                        "--data", dataFile, "--log", "nan.csv", "--out", "nan"])
        XCTAssertEqual(status, 8, stderr)
        XCTAssertTrue(stderr.contains("the loss is nan at step 2"), stderr)
        let state = try CheckpointState.load(from: work.appendingPathComponent("nan/checkpoint").path)
        XCTAssertEqual(state.optimizerGroups["group0"]?.step, 1)
        XCTAssertTrue(state.parameters.allSatisfy { $0.data.scalars(as: Float.self).allSatisfy(\.isFinite) })
        XCTAssertEqual(try losses(work.appendingPathComponent("nan.csv")).count, 1)
    }

    /// Labels equal to the loss's ignore_index are allowed; others outside the classes are not.
    /// Also: momentum SGD through the built graph, and periodic checkpoints.
    func testIgnoreIndexMomentumAndPeriodicCheckpoints() throws {
        let folder = Self.fixtures.appendingPathComponent("gradient/mlp")  // SoftmaxCrossEntropyLoss ignore_index -100
        let data = try Npz.readDictionary(contentsOf: folder.appendingPathComponent("data.npz").path)
        var labels = data["labels"]!.copied()
        try labels.withUnsafeMutableBufferPointer(as: Int64.self) { $0[2] = -100 }
        try Npz.write(["input": data["input"]!, "labels": labels], to: work.appendingPathComponent("ignored.npz").path)
        try labels.withUnsafeMutableBufferPointer(as: Int64.self) { $0[5] = -1 }
        try Npz.write(["input": data["input"]!, "labels": labels], to: work.appendingPathComponent("negative.npz").path)
        let common = ["run", folder.appendingPathComponent("gradient_graph.onnx").path, "--params", folder.appendingPathComponent("params.npz").path,
                      "--batch-size", "6", "--lr", "0.1", "--no-shuffle"]
        var (status, stderr) = try run(common + ["--data", "ignored.npz", "--steps", "7", "--optimizer", "momentum", "--out", "m", "--checkpoint-every", "3", "--log", "m.csv"])
        XCTAssertEqual(status, 0, stderr)
        XCTAssertEqual(try losses(work.appendingPathComponent("m.csv")).count, 7)
        let state = try CheckpointState.load(from: work.appendingPathComponent("m/checkpoint").path)
        XCTAssertEqual(state.optimizerGroups["group0"]?.step, 7)
        XCTAssertEqual(state.optimizerGroups["group0"]?.parameterStates["fc1.weight"]?.keys.sorted(), ["momentum0"])
        XCTAssertFalse(state.optimizerGroups["group0"]!.parameterStates["fc1.weight"]!["momentum0"]!.scalars(as: Float.self).allSatisfy { $0 == 0 },
                       "the velocity is kept in the optimizer state")
        (status, stderr) = try run(common + ["--data", "negative.npz", "--steps", "2"])
        XCTAssertEqual(status, 5, stderr)
        XCTAssertTrue(stderr.contains("label -1 at element 5, outside the 3 classes") && stderr.contains("ignore_index -100"), stderr)
    }
}
