import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// layernorm_backward's single pass (dx rows and the column sums in blocks of rows, the blocks'
/// partial sums added in block order): dx, dScale and dBias in float32 against float64 sums of the
/// same inputs, with several blocks and a short last one, one block, and the RMS form; and the
/// same bits on one thread as on two.
final class LayerNormGradBlocksTests: XCTestCase {
    let u = Double(Float.ulpOfOne) / 2

    func values(_ count: Int, seed: UInt64, offset: Double = 0) -> [Float] {
        var g = RandomGenerator(seed: seed)
        return (0..<count).map { _ in Float(g.nextDouble() * 2 - 1 + offset) }
    }

    struct Case {
        let dy: [Float], x: [Float], scale: [Float], mean: [Float]?, invStd: [Float]
        let rows: Int, cols: Int
    }

    func makeCase(rows: Int, cols: Int, centered: Bool, seed: UInt64) -> Case {
        let x = values(rows * cols, seed: seed, offset: centered ? 3 : 0), dy = values(rows * cols, seed: seed + 1)
        let scale = values(cols, seed: seed + 2)
        // Statistics as the forward writes them (float), from float64.
        var mean = [Float](), invStd = [Float]()
        for r in 0..<rows {
            let row = x[(r * cols)..<((r + 1) * cols)].map(Double.init)
            let m = centered ? row.reduce(0, +) / Double(cols) : 0
            let v = row.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(cols)
            mean.append(Float(m))
            invStd.append(Float(1 / (v + 1e-5).squareRoot()))
        }
        return Case(dy: dy, x: x, scale: scale, mean: centered ? mean : nil, invStd: invStd, rows: rows, cols: cols)
    }

    func run(_ c: Case) -> (dx: [Float], dScale: [Float], dBias: [Float]) {
        var dx = [Float](repeating: .nan, count: c.rows * c.cols)
        var dScale = [Float](repeating: .nan, count: c.cols), dBias = dScale
        dx.withUnsafeMutableBufferPointer { pdx in
            dScale.withUnsafeMutableBufferPointer { pds in
                dBias.withUnsafeMutableBufferPointer { pdb in
                    let (o, ds, db) = (pdx.baseAddress!, pds.baseAddress!, pdb.baseAddress!)
                    func body(_ mean: UnsafePointer<Float>?) {
                        layerNormBackward(dy: c.dy, x: c.x, scale: c.scale, mean: mean, invStd: c.invStd, dx: o,
                                          dScale: ds, dBias: db, rows: c.rows, cols: c.cols)
                    }
                    if let mean = c.mean { mean.withUnsafeBufferPointer { body($0.baseAddress) } } else { body(nil) }
                }
            }
        }
        return (dx, dScale, dBias)
    }

    /// Each output within float32 rounding of float64 sums over the same float inputs: x̂ rounds
    /// three times (x − m, ·s, ·dy), a sum of n terms n − 1 times more (the block partials add no
    /// more roundings than a row-order sum: each term goes through at most rows − 1 additions).
    func check(_ c: Case, _ got: (dx: [Float], dScale: [Float], dBias: [Float]), file: StaticString = #filePath, line: UInt = #line) {
        let (rows, cols) = (c.rows, c.cols)
        for j in 0..<cols {
            var ds = 0.0, dsSize = 0.0, db = 0.0, dbSize = 0.0
            for r in 0..<rows {
                let g = Double(c.dy[r * cols + j])
                let xhat = (Double(c.x[r * cols + j]) - Double(c.mean?[r] ?? 0)) * Double(c.invStd[r])
                ds += g * xhat; dsSize += abs(g * xhat); db += g; dbSize += abs(g)
            }
            XCTAssertLessThanOrEqual(abs(Double(got.dScale[j]) - ds), Double(rows + 3) * u * dsSize, "dScale[\(j)]", file: file, line: line)
            XCTAssertLessThanOrEqual(abs(Double(got.dBias[j]) - db), Double(rows) * u * dbSize, "dBias[\(j)]", file: file, line: line)
        }
        for r in 0..<rows {
            let m = Double(c.mean?[r] ?? 0), s = Double(c.invStd[r])
            var sumB = 0.0, sizeB = 0.0, sumC = 0.0, sizeC = 0.0
            for j in 0..<cols {
                let b = Double(c.dy[r * cols + j]) * Double(c.scale[j]), xhat = (Double(c.x[r * cols + j]) - m) * s
                sumB += b; sizeB += abs(b); sumC += b * xhat; sizeC += abs(b * xhat)
            }
            let meanB = c.mean == nil ? 0 : sumB / Double(cols), meanC = sumC / Double(cols)
            for j in 0..<cols {
                let b = Double(c.dy[r * cols + j]) * Double(c.scale[j]), xhat = (Double(c.x[r * cols + j]) - m) * s
                let want = s * (b - meanB - xhat * meanC)
                // Each of the three terms to (cols + 8) roundings of its size (the sums' cols, the
                // products' and differences' few), then ·s.
                let bound = Double(cols + 8) * u * s * (abs(b) + (c.mean == nil ? 0 : sizeB / Double(cols)) + abs(xhat) * sizeC / Double(cols))
                XCTAssertLessThanOrEqual(abs(Double(got.dx[r * cols + j]) - want), bound, "dx[\(r), \(j)]", file: file, line: line)
            }
        }
    }

    func testSeveralBlocksOneBlockAndRMS() {
        // 50 columns: 81 rows per block, so 300 rows are blocks of 81, 81, 81 and 57.
        XCTAssertEqual(layerNormGradBlockRows(cols: 50), 81)
        XCTAssertEqual(layerNormGradBlockRows(cols: 192), 32)
        for (rows, cols, centered) in [(300, 50, true), (300, 50, false), (5, 7, true), (1576 / 8, 192, true)] {
            let c = makeCase(rows: rows, cols: cols, centered: centered, seed: UInt64(rows * cols))
            check(c, run(c))
        }
    }

    func testSameBitsOnOneThreadAndTwo() {
        let c = makeCase(rows: 300, cols: 50, centered: true, seed: 9)
        let saved = Parallel.threadCount
        defer { Parallel.threadCount = saved }
        Parallel.threadCount = 1
        let one = run(c)
        Parallel.threadCount = 2
        let two = run(c)
        XCTAssertEqual(one.dx, two.dx)
        XCTAssertEqual(one.dScale, two.dScale)
        XCTAssertEqual(one.dBias, two.dBias)
    }
}
