import Foundation
import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// Runs every case under Tests/Fixtures/math_ort (written by
/// Tests/Fixtures/scripts/make_math_ort_cases.py from onnxruntime 1.19.2): the math ops over all
/// element types, broadcasting patterns, axes and attributes, compared with rtol 1e-3, atol 1e-5.
final class MathOnnxRuntimeCaseTests: XCTestCase {
    func testEveryCaseMatchesOnnxRuntime() throws {
        let root = Fixtures.path("math_ort")
        let names = try FileManager.default.contentsOfDirectory(atPath: root).sorted()
        XCTAssertGreaterThan(names.count, 500, "fixtures missing at \(root)")
        let runner = ConformanceRunner()
        var failures: [String] = []
        for name in names {
            let result = runner.run(directory: root + "/" + name)
            if !result.passed { failures.append("\(name): \(result.reason ?? "?")") }
        }
        print("math_ort: \(names.count - failures.count) passed, \(failures.count) failed")
        XCTAssert(failures.isEmpty, "\(failures.count) math cases disagree with onnxruntime:\n" + failures.joined(separator: "\n"))
    }
}
