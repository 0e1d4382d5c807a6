@testable import OnnxTrain
import XCTest

/// Float32 products whose blocks go to oneDNN's sgemm (`DnnlGemm`: blocks of 2^20+ multiply-adds,
/// 128+ rows, K 128+, 16+ columns, B transposed only for K and N up to 1024, where oneDNN has
/// AVX-512 kernels) and the ones beside them
/// that stay on OpenBLAS: every element against float64 loops, padded row strides, alpha/beta (beta
/// 0 over a C of NaNs), one and two threads; and, on one thread, the product is oneDNN's own bit
/// for bit exactly where `takes` says so, so the path the rule names is the path that runs.
final class DnnlGemmTests: XCTestCase {
    func testBlocksMatchPlainLoopsOnTheRulesPath() {
        let original = BLAS.threadCount
        defer { BLAS.threadCount = original }
        print("oneDNN sgemm for float32 blocks on this CPU: \(DnnlGemm.available)")
        // NN, TN and NT over the thresholds (at two threads some blocks fall under them), NT with K over its
        // limit, K under 128, rows under 128, a thin C (17 columns), TT, a small product.
        let shapes: [(m: Int, n: Int, k: Int, transA: Bool, transB: Bool)] = [
            (260, 96, 160, false, false), (150, 300, 130, true, false), (140, 40, 500, false, true),
            (130, 24, 1100, false, true), (300, 60, 100, false, false), (100, 300, 300, false, false),
            (300, 17, 300, false, false), (160, 160, 160, true, true), (40, 48, 64, false, false),
        ]
        var worst32 = 0.0, onOneDNN = 0
        for threads in [1, 2] {
            BLAS.threadCount = threads
            for (s, shape) in shapes.enumerated() {
                let (m, n, k, transA, transB) = shape
                for (alpha, beta) in [(1.0, 0.0), (-1.5, 0.5)] {
                    let label = "threads \(threads) m \(m) n \(n) k \(k) transA \(transA) transB \(transB) alpha \(alpha) beta \(beta)"
                    let (a, b, c0, expected, lda, ldb, ldc) = BLASTests.product(m: m, n: n, k: k, transA: transA, transB: transB,
                                                                              alpha: alpha, beta: beta, seed: UInt64(s * 10 + threads))
                    let (a32, b32) = (a.map { Float($0) }, b.map { Float($0) })
                    var c32 = c0.map { Float($0) }
                    BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: Float(alpha), a: a32, lda: lda,
                              b: b32, ldb: ldb, beta: Float(beta), c: &c32, ldc: ldc)
                    for i in 0..<m {
                        for j in 0..<ldc {
                            let at = i * ldc + j
                            if j >= n {
                                XCTAssertEqual(c32[at].bitPattern, Float(c0[at]).bitPattern, "\(label): wrote past row \(i)")
                                continue
                            }
                            // Relative to k (k products of values below 2 in magnitude).
                            worst32 = max(worst32, abs(Double(c32[at]) - expected[at]) / Double(k))
                            if !c32[at].isFinite { XCTFail("\(label): C[\(i), \(j)] is \(c32[at])") }
                        }
                    }
                    guard threads == 1 else { continue }
                    // One thread runs the whole product as one block: oneDNN's exactly when the rule takes it.
                    let takes = DnnlGemm.takes(transB: transB, m: m, n: n, k: k)
                    let rangeOK = !transB || (k <= DnnlGemm.transposedMaximumK && n <= DnnlGemm.transposedMaximumN)
                    let sizeOK = min(m, k) >= 128 && n >= 16 && m * n * k >= DnnlGemm.minimumWork
                    XCTAssertEqual(takes, DnnlGemm.available && rangeOK && sizeOK, label)
                    guard takes else { continue }
                    onOneDNN += 1
                    var direct = c0.map { Float($0) }
                    let ran = direct.withUnsafeMutableBufferPointer { c in
                        DnnlGemm.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: Float(alpha), a: a32, lda: lda,
                                       b: b32, ldb: ldb, beta: Float(beta), c: c.baseAddress!, ldc: ldc)
                    }
                    XCTAssertTrue(ran, label)
                    XCTAssertEqual(c32.map(\.bitPattern), direct.map(\.bitPattern), "\(label): not oneDNN's product")
                }
            }
        }
        print("DnnlGemmTests: largest difference from float64 loops \(worst32) per unit of k; \(onOneDNN) products on oneDNN")
        XCTAssertLessThanOrEqual(worst32, 5e-7)
        XCTAssertEqual(onOneDNN, DnnlGemm.available ? 10 : 0)
    }
}
