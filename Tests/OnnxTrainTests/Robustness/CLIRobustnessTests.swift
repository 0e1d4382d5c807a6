import Foundation
import XCTest
@testable import OnnxTrain

/// The command line facing hostile or mistaken input (issue 13): one error line for argument
/// errors, negative numbers, 64-bit integers printed exactly, special files as data.
extension CLITests {
    private func constantModel(_ dir: String) throws -> String {
        var graph = Graph()
        graph.nodes = [
            Node(opType: "Constant", outputs: ["big"], attributes: ["value": .tensor(Tensor(shape: [3], scalars: [Int64.max, Int64.max - 100, Int64.min]))]),
            Node(opType: "Constant", outputs: ["ubig"], attributes: ["value": .tensor(Tensor(shape: [2], scalars: [UInt64.max, UInt64(1) << 63]))]),
        ]
        graph.outputs = [ValueInfo(name: "big", type: .tensor(.int64, shape: [.value(3)])), ValueInfo(name: "ubig", type: .tensor(.uint64, shape: [.value(2)]))]
        var model = Model(graph: graph)
        model.irVersion = 8
        model.opsetImports = ["": 17]
        let path = dir + "/constants.onnx"
        try model.write(to: path)
        return path
    }

    func testInferPrintsExtremeIntegersExactly() throws {
        let dir = try DataFixtures.temporaryDirectory(self)
        let model = try constantModel(dir)
        // Int64(Double(Int64.max)) trapped (exit 132) before.
        let r = try run(["infer", model])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("big: tensor(int64) [3] [9223372036854775807, 9223372036854775707, -9223372036854775808]"), r.stdout)
        XCTAssertTrue(r.stdout.contains("ubig: tensor(uint64) [2] [18446744073709551615, 9223372036854775808]"), r.stdout)
        // A test_data_set folder of a model without inputs holds only output_N.pb: none is a feed.
        try TensorProtoFiles.writeFolder([("big", Tensor(shape: [3], scalars: [Int64(1), 2, 3]))], to: dir + "/test_data_set_0", prefix: "output")
        let s = try run(["infer", model, "--inputs", dir + "/test_data_set_0"])
        XCTAssertEqual(s.status, 0, s.stderr)
    }

    func testArgumentErrorsAreOneLine() throws {
        let tiny = DataFixtures.data("tiny.onnx")
        try assertFails(["infer", tiny, "--bogus"], code: 64, mentioning: ["--bogus"])
        try assertFails(["infer", tiny, "--seed"], code: 64, mentioning: ["--seed"])
        try assertFails(["nosuchcommand"], code: 64, mentioning: ["nosuchcommand"])
        try assertFails(["infer"], code: 64, mentioning: ["model"])
        // A negative number is a value, not an option: reported as an invalid seed, not a missing one.
        let negative = try run(["infer", tiny, "--seed", "-5"])
        XCTAssertEqual(negative.status, 64)
        XCTAssertTrue(negative.stderr.hasPrefix("onnx-train: error: ") && negative.stderr.contains("-5"), negative.stderr)
        XCTAssertFalse(negative.stderr.contains("Missing value"), negative.stderr)
        XCTAssertEqual(negative.stderr.split(separator: "\n").count, 1, negative.stderr)
        let help = try run(["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("130 interrupted"), help.stdout)
        // SIGTERM's exit code was missing from every command's help.
        for command in [[], ["run"], ["eval"], ["infer"]] {
            let h = try run(command + ["--help"])
            XCTAssertEqual(h.status, 0)
            XCTAssertTrue(h.stdout.replacingOccurrences(of: "\n", with: " ").split(separator: " ").joined(separator: " ").contains("143 stopped by SIGTERM"), "\(command): \(h.stdout)")
        }
    }

    func testSpecialFilesAreRefusedWithOneLine() throws {
        let dir = try DataFixtures.temporaryDirectory(self)
        let fifo = dir + "/model.onnx"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        try assertFails(["inspect", fifo], code: 3, mentioning: ["named pipe"])
        try assertFails(["infer", DataFixtures.data("tiny.onnx"), "--input", "x=/dev/null"], code: 3, mentioning: ["/dev/null: is a character device"])
        let folder = DataFixtures.root + "/training/mlp_ce_sgd"
        try assertFails(["run", folder, "--data", "/dev/null", "--batch-size", "4", "--lr", "0.1", "--steps", "1", "--out", dir + "/out"], code: 3,
                        mentioning: ["/dev/null: is a character device, not a regular file"])
    }

    // MARK: eval and export

    private var training: String { DataFixtures.root + "/training" }

    func testAnotherModelsCheckpointIsNamedNotTrainingStopped() throws {
        // eval and export with another model's checkpoint exited 8 ("training stopped") on the
        // first gradient buffer without its parameter.
        let dir = try DataFixtures.temporaryDirectory(self)
        let mlp = training + "/mlp_ce_sgd", cnn = training + "/cnn_ce_adamw/checkpoint"
        let lacks = [cnn, "the checkpoint does not fit this model: it has no 'fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias', which the graph trains",
                     "(the checkpoint has: conv.weight"]
        try assertFails(["eval", mlp, "--params", cnn, "--data", mlp + "/data.npz"], code: 5, mentioning: lacks)
        try assertFails(["export", mlp, "--params", cnn, "--output", dir + "/m.onnx"], code: 5, mentioning: lacks)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m.onnx"))
        // Same names, other shapes.
        let small = DataFixtures.root + "/checkpoint/mlp/ort_full.ckpt"
        try assertFails(["eval", mlp, "--params", small, "--data", mlp + "/data.npz"], code: 5,
                        mentioning: [small, "checkpoint parameter 'fc1.weight' has shape [5, 4], the graph expects [32, 16]"])
        // run --params says the same.
        try assertFails(["run", mlp, "--params", cnn, "--data", mlp + "/data.npz", "--batch-size", "8", "--steps", "1", "--lr", "0.1", "--out", dir + "/r"],
                        code: 5, mentioning: ["--params \(cnn): ", "does not fit this model", "'fc1.weight'"])
    }

    /// The fixture's eval data as a CSV table: 16 feature columns, then `labels` written by `label`.
    private func csvTable(_ path: String, label: (Int64) -> String = { "\($0)" }, poison: Int? = nil) throws {
        let arrays = try Npz.read(contentsOf: training + "/mlp_ce_sgd/data.npz")
        let input = try XCTUnwrap(arrays.first { $0.name == "input" }?.tensor), labels = try XCTUnwrap(arrays.first { $0.name == "labels" }?.tensor)
        let x = input.scalars(as: Float.self), y = labels.scalars(as: Int64.self), width = input.shape[1]
        var text = (0..<width).map { "f\($0)" }.joined(separator: ",") + ",labels\n"
        for r in 0..<y.count {
            let row = (0..<width).map { r == poison && $0 == 0 ? "nan" : "\(x[r * width + $0])" }
            text += row.joined(separator: ",") + "," + label(y[r]) + "\n"
        }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func testNaNEvalLossIsAnError() throws {
        // A NaN feature made the eval loss NaN and eval still exited 0.
        let dir = try DataFixtures.temporaryDirectory(self)
        try csvTable(dir + "/poisoned.csv", poison: 9)
        let r = try run(["eval", training + "/mlp_ce_sgd", "--data", dir + "/poisoned.csv", "--batch-size", "8"])
        XCTAssertEqual(r.status, 5, r.stderr)
        XCTAssertTrue(r.stdout.contains("eval loss nan"), r.stdout)
        XCTAssertTrue(r.stderr.hasPrefix("onnx-train: error: the eval loss is nan: batch 2 of 4 (examples 8..<16 of \(dir)/poisoned.csv) gave a non-finite loss"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        // The same table without the NaN evaluates as the .npz does.
        try csvTable(dir + "/clean.csv")
        let clean = try run(["eval", training + "/mlp_ce_sgd", "--data", dir + "/clean.csv", "--batch-size", "8"])
        let npz = try run(["eval", training + "/mlp_ce_sgd", "--data", training + "/mlp_ce_sgd/data.npz", "--batch-size", "8"])
        XCTAssertEqual(clean.status, 0, clean.stderr)
        XCTAssertEqual(clean.stdout, npz.stdout)
    }

    func testLabelTypeFlagOverridesTheCSVGuess() throws {
        // Labels written as decimals ("2.0") are read as float32 regression targets; before
        // --label-type nothing could say otherwise (nor make "50" a float target).
        let dir = try DataFixtures.temporaryDirectory(self)
        try csvTable(dir + "/decimal.csv", label: { "\($0).0" })
        let folder = training + "/mlp_ce_sgd"
        try assertFails(["eval", folder, "--data", dir + "/decimal.csv"], code: 5, mentioning: ["labels", "tensor(float)"])
        let npz = try run(["eval", folder, "--data", folder + "/data.npz"])
        let forced = try run(["eval", folder, "--data", dir + "/decimal.csv", "--label-type", "int64"])
        XCTAssertEqual(forced.status, 0, forced.stderr)
        XCTAssertEqual(forced.stdout, npz.stdout)
        try csvTable(dir + "/whole.csv")
        try assertFails(["eval", folder, "--data", dir + "/whole.csv", "--label-type", "float32"], code: 5, mentioning: ["labels", "tensor(float)"])
        let r = try run(["run", folder, "--data", dir + "/decimal.csv", "--label-type", "int64", "--batch-size", "8", "--steps", "2",
                         "--lr", "0.1", "--quiet", "--out", dir + "/run"])
        XCTAssertEqual(r.status, 0, r.stderr)
        try assertFails(["eval", folder, "--data", dir + "/whole.csv", "--label-type", "float64"], code: 64, mentioning: ["--label-type", "float64"])
    }
}
