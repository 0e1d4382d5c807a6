import Foundation
import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// Runs every case under Tests/Fixtures/training_ops (written by
/// Tests/Fixtures/scripts/make_training_op_cases.py from onnxruntime-training 1.19.2) and compares
/// outputs, and the post-run values of inputs onnxruntime updates in place (`mutated_N.pb`), with
/// rtol 1e-4 and atol 1e-5.
final class TrainingOpCaseTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: Fixtures.path("training_ops"))

    func testEveryCaseMatchesOnnxRuntime() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.fixtures.path).sorted()
        XCTAssertGreaterThan(names.count, 100, "fixtures missing at \(Self.fixtures.path)")
        // TRAINING_OP_CASES=substring runs a subset while working on one op.
        let filter = ProcessInfo.processInfo.environment["TRAINING_OP_CASES"]
        var failures: [String] = []
        var passed = 0
        for name in names where filter.map({ name.contains($0) }) ?? true {
            let problems = runCase(Self.fixtures.appendingPathComponent(name))
            if problems.isEmpty { passed += 1 } else { failures.append("\(name): " + problems.joined(separator: "; ")) }
        }
        print("training_ops: \(passed) passed, \(failures.count) failed")
        if !failures.isEmpty {
            XCTFail("\(failures.count) training-op cases disagree with onnxruntime:\n" + failures.joined(separator: "\n"))
        }
    }

    /// Runs one case; returns one line per mismatch (empty when everything matches).
    func runCase(_ dir: URL) -> [String] {
        do {
            let model = try Model(contentsOf: dir.appendingPathComponent("model.onnx").path)
            let data = dir.appendingPathComponent("test_data_set_0")
            var feeds: [String: Value] = [:]
            var fed: [Value] = []
            for (i, input) in model.graph.feedInputs.enumerated() {
                let v = try readFixtureValue(data.appendingPathComponent("input_\(i).pb"), type: input.type)
                feeds[input.name] = v
                fed.append(v)
            }
            let session = try InferenceSession(model: model)
            let results = try session.run(feeds)
            var problems: [String] = []
            for (i, output) in model.graph.outputs.enumerated() {
                let expected = try readFixtureValue(data.appendingPathComponent("output_\(i).pb"), type: output.type)
                guard let actual = results[output.name] else { problems.append("no output '\(output.name)'"); continue }
                problems += trainingMismatches(actual, expected, label: "output '\(output.name)'")
            }
            for (i, input) in model.graph.feedInputs.enumerated() {
                let file = data.appendingPathComponent("mutated_\(i).pb")
                guard FileManager.default.fileExists(atPath: file.path) else { continue }
                let expected = try readFixtureValue(file, type: input.type)
                problems += trainingMismatches(fed[i], expected, label: "input '\(input.name)' after the run")
            }
            return problems
        } catch {
            return ["threw: \(error)"]
        }
    }
}

/// Reads a TensorProto or SequenceProto file, as the declared type says.
func readFixtureValue(_ url: URL, type: ValueType?) throws -> Value {
    let bytes = try Data(contentsOf: url)
    let kind: SerializedValueKind
    if case .sequence = type { kind = .sequence } else { kind = .tensor }
    return try bytes.withUnsafeBytes { try Value(protobuf: $0, kind: kind) }
}

/// Mismatches between two values: dtype, shape, then elements with |a − e| ≤ atol + rtol·|e|;
/// reports the count of bad elements and the largest difference.
func trainingMismatches(_ actual: Value, _ expected: Value, label: String, rtol: Double = 1e-4, atol: Double = 1e-5) -> [String] {
    switch (actual, expected) {
    case (.tensor(let a), .tensor(let e)):
        return trainingTensorMismatch(a, e, label: label, rtol: rtol, atol: atol).map { [$0] } ?? []
    case (.sequence(let a, _), .sequence(let e, _)):
        guard a.count == e.count else { return ["\(label): sequence of \(a.count), expected \(e.count)"] }
        return zip(a, e).enumerated().flatMap { i, pair in trainingMismatches(pair.0, pair.1, label: "\(label)[\(i)]", rtol: rtol, atol: atol) }
    default:
        return ["\(label): got \(actual.summary), expected \(expected.summary)"]
    }
}

func trainingTensorMismatch(_ a: Tensor, _ e: Tensor, label: String, rtol: Double, atol: Double) -> String? {
    guard a.dtype == e.dtype else { return "\(label): dtype \(a.dtype), expected \(e.dtype)" }
    guard a.shape == e.shape else { return "\(label): shape \(a.shape), expected \(e.shape)" }
    var bad = 0, worst = 0.0, worstIndex = 0
    for i in 0..<a.count {
        guard let x = a.scalarDouble(at: i), let y = e.scalarDouble(at: i) else { return "\(label): cannot compare \(a.dtype)" }
        if x.isNaN && y.isNaN { continue }
        let diff = abs(x - y)
        let exact = !a.dtype.isFloatingPoint
        if exact ? diff != 0 : !(diff <= atol + rtol * abs(y)) {
            bad += 1
            if diff > worst || diff.isNaN { worst = diff; worstIndex = i }
        }
    }
    guard bad > 0 else { return nil }
    return "\(label): \(bad) of \(a.count) elements differ, largest |diff| \(worst) at \(worstIndex) (got \(a.scalarDouble(at: worstIndex)!), expected \(e.scalarDouble(at: worstIndex)!))"
}
