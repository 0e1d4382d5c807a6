@testable import OnnxTrain
import Foundation
import Synchronization
import XCTest

/// Constants their kernel consumed (`ConstantRelease`): a packed B released after its first packed
/// product, then every call served from the packed copy with the original's bytes unreadable
/// (the placeholder faults on a read: a test that reaches one crashes), against float64 on each
/// fallback (few rows, strided A and C, a bias and an epilogue); which constants are handed out
/// (a constant two nodes read, a graph output, a Gemm with transA: never); sessions with shape
/// changes, two threads, the user's `Model` intact, and a model read from a file whose released
/// weight is still fetchable by name.
final class ConstantReleaseTests: XCTestCase {

    /// |c - Σ a·b (+ bias)| <= (k + 2)·2⁻²⁴·Σ|a·b| (+|bias|) for every element (plus the epilogue's
    /// doubling where `doubled`).
    func assertNear(_ c: [Float], ldc: Int, m: Int, n: Int, k: Int, a: [Float], lda: Int, b: [Float], bias: [Float]?,
                    doubled: Bool = false, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        for i in 0..<m {
            for j in 0..<n {
                var sum = Double(bias?[j] ?? 0), size = abs(sum)
                for p in 0..<k {
                    let t = Double(a[i * lda + p]) * Double(b[p * n + j])
                    sum += t
                    size += abs(t)
                }
                let want = doubled ? 2 * sum : sum, bound = Double(k + 2) * 0x1p-24 * size * (doubled ? 2 : 1)
                let got = Double(c[i * ldc + j])
                if !(abs(got - want) <= bound) {
                    XCTFail("\(label): C[\(i), \(j)] = \(got), want \(want) (bound \(bound))", file: file, line: line)
                    return
                }
            }
        }
    }

    /// One product through `cache` with `b` (C NaN first, padded to ldc): whether taken, and C.
    func product(_ cache: PackedWeightCache, b: Tensor, m: Int, k: Int, n: Int, lda: Int, ldc: Int, a: [Float], bias: [Float]?,
                 doubling: Bool = false) throws -> (Bool, [Float]) {
        var c = [Float](repeating: .nan, count: max(1, m * ldc))
        let taken = try b.withUnsafeBufferPointer(as: Float.self) { pb in
            a.withUnsafeBufferPointer { pa in
                c.withUnsafeMutableBufferPointer { pc in
                    let C = pc.baseAddress!
                    let epilogue: ((Int, Int, Int, Int) -> Void)? = doubling ? { i0, i1, j0, j1 in
                        for i in i0..<i1 { for j in j0..<j1 { C[i * ldc + j] *= 2 } }
                    } : nil
                    let body = { (pbias: UnsafePointer<Float>?) in
                        cache.gemm(m: m, n: n, k: k, a: pa.baseAddress!, lda: lda, b: b, bElements: pb.baseAddress!, transB: false,
                                   bias: pbias, c: C, ldc: ldc, epilogue: epilogue)
                    }
                    return bias.map { bias in bias.withUnsafeBufferPointer { body($0.baseAddress!) } } ?? body(nil)
                }
            }
        }
        return (taken, c)
    }

