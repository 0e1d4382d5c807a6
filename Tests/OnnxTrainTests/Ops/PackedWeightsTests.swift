@testable import OnnxTrain
import Foundation
import Synchronization
import XCTest

/// Products with a B packed once for the session (`PackedWeightCache`, oneDNN's matmul): every
/// element within float32 rounding of a float64 sum, on odd shapes (columns not a multiple of the
/// 8-row blocks), B plain and transposed, a bias row and an epilogue that sees every element once,
/// on one thread and split over the pool (strided A or C left to OpenBLAS, C untouched); and whole
/// sessions (MatMul over a batch of rows, Gemm with transB and a bias, MatMulBias with Gelu) whose
/// weights are initializers, against float64 and against the same session with the switch off.
/// Values in [-1, 1) from a fixed linear congruential sequence (PackedWeightsTests, ConstantReleaseTests).
func lcgValues(_ count: Int, seed: UInt64) -> [Float] {
    var state = seed &* 6364136223846793005 &+ 1442695040888963407
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int((state >> 33) % 2001) - 1000) / 1000
    }
}

final class PackedWeightsTests: XCTestCase {

    /// Whether oneDNN runs its brgemm kernels on this CPU (AVX-512): the packed path is taken only then.
    func packedPathRuns() throws -> Bool {
        let budget = KernelCacheBudget(limit: 1 << 20)
        let cache = PackedWeightCache(budget: budget)
        let w = Tensor(shape: [64, 64], scalars: lcgValues(64 * 64, seed: 1))
        let a = lcgValues(64 * 64, seed: 2)
        var c = [Float](repeating: 0, count: 64 * 64)
        let taken = try w.withUnsafeBufferPointer(as: Float.self) { pw in
            a.withUnsafeBufferPointer { pa in
                c.withUnsafeMutableBufferPointer { pc in
                    cache.gemm(m: 64, n: 64, k: 64, a: pa.baseAddress!, lda: 64, b: w, bElements: pw.baseAddress!, transB: false,
                               bias: nil, c: pc.baseAddress!, ldc: 64)
                }
            }
        }
        print("packed GEMM (oneDNN brgemm) runs on this CPU: \(taken)")
        return taken
    }

