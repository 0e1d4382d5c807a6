import OnnxTrain
import XCTest

/// BLAS.gemm's matrix-vector paths (one row or one column of C go through gemv, split over the
/// pool threads when large): every transpose combination, padded row strides, alpha/beta, and a
/// C full of NaNs with beta 0, against plain float64 loops.
final class BLASTests: XCTestCase {
    /// (m, n, k): one row (small, and past the threading threshold of 2^17 multiply-adds with an
    /// output count that is no multiple of 16), one column, and a 1×1 result.
    static let shapes: [(Int, Int, Int)] = [(1, 37, 29), (1, 1003, 517), (41, 1, 23), (777, 1, 400), (1, 1, 50)]

    /// Random operands for C = alpha·op(A)·op(B) + beta·C with row strides 3 past the row length
    /// (a stride mix-up reads the padding), C full of NaNs when beta is 0, and the expected C from
    /// plain float64 loops.
    static func product(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, alpha: Double, beta: Double, seed: UInt64)
        -> (a: [Double], b: [Double], c0: [Double], expected: [Double], lda: Int, ldb: Int, ldc: Int) {
        let (ar, ac) = transA ? (k, m) : (m, k), (br, bc) = transB ? (n, k) : (k, n)
        let lda = ac + 3, ldb = bc + 3, ldc = n + 3
        let a = randomDoubles([ar * lda], seed: seed).scalars(as: Double.self)
        let b = randomDoubles([br * ldb], seed: seed + 1).scalars(as: Double.self)
        let c0 = beta == 0 ? [Double](repeating: .nan, count: m * ldc) : randomDoubles([m * ldc], seed: seed + 2).scalars(as: Double.self)
        var expected = c0
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k { sum += (transA ? a[p * lda + i] : a[i * lda + p]) * (transB ? b[j * ldb + p] : b[p * ldb + j]) }
                expected[i * ldc + j] = alpha * sum + (beta == 0 ? 0 : beta * c0[i * ldc + j])
            }
        }
        return (a, b, c0, expected, lda, ldb, ldc)
    }

    func testVectorProductsMatchPlainLoops() {
        var worst32 = 0.0, worst64 = 0.0
        for (s, (m, n, k)) in Self.shapes.enumerated() {
            for transA in [false, true] {
                for transB in [false, true] {
                    for (alpha, beta) in [(1.0, 0.0), (0.75, 1.0), (-1.5, 0.5)] {
                        let label = "m \(m) n \(n) k \(k) transA \(transA) transB \(transB) alpha \(alpha) beta \(beta)"
                        let seed = UInt64(s * 100 + (transA ? 10 : 0) + (transB ? 20 : 0)) + UInt64(alpha * 4 + 8)
                        let (a, b, c0, expected, lda, ldb, ldc) = Self.product(m: m, n: n, k: k, transA: transA, transB: transB,
                                                                              alpha: alpha, beta: beta, seed: seed)
                        var c64 = c0
                        BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                                  beta: beta, c: &c64, ldc: ldc)
                        var c32 = c0.map { Float($0) }
                        BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: Float(alpha), a: a.map { Float($0) }, lda: lda,
                                  b: b.map { Float($0) }, ldb: ldb, beta: Float(beta), c: &c32, ldc: ldc)
                        for i in 0..<m {
                            for j in 0..<ldc {
                                let at = i * ldc + j
                                if j >= n {
                                    // Past the row: untouched.
                                    XCTAssertEqual(c64[at].bitPattern, c0[at].bitPattern, "\(label): wrote past row \(i)")
                                    continue
                                }
                                worst64 = max(worst64, abs(c64[at] - expected[at]))
                                // float32 relative to the sum of magnitudes' scale (k products of values below 2).
                                worst32 = max(worst32, abs(Double(c32[at]) - expected[at]) / Double(k))
                                if !c64[at].isFinite || !c32[at].isFinite { XCTFail("\(label): C[\(i), \(j)] is \(c64[at]) / \(c32[at])") }
                            }
                        }
                    }
                }
            }
        }
        print("BLASTests: largest difference from float64 loops: float64 \(worst64), float32 \(worst32) per unit of k")
        XCTAssertLessThanOrEqual(worst64, 1e-12)   // measured 2.4e-13
        XCTAssertLessThanOrEqual(worst32, 5e-7)   // measured 1.9e-7
    }
    /// `innerSplit` products (a fully connected layer's input gradient dY·W: C small, B a weight
    /// [k, n] whose rows each thread owns) run with K split over the threads and the parts summed:
    /// with 1, 2 and 3 threads, alpha/beta (beta 0 over a C of NaNs), padded row strides, against
    /// float64 loops, and the float32 result against the same product without the split within
    /// float32 rounding of a K-term sum. Shapes where the split does not apply (2m > k, transA,
    /// transB) take the usual path and agree bit for bit.
    func testInnerSplitProductsMatchPlainLoops() {
        let original = BLAS.threadCount
        defer { BLAS.threadCount = original }
        var worst64 = 0.0, worst32 = 0.0, worstSplit = 0.0
        for threads in [1, 2, 3] {
            BLAS.threadCount = threads
            for (m, n, k, transB) in [(64, 512, 512, false), (37, 100, 700, false), (300, 64, 512, false), (64, 96, 512, true)] {
                for transA in [false, true] {
                    for (alpha, beta) in [(1.0, 0.0), (-1.5, 0.5)] {
                        let label = "threads \(threads) m \(m) n \(n) k \(k) transA \(transA) transB \(transB) alpha \(alpha) beta \(beta)"
                        let seed = UInt64(m * 7 + n * 3 + k + threads * 1000) + (transA ? 1 : 0)
                        let (a, b, c0, expected, lda, ldb, ldc) = Self.product(m: m, n: n, k: k, transA: transA, transB: transB,
                                                                              alpha: alpha, beta: beta, seed: seed)
                        var c64 = c0
                        BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                                  beta: beta, c: &c64, ldc: ldc, innerSplit: true)
                        let (a32, b32) = (a.map { Float($0) }, b.map { Float($0) })
                        var split32 = c0.map { Float($0) }, plain32 = split32
                        BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: Float(alpha), a: a32, lda: lda,
                                  b: b32, ldb: ldb, beta: Float(beta), c: &split32, ldc: ldc, innerSplit: true)
                        BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: Float(alpha), a: a32, lda: lda,
                                  b: b32, ldb: ldb, beta: Float(beta), c: &plain32, ldc: ldc)
                        let splits = threads > 1 && !transA && !transB && 2 * m <= k
                        for i in 0..<m {
                            for j in 0..<ldc {
                                let at = i * ldc + j
                                if j >= n {
                                    XCTAssertEqual(c64[at].bitPattern, c0[at].bitPattern, "\(label): wrote past row \(i)")
                                    XCTAssertEqual(split32[at].bitPattern, Float(c0[at]).bitPattern, "\(label): wrote past row \(i)")
                                    continue
                                }
                                worst64 = max(worst64, abs(c64[at] - expected[at]))
                                // Relative to k (k products of values below 2 in magnitude).
                                worst32 = max(worst32, abs(Double(split32[at]) - expected[at]) / Double(k))
                                if splits {
                                    worstSplit = max(worstSplit, abs(Double(split32[at]) - Double(plain32[at])) / Double(k))
                                } else {
                                    XCTAssertEqual(split32[at].bitPattern, plain32[at].bitPattern, "\(label): C[\(i), \(j)]")
                                }
                                if !c64[at].isFinite || !split32[at].isFinite { XCTFail("\(label): C[\(i), \(j)] is \(c64[at]) / \(split32[at])") }
                            }
                        }
                    }
                }
            }
        }
        print("BLASTests inner split: float64 \(worst64), float32 \(worst32) per unit of k vs float64 loops; vs the unsplit product \(worstSplit)")
        XCTAssertLessThanOrEqual(worst64, 1e-12)
        XCTAssertLessThanOrEqual(worst32, 5e-7)
        XCTAssertLessThanOrEqual(worstSplit, 5e-7)
    }
}
