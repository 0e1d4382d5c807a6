@testable import OnnxTrain
import XCTest

/// General broadcasting split across threads: `BroadcastRows`' runs against offsets computed from
/// each multi-index, and the binary arithmetic (Add, Sub, Mul, Div, Max, Min; the pointer path
/// and `broadcastBinary`) and Where against a float64 reference on shapes that broadcast along
/// middle axes, ranks 1-6, empty tensors and every element type Add takes.
final class BroadcastRowsTests: XCTestCase {
    /// Pairs of shapes broadcasting to each other: size-1 axes in the middle, on either side,
    /// rank 1-6, a scalar, empty results, and sizes large enough to be split across threads.
    static let shapePairs: [([Int], [Int])] = [
        ([5], [1]), ([7], [7]), ([3, 1], [1, 4]), ([2, 3, 4], [2, 1, 4]), ([2, 1, 4], [2, 3, 4]),
        ([4, 3, 17, 17], [4, 1, 17, 17]), ([2, 3, 5, 7], [3, 1, 7]), ([2, 1, 5, 1, 3, 2], [1, 4, 5, 2, 1, 2]),
        ([6, 1, 1, 9], [1, 5, 3, 1]), ([1, 1, 1], [2, 1, 3]), ([], [3, 2]), ([2, 0, 3], [2, 1, 3]), ([0], [1]),
        ([8, 4, 64, 64], [8, 1, 64, 64]), ([16, 3, 40, 40], [16, 3, 1, 40]), ([3, 50_000], [3, 1]),
    ]

    /// Every multi-index of `shape` in row-major order.
    private func indices(_ shape: [Int]) -> [[Int]] {
        var result: [[Int]] = [[]]
        for d in shape { result = result.flatMap { prefix in (0..<d).map { prefix + [$0] } } }
        return result
    }

    /// Flat index of `shape`'s element that output multi-index `index` reads (right-aligned, size-1 axes repeat).
    private func source(_ index: [Int], _ shape: [Int]) -> Int {
        let offset = index.count - shape.count
        var flat = 0
        for (d, size) in shape.enumerated() { flat = flat * size + (size == 1 ? 0 : index[offset + d]) }
        return flat
    }

    func testRunsCoverEveryElementWithItsOperandOffsets() throws {
        for (a, b) in Self.shapePairs where a.reduce(1, *) * b.reduce(1, *) < 200_000 {
            let out = try Broadcast.shape(a, b)
            let n = out.reduce(1, *)
            let layout = BroadcastRows(outShape: out, operandShapes: [a, b, out])
            let expected = indices(out).map { (source($0, a), source($0, b)) }
            // Whole range and ranges starting and ending inside rows.
            for range in [0..<n, (n / 3)..<(2 * n / 3 + 1), min(n, 5)..<min(n, 6)] where range.upperBound <= n {
                var next = range.lowerBound
                layout.forEachRun(range) { e, count, offsets in
                    XCTAssertEqual(e, next, "\(a) \(b) \(range)")
                    XCTAssertGreaterThan(count, 0)
                    for k in 0..<count {
                        XCTAssertEqual(offsets[0] + k * layout.innerStrides[0], expected[e + k].0, "\(a) \(b) element \(e + k)")
                        XCTAssertEqual(offsets[1] + k * layout.innerStrides[1], expected[e + k].1, "\(a) \(b) element \(e + k)")
                        XCTAssertEqual(offsets[2] + k * layout.innerStrides[2], e + k, "\(a) \(b) output")
                    }
                    next = e + count
                }
                XCTAssertEqual(next, range.upperBound, "\(a) \(b) \(range)")
            }
            XCTAssertTrue(layout.innerStrides[0] <= 1 && layout.innerStrides[1] <= 1, "\(a) \(b): rows advance or repeat")
        }
        // Middle broadcast axes merge: a [B, 1, T, T] mask under [B, H, T, T] walks rows of T·T.
        let mask = BroadcastRows(outShape: [4, 3, 17, 17], operandShapes: [[4, 3, 17, 17], [4, 1, 17, 17]])
        XCTAssertEqual(mask.shape, [4, 3, 289])
        XCTAssertEqual(mask.inner, 289)
    }

