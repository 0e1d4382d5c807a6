import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// Inputs and initializers of the wrong element type: every kernel must refuse them with an
/// error, never trap (float64 read as float32) or misread them (int32 bits read as float).
final class ElementTypeMutationTests: XCTestCase {
    func testTypedAccessorsCheckTheElementType() throws {
        let ints = Tensor(shape: [2], scalars: [Int32(1), 2])
        XCTAssertThrowsError(try ints.withUnsafeBufferPointer(as: Float.self) { Array($0) }) { error in
            XCTAssertEqual("\(error)", "expected tensor(float), got tensor(int32) [2]")
        }
        let doubles = Tensor(shape: [1], scalars: [1.5])
        XCTAssertThrowsError(try doubles.elements(as: Float.self)) { error in
            XCTAssertEqual("\(error)", "expected tensor(float), got tensor(double) [1]")
        }
        var copy = doubles
        XCTAssertThrowsError(try copy.withUnsafeMutableBufferPointer(as: Int64.self) { _ in })
        XCTAssertThrowsError(try doubles.withSharedMutableBufferPointer(as: Float.self) { _ in })
        // The raw bits of any element type, through the unsigned integer of its width.
        XCTAssertEqual(try doubles.withUnsafeBufferPointer(as: UInt64.self) { $0[0] }, 1.5.bitPattern)
        XCTAssertThrowsError(try doubles.withUnsafeBufferPointer(as: UInt32.self) { _ in })
        XCTAssertEqual(try Tensor(shape: [1], scalars: [Int8(-3)]).elements(as: Int8.self), [-3])
    }

