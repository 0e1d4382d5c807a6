@testable import OnnxTrain
import Foundation
import Synchronization
import XCTest

/// The Winograd weights an inference session keeps for a Conv or FusedConv whose weight is an
/// initializer (`WinogradWeightCache`, the executor's `NodeContext.isConstantInput`): results
/// within float32 rounding of float64 loops, the same bits on a second run and on two threads at
/// once, U's bytes held in the session's budget, and no cache where the weight is fed (a training
/// graph's weights are inputs) or where the budget cannot hold U.
final class WinogradWeightCacheTests: XCTestCase {
    /// Batch 1, 32 channels at 9×9: 9 F(4×4) tiles, too few for per-call transforms
    /// (`winogradTile` without a cache takes im2col), Winograd with the kept U.
    let first = Conv2DCase(label: "FusedConv 32 -> 32 at 9x9", x: [1, 32, 9, 9], w: [32, 32, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1])
    let second = Conv2DCase(label: "Conv 32 -> 40 at 9x9, pads 0/2", x: [1, 32, 9, 9], w: [40, 32, 3, 3], strides: [1, 1], pads: [0, 2, 2, 0])

    /// X -> Relu(Conv(X, W1, B1)) as Y1 (the session fuses it into FusedConv) and Conv(X, W2, B2)
    /// as Y2; the weights are initializers, or graph inputs with `fedWeights`.
    func model(_ w1: Tensor, _ b1: Tensor, _ w2: Tensor, _ b2: Tensor, fedWeights: Bool = false) -> Model {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: first.x.map { .value($0) }))]
        for (name, t) in [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)] {
            if fedWeights {
                g.inputs.append(ValueInfo(name: name, type: .tensor(.float32, shape: t.shape.map { .value($0) })))
            } else {
                g.setInitializer(name, t)
            }
        }
        g.nodes = [Node(opType: "Conv", inputs: ["x", "w1", "b1"], outputs: ["c1"], attributes: first.attributes),
                   Node(opType: "Relu", inputs: ["c1"], outputs: ["y1"]),
                   Node(opType: "Conv", inputs: ["x", "w2", "b2"], outputs: ["y2"], attributes: second.attributes)]
        g.outputs = [ValueInfo(name: "y1", type: nil), ValueInfo(name: "y2", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    /// max |y - y64| / max |y64|: F(4×4)'s rounding (WinogradTests bounds it by 5e-6).
    func relativeError(_ got: Tensor, _ want: [Double]) -> Double {
        let g = got.scalars(as: Float.self)
        XCTAssertEqual(g.count, want.count)
        let scale = want.map(abs).max() ?? 1
        return zip(g, want).map { abs(Double($0) - $1) }.max()! / scale
    }

    func testKeptWeightsMatchFloat64OnRepeatedAndConcurrentRuns() throws {
        XCTAssertNil(winogradTile(images: 1, channels: 32, outputs: 32, group: 1,
                                  try ConvGeometry(input: [9, 9], kernel: [3, 3], pads: [1, 1, 1, 1])),
                     "without a cache this shape takes im2col")
        let x64 = float32ExactValues(first.x, seed: 1), w1 = float32ExactValues(first.w, seed: 2), w2 = float32ExactValues(second.w, seed: 3)
        let b1 = float32ExactValues([first.w[0]], seed: 4), b2 = float32ExactValues([second.w[0]], seed: 5)
        let want1 = conv2DReference(x64, w1, b1, first).0.scalars(as: Double.self).map { max($0, 0) }
        let want2 = conv2DReference(x64, w2, b2, second).0.scalars(as: Double.self)
        let x = narrowedToFloat32(x64)
        let session = try InferenceSession(model: model(narrowedToFloat32(w1), narrowedToFloat32(b1), narrowedToFloat32(w2), narrowedToFloat32(b2)))
        XCTAssertTrue(session.executor.steps.contains { $0.node.opType == "FusedConv" }, "Conv + Relu fused")
        let budget = try XCTUnwrap(session.executor.cacheBudget)
        XCTAssertEqual(budget.reserved, 0)
        let once = try session.run(tensors: ["x": x])
        // U of both weights at F(4×4): 36 transformed positions per 3×3 kernel.
        XCTAssertEqual(budget.reserved, 36 * (32 * 32 + 40 * 32) * 4, "both nodes keep U")
        let e1 = relativeError(once["y1"]!, want1), e2 = relativeError(once["y2"]!, want2)
        print("kept-U F(4x4) relative errors: FusedConv \(e1), Conv \(e2)")
        XCTAssertLessThan(e1, 5e-6)
        XCTAssertLessThan(e2, 5e-6)
        let twice = try session.run(tensors: ["x": x])
        XCTAssertEqual(twice["y1"]!.scalars(as: Float.self), once["y1"]!.scalars(as: Float.self), "second run, same bits")
        XCTAssertEqual(twice["y2"]!.scalars(as: Float.self), once["y2"]!.scalars(as: Float.self), "second run, same bits")
        XCTAssertEqual(budget.reserved, 36 * (32 * 32 + 40 * 32) * 4, "U computed once")

        // Two threads on one session, from a fresh session (both may build U) and the kept one.
        let fresh = try InferenceSession(model: model(narrowedToFloat32(w1), narrowedToFloat32(b1), narrowedToFloat32(w2), narrowedToFloat32(b2)))
        // (Tensor is not Sendable; the threads only read the feed.)
        nonisolated(unsafe) let feed = x
        for s in [fresh, session] {
            let results = Mutex<[[Float]]>([])
            let failures = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 2) { _ in
                for _ in 0..<4 {
                    do {
                        let r = try s.run(tensors: ["x": feed])
                        let y1 = r["y1"]!.scalars(as: Float.self), y2 = r["y2"]!.scalars(as: Float.self)
                        results.withLock { $0 += [y1, y2] }
                    } catch {
                        failures.withLock { $0.append("\(error)") }
                    }
                }
            }
            XCTAssertEqual(failures.withLock { $0 }, [])
            let all = results.withLock { $0 }
            XCTAssertEqual(all.count, 16)
            for (i, r) in all.enumerated() {
                XCTAssertEqual(r, once[i % 2 == 0 ? "y1" : "y2"]!.scalars(as: Float.self), "concurrent run, same bits")
            }
            XCTAssertEqual(s.executor.cacheBudget?.reserved, 36 * (32 * 32 + 40 * 32) * 4)
        }

        // The same convolutions by im2col (no cache, per-call shape rules) within float32 rounding.
        let plain = try withPassesDisabled("weight-cache") {
            try InferenceSession(model: model(narrowedToFloat32(w1), narrowedToFloat32(b1), narrowedToFloat32(w2), narrowedToFloat32(b2)))
        }
        XCTAssertNil(plain.executor.cacheBudget)
        let direct = try plain.run(tensors: ["x": x])
        XCTAssertLessThan(relativeError(direct["y1"]!, want1), 1e-6)
        XCTAssertLessThan(relativeError(direct["y2"]!, want2), 1e-6)
    }

    /// 7×7 at batch 1 (4 F(4×4) tiles) keeps F(2×2)'s U (16 values per kernel), within F(2×2)'s
    /// rounding (WinogradTests bounds it by 3e-7).
    func testKeptF2At7x7() throws {
        let c = Conv2DCase(label: "Conv 64 -> 48 at 7x7", x: [1, 64, 7, 7], w: [48, 64, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1])
        let x64 = float32ExactValues(c.x, seed: 31), w64 = float32ExactValues(c.w, seed: 32), b64 = float32ExactValues([48], seed: 33)
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: c.x.map { .value($0) }))]
        g.setInitializer("w", narrowedToFloat32(w64))
        g.setInitializer("b", narrowedToFloat32(b64))
        g.nodes = [Node(opType: "Conv", inputs: ["x", "w", "b"], outputs: ["y"], attributes: c.attributes)]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        let session = try InferenceSession(model: m)
        let want = conv2DReference(x64, w64, b64, c).0.scalars(as: Double.self)
        let y = try session.run(tensors: ["x": narrowedToFloat32(x64)])["y"]!
        XCTAssertEqual(session.executor.cacheBudget?.reserved, 16 * 48 * 64 * 4, "F(2x2) U kept")
        let e = relativeError(y, want)
        print("kept-U F(2x2) relative error: \(e)")
        XCTAssertLessThan(e, 3e-7)
        XCTAssertEqual(try session.run(tensors: ["x": narrowedToFloat32(x64)])["y"]!.scalars(as: Float.self), y.scalars(as: Float.self))
    }

    /// Weights fed as inputs (as a training graph's are) are not constants: nothing is kept, and
    /// the convolutions take the per-call rules (im2col at this size).
    func testFedWeightsKeepNothing() throws {
        let x64 = float32ExactValues(first.x, seed: 11), w1 = float32ExactValues(first.w, seed: 12), w2 = float32ExactValues(second.w, seed: 13)
        let b1 = float32ExactValues([first.w[0]], seed: 14), b2 = float32ExactValues([second.w[0]], seed: 15)
        let feeds = ["x": narrowedToFloat32(x64), "w1": narrowedToFloat32(w1), "b1": narrowedToFloat32(b1),
                     "w2": narrowedToFloat32(w2), "b2": narrowedToFloat32(b2)]
        let session = try InferenceSession(model: model(feeds["w1"]!, feeds["b1"]!, feeds["w2"]!, feeds["b2"]!, fedWeights: true))
        XCTAssertNil(session.executor.cacheBudget)
        for step in session.executor.steps where step.node.opType.hasSuffix("Conv") {
            let conv = (step.kernel as? ConvKernel) ?? (step.kernel as? FusedConvKernel)?.conv
            XCTAssertNil(try XCTUnwrap(conv).weightCache, "\(step.node.opType) has no cache")
        }
        let out = try session.run(tensors: feeds)
        XCTAssertLessThan(relativeError(out["y1"]!, conv2DReference(x64, w1, b1, first).0.scalars(as: Double.self).map { max($0, 0) }), 1e-6)
        XCTAssertLessThan(relativeError(out["y2"]!, conv2DReference(x64, w2, b2, second).0.scalars(as: Double.self)), 1e-6)
    }

    /// A budget too small for U leaves the node on the per-call path; the budget gets its bytes
    /// back when a kept U is freed.
    func testBudgetRefusesAndReleases() throws {
        let budget = KernelCacheBudget(limit: 36 * 32 * 32 * 4)
        let w = narrowedToFloat32(float32ExactValues([32, 32, 3, 3], seed: 21))
        let cache = WinogradWeightCache(budget: budget)
        try w.withUnsafeBufferPointer(as: Float.self) { pw in
            let kept = try XCTUnwrap(try cache.weights(w, pw.baseAddress!, tile: 4))
            XCTAssertEqual(budget.reserved, 36 * 32 * 32 * 4)
            XCTAssertTrue(try cache.weights(w, pw.baseAddress!, tile: 4) === kept, "kept, not recomputed")
            // F(2×2) of the same weight does not fit beside the kept F(4×4).
            XCTAssertNil(try cache.weights(w, pw.baseAddress!, tile: 2))
            XCTAssertEqual(budget.reserved, 36 * 32 * 32 * 4)
        }
        // A second weight tensor (other storage) replaces U: the budget holds one at a time here.
        let other = narrowedToFloat32(float32ExactValues([32, 32, 3, 3], seed: 22))
        let smaller = KernelCacheBudget(limit: 100)
        let refused = WinogradWeightCache(budget: smaller)
        try other.withUnsafeBufferPointer(as: Float.self) { pw in
            XCTAssertNil(try refused.weights(other, pw.baseAddress!, tile: 4))
            XCTAssertEqual(smaller.reserved, 0)
        }
        do {
            let big = KernelCacheBudget(limit: 1 << 20)
            let c = WinogradWeightCache(budget: big)
            try w.withUnsafeBufferPointer(as: Float.self) { pw in _ = try c.weights(w, pw.baseAddress!, tile: 2) }
            XCTAssertEqual(big.reserved, 16 * 32 * 32 * 4)
            try other.withUnsafeBufferPointer(as: Float.self) { pw in _ = try c.weights(other, pw.baseAddress!, tile: 2) }
            XCTAssertEqual(big.reserved, 16 * 32 * 32 * 4, "the replaced U gave its bytes back")
        }
    }
}