    /// |c - Σ a·b (+ bias)| <= (k + 2)·2⁻²⁴·Σ|a·b| (+|bias|) for every element: float32 rounding.
    func assertNear(_ c: [Float], ldc: Int, m: Int, n: Int, k: Int, a: [Float], lda: Int, b: [Float], transB: Bool,
                    bias: [Float]?, activation: ((Double) -> Double)? = nil, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var sum = Double(bias?[j] ?? 0), size = abs(sum)
                for p in 0..<k {
                    let t = Double(a[i * lda + p]) * Double(transB ? b[j * k + p] : b[p * n + j])
                    sum += t
                    size += abs(t)
                }
                var want = sum
                var bound = Double(k + 2) * 0x1p-24 * size
                if let activation {
                    want = activation(sum)
                    bound = bound * 2 + 4e-7 * max(1, abs(want))
                }
                let got = Double(c[i * ldc + j])
                worst = max(worst, abs(got - want) / max(bound, .leastNormalMagnitude))
                if abs(got - want) > bound {
                    XCTFail("\(label): C[\(i), \(j)] = \(got), want \(want) (bound \(bound))", file: file, line: line)
                    return
                }
            }
        }
        print("\(label): worst error \(worst) of the bound")
    }

    func testOddShapesMatchFloat64OnOneThreadAndSplit() throws {
        let runs = try packedPathRuns()
        // (m, k, n, transB, bias, lda pad, ldc pad): 129×131×257 splits over the pool (2^21+
        // multiply-adds); 8×16×16 is below `PackedGemm.minimumWork` (OpenBLAS's).
        let cases: [(Int, Int, Int, Bool, Bool, Int, Int)] = [
            (37, 95, 170, false, false, 0, 0), (37, 95, 170, true, true, 0, 0), (37, 95, 170, true, true, 3, 5),
            (129, 131, 257, false, true, 0, 0), (129, 131, 257, true, false, 0, 0), (129, 131, 257, true, false, 7, 16),
            (8, 16, 16, false, true, 0, 0), (200, 300, 333, true, true, 0, 0), (200, 300, 333, false, false, 1, 2),
        ]
        for (m, k, n, transB, withBias, padA, padC) in cases {
            let label = "\(m)x\(k)x\(n) transB \(transB) bias \(withBias) lda +\(padA) ldc +\(padC)"
            let lda = k + padA, ldc = n + padC
            let a = lcgValues(m * lda, seed: UInt64(m)), b = lcgValues(k * n, seed: UInt64(n)), bias = withBias ? lcgValues(n, seed: 9) : nil
            let w = Tensor(shape: transB ? [n, k] : [k, n], scalars: b)
            let budget = KernelCacheBudget(limit: 64 << 20)
            let cache = PackedWeightCache(budget: budget)
            var c = [Float](repeating: .nan, count: m * ldc)
            // Epilogue calls per element (the blocks are disjoint: each thread writes its own counts).
            let covered = UnsafeMutablePointer<Int>.allocate(capacity: m * n)
            covered.initialize(repeating: 0, count: m * n)
            defer { covered.deallocate() }
            for round in 0..<2 {
                let taken = try w.withUnsafeBufferPointer(as: Float.self) { pw in
                    a.withUnsafeBufferPointer { pa in
                        c.withUnsafeMutableBufferPointer { pc in
                            let C = pc.baseAddress!
                            let body = { (pbias: UnsafePointer<Float>?) in
                                cache.gemm(m: m, n: n, k: k, a: pa.baseAddress!, lda: lda, b: w, bElements: pw.baseAddress!, transB: transB,
                                           bias: pbias, c: C, ldc: ldc) { i0, i1, j0, j1 in
                                    for i in i0..<i1 { for j in j0..<j1 { covered[i * n + j] += 1 } }
                                }
                            }
                            return bias.map { bias in bias.withUnsafeBufferPointer { body($0.baseAddress!) } } ?? body(nil)
                        }
                    }
                }
                // oneDNN's brgemm takes dense A and C only: strided products stay on OpenBLAS, C untouched.
                XCTAssertEqual(taken, runs && padA == 0 && padC == 0 && m * n * k >= PackedGemm.minimumWork, label)
                guard taken else {
                    XCTAssertTrue(c.allSatisfy { $0.isNaN }, "\(label): C untouched where the product is not taken")
                    continue
                }
                XCTAssertGreaterThan(budget.reserved, 0, "\(label): the packed B is held in the budget")
                XCTAssertEqual(Array(UnsafeBufferPointer(start: covered, count: m * n)), [Int](repeating: round + 1, count: m * n),
                               "\(label): each block to the epilogue once")
                assertNear(c, ldc: ldc, m: m, n: n, k: k, a: a, lda: lda, b: b, transB: transB, bias: bias, "\(label) round \(round)")
                for i in 0..<m { for j in n..<ldc { XCTAssertTrue(c[i * ldc + j].isNaN, "\(label): C's padding untouched") } }
            }
        }
    }

    /// Several threads running one weight's product at once (two sessions' worth of callers, and
    /// the pool's two row blocks of 64 rows sharing one primitive): each run has its own scratch
    /// memory, so every result is the single-threaded one.
    func testConcurrentRunsOfOneWeightMatchOneRun() throws {
        let runs = try packedPathRuns()
        let (m, k, n) = (128, 256, 384)
        let a = lcgValues(m * k, seed: 31), bias = lcgValues(n, seed: 32)
        // (Tensor is not Sendable; the threads only read it.)
        nonisolated(unsafe) let w = Tensor(shape: [k, n], scalars: lcgValues(k * n, seed: 33))
        let cache = PackedWeightCache(budget: KernelCacheBudget(limit: 64 << 20))
        @Sendable func product() throws -> [Float] {
            var c = [Float](repeating: .nan, count: m * n)
            let taken = try w.withUnsafeBufferPointer(as: Float.self) { pw in
                a.withUnsafeBufferPointer { pa in
                    bias.withUnsafeBufferPointer { pb in
                        c.withUnsafeMutableBufferPointer { pc in
                            cache.gemm(m: m, n: n, k: k, a: pa.baseAddress!, lda: k, b: w, bElements: pw.baseAddress!, transB: false,
                                       bias: pb.baseAddress!, c: pc.baseAddress!, ldc: n)
                        }
                    }
                }
            }
            XCTAssertEqual(taken, runs)
            return c
        }
        let first = try product()
        if runs { assertNear(first, ldc: n, m: m, n: n, k: k, a: a, lda: k, b: w.scalars(as: Float.self), transB: false, bias: bias, "128x256x384") }
        let mismatches = Mutex<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<20 {
                let c = (try? product()) ?? []
                if runs && c != first { mismatches.withLock { $0 += 1 } }
            }
        }
        XCTAssertEqual(mismatches.withLock { $0 }, 0, "concurrent runs give the single run's bits")
    }

    /// One product through `cache`, C starting as NaN: whether it took the packed path, and C.
    func run(_ cache: PackedWeightCache, m: Int, k: Int, n: Int, w: Tensor, seed: UInt64) throws -> (Bool, [Float]) {
        let a = lcgValues(m * k, seed: seed)
        var c = [Float](repeating: .nan, count: m * n)
        let taken = try w.withUnsafeBufferPointer(as: Float.self) { pw in
            a.withUnsafeBufferPointer { pa in
                c.withUnsafeMutableBufferPointer { pc in
                    cache.gemm(m: m, n: n, k: k, a: pa.baseAddress!, lda: k, b: w, bElements: pw.baseAddress!, transB: false,
                               bias: nil, c: pc.baseAddress!, ldc: n)
                }
            }
        }
        return (taken, c)
    }

    /// A big B (17 MB) times few rows (32: AlexNet's fully connected layers at batch 32) is packed
    /// (the streamed-B rule went with `ConstantRelease`: such a B is freed once packed); a weight
    /// the budget refuses stays on OpenBLAS (asked once) without stopping another weight's
    /// packing; elements other than float32 never take the path.
    func testBigBFewRowsPackedRefusedAndDoubleProductsStayOnOpenBLAS() throws {
        let runs = try packedPathRuns()
        let (k, n) = (2048, 2080)  // 17 MB of B
        let w = Tensor(shape: [k, n], scalars: lcgValues(k * n, seed: 41))
        let budget = KernelCacheBudget(limit: 64 << 20)
        let cache = PackedWeightCache(budget: budget)
        let (few, cFew) = try run(cache, m: 32, k: k, n: n, w: w, seed: 43)
        XCTAssertEqual(few, runs, "32 rows on the packed B")
        if runs {
            XCTAssertGreaterThanOrEqual(budget.reserved, k * n * 4)
            // Three rows against float64 (the whole product's check would take long here).
            let a = lcgValues(32 * k, seed: 43), b = w.scalars(as: Float.self)
            for i in [0, 17, 31] {
                assertNear(Array(cFew[(i * n)..<((i + 1) * n)]), ldc: n, m: 1, n: n, k: k, a: Array(a[(i * k)..<((i + 1) * k)]), lda: k,
                           b: b, transB: false, bias: nil, "big B, row \(i)")
            }
        }

        // A budget too small for the packed copy: refused, then not asked again (nothing
        // reserved); another weight's cache still packs.
        let small = Tensor(shape: [64, 64], scalars: lcgValues(64 * 64, seed: 44))
        let tight = KernelCacheBudget(limit: 1024)
        let refusing = PackedWeightCache(budget: tight)
        for _ in 0..<2 {
            let (taken, c) = try run(refusing, m: 64, k: 64, n: 64, w: small, seed: 45)
            XCTAssertFalse(taken)
            XCTAssertTrue(c.allSatisfy { $0.isNaN })
            XCTAssertEqual(tight.reserved, 0)
        }
        let (other, _) = try run(PackedWeightCache(budget: KernelCacheBudget(limit: 1 << 20)), m: 64, k: 64, n: 64, w: small, seed: 46)
        XCTAssertEqual(other, runs, "a refused weight leaves the path to the others")

        // Float64 elements: never the packed path.
        let wd = Tensor(shape: [64, 64], scalars: (0..<(64 * 64)).map { Double($0 % 7) - 3 })
        let ad = [Double](repeating: 1, count: 64 * 64)
        var cd = [Double](repeating: .nan, count: 64 * 64)
        let takenDouble = try wd.withUnsafeBufferPointer(as: Double.self) { pw in
            ad.withUnsafeBufferPointer { pa in
                cd.withUnsafeMutableBufferPointer { pc in
                    PackedWeightCache(budget: KernelCacheBudget(limit: 1 << 20)).gemm(
                        m: 64, n: 64, k: 64, a: pa.baseAddress!, lda: 64, b: wd, bElements: pw.baseAddress!, transB: false,
                        bias: nil, c: pc.baseAddress!, ldc: 64)
                }
            }
        }
        XCTAssertFalse(takenDouble)
        XCTAssertTrue(cd.allSatisfy { $0.isNaN })
    }

    /// x [2, rows/2, k] -> MatMul(x, W1) as p; Gemm(x2 [rows, k], W2ᵀ, bias2, transB 1) as g;
    /// MatMul(x, W3) + bias3 then Gelu (erf) as y, which the passes make a MatMulBias with the activation.
    func model(rows: Int, k: Int, n: Int) -> Model {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [2, rows / 2, k].map { .value($0) })),
                    ValueInfo(name: "x2", type: .tensor(.float32, shape: [rows, k].map { .value($0) }))]
        g.setInitializer("W1", Tensor(shape: [k, n], scalars: lcgValues(k * n, seed: 11)))
        g.setInitializer("W2", Tensor(shape: [n, k], scalars: lcgValues(k * n, seed: 12)))
        g.setInitializer("bias2", Tensor(shape: [n], scalars: lcgValues(n, seed: 13)))
        g.setInitializer("W3", Tensor(shape: [k, n], scalars: lcgValues(k * n, seed: 14)))
        g.setInitializer("bias3", Tensor(shape: [n], scalars: lcgValues(n, seed: 15)))
        g.setInitializer("sqrt2", Tensor(scalar: Float(2).squareRoot()))
        g.setInitializer("one", Tensor(scalar: Float(1)))
        g.setInitializer("half", Tensor(scalar: Float(0.5)))
        g.nodes = [
            Node(opType: "MatMul", inputs: ["x", "W1"], outputs: ["p"]),
            Node(opType: "Gemm", inputs: ["x2", "W2", "bias2"], outputs: ["g"], attributes: ["transB": .int(1)]),
            Node(opType: "MatMul", inputs: ["x", "W3"], outputs: ["q"]),
            Node(opType: "Add", inputs: ["q", "bias3"], outputs: ["h"]),
            Node(opType: "Div", inputs: ["h", "sqrt2"], outputs: ["d"]),
            Node(opType: "Erf", inputs: ["d"], outputs: ["e"]),
            Node(opType: "Add", inputs: ["e", "one"], outputs: ["a1"]),
            Node(opType: "Mul", inputs: ["h", "a1"], outputs: ["m"]),
            Node(opType: "Mul", inputs: ["m", "half"], outputs: ["y"]),
        ]
        g.outputs = [ValueInfo(name: "p", type: nil), ValueInfo(name: "g", type: nil), ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    func testSessionProductsMatchFloat64AndTheOpenBLASPath() throws {
        let runs = try packedPathRuns()
        for (rows, k, n) in [(66, 75, 99), (256, 96, 200)] {
            let model = model(rows: rows, k: k, n: n)
            let x = lcgValues(rows * k, seed: 21), x2 = lcgValues(rows * k, seed: 22)
            let feeds = ["x": Tensor(shape: [2, rows / 2, k], scalars: x), "x2": Tensor(shape: [rows, k], scalars: x2)]
            var outputs: [String: [[Float]]] = [:]
            for disabled in ["", "packed-gemm"] {
                let session = try withPassesDisabled(disabled) { try InferenceSession(model: model) }
                XCTAssertTrue(session.executor.steps.contains { $0.node.opType == "MatMulBias" && $0.node.string("activation") == "Gelu" })
                let budget = try XCTUnwrap(session.executor.cacheBudget)
                for _ in 0..<2 {
                    let out = try session.run(tensors: feeds)
                    for name in ["p", "g", "y"] { outputs[name, default: []].append(out[name]!.scalars(as: Float.self)) }
                }
                let label = "\(rows)x\(k)x\(n) disabled '\(disabled)'"
                // Three weights packed where the path runs, none when off: each read by its node
                // alone, so released once packed, its copy no longer charged to the budget.
                XCTAssertEqual(budget.reserved, 0, label)
                XCTAssertEqual(session.executor.releasedNames, runs && disabled.isEmpty ? ["W1", "W2", "W3"] : [], label)
                let w1: [Float] = model.graph.initializers["W1"]!.scalars(), w2: [Float] = model.graph.initializers["W2"]!.scalars()
                let w3: [Float] = model.graph.initializers["W3"]!.scalars()
                let b2: [Float] = model.graph.initializers["bias2"]!.scalars(), b3: [Float] = model.graph.initializers["bias3"]!.scalars()
                let last = outputs["p"]!.count - 1
                assertNear(outputs["p"]![last], ldc: n, m: rows, n: n, k: k, a: x, lda: k, b: w1, transB: false, bias: nil, "\(label) MatMul")
                assertNear(outputs["g"]![last], ldc: n, m: rows, n: n, k: k, a: x2, lda: k, b: w2, transB: true, bias: b2, "\(label) Gemm")
                assertNear(outputs["y"]![last], ldc: n, m: rows, n: n, k: k, a: x, lda: k, b: w3, transB: false, bias: b3,
                           activation: { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) }, "\(label) MatMulBias Gelu")
            }
            for name in ["p", "g", "y"] {
                let runsOf = outputs[name]!
                XCTAssertEqual(runsOf[0], runsOf[1], "\(name): the second run with the packed B, same bits")
            }
        }
    }
}
