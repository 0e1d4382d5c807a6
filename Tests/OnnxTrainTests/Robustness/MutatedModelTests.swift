import Foundation
import XCTest
@testable import OnnxTrain

/// Runs damaged models through the loader, the session build and a run.
enum MutationHarness {
    /// What happened to one mutated file.
    enum Outcome: Hashable { case loadFailed, buildFailed, runFailed, ran }


    /// Loads `bytes`, builds a session and runs it on zero feeds shaped like the declared inputs
    /// (symbolic and unknown dims as 1). Any non-OnnxTrainError fails the test.
    @discardableResult
    static func exercise(_ bytes: [UInt8], _ label: String, file: StaticString = #filePath, line: UInt = #line) -> Outcome {
        func check(_ error: Error) {
            guard let e = error as? OnnxTrainError else {
                return XCTFail("\(label): \(type(of: error)) is not an OnnxTrainError: \(error)", file: file, line: line)
            }
            // Not checked for one line: a mutated name may itself hold a newline (the CLI folds them).
            XCTAssertFalse(e.message.isEmpty, "\(label): empty message", file: file, line: line)
        }
        if ProcessInfo.processInfo.environment["ONNX_TRAIN_TRACE_MUTATIONS"] != nil { FileHandle.standardError.write(Data("\(label)\n".utf8)) }
        let model: Model
        do {
            model = try bytes.withUnsafeBytes { try Model(bytes: $0) }
        } catch { check(error); return .loadFailed }
        let session: InferenceSession
        do {
            session = try InferenceSession(model: model)
        } catch { check(error); return .buildFailed }
        guard let feeds = zeroFeeds(for: model.graph.feedInputs) else { return .runFailed }
        do {
            _ = try session.run(feeds)
        } catch { check(error); return .runFailed }
        return .ran
    }

    /// Zero tensors for the declared inputs, or nil when a declared shape is too large to allocate
    /// in a test (a mutated dim); untyped inputs get a float scalar.
    static func zeroFeeds(for inputs: [ValueInfo]) -> [String: Value]? {
        var feeds: [String: Value] = [:]
        for info in inputs {
            guard case .tensor(let dtype, let dims)? = info.type else { continue }
            let shape = (dims ?? []).map { dim -> Int in if case .value(let v) = dim { return v } else { return 1 } }
            var count = 1
            for d in shape {
                guard d >= 0 else { return nil }
                let (p, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow, p <= 1 << 16 else { return nil }
                count = p
            }
            feeds[info.name] = .tensor(Tensor(zeros: dtype ?? .float32, shape: shape))
        }
        return feeds
    }
}

/// Hundreds of damaged model files through the loader, the session build and a run: every failure
/// must be an `OnnxTrainError` (a trap would kill this test process, which is the failure mode
/// this test exists to catch).
final class MutatedModelTests: XCTestCase {
    private func fixtureBytes(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    func testTheUnmutatedModelsRun() throws {
        XCTAssertEqual(MutationHarness.exercise(try fixtureBytes(DataFixtures.data("tiny.onnx")), "tiny"), .ran)
    }

    func testEmptyFileAndEveryTruncation() throws {
        XCTAssertEqual(MutationHarness.exercise([], "empty"), .loadFailed)
        assertOnnxTrainError(.invalidModel, containing: ["empty"]) { try [UInt8]().withUnsafeBytes { try Model(bytes: $0) } }
        let bytes = try fixtureBytes(DataFixtures.data("tiny.onnx"))
        var outcomes: [MutationHarness.Outcome: Int] = [:]
        for n in 0..<bytes.count {
            outcomes[MutationHarness.exercise(Array(bytes.prefix(n)), "prefix \(n) of \(bytes.count)"), default: 0] += 1
        }
        XCTAssertEqual(outcomes.values.reduce(0, +), bytes.count)
        XCTAssertGreaterThan(outcomes[.loadFailed, default: 0], bytes.count / 2, "most prefixes cut a field: \(outcomes)")
    }

    func testRandomBytes() {
        var rng = SplitMix(seed: 1)
        for i in 0..<300 {
            let length = Int(rng.next() % 600)
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            MutationHarness.exercise(bytes, "random buffer \(i) (\(length) bytes)")
        }
    }

    func testBitFlipsAndByteChangesInsideValidModels() throws {
        var total: [MutationHarness.Outcome: Int] = [:]
        for (fileIndex, path) in [DataFixtures.data("tiny.onnx"), DataFixtures.data("nokernel.onnx"),
                                  DataFixtures.root + "/inference/mlp_dynamic_opset17/model.onnx",
                                  DataFixtures.root + "/inference/cnn_opset17/model.onnx"].enumerated() {
            let original = try fixtureBytes(path)
            var rng = SplitMix(seed: 100 + UInt64(fileIndex))
            for i in 0..<400 {
                var bytes = original
                let kind = i % 4
                switch kind {
                case 0:  // one bit
                    let bit = Int(rng.next() % UInt64(bytes.count * 8))
                    bytes[bit / 8] ^= 1 << UInt8(bit % 8)
                case 1:  // one byte set to a random value
                    bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
                case 2:  // one byte set to an extreme (lengths and varints)
                    bytes[Int(rng.next() % UInt64(bytes.count))] = [0x00, 0x7F, 0x80, 0xFF][Int(rng.next() % 4)]
                default:  // a few bytes at once
                    for _ in 0..<4 { bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next()) }
                }
                total[MutationHarness.exercise(bytes, "\(path) mutation \(i) (kind \(kind))"), default: 0] += 1
            }
        }
        XCTAssertEqual(total.values.reduce(0, +), 1600)
        // Mutations must reach every stage, or the test is not exercising the session.
        XCTAssertGreaterThan(total[.loadFailed, default: 0], 0, "\(total)")
        XCTAssertGreaterThan(total[.ran, default: 0], 0, "\(total)")
        print("mutation outcomes over 1600 files: \(total)")
    }

