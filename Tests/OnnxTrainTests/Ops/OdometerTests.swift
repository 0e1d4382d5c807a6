@testable import OnnxTrain
import XCTest

/// The one multi-index walk (`Odometer`) and its strided helpers against offsets computed
/// directly from each multi-index.
final class OdometerTests: XCTestCase {
    /// Every multi-index of `shape` in row-major order.
    private func indices(_ shape: [Int]) -> [[Int]] {
        var result: [[Int]] = [[]]
        for d in shape { result = result.flatMap { prefix in (0..<d).map { prefix + [$0] } } }
        return result
    }

    func testOffsetsMatchDotProductsForEveryOperand() {
        let shape = [2, 3, 4]
        let strides = [[12, 4, 1], [0, 1, 3], [4, 0, 1], [1, 2, 0]]
        var walk = Odometer(shape: shape, strides: strides, start: SIMD4(5, 0, 0, 7))
        for index in indices(shape) {
            XCTAssertEqual(walk.index, index)
            for k in 0..<4 {
                let expected = zip(index, strides[k]).reduce(k == 0 ? 5 : (k == 3 ? 7 : 0)) { $0 + $1.0 * $1.1 }
                XCTAssertEqual(walk.offsets[k], expected, "operand \(k) at \(index)")
            }
            walk.advance()
        }
        // Past the end the walk wraps to the start.
        XCTAssertEqual(walk.index, [0, 0, 0])
        XCTAssertEqual(walk.offsets, SIMD4(5, 0, 0, 7))
    }

    func testRowStepsSkipTheLastAxis() {
        var rows = Odometer(shape: [2, 3, 5], strides: [[15, 5, 1]])
        var starts: [Int] = []
        for _ in 0..<6 { starts.append(rows.offsets[0]); rows.advance(axes: 2) }
        XCTAssertEqual(starts, [0, 5, 10, 15, 20, 25])
    }

    func testStridedIndicesTransposeAndBroadcast() {
        // A [2, 3] tensor read transposed ([3, 2], strides [1, 3]) and a [3] row broadcast to [2, 3].
        XCTAssertEqual(stridedIndices(shape: [3, 2], strides: [1, 3]), [0, 3, 1, 4, 2, 5])
        XCTAssertEqual(gatherStrided([10, 20, 30], shape: [2, 3], strides: [0, 1]), [10, 20, 30, 10, 20, 30])
        XCTAssertEqual(stridedIndices(shape: [], strides: [], offset: 4), [4])
        XCTAssertEqual(stridedIndices(shape: [2, 0], strides: [1, 1]), [])
    }
}
