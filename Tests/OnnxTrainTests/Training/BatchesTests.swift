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

    /// 10 examples in batches of 4: 4, 4 and a last batch of 2 (or two with dropLast).
    func testTheLastPartialBatchIsKeptUnlessDropped() throws {
        let input = Tensor(shape: [10, 1], scalars: (0..<10).map { Float($0) })
        let labels = Tensor(shape: [20], scalars: (0..<20).map { Int64($0) })
        let b = try Batches(arrays: ["input": input, "labels": labels], names: ["input", "labels"], batchSize: 4)
        XCTAssertEqual(b.count, 3)
        XCTAssertEqual(b.exampleCount, 10)
        XCTAssertEqual((0..<3).map { b.examples(inBatch: $0) }, [4, 4, 2])
        XCTAssertEqual(b.batch(2)["input"]?.scalars(as: Float.self), [8, 9])
        XCTAssertEqual(b.batch(2)["labels"]?.scalars(as: Int64.self), [16, 17, 18, 19])
        let shuffled = b.batch(2, order: [9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
        XCTAssertEqual(shuffled["input"]?.scalars(as: Float.self), [1, 0])
        XCTAssertEqual(shuffled["labels"]?.scalars(as: Int64.self), [2, 3, 0, 1])

        let dropped = try Batches(arrays: ["input": input, "labels": labels], names: ["input", "labels"], batchSize: 4, dropLast: true)
        XCTAssertEqual(dropped.count, 2)
        XCTAssertEqual(dropped.exampleCount, 8)
        XCTAssertEqual(dropped.totalExamples, 10)
        // With a shuffled order the dropped examples change every pass: the last two of the order.
        XCTAssertEqual(dropped.batch(1, order: [9, 8, 7, 6, 5, 4, 3, 2, 1, 0])["input"]?.scalars(as: Float.self), [5, 4, 3, 2])
        XCTAssertThrowsError(try Batches(arrays: ["input": input], names: ["input"], batchSize: 11, dropLast: true)) { e in
            XCTAssertTrue("\(e)".contains("'input' has 10 rows, fewer than one batch of 11"), "\(e)")
        }
        // Fewer examples than one batch, kept: one partial batch.
        XCTAssertEqual(try Batches(arrays: ["input": input], names: ["input"], batchSize: 11).examples(inBatch: 0), 10)
    }

    func testErrorsNameTheArray() throws {
        let input = Tensor(shape: [6, 2], scalars: (0..<12).map { Float($0) })
        // 5 label rows for 6 examples: no whole number per example, so the batch size must divide.
        XCTAssertThrowsError(try Batches(arrays: ["input": input, "labels": Tensor(shape: [5], scalars: [Int64](repeating: 0, count: 5))],
                                         names: ["input", "labels"], batchSize: 4)) { e in
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