    /// Small integer values (exact in every type), reproducible per seed.
    private func values(_ count: Int, seed: UInt64, nonZero: Bool = false) -> [Double] {
        var g = RandomGenerator(seed: seed)
        return (0..<count).map { _ in
            let v = Double(Int(g.nextDouble() * 15) - 7)
            return nonZero && v == 0 ? 3 : v
        }
    }

    /// f(a, b) with broadcasting through the arithmetic kernels' own entry (pointer path, else
    /// `zipNumeric`), as the Add/Sub/Mul/Div kernels call it.
    private func run<F: NumericBinaryFunction>(_ a: Tensor, _ b: Tensor, _ f: F) throws -> Tensor {
        try binaryFastPath(a, b, f) ?? zipNumeric(a, b, f)
    }

    /// Every shape pair, both operand orders, each function, float32 and float64, against float64.
    func testArithmeticMatchesFloat64Reference() throws {
        let functions: [(String, (Tensor, Tensor) throws -> Tensor, (Double, Double) -> Double)] = [
            ("Add", { try self.run($0, $1, AddFunction()) }, +), ("Sub", { try self.run($0, $1, SubFunction()) }, -),
            ("Mul", { try self.run($0, $1, MulFunction()) }, *), ("Div", { try self.run($0, $1, DivFunction()) }, /),
            ("Max", { try self.run($0, $1, MaxFunction()) }, { Swift.max($0, $1) }),
            ("Min", { try self.run($0, $1, MinFunction()) }, { Swift.min($0, $1) }),
        ]
        var worst = 0.0
        for (p, (sa, sb)) in Self.shapePairs.enumerated() {
            for (x, y) in [(sa, sb), (sb, sa)] {
                let out = try Broadcast.shape(x, y)
                let va = values(x.reduce(1, *), seed: UInt64(2 * p)), vb = values(y.reduce(1, *), seed: UInt64(2 * p + 1), nonZero: true)
                let outIndices = indices(out)
                for dtype in [DType.float32, .float64] {
                    let a = try Tensor(shape: x, scalars: va).cast(to: dtype), b = try Tensor(shape: y, scalars: vb).cast(to: dtype)
                    for (name, kernel, reference) in functions {
                        let result = try kernel(a, b)
                        XCTAssertEqual(result.shape, out, "\(name) \(x) \(y)")
                        XCTAssertEqual(result.dtype, dtype)
                        let got = try result.doubles()
                        for (e, index) in outIndices.enumerated() {
                            let want = reference(va[source(index, x)], vb[source(index, y)])
                            let error = abs(got[e] - want) / max(1, abs(want))
                            worst = max(worst, error)
                            if error > 1e-7 { XCTFail("\(name) \(dtype) \(x) \(y) element \(e): \(got[e]) vs \(want)"); break }
                        }
                    }
                }
            }
        }
        XCTAssertLessThanOrEqual(worst, 1e-7)
    }

    /// Add over every element type it takes, with a middle broadcast axis, split across threads.
    func testAddTakesEveryElementType() throws {
        let x = [3, 4, 7_000], y = [3, 1, 7_000]
        let va = values(x.reduce(1, *), seed: 90), vb = values(y.reduce(1, *), seed: 91)
        let want: [Double] = (0..<(3 * 4 * 7_000)).map { (e: Int) -> Double in
            let row: Int = (e / 28_000) * 7_000 + e % 7_000
            return va[e] + vb[row]
        }
        for dtype in [DType.float32, .float64, .float16, .bfloat16, .int8, .int16, .int32, .int64, .uint8, .uint16, .uint32, .uint64] {
            let unsigned = [DType.uint8, .uint16, .uint32, .uint64].contains(dtype)
            let shift = unsigned ? 8.0 : 0  // non-negative values for the unsigned types
            let a = try Tensor(shape: x, scalars: va.map { $0 + shift }).cast(to: dtype)
            let b = try Tensor(shape: y, scalars: vb.map { $0 + shift }).cast(to: dtype)
            let got = try run(a, b, AddFunction())
            XCTAssertEqual(got.dtype, dtype)
            XCTAssertEqual(got.shape, x)
            XCTAssertEqual(try got.doubles(), want.map { $0 + 2 * shift }, "\(dtype)")
        }
    }

