import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// Reads checkpoints written by onnxruntime-training 1.19.2 and checks the Swift writer.
/// Fixtures: Tests/Fixtures/checkpoint/mlp (made by Tests/Fixtures/scripts/check_checkpoint_interop.py).
final class CheckpointTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: Fixtures.path("checkpoint/mlp"))

    struct Expected: Decodable {
        struct Array: Decodable { let shape: [Int]; let data: [Double] }
        let step: Int64
        let initial_lr: Double
        let trainable: [String]
        let frozen: [String]
        let values: [String: Array]
    }

    func path(_ name: String) -> String { Self.fixtures.appendingPathComponent(name).path }

    func expected() throws -> Expected {
        try JSONDecoder().decode(Expected.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("expected.json")))
    }

    func assertEqual(_ tensor: Tensor?, _ array: Expected.Array?, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        guard let tensor, let array else { return XCTFail("\(what): missing", file: file, line: line) }
        XCTAssertEqual(tensor.dtype, .float32, what, file: file, line: line)
        XCTAssertEqual(tensor.shape, array.shape, what, file: file, line: line)
        XCTAssertEqual(tensor.scalars(as: Float.self), array.data.map { Float($0) }, "\(what) (exact)", file: file, line: line)
    }

    func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir.path
    }

    func testReadsOnnxRuntimeFullCheckpoint() throws {
        let e = try expected()
        let state = try CheckpointState.load(from: path("ort_full.ckpt"))
        XCTAssertEqual(state.parameterNames, e.trainable + e.frozen)  // saved sorted within each kind
        for p in state.parameters {
            XCTAssertEqual(p.requiresGrad, e.trainable.contains(p.name), p.name)
            assertEqual(p.data, e.values["param:\(p.name)"], p.name)
        }
        let group = try XCTUnwrap(state.optimizerGroups["group0"])
        XCTAssertEqual(group.step, e.step)
        XCTAssertEqual(group.initialLearningRate, Float(e.initial_lr))
        XCTAssertEqual(group.learningRate, 1e-3, "onnxruntime does not persist the current lr")
        XCTAssertEqual(Set(group.parameterStates.keys), Set(e.trainable))
        for name in e.trainable {
            for key in ["momentum0", "momentum1"] {
                assertEqual(group.parameterStates[name]?[key], e.values["\(key):\(name)"], "\(key) of \(name)")
            }
        }
        XCTAssertEqual(state.properties, ["epoch": .int(3), "best_loss": .float(0.125), "tag": .string("swift-interop")])
        XCTAssertFalse(state.isNominal)
    }

    func testReadsArtifactNominalAndNoOptimizerCheckpoints() throws {
        let artifact = try CheckpointState.load(from: path("ort_artifact.ckpt"))
        // generate_artifacts writes model initializer order: trainable first, then frozen.
        XCTAssertEqual(artifact.parameterNames, ["fc1.weight", "fc2.weight", "fc2.bias", "fc1.bias"])
        XCTAssertEqual(artifact.parameters.map(\.requiresGrad), [true, true, true, false])
        XCTAssertEqual(artifact.parameter("fc1.weight")?.data.shape, [5, 4])
        XCTAssertTrue(artifact.optimizerGroups.isEmpty)
        XCTAssertTrue(artifact.properties.isEmpty)

        let nominal = try CheckpointState.load(from: path("ort_nominal.ckpt"))
        XCTAssertTrue(nominal.isNominal)
        XCTAssertEqual(nominal.parameterNames, artifact.parameterNames)
        XCTAssertEqual(nominal.parameters.map(\.data.dtype), [.float32, .float32, .float32, .float32])

        let noOptimizer = try CheckpointState.load(from: path("ort_no_optim.ckpt"))
        XCTAssertTrue(noOptimizer.optimizerGroups.isEmpty)
        XCTAssertEqual(noOptimizer.properties.count, 3)
        let full = try CheckpointState.load(from: path("ort_full.ckpt"))
        for p in full.parameters {
            XCTAssertEqual(noOptimizer.parameter(p.name)?.data.scalars(as: Float.self), p.data.scalars(as: Float.self))
        }
    }

    /// The Swift writer's bytes for the ORT state equal the committed files that onnxruntime
    /// loaded (check_checkpoint_interop.py check), and read back to the same state.
    func testSwiftWriteMatchesCommittedInteropFilesAndReadsBack() throws {
        let dir = try temporaryDirectory()
        let state = try CheckpointState.load(from: path("ort_full.ckpt"))
        let regenerate = ProcessInfo.processInfo.environment["ONNX_TRAIN_REGENERATE_FIXTURES"] == "1"
        for (name, withOptimizer) in [("swift_full.ckpt", true), ("swift_no_optim.ckpt", false)] {
            let out = "\(dir)/\(name)"
            try state.save(to: out, includeOptimizerState: withOptimizer)
            let written = try Data(contentsOf: URL(fileURLWithPath: out))
            if regenerate { try written.write(to: URL(fileURLWithPath: path(name))) }
            XCTAssertEqual(written, try Data(contentsOf: URL(fileURLWithPath: path(name))), "\(name) bytes changed; re-run the ORT interop check")
            XCTAssertEqual(Array(written[4..<8]), Array("ODTC".utf8))

            let back = try CheckpointState.load(from: out)
            XCTAssertEqual(back.parameterNames, state.parameterNames)
            for p in state.parameters {
                XCTAssertEqual(back.parameter(p.name)?.requiresGrad, p.requiresGrad)
                XCTAssertEqual(back.parameter(p.name)?.data.shape, p.data.shape)
                XCTAssertEqual(back.parameter(p.name)?.data.scalars(as: Float.self), p.data.scalars(as: Float.self))
            }
            XCTAssertEqual(back.properties, state.properties)
            if withOptimizer {
                let a = try XCTUnwrap(state.optimizerGroups["group0"]), b = try XCTUnwrap(back.optimizerGroups["group0"])
                XCTAssertEqual(b.step, a.step)
                XCTAssertEqual(b.initialLearningRate, a.initialLearningRate)
                for (param, moments) in a.parameterStates {
                    for (key, t) in moments {
                        XCTAssertEqual(b.parameterStates[param]?[key]?.scalars(as: Float.self), t.scalars(as: Float.self), "\(key) \(param)")
                    }
                }
            } else {
                XCTAssertTrue(back.optimizerGroups.isEmpty)
            }
            // Re-encoding the re-read state gives the same bytes.
            try back.save(to: out + ".again", includeOptimizerState: withOptimizer)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + ".again")), written)
        }
        // All tensor bytes in the `.data` sidecar (forced with a zero threshold).
        let saved = CheckpointFile.externalDataThreshold
        CheckpointFile.externalDataThreshold = 0
        defer { CheckpointFile.externalDataThreshold = saved }
        try state.save(to: "\(dir)/swift_external.ckpt", includeOptimizerState: true)
        for name in ["swift_external.ckpt", "swift_external.ckpt.data"] {
            let written = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name)"))
            if regenerate { try written.write(to: URL(fileURLWithPath: path(name))) }
            XCTAssertEqual(written, try Data(contentsOf: URL(fileURLWithPath: path(name))), "\(name) bytes changed; re-run the ORT interop check")
        }
        let external = try CheckpointState.load(from: "\(dir)/swift_external.ckpt")
        for p in state.parameters {
            XCTAssertEqual(external.parameter(p.name)?.data.scalars(as: Float.self), p.data.scalars(as: Float.self))
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [])
    }

    func testExternalDataSidecar() throws {
        let dir = try temporaryDirectory()
        let state = try CheckpointState(trainable: [("w", Tensor(shape: [3], scalars: [Float(1), 2, 3])),
                                                    ("d", Tensor(shape: [2], scalars: [Double(4), 5]))],
                                        frozen: [("b", Tensor(shape: [1], scalars: [Float(-1)]))])
        let saved = CheckpointFile.externalDataThreshold
        CheckpointFile.externalDataThreshold = 8
        defer { CheckpointFile.externalDataThreshold = saved }
        try state.save(to: "\(dir)/ckpt")
        let sidecar = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/ckpt.data"))
        // Trainable then frozen, each sorted: d (16 bytes at 0), w (12 bytes at 16), b (4 at 28).
        XCTAssertEqual(sidecar.count, 32)
        let back = try CheckpointState.load(from: "\(dir)/ckpt")
        XCTAssertEqual(back.parameter("w")?.data.scalars(as: Float.self), [1, 2, 3])
        XCTAssertEqual(back.parameter("d")?.data.scalars(as: Double.self), [4, 5])
        XCTAssertEqual(back.parameter("b")?.data.scalars(as: Float.self), [-1])
        XCTAssertEqual(back.parameter("b")?.requiresGrad, false)
        // Saving small again removes the stale sidecar.
        CheckpointFile.externalDataThreshold = saved
        try back.save(to: "\(dir)/ckpt")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/ckpt.data"))
        XCTAssertEqual(try CheckpointState.load(from: "\(dir)/ckpt").parameter("d")?.data.scalars(as: Double.self), [4, 5])
        // A missing sidecar is one clear error.
        CheckpointFile.externalDataThreshold = 8
        try state.save(to: "\(dir)/ckpt2")
        try FileManager.default.removeItem(atPath: "\(dir)/ckpt2.data")
        XCTAssertThrowsError(try CheckpointState.load(from: "\(dir)/ckpt2")) { error in
            XCTAssertTrue("\(error)".contains("ckpt2.data"), "\(error)")
        }
    }

    func testBadFilesGiveOneClearError() throws {
        let dir = try temporaryDirectory()
        let good = try Data(contentsOf: URL(fileURLWithPath: path("ort_full.ckpt")))
        func load(_ bytes: Data) -> Error? {
            let file = "\(dir)/bad.ckpt"
            try? bytes.write(to: URL(fileURLWithPath: file))
            do { _ = try CheckpointState.load(from: file); return nil } catch { return error }
        }
        var wrong = good
        wrong[4] = UInt8(ascii: "X")
        let error = try XCTUnwrap(load(wrong) as? OnnxTrainError)
        XCTAssertTrue(error.message.contains("wrong file identifier 'XDTC'"), error.message)
        XCTAssertEqual(error.kind, .invalidModel)
        XCTAssertTrue(error.message.contains("bad.ckpt"), error.message)

        // Every truncation and every single-byte corruption either fails with one
        // OnnxTrainError or decodes; none traps. (Decoded in memory: the file path is covered above.)
        func decode(_ bytes: Data) -> Result<CheckpointState, Error> {
            Result { try CheckpointFile.decode([UInt8](bytes), externalData: { throw OnnxTrainError.io("no sidecar") }) }
        }
        let reference = try CheckpointState.load(from: path("ort_full.ckpt"))
        for length in 0..<good.count {
            switch decode(good.prefix(length)) {
            case .failure(let e):
                XCTAssertTrue(e is OnnxTrainError || e is FlatBufferError, "\(length): \(e)")
            case .success(let state):
                // Only the trailing alignment padding may go.
                XCTAssertGreaterThan(length, good.count - 4, "truncated to \(length) bytes loaded")
                XCTAssertEqual(state.parameter("fc2.bias")?.data.scalars(as: Float.self), reference.parameter("fc2.bias")?.data.scalars(as: Float.self))
            }
        }
        var failures = 0
        for i in 0..<good.count {
            var bytes = good
            bytes[i] ^= 0xA5
            if case .failure(let e) = decode(bytes) {
                failures += 1
                XCTAssertTrue(e is OnnxTrainError || e is FlatBufferError, "byte \(i): \(e)")
            }
        }
        XCTAssertGreaterThan(failures, 50)
        XCTAssertThrowsError(try CheckpointState.load(from: "\(dir)/missing.ckpt")) { error in
            XCTAssertEqual((error as? OnnxTrainError)?.kind, .io)
        }
    }

    func testSaveIntoMissingDirectoryKeepsNothingHalfWritten() throws {
        let state = try CheckpointState(trainable: [("w", Tensor(shape: [1], scalars: [Float(1)]))])
        XCTAssertThrowsError(try state.save(to: "/nonexistent-dir-\(UUID().uuidString)/ckpt")) { error in
            XCTAssertEqual((error as? OnnxTrainError)?.kind, .io)
        }
    }

    /// The `fixtures` area's round-trip checkpoint (ORT-written, negative int64 and empty-string
    /// properties) against its independent Python reader's dump.
    func testReadsFixtureRoundTripCheckpoint() throws {
        let folder = Self.fixtures.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("training/checkpoint_roundtrip")
        let contents = try Npz.readDictionary(contentsOf: folder.appendingPathComponent("contents.npz").path)
        let state = try CheckpointState.load(from: folder.appendingPathComponent("checkpoint_with_optimizer").path)
        XCTAssertEqual(state.parameterNames, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"])
        let group = try XCTUnwrap(state.optimizerGroups["group0"])
        XCTAssertEqual(group.step, 3)
        XCTAssertEqual(group.initialLearningRate, 1e-3)
        for p in state.parameters {
            XCTAssertEqual(p.data.scalars(as: Float.self), contents["param:\(p.name)"]?.scalars(as: Float.self), p.name)
            for key in ["momentum0", "momentum1"] {
                XCTAssertEqual(group.parameterStates[p.name]?[key]?.scalars(as: Float.self), contents["\(key):\(p.name)"]?.scalars(as: Float.self), "\(key) \(p.name)")
            }
        }
        XCTAssertEqual(state.properties, ["epoch": .int(7), "neg_int": .int(-123456789012), "best_loss": .float(0.25),
                                          "lr_note": .float(0.1), "run_name": .string("onnx-train fixture"), "empty": .string("")])
        let without = try CheckpointState.load(from: folder.appendingPathComponent("checkpoint_without_optimizer").path)
        XCTAssertTrue(without.optimizerGroups.isEmpty)
        XCTAssertEqual(without.properties, state.properties)
        // Re-saved by Swift and re-read: the same state.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rt-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try state.save(to: path, includeOptimizerState: true)
        let back = try CheckpointState.load(from: path)
        XCTAssertEqual(back.properties, state.properties)
        XCTAssertEqual(back.optimizerGroups["group0"]?.parameterStates["fc2.bias"]?["momentum1"]?.scalars(as: Float.self),
                       group.parameterStates["fc2.bias"]?["momentum1"]?.scalars(as: Float.self))
    }
}