    func testReleasedWeightServesEveryCallFromThePackedCopy() throws {
        guard PackedGemm.available else {
            print("oneDNN's brgemm does not run on this CPU: nothing is packed, nothing released")
            return
        }
        let (k, n) = (96, 200)
        let wValues = lcgValues(k * n, seed: 1)
        let w = Tensor(shape: [k, n], scalars: wValues)
        let handle = try XCTUnwrap(ConstantRelease(slot: 0, name: "w", tensor: w))
        XCTAssertTrue(handle.holds(w))
        XCTAssertFalse(handle.holds(Tensor(shape: [k, n], scalars: wValues)), "a copy is not the constant")
        let budget = KernelCacheBudget(limit: 64 << 20)
        let cache = PackedWeightCache(budget: budget, release: handle)
        // Too few rows for packing first: OpenBLAS's, nothing packed or released.
        let a1 = lcgValues(3 * k, seed: 2)
        let (few, _) = try product(cache, b: w, m: 3, k: k, n: n, lda: k, ldc: n, a: a1, bias: nil)
        XCTAssertFalse(few)
        XCTAssertFalse(handle.isReleased)
        // The first packed product releases B and gives its budget back.
        let a = lcgValues(64 * k, seed: 3)
        let (taken, c) = try product(cache, b: w, m: 64, k: k, n: n, lda: k, ldc: n, a: a, bias: nil)
        XCTAssertTrue(taken)
        assertNear(c, ldc: n, m: 64, n: n, k: k, a: a, lda: k, b: wValues, bias: nil, "first packed product")
        XCTAssertTrue(handle.isReleased)
        XCTAssertTrue(cache.isReleased)
        XCTAssertEqual(budget.reserved, 0, "a released B's copy is not charged")
        XCTAssertEqual(w.scalars(as: Float.self), wValues, "the original is never written")
        // From now on the placeholder comes (a read of it faults): every call is served.
        let p = handle.placeholder
        XCTAssertEqual(p.shape, [k, n])
        XCTAssertTrue(handle.holds(p))
        let bias = lcgValues(n, seed: 4)
        // (m, lda pad, ldc pad, bias, epilogue): 1 and 5 rows (under the packing threshold),
        // strided A and C (oneDNN's brgemm takes dense ones only), 200 rows split over the pool.
        let cases: [(Int, Int, Int, Bool, Bool)] = [
            (64, 0, 0, false, false), (1, 0, 0, false, false), (5, 0, 0, true, true), (1, 3, 0, true, false),
            (37, 3, 5, true, true), (200, 0, 0, true, true), (200, 1, 2, false, false), (0, 0, 0, true, false),
        ]
        for (m, padA, padC, withBias, epilogue) in cases {
            let label = "released, \(m) rows, lda +\(padA), ldc +\(padC), bias \(withBias), epilogue \(epilogue)"
            let lda = k + padA, ldc = n + padC
            let a = lcgValues(max(1, m * lda), seed: UInt64(10 + m))
            let (taken, c) = try product(cache, b: p, m: m, k: k, n: n, lda: lda, ldc: ldc, a: a, bias: withBias ? bias : nil, doubling: epilogue)
            XCTAssertTrue(taken, label)
            assertNear(c, ldc: ldc, m: m, n: n, k: k, a: a, lda: lda, b: wValues, bias: withBias ? bias : nil, doubled: epilogue, label)
            for i in 0..<m { for j in n..<ldc { XCTAssertTrue(c[i * ldc + j].isNaN, "\(label): C's padding untouched") } }
        }
        // The unpacked fallback on its own: the same floats as the original.
        let packed = try XCTUnwrap(cache.packedForTests)
        var plain = [Float](repeating: .nan, count: k * n)
        XCTAssertTrue(plain.withUnsafeMutableBufferPointer { packed.unpack(into: $0.baseAddress!) })
        XCTAssertEqual(plain, wValues, "unpacked bit for bit")
    }

    func testABudgetRefusalStillPacksAConsumedWeightButNotAnother() throws {
        guard PackedGemm.available else { return }
        let (k, n) = (64, 64)
        let wValues = lcgValues(k * n, seed: 5)
        let w = Tensor(shape: [k, n], scalars: wValues)
        let tight = KernelCacheBudget(limit: 1024)
        let consumed = PackedWeightCache(budget: tight, release: ConstantRelease(slot: 0, name: "w", tensor: w))
        let a = lcgValues(64 * k, seed: 6)
        let (taken, c) = try product(consumed, b: w, m: 64, k: k, n: n, lda: k, ldc: n, a: a, bias: nil)
        XCTAssertTrue(taken, "a consumed weight replaces its original: packed whatever the budget")
        XCTAssertTrue(consumed.isReleased)
        XCTAssertEqual(tight.reserved, 0)
        assertNear(c, ldc: n, m: 64, n: n, k: k, a: a, lda: k, b: wValues, bias: nil, "consumed under a tight budget")
        let kept = PackedWeightCache(budget: tight)
        let (other, untouched) = try product(kept, b: w, m: 64, k: k, n: n, lda: k, ldc: n, a: a, bias: nil)
        XCTAssertFalse(other, "a weight kept beside its original stays within the budget")
        XCTAssertTrue(untouched.allSatisfy { $0.isNaN })
    }

