@testable import OnnxTrain
import CDNNL
import Synchronization
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Float32 products whose blocks go to oneDNN's sgemm (`DnnlGemm`: blocks of 2^20+ multiply-adds,
/// 128+ rows, K 128+, 16+ columns, B transposed only for K and N up to 1024, where oneDNN has
/// AVX-512 kernels; beside OpenBLAS's AVX2 kernels every block of 2^15+ multiply-adds and 16+
/// columns, B transposed from 32 rows) and the ones beside them
/// that stay on OpenBLAS: every element against float64 loops, padded row strides, alpha/beta (beta
/// 0 over a C of NaNs), one and two threads; and, on one thread, the product is oneDNN's own bit
/// for bit exactly where `takes` says so, so the path the rule names is the path that runs.
final class DnnlGemmTests: XCTestCase {
    func testBlocksMatchPlainLoopsOnTheRulesPath() {
        let original = BLAS.threadCount
        defer { BLAS.threadCount = original }
        print("oneDNN sgemm for float32 blocks on this CPU: \(DnnlGemm.available); OpenBLAS kernels \(BLAS.openBLASCore)")
        // NN, TN and NT over the thresholds (at two threads some blocks fall under them), NT with K over its
        // limit, K under 128, rows under 128, a thin C (17 columns), TT, a small product.
        let shapes: [(m: Int, n: Int, k: Int, transA: Bool, transB: Bool)] = [
            (260, 96, 160, false, false), (150, 300, 130, true, false), (140, 40, 500, false, true),
            (130, 24, 1100, false, true), (300, 60, 100, false, false), (100, 300, 300, false, false),
            (300, 17, 300, false, false), (160, 160, 160, true, true), (40, 48, 64, false, false),
            (20, 16, 50, false, false), (24, 64, 64, false, true),
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
                    let ruled: Bool
                    if BLAS.openBLASRunsAVX512 {
                        let rangeOK = !transB || (k <= DnnlGemm.transposedMaximumK && n <= DnnlGemm.transposedMaximumN)
                        ruled = rangeOK && min(m, k) >= 128 && n >= 16 && m * n * k >= DnnlGemm.minimumWork
                    } else {
                        // Beside OpenBLAS's AVX2 kernels: from 2^15 multiply-adds, B transposed from 32 rows.
                        ruled = n >= 16 && m * n * k >= 1 << 15 && (!transB || m >= 32)
                    }
                    XCTAssertEqual(takes, DnnlGemm.available && ruled, label)
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
        XCTAssertEqual(onOneDNN, DnnlGemm.available ? (BLAS.openBLASRunsAVX512 ? 10 : 18) : 0)
    }

    /// oneDNN 2's generated sgemm kernels point rsp into the heap while they run (oneDNN issue
    /// #4845): a signal handled meanwhile wrote its frame there, and glibc aborted ("corrupted size
    /// vs. prev_size", "double free or corruption") within a few hundred products. With signals held
    /// around each call, a 20 µs timer's signals arrive between the products: the heap and every
    /// product stay intact, and the thread's signal mask is as it was.
    func testSignalsDuringProductsLeaveHeapAndResultsIntact() {
        // The shapes of a digits MLP's training step at batch 256 (B not transposed: the kernels that move rsp).
        let shapes: [(m: Int, n: Int, k: Int, transA: Bool)] = [(256, 256, 128, false), (128, 256, 256, true), (256, 64, 256, true), (160, 256, 128, false)]
        _ = alarmsDelivered.load(ordering: .relaxed)  // initialise the global before the handler can run
        let previous = signal(SIGALRM) { _ in alarmsDelivered.add(1, ordering: .relaxed) }
        var timer = itimerval(it_interval: timeval(tv_sec: 0, tv_usec: 20), it_value: timeval(tv_sec: 0, tv_usec: 20))
        XCTAssertEqual(setitimer(__itimer_which_t(ITIMER_REAL.rawValue), &timer, nil), 0)
        var worst = 0.0
        for iteration in 0..<1000 {
            let (m, n, k, transA) = shapes[iteration % shapes.count]
            // Fresh heap blocks each time, as a training step allocates its values.
            let a = (0..<(m * k)).map { Float(($0 * 7 + iteration) % 13) * 0.25 }
            let b = (0..<(k * n)).map { Float(($0 * 5 + iteration) % 11) * 0.5 }
            var c = [Float](repeating: .nan, count: m * n)
            let ok = c.withUnsafeMutableBufferPointer { pc in
                DnnlGemm.sgemm(transA: transA, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: transA ? m : k, b: b, ldb: n,
                               beta: 0, c: pc.baseAddress!, ldc: n)
            }
            XCTAssertTrue(ok, "oneDNN refused \(m)x\(n)x\(k)")
            // Two entries against float64 (products of quarters and halves: exact in float32 sums this small).
            for (i, j) in [(iteration % m, (iteration * 7) % n), (m - 1, n - 1)] {
                var expected = 0.0
                for p in 0..<k { expected += Double(transA ? a[p * m + i] : a[i * k + p]) * Double(b[p * n + j]) }
                worst = max(worst, abs(Double(c[i * n + j]) - expected))
            }
        }
        timer = itimerval()
        setitimer(__itimer_which_t(ITIMER_REAL.rawValue), &timer, nil)
        signal(SIGALRM, previous)
        var mask = sigset_t()
        pthread_sigmask(SIG_BLOCK, nil, &mask)
        XCTAssertEqual(sigismember(&mask, SIGALRM), 0, "SIGALRM left blocked after oneDNN calls")
        XCTAssertEqual(worst, 0, "products of quarters and halves differ from float64")
        XCTAssertGreaterThan(alarmsDelivered.load(ordering: .relaxed), 100, "the timer's signals did not arrive")
    }
}

/// SIGALRMs handled during testSignalsDuringProductsLeaveHeapAndResultsIntact.
private let alarmsDelivered = Atomic<Int>(0)
