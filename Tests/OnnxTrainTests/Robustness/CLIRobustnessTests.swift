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
}
