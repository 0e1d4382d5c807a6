import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// Paths to the committed fixtures (Tests/Fixtures/...), found from this file's location.
enum DataFixtures {
    static let root: String = {
        Fixtures.root
    }()

    static func data(_ name: String) -> String { root + "/data/" + name }

    /// The ramp the fixture script writes: i * 0.5 - 3 for floats.
    static func floatRamp(_ n: Int) -> [Double] { (0..<n).map { Double($0) * 0.5 - 3 } }

    /// A fresh temporary folder, removed when the test ends.
    static func temporaryDirectory(_ test: XCTestCase) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("onnx-train-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }
}

/// Asserts that `body` throws an `OnnxTrainError` of `kind` whose message contains every fragment.
func assertOnnxTrainError<T>(_ kind: OnnxTrainError.Kind, containing fragments: [String], _ body: () throws -> T,
                             file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error containing \(fragments)", file: file, line: line)
    } catch let error as OnnxTrainError {
        XCTAssertEqual(error.kind, kind, "\(error.message)", file: file, line: line)
        for f in fragments { XCTAssertTrue(error.message.contains(f), "'\(error.message)' does not mention '\(f)'", file: file, line: line) }
        XCTAssertFalse(error.message.contains("\n"), "error is not one line: \(error.message)", file: file, line: line)
    } catch {
        XCTFail("expected OnnxTrainError, got \(type(of: error)): \(error)", file: file, line: line)
    }
}
