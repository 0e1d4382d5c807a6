import XCTest
@testable import OnnxTrain

final class BatchesTests: XCTestCase {
    /// Inputs [4, 2] with token-level labels [4 * 3]: 2 batches of 2 examples.
    func makeBatches() throws -> Batches {
        let input = Tensor(shape: [4, 2], scalars: (0..<8).map { Float($0) })
        let labels = Tensor(shape: [12], scalars: (0..<12).map { Int64(100 + $0) })
        return try Batches(arrays: ["input": input, "labels": labels, "unused": Tensor(shape: [1], scalars: [Float(0)])],
                           names: ["input", "labels"], batchSize: 2)
    }

    func testCutsEveryArrayIntoEqualParts() throws {
        let b = try makeBatches()
        XCTAssertEqual(b.count, 2)
        XCTAssertEqual(b.rows, ["input": 2, "labels": 6])
        let second = b.batch(1)
        XCTAssertEqual(second["input"]?.shape, [2, 2])
        XCTAssertEqual(second["input"]?.scalars(as: Float.self), [4, 5, 6, 7])
        XCTAssertEqual(second["labels"]?.scalars(as: Int64.self), [106, 107, 108, 109, 110, 111])
        XCTAssertNil(second["unused"])
    }

    func testShuffledExamplesKeepTheirRowsTogether() throws {
        let b = try makeBatches()
        XCTAssertTrue(b.examplesSeparable)
        let batch = b.batch(0, order: [3, 0, 2, 1])
        XCTAssertEqual(batch["input"]?.scalars(as: Float.self), [6, 7, 0, 1])
        XCTAssertEqual(batch["labels"]?.scalars(as: Int64.self), [109, 110, 111, 100, 101, 102])
    }

    func testErrorsNameTheArray() throws {
        let input = Tensor(shape: [6, 2], scalars: (0..<12).map { Float($0) })
        XCTAssertThrowsError(try Batches(arrays: ["input": input], names: ["input"], batchSize: 4)) { e in
            XCTAssertTrue("\(e)".contains("'input' has 6 rows, which batch size 4 does not divide"), "\(e)")
        }
        XCTAssertThrowsError(try Batches(arrays: ["input": input, "labels": Tensor(shape: [5], scalars: [Int64](repeating: 0, count: 5))],
                                         names: ["input", "labels"], batchSize: 3)) { e in
            XCTAssertTrue("\(e)".contains("'labels' has 5 rows, which do not split into 2 equal batches"), "\(e)")
        }
        XCTAssertThrowsError(try Batches(arrays: ["input": input], names: ["input", "labels"], batchSize: 3)) { e in
            XCTAssertTrue("\(e)".contains("no array 'labels' (the graph expects: input, labels; the data has: input)"), "\(e)")
        }
    }
}
