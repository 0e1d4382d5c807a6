#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import OnnxTrain
import XCTest

/// The shared reductions (Sums.swift) and the one softmax / log-softmax kernel against sums and
/// softmaxes computed in Double, for Float and Double and for every tail length.
final class SumsAndSoftmaxTests: XCTestCase {
    private func values(_ n: Int, seed: Int) -> [Double] {
        (0..<n).map { i in sin(Double(i * 7 + seed)) * 3 + 0.5 }
    }

    /// The largest absolute error of the four sums against Double over several lengths.
    private func sumsError<T: FloatElement>(_ type: T.Type) -> Double {
        var worst = 0.0
        for n in [0, 1, 7, 15, 16, 17, 33, 100] {
            let ta = values(n, seed: 1).map { T(fromDouble: $0) }, tb = values(n, seed: 2).map { T(fromDouble: $0) }
            let wa = ta.map(\.doubleValue), wb = tb.map(\.doubleValue)
            let mu = T(fromDouble: 0.25), m = mu.doubleValue
            ta.withUnsafeBufferPointer { pa in
                tb.withUnsafeBufferPointer { pb in
                    guard let p = pa.baseAddress, let q = pb.baseAddress else { return }
                    let (s, c) = sumAndCrossDeviation(q, p, n, mu)
                    let pairs: [(Double, Double)] = [
                        (rowSum(p, n).doubleValue, wa.reduce(0, +)),
                        (dotSum(p, q, n).doubleValue, zip(wa, wb).reduce(0) { $0 + $1.0 * $1.1 }),
                        (squaredDeviationSum(p, n, mu).doubleValue, wa.reduce(0) { $0 + ($1 - m) * ($1 - m) }),
                        (s.doubleValue, wb.reduce(0, +)),
                        (c.doubleValue, zip(wb, wa).reduce(0) { $0 + $1.0 * ($1.1 - m) }),
                    ]
                    for (got, expected) in pairs { worst = max(worst, abs(got - expected)) }
                }
            }
        }
        return worst
    }

    func testSumsMatchDoubleReference() {
        let (f, d) = (sumsError(Float.self), sumsError(Double.self))
        print("Sums: largest error float32 \(f), float64 \(d)")
        // Measured 3.3e-5 (float32, sums of squares up to ~1200) and 1.1e-13 (float64).
        XCTAssertLessThanOrEqual(f, 5e-5)
        XCTAssertLessThanOrEqual(d, 2e-13)
    }

    /// The largest absolute error of softmax and log-softmax over the middle axis of
    /// [outer, n, inner] against Double, for every layout the kernel takes (inner 1 is the
    /// contiguous row path, inner > 1 the strided one).
    private func softmaxError<T: FloatElement>(_ type: T.Type) -> Double {
        var worst = 0.0
        for (outer, n, inner) in [(3, 17, 1), (2, 5, 3), (1, 1, 4), (4, 40, 2)] {
            let x = values(outer * n * inner, seed: n).map { T(fromDouble: $0 * 4) }
            for isLog in [false, true] {
                var out = [T](repeating: 0, count: x.count)
                x.withUnsafeBufferPointer { px in
                    out.withUnsafeMutableBufferPointer { po in
                        guard let px = px.baseAddress, let po = po.baseAddress else { return }
                        softmax(px, po, outer: outer, n: n, inner: inner, log: isLog)
                    }
                }
                for o in 0..<outer {
                    for i in 0..<inner {
                        let row = (0..<n).map { x[(o * n + $0) * inner + i].doubleValue }
                        let m = row.max() ?? 0
                        let lse = m + log(row.reduce(0) { $0 + exp($1 - m) })
                        for k in 0..<n {
                            let expected = isLog ? row[k] - lse : exp(row[k] - lse)
                            worst = max(worst, abs(out[(o * n + k) * inner + i].doubleValue - expected))
                        }
                    }
                }
            }
        }
        return worst
    }

    func testSoftmaxMatchesDoubleReference() {
        let (f, d) = (softmaxError(Float.self), softmaxError(Double.self))
        print("softmax: largest error float32 \(f), float64 \(d)")
        // Measured 1.7e-6 (float32, log-softmax values down to ~-25) and 3.3e-16 (float64).
        XCTAssertLessThanOrEqual(f, 2e-6)
        XCTAssertLessThanOrEqual(d, 1e-15)
    }
}