    func testTensorsClaimingMoreElementsThanTheyHoldAreRefusedBeforeAllocating() throws {
        // Each would have asked for terabytes (or overflowed Int) before the loader checked its data.
        let cases: [(String, [String])] = [
            ("huge_float_data", ["initializer 'w'", "1 values in float_data", "[549755813888]"]),
            ("huge_no_data", ["initializer 'w'", "0 values in float_data"]),
            ("huge_raw_data", ["initializer 'w'", "4 raw bytes"]),
            ("overflowing_dims", ["initializer 'w'", "too many elements"]),
            ("huge_sparse", ["sparse initializer 's'", "cannot allocate"]),
            ("overflowing_sparse", ["sparse initializer 's'", "too large dimension"]),
            ("sparse_index_out_of_range", ["sparse initializer 's'", "index 99 out of range"]),
        ]
        for (name, fragments) in cases {
            let path = DataFixtures.data("crafted/\(name).onnx")
            assertOnnxTrainError(.invalidModel, containing: [path] + fragments) { try Model(contentsOf: path) }
        }
    }

    func testMissingKernelNamesOpDomainAndOpset() throws {
        let model = try Model(contentsOf: DataFixtures.data("nokernel.onnx"))
        assertOnnxTrainError(.unsupported, containing: ["FrobnicateNotReal", "com.example.nokernel", "opset 3", "nokernel.onnx"]) {
            try InferenceSession(model: model)
        }
    }

    func testBadFeeds() throws {
        let session = try InferenceSession(path: DataFixtures.data("tiny.onnx"))
        let good = Tensor(zeros: .float32, shape: [2, 3])
        XCTAssertNoThrow(try session.run(tensors: ["x": good]))
        assertOnnxTrainError(.invalidInput, containing: ["missing input 'x'"]) { try session.run(tensors: [:]) }
        assertOnnxTrainError(.invalidInput, containing: ["unknown input 'extra'"]) { try session.run(tensors: ["x": good, "extra": good]) }
        assertOnnxTrainError(.invalidInput, containing: ["input 'x'", "tensor(float)", "tensor(int64)"]) {
            try session.run(tensors: ["x": Tensor(zeros: .int64, shape: [2, 3])])
        }
        assertOnnxTrainError(.invalidInput, containing: ["input 'x'", "rank 2"]) { try session.run(tensors: ["x": Tensor(zeros: .float32, shape: [6])]) }
        assertOnnxTrainError(.invalidInput, containing: ["input 'x'", "dimension 1 must be 3"]) {
            try session.run(tensors: ["x": Tensor(zeros: .float32, shape: [2, 4])])
        }
        assertOnnxTrainError(.invalidInput, containing: ["input 'x'", "sequence"]) { try session.run(["x": .sequence([], elementType: nil)]) }
    }
}