    /// The generic drivers over the same shapes: Greater and Xor (`broadcastMap`), BitwiseAnd (`broadcastBinary`).
    func testGenericBroadcastDriver() throws {
        for (p, (x, y)) in Self.shapePairs.enumerated() {
            let out = try Broadcast.shape(x, y)
            let va = values(x.reduce(1, *), seed: UInt64(100 + p)), vb = values(y.reduce(1, *), seed: UInt64(200 + p))
            let a = Tensor(shape: x, scalars: va.map { Float($0) }), b = Tensor(shape: y, scalars: vb.map { Float($0) })
            let greater = try zipComparison(a, b, GreaterFunction())
            let ai = Tensor(shape: x, scalars: va.map { Int32($0) }), bi = Tensor(shape: y, scalars: vb.map { Int32($0) })
            let and = try broadcastBinary(ai, bi, Int32.self, Int32.self, Int32.self, outDType: .int32) { $0 & $1 }
            let xor = try logical(Tensor(shape: x, scalars: va.map { $0 > 0 }), Tensor(shape: y, scalars: vb.map { $0 > 0 }), .xor)
            let g = greater.scalars(as: Bool.self), n = and.scalars(as: Int32.self), l = xor.scalars(as: Bool.self)
            XCTAssertEqual(greater.shape, out)
            XCTAssertEqual(xor.shape, out)
            for (e, index) in indices(out).enumerated() {
                let u = va[source(index, x)], v = vb[source(index, y)]
                if g[e] != (u > v) || n[e] != (Int32(u) & Int32(v)) || l[e] != ((u > 0) != (v > 0)) { XCTFail("\(x) \(y) element \(e)"); break }
            }
        }
    }

    /// Where over the same shape pairs with a third shape for the condition, for element sizes 1, 2, 4, 8 and strings.
    func testWhereMatchesIndexedReference() throws {
        for (p, (x, y)) in Self.shapePairs.enumerated() {
            for c in [x, y, [1], Array(x.dropFirst())] {
                guard let out = try? Broadcast.shape([c, x, y]) else { continue }
                var g = RandomGenerator(seed: UInt64(300 + p))
                let vc = (0..<c.reduce(1, *)).map { _ in g.nextDouble() < 0.5 }
                let vx = values(x.reduce(1, *), seed: UInt64(400 + p)), vy = values(y.reduce(1, *), seed: UInt64(500 + p))
                let cond = Tensor(shape: c, scalars: vc)
                let want: [Double] = indices(out).map { index in vc[source(index, c)] ? vx[source(index, x)] : vy[source(index, y)] }
                for dtype in [DType.int8, .float16, .float32, .float64] {
                    let got = try select(cond, try Tensor(shape: x, scalars: vx).cast(to: dtype), try Tensor(shape: y, scalars: vy).cast(to: dtype))
                    XCTAssertEqual(got.shape, out)
                    XCTAssertEqual(got.dtype, dtype)
                    XCTAssertEqual(try got.doubles(), want, "\(dtype) \(c) \(x) \(y)")
                }
                if out.reduce(1, *) < 5_000 {
                    let got = try select(cond, Tensor(shape: x, strings: vx.map { "\($0)" }), Tensor(shape: y, strings: vy.map { "\($0)" }))
                    XCTAssertEqual(got.strings, want.map { "\($0)" }, "strings \(c) \(x) \(y)")
                }
            }
        }
    }
}