    /// x [rows, k] · W1 (MatMul) + · W2 (Gemm transB with a constant bias) + W3 · (read twice:
    /// MatMul and Gemm transA) + W4 (a graph output, read by a MatMul) + W5 (Gemm transA).
    func model(k: Int, n: Int, dtype: DType = .float32) -> Model {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(dtype, shape: [.symbol("rows"), .value(k)])),
                    ValueInfo(name: "xt", type: .tensor(dtype, shape: [.value(k), .symbol("rows")]))]
        func weight(_ shape: [Int], seed: UInt64) -> Tensor {
            let v = lcgValues(shape.reduce(1, *), seed: seed)
            return dtype == .float64 ? Tensor(shape: shape, scalars: v.map(Double.init)) : Tensor(shape: shape, scalars: v)
        }
        g.setInitializer("W1", weight([k, n], seed: 11))
        g.setInitializer("W2", weight([n, k], seed: 12))
        g.setInitializer("b2", weight([n], seed: 13))
        g.setInitializer("W3", weight([k, n], seed: 14))
        g.setInitializer("W4", weight([k, n], seed: 15))
        g.setInitializer("W5", weight([k, n], seed: 16))
        g.nodes = [
            Node(opType: "MatMul", inputs: ["x", "W1"], outputs: ["y1"]),
            Node(opType: "Gemm", inputs: ["x", "W2", "b2"], outputs: ["y2"], attributes: ["transB": .int(1)]),
            Node(opType: "MatMul", inputs: ["x", "W3"], outputs: ["y3"]),
            Node(opType: "Gemm", inputs: ["xt", "W3"], outputs: ["y3t"], attributes: ["transA": .int(1)]),
            Node(opType: "MatMul", inputs: ["x", "W4"], outputs: ["y4"]),
            Node(opType: "Gemm", inputs: ["xt", "W5"], outputs: ["y5"], attributes: ["transA": .int(1)]),
        ]
        g.outputs = ["y1", "y2", "y3", "y3t", "y4", "y5", "W4"].map { ValueInfo(name: $0, type: nil) }
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    func feeds(rows: Int, k: Int, seed: UInt64) -> [String: Tensor] {
        let x = lcgValues(rows * k, seed: seed)
        var xt = [Float](repeating: 0, count: rows * k)
        for i in 0..<rows { for p in 0..<k { xt[p * rows + i] = x[i * k + p] } }
        return ["x": Tensor(shape: [rows, k], scalars: x), "xt": Tensor(shape: [k, rows], scalars: xt)]
    }

    /// Every output of `model` against float64.
    func check(_ out: [String: Tensor], _ model: Model, rows: Int, k: Int, n: Int, seed: UInt64, _ label: String) {
        let x = lcgValues(rows * k, seed: seed)
        func w(_ name: String) -> [Float] { model.graph.initializers[name]!.scalars(as: Float.self) }
        var w2t = [Float](repeating: 0, count: k * n)
        let w2 = w("W2")
        for j in 0..<n { for p in 0..<k { w2t[p * n + j] = w2[j * k + p] } }
        for (name, b, bias) in [("y1", w("W1"), nil), ("y2", w2t, w("b2")), ("y3", w("W3"), nil), ("y3t", w("W3"), nil),
                                ("y4", w("W4"), nil), ("y5", w("W5"), nil)] as [(String, [Float], [Float]?)] {
            assertNear(out[name]!.scalars(as: Float.self), ldc: n, m: rows, n: n, k: k, a: x, lda: k, b: b, bias: bias, "\(label) \(name)")
        }
        XCTAssertEqual(out["W4"]!.scalars(as: Float.self), w("W4"), "\(label): the graph output W4 as stored")
    }

    func testSessionReleasesOnlyWhatItsNodeAloneConsumes() throws {
        let (k, n) = (80, 72)
        let model = model(k: k, n: n)
        let original = model.graph.initializers.mapValues { $0.scalars(as: Float.self) }
        let session = try InferenceSession(model: model)
        XCTAssertEqual(session.executor.consumableNames, ["W1", "W2"],
                       "W3 is read twice, W4 is a graph output, W5's Gemm has transA")
        // Shapes change from run to run: packed and released on the first with enough rows, then
        // 1 and 3 rows (under the packing threshold), then many again.
        for (round, rows) in [3, 64, 1, 3, 130, 64].enumerated() {
            let out = try session.run(tensors: feeds(rows: rows, k: k, seed: UInt64(100 + round)))
            check(out, model, rows: rows, k: k, n: n, seed: UInt64(100 + round), "run \(round), \(rows) rows")
            let expected: Set<String> = PackedGemm.available && round >= 1 ? ["W1", "W2"] : []
            XCTAssertEqual(session.executor.releasedNames, expected, "run \(round)")
        }
        // The caller's model is intact: the session never wrote into the storage it shares.
        for (name, v) in original { XCTAssertEqual(model.graph.initializers[name]!.scalars(as: Float.self), v, name) }
        // A fetch of a consumed weight runs on the unoptimised graph: its values as stored.
        let fetched = try session.run(tensors: feeds(rows: 8, k: k, seed: 7), fetches: ["W1", "y1"])
        XCTAssertEqual(fetched["W1"]!.scalars(as: Float.self), original["W1"])
    }

    func testTwoThreadsOnOneSessionGiveOneThreadsResults() throws {
        let (k, n) = (96, 128)
        let model = model(k: k, n: n)
        nonisolated(unsafe) let session = try InferenceSession(model: model)
        let reference = try InferenceSession(model: model)
        // Both sessions packed and released first, so that each call's path is the same in both.
        _ = try session.run(tensors: feeds(rows: 64, k: k, seed: 199))
        _ = try reference.run(tensors: feeds(rows: 64, k: k, seed: 199))
        let rowsList = [64, 1, 40, 9, 64, 2]
        var expected: [[String: Tensor]] = []
        for (i, rows) in rowsList.enumerated() { expected.append(try reference.run(tensors: feeds(rows: rows, k: k, seed: UInt64(200 + i)))) }
        nonisolated(unsafe) let want = expected
        nonisolated(unsafe) let inputs = rowsList.enumerated().map { i, rows in feeds(rows: rows, k: k, seed: UInt64(200 + i)) }
        let mismatches = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { thread in
            for round in 0..<6 {
                let i = (round + thread * 3) % rowsList.count
                do {
                    let out = try session.run(tensors: inputs[i])
                    for (name, t) in want[i] where out[name]!.scalars(as: Float.self) != t.scalars(as: Float.self) {
                        mismatches.withLock { $0.append("thread \(thread) round \(round) \(name)") }
                    }
                } catch {
                    mismatches.withLock { $0.append("thread \(thread) round \(round): \(error)") }
                }
            }
        }
        XCTAssertEqual(mismatches.withLock { $0 }, [], "each run gives a lone session's bits")
        XCTAssertEqual(session.executor.releasedNames, PackedGemm.available ? ["W1", "W2"] : [])
    }

    func testFloat64WeightsAreNeverReleased() throws {
        let (k, n) = (64, 48)
        let model = model(k: k, n: n, dtype: .float64)
        let session = try InferenceSession(model: model)
        let x = lcgValues(64 * k, seed: 9).map(Double.init)
        var xt = [Double](repeating: 0, count: 64 * k)
        for i in 0..<64 { for p in 0..<k { xt[p * 64 + i] = x[i * k + p] } }
        for _ in 0..<2 {
            let out = try session.run(tensors: ["x": Tensor(shape: [64, k], scalars: x), "xt": Tensor(shape: [k, 64], scalars: xt)])
            let w1: [Double] = model.graph.initializers["W1"]!.scalars(as: Double.self)
            let y1: [Double] = out["y1"]!.scalars(as: Double.self)
            for (i, j) in [(0, 0), (63, 47), (17, 5)] {
                var sum = 0.0
                for p in 0..<k { sum += x[i * k + p] * w1[p * n + j] }
                XCTAssertEqual(y1[i * n + j], sum, accuracy: 1e-12)
            }
        }
        XCTAssertEqual(session.executor.releasedNames, [])
    }

    func testModelFromAFileDropsConsumedWeightsAndFetchesThemFromTheFile() throws {
        let (k, n) = (80, 72)
        let model = model(k: k, n: n)
        let path = NSTemporaryDirectory() + "constant-release-\(getpid()).onnx"
        try model.write(to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let session = try InferenceSession(path: path)
        XCTAssertNil(session.model.graph.initializers["W1"], "the session keeps no copy of a consumed weight")
        XCTAssertNotNil(session.model.graph.initializers["W3"], "nor drops one it does not consume")
        for (round, rows) in [64, 1].enumerated() {
            let out = try session.run(tensors: feeds(rows: rows, k: k, seed: UInt64(300 + round)))
            check(out, model, rows: rows, k: k, n: n, seed: UInt64(300 + round), "from a file, \(rows) rows")
        }
        XCTAssertEqual(session.executor.releasedNames, PackedGemm.available ? ["W1", "W2"] : [])
        let fetched = try session.run(tensors: feeds(rows: 8, k: k, seed: 7), fetches: ["W2"])
        XCTAssertEqual(fetched["W2"]!.scalars(as: Float.self), model.graph.initializers["W2"]!.scalars(as: Float.self))
    }
}