    private func assertKernelRefuses(_ op: String, opset: Int, _ inputs: [Tensor?], attributes: [String: Attribute] = [:], outputs: Int = 1,
                                     mentioning fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try runNode(op, opset: opset, inputs, attributes: attributes, outputs: outputs), file: file, line: line) { error in
            XCTAssertTrue(error is OnnxTrainError, "\(type(of: error)): \(error)", file: file, line: line)
            XCTAssertTrue("\(error)".contains(fragment), "'\(error)' does not mention '\(fragment)'", file: file, line: line)
        }
    }

    private func floats(_ shape: [Int], _ start: Float = 0.1) -> Tensor {
        Tensor(shape: shape, scalars: (0..<Tensor.elementCount(shape)).map { start + Float($0) * 0.01 })
    }

    func testKernelsCheckTheirOtherInputs() throws {
        let q = floats([1, 1, 2, 2])
        let q64 = try q.cast(to: .float64), qInt = try q.cast(to: .int32)
        for other in [q64, qInt] {
            let got = "got tensor(\(other.dtype))"
            assertKernelRefuses("Attention", opset: 23, [q, other, q], mentioning: got)
            assertKernelRefuses("Attention", opset: 23, [q, q, other], mentioning: got)
            // RotaryEmbedding: caches [B, S, half] without position ids.
            let cache = try floats([1, 2, 1]).cast(to: other.dtype)
            assertKernelRefuses("RotaryEmbedding", opset: 23, [q, cache, floats([1, 2, 1])], mentioning: got)
            assertKernelRefuses("RMSNormalization", opset: 23, [q, try floats([2]).cast(to: other.dtype)], mentioning: got)
            assertKernelRefuses("LayerNormalization", opset: 17, [q, try floats([2]).cast(to: other.dtype)], mentioning: "\(other.dtype)")
            // RNN family: X [S, B, I], W [D, G·H, I], R [D, G·H, H] with H = I = 1.
            for (cell, gates) in [("RNN", 1), ("GRU", 3), ("LSTM", 4)] {
                let x = floats([1, 1, 1]), w = floats([1, gates, 1])
                let attributes: [String: Attribute] = ["hidden_size": .int(1)]
                assertKernelRefuses(cell, opset: 14, [x, try w.cast(to: other.dtype), w], attributes: attributes, outputs: 2, mentioning: got)
                assertKernelRefuses(cell, opset: 14, [x, w, try w.cast(to: other.dtype)], attributes: attributes, outputs: 2, mentioning: got)
                assertKernelRefuses(cell, opset: 14, [x, w, w, try floats([1, 2 * gates]).cast(to: other.dtype)],
                                    attributes: attributes, outputs: 2, mentioning: got)
            }
            // (Pow is left out: its exponent may have another type.)
            for op in ["Add", "Mul", "MatMul", "Gemm", "Sub", "Div", "PRelu"] {
                let b = try (op == "Gemm" || op == "MatMul" ? floats([2, 2]) : floats([2])).cast(to: other.dtype)
                XCTAssertThrowsError(try runNode(op, opset: 17, [floats([2, 2]), b]), op) { error in
                    XCTAssertTrue(error is OnnxTrainError, "\(op): \(type(of: error)): \(error)")
                }
            }
        }
    }

    func testDeclaredOutputTypesAreChecked() throws {
        var graph = Graph()
        graph.nodes = [Node(opType: "Cast", inputs: ["x"], outputs: ["y"], attributes: ["to": .int(Int(DType.int64.rawValue))])]
        graph.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(2)]))]
        graph.outputs = [ValueInfo(name: "y", type: .tensor(.float32, shape: [.value(2)]))]
        var model = Model(graph: graph)
        model.opsetImports = ["": 17]
        let session = try InferenceSession(model: model)
        assertOnnxTrainError(.invalidModel, containing: ["output 'y' is declared tensor(float), but the graph computes tensor(int64)"]) {
            try session.run(["x": .tensor(Tensor(shape: [2], scalars: [Float(1), 2]))])
        }
    }

    /// Every float initializer of the fixture models, and every feed, swapped to another element
    /// type: loading, building and running must end in an `OnnxTrainError` or a result, never a trap.
    func testModelsWithInitializersAndFeedsOfAnotherType() throws {
        let paths = [DataFixtures.data("tiny.onnx"),
                     DataFixtures.root + "/inference/mlp_dynamic_opset17/model.onnx",
                     DataFixtures.root + "/inference/cnn_opset17/model.onnx",
                     DataFixtures.root + "/inference/gpt_dynamic_opset17/model.onnx"]
        var outcomes: [String: Int] = [:]
        for path in paths {
            let model = try Model(contentsOf: path)
            let feeds = try XCTUnwrap(MutationHarness.zeroFeeds(for: model.graph.feedInputs))
            for target in [DType.float64, .int32, .float16, .int64, .bool] {
                // One initializer at a time.
                for name in model.graph.initializerNames {
                    guard let t = model.graph.initializers[name], t.dtype != target, t.dtype != .string else { continue }
                    var mutated = model
                    mutated.graph.initializers[name] = try t.cast(to: target)
                    outcomes[run(mutated, feeds, "\(path): initializer '\(name)' as \(target)"), default: 0] += 1
                }
                // One feed at a time.
                for (name, value) in feeds {
                    guard let t = value.tensor, t.dtype != target else { continue }
                    var mutatedFeeds = feeds
                    mutatedFeeds[name] = .tensor(try t.cast(to: target))
                    outcomes[run(model, mutatedFeeds, "\(path): feed '\(name)' as \(target)"), default: 0] += 1
                }
            }
        }
        XCTAssertGreaterThan(outcomes["refused", default: 0], 100, "\(outcomes)")
        print("element-type mutations: \(outcomes)")
    }

    private func run(_ model: Model, _ feeds: [String: Value], _ label: String) -> String {
        do {
            let session = try InferenceSession(model: model)
            _ = try session.run(feeds)
            return "ran"
        } catch let error as OnnxTrainError {
            XCTAssertFalse(error.message.isEmpty, label)
            return "refused"
        } catch {
            XCTFail("\(label): \(type(of: error)) is not an OnnxTrainError: \(error)")
            return "other"
        }
    }
}
