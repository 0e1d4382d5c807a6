import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// `onnx-train bench MODEL.onnx --infer` and the library pieces under it: synthetic feeds shaped as
/// the model declares, and the latency statistics.
final class InferenceTimingTests: XCTestCase {
    func testSyntheticFeedsFollowTheDeclaredInputs() throws {
        let inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.symbol("batch"), .value(3)])),
                      ValueInfo(name: "ids", type: .tensor(.int64, shape: [.symbol("batch"), .symbol("seq")])),
                      ValueInfo(name: "mask", type: .tensor(.bool, shape: [.unknown]))]
        let feeds = try SyntheticFeeds.make(for: inputs, dimensions: ["seq": 5], defaultDimension: 2, seed: 7)
        XCTAssertEqual(feeds["x"]?.shape, [2, 3])
        XCTAssertEqual(feeds["x"]?.dtype, .float32)
        let x = try XCTUnwrap(feeds["x"]).scalars(as: Float.self)
        XCTAssertTrue(x.allSatisfy { $0 >= -1 && $0 < 1 } && Set(x).count == 6, "\(x)")
        XCTAssertEqual(feeds["ids"]?.shape, [2, 5])
        XCTAssertEqual(feeds["ids"]?.scalars(as: Int64.self), [Int64](repeating: 1, count: 10))
        XCTAssertEqual(feeds["mask"]?.scalars(as: Bool.self), [true, true])
        XCTAssertEqual(try SyntheticFeeds.make(for: inputs, dimensions: ["seq": 5], defaultDimension: 2, seed: 7)["x"]?.scalars(as: Float.self), x,
                       "the same seed gives the same feeds")
        XCTAssertThrowsError(try SyntheticFeeds.make(for: [ValueInfo(name: "s", type: .tensor(.string, shape: [.value(1)]))])) {
            XCTAssertTrue("\($0)".contains("input 's' is a string tensor"), "\($0)")
        }
        XCTAssertThrowsError(try SyntheticFeeds.make(for: [ValueInfo(name: "u", type: nil)])) {
            XCTAssertTrue("\($0)".contains("input 'u' has no declared tensor type"), "\($0)")
        }
        XCTAssertThrowsError(try SyntheticFeeds.make(for: [inputs[0]], dimensions: ["batch": 1 << 40])) {
            XCTAssertTrue("\($0)".contains("too large") && "\($0)".contains("--dim"), "\($0)")
        }
    }

    func testLatencyStatistics() {
        let t = InferenceTiming(latencies: [5, 1, 4, 2, 3, 10, 6, 7, 9, 8].map { Double($0) })
        XCTAssertEqual(t.median, 6)
        XCTAssertEqual(t.minimum, 1)
        XCTAssertEqual(t.p90, 9, "nearest rank: the 9th of 10")
    }

    func testSessionTimeRunsTheModel() throws {
        let session = try InferenceSession(path: Fixtures.example("digits/model.onnx"))
        let feeds = try SyntheticFeeds.make(for: session.inputs, defaultDimension: 4)
        let timing = try session.time(feeds, warmup: 1, warmupSeconds: 0, runs: 3)
        XCTAssertEqual(timing.latencies.count, 3)
        XCTAssertTrue(timing.latencies.allSatisfy { $0 > 0 })
        XCTAssertThrowsError(try session.time(feeds, runs: 0))
    }

    func testBenchCommandOnAModel() throws {
        let model = Fixtures.example("digits/model.onnx")
        let r = try CLI.run(["bench", model, "--infer", "--steps", "3", "--warmup", "1", "--warmup-seconds", "0", "--batch-size", "8", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual(json["runs"] as? Int, 3)
        XCTAssertEqual(json["inputs"] as? [String], ["input [8, 64]"])
        for key in ["median_ms", "min_ms", "p90_ms", "peak_rss_mb", "baseline_rss_mb"] {
            XCTAssertGreaterThan(try XCTUnwrap(json[key] as? Double, key), 0, key)
        }
        let text = try CLI.run(["bench", model, "--infer", "--steps", "2", "--warmup-seconds", "0"])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.hasPrefix("\(model): 2 runs on input [1, 64], "), text.stdout)
        XCTAssertTrue(text.stdout.contains("  latency: median ") && text.stdout.contains("  peak memory: "), text.stdout)

        try CLI.assertFails(["bench", model], mentioning: ["\(model): a model is timed with --infer"])
        try CLI.assertFails(["bench", model, "--infer", "--dim", "batch"], mentioning: ["--dim expects NAME=SIZE", "'batch'"])
        try CLI.assertFails(["bench", "/nonexistent/model.onnx", "--infer"], mentioning: ["/nonexistent/model.onnx"])
    }
}
