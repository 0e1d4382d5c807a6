@testable import OnnxTrain
import XCTest

/// Transpose's 8 x 8 register tiles (4-byte elements whose contiguous input axis moves away from
/// the end) and the strided copy it falls back to, against the element each output index names.
final class TransposeTilesTests: XCTestCase {
    /// Every multi-index of `shape` in row-major order.
    private func indices(_ shape: [Int]) -> [[Int]] {
        var result: [[Int]] = [[]]
        for d in shape { result = result.flatMap { prefix in (0..<d).map { prefix + [$0] } } }
        return result
    }

    func testTransposesMatchIndexing() throws {
        let cases: [([Int], [Int])] = [
            ([8, 8], [1, 0]), ([13, 21], [1, 0]), ([7, 30], [1, 0]), ([40, 3], [1, 0]), ([2, 3, 16, 24], [0, 1, 3, 2]),
            ([2, 17, 3, 9], [0, 2, 3, 1]), ([2, 9, 3, 17], [0, 3, 1, 2]), ([3, 10, 4, 64], [0, 2, 1, 3]), ([5, 1, 12, 1, 11], [4, 2, 0, 3, 1]),
            ([4, 64, 2, 32], [0, 2, 3, 1]), ([2, 3, 4, 5, 6, 7], [5, 3, 1, 4, 2, 0]), ([0, 9, 9], [2, 1, 0]), ([1, 1], [1, 0]),
            ([300, 260], [1, 0]),
            // Axes consecutive in the input merged for the copy: channel shuffles, identity and size-1 axes.
            ([1, 4, 34, 28, 28], [0, 2, 1, 3, 4]), ([2, 3, 5, 4, 6], [0, 2, 1, 3, 4]), ([3, 1, 4, 5], [0, 2, 1, 3]),
            ([2, 3, 4], [0, 1, 2]), ([2, 1, 3], [1, 0, 2]), ([4, 3, 1, 5], [1, 0, 3, 2]), ([0, 2, 3], [1, 0, 2]),
        ]
        for (shape, perm) in cases {
            let n = shape.reduce(1, *)
            let values = (0..<n).map { Double($0 % 1000) - 500 }
            let outShape = perm.map { shape[$0] }
            let inStrides = contiguousStrides(shape)
            let want = indices(outShape).map { index in values[zip(index, perm).reduce(0) { $0 + $1.0 * inStrides[$1.1] }] }
            for dtype in [DType.float32, .int32, .uint32, .float64, .int16] {
                let shift = dtype == .uint32 ? 500.0 : 0
                let x = try Tensor(shape: shape, scalars: values.map { $0 + shift }).cast(to: dtype)
                let y = try transpose(x, perm: perm)
                XCTAssertEqual(y.shape, outShape)
                XCTAssertEqual(y.dtype, dtype)
                XCTAssertEqual(try y.doubles(), want.map { $0 + shift }, "\(dtype) \(shape) perm \(perm)")
            }
        }
        // NaN payloads and signed zeros move bit for bit.
        let bits: [UInt32] = [0x7FC0_1234, 0x8000_0000, 0xFF80_0001, 1, 0x7F7F_FFFF] + (0..<59).map { UInt32($0) * 0x0101_0101 }
        let x = Tensor(shape: [8, 8], scalars: bits).reinterpreted(as: .float32)
        let y = try transpose(x, perm: [1, 0]).reinterpreted(as: .uint32).scalars(as: UInt32.self)
        for i in 0..<8 { for j in 0..<8 { XCTAssertEqual(y[i * 8 + j], bits[j * 8 + i]) } }
    }
}
