import Foundation
import Synchronization
import XCTest
@testable import OnnxTrain

/// AttentionBlock's AVX-512 kernel (`ot_attention_block`, Sources/CDNNL/attention.h) against its
/// 8-lane Swift kernel and float64 attention: bit for bit where Dv is a multiple of 8 (the same
/// operations in the same order), within float rounding otherwise; over block row counts around
/// its 16-lane groups, 48-lane tiles and 6-row groups, key counts around its 8- and 12-key tiles,
/// odd D and Dv, no mask, a mask shared by the rows (BERT's padding), a mask of each row (mRow ≠ 0),
/// a mask strided along the keys, and causal trims (rows of different lengths). Then a session:
/// FusedAttention with packed Q, K, V (batch 1 and 3, GPT-2's causal mask and BERT's padding
/// mask) with the kernel on and off, and two threads running one session.
final class AttentionBlockTests: XCTestCase {
    func values(_ count: Int, seed: UInt64, scale: Double = 2) -> [Float] {
        var g = RandomGenerator(seed: seed)
        return (0..<count).map { _ in Float((g.nextDouble() * 2 - 1) * scale) }
    }

    enum MaskKind { case none, shared, perRow, strided }

    /// One block through AttentionBlock.run, `wide` or not; Q, K, V, Y at row strides larger than
    /// their widths (as heads are read in place).
    func block(rows: Int, keys: Int, d: Int, dv: Int, mask kind: MaskKind, trim: Bool, wide: Bool, seed: UInt64)
        -> (y: [Float], q: [Float], k: [Float], v: [Float], m: [Float], mRow: Int, mKey: Int, lengths: [Int], qs: Int, ks: Int, vs: Int, ys: Int) {
        let qs = d + 3, ks = d + 5, vs = dv + 1, ys = dv + 2
        let q = values(rows * qs, seed: seed), k = values(keys * ks, seed: seed + 1), v = values(keys * vs, seed: seed + 2)
        var mRow = 0, mKey = 1, m: [Float] = []
        switch kind {
        case .none: break
        case .shared: m = values(keys, seed: seed + 3, scale: 4)
        case .perRow: (mRow, m) = (keys, values(rows * keys, seed: seed + 3, scale: 4))
        case .strided: (mRow, mKey, m) = (2 * keys + 1, 2, values(rows * (2 * keys + 1), seed: seed + 3, scale: 4))
        }
        // Causal-style lengths: row r sees keys up to keys - rows + r + 1 (at least 1).
        let lengths = (0..<rows).map { trim ? max(1, min(keys, keys - rows + $0 + 1)) : keys }
        let width = lengths.max() ?? 0
        var y = [Float](repeating: .nan, count: rows * ys)
        let scratch = AttentionBlock.Scratch(maxRows: rows, keys: keys, d: d)
        defer { scratch.deallocate() }
        q.withUnsafeBufferPointer { pq in
            k.withUnsafeBufferPointer { pk in
                v.withUnsafeBufferPointer { pv in
                    m.withUnsafeBufferPointer { pm in
                        lengths.withUnsafeBufferPointer { pl in
                            y.withUnsafeMutableBufferPointer { py in
                                AttentionBlock.run(q: pq.baseAddress!, qs: qs, k: pk.baseAddress!, ks: ks, v: pv.baseAddress!, vs: vs,
                                                   y: py.baseAddress!, ys: ys, mask: kind == .none ? nil : pm.baseAddress!, mRow: mRow,
                                                   mKey: mKey, rows: rows, d: d, dv: dv, alpha: 0.3, lengths: pl.baseAddress!,
                                                   width: width, scratch: scratch, wide: wide)
                            }
                        }
                    }
                }
            }
        }
        return (y, q, k, v, m, mRow, mKey, lengths, qs, ks, vs, ys)
    }

    func testWideKernelMatchesTheSwiftKernelAndFloat64() throws {
        guard AttentionBlock.wideAvailable else {
            // Nothing to compare on a CPU without AVX-512F: the Swift kernel runs (covered by
            // AttentionFusionTests); say so in the log rather than pass silently.
            print("AttentionBlockTests: no AVX-512F here, the wide kernel is not run")
            return
        }
        var cases = 0
        for (rows, keys) in [(1, 1), (5, 13), (16, 128), (17, 9), (33, 97), (48, 128), (48, 197), (47, 200), (32, 12), (6, 25)] {
            for (d, dv) in [(64, 64), (13, 40), (1, 8), (16, 72), (64, 27), (7, 130)] {
                for kind in [MaskKind.none, .shared, .perRow, .strided] {
                    for trim in [false, true] {
                        cases += 1
                        let seed = UInt64(cases * 10)
                        let narrow = block(rows: rows, keys: keys, d: d, dv: dv, mask: kind, trim: trim, wide: false, seed: seed)
                        let wide = block(rows: rows, keys: keys, d: d, dv: dv, mask: kind, trim: trim, wide: true, seed: seed)
                        let label = "rows \(rows) keys \(keys) d \(d) dv \(dv) \(kind) trim \(trim)"
                        let w = wide
                        for r in 0..<rows {
                            for c in 0..<w.ys {
                                let i = r * w.ys + c
                                if c >= dv {
                                    XCTAssertTrue(w.y[i].isNaN, "\(label): wrote past Dv at row \(r)")
                                    continue
                                }
                                if dv % 8 == 0 || c < dv - dv % 8 {
                                    XCTAssertEqual(w.y[i].bitPattern, narrow.y[i].bitPattern, "\(label) at (\(r), \(c)): \(w.y[i]) vs \(narrow.y[i])")
                                }
                                // float64: Σ_j p_j·v_j over the row's keys.
                                var logits = [Double](repeating: 0, count: w.lengths[r])
                                for j in 0..<w.lengths[r] {
                                    var dot = 0.0
                                    for p in 0..<d { dot += Double(w.q[r * w.qs + p]) * Double(w.k[j * w.ks + p]) }
                                    logits[j] = Double(Float(0.3)) * dot + (kind == .none ? 0 : Double(w.m[r * w.mRow + j * w.mKey]))
                                }
                                let top = logits.max()!
                                let e = logits.map { Foundation.exp($0 - top) }
                                let total = e.reduce(0, +)
                                var sum = 0.0, size = 0.0
                                for j in e.indices {
                                    sum += e[j] / total * Double(w.v[j * w.vs + c])
                                    size += abs(e[j] / total * Double(w.v[j * w.vs + c]))
                                }
                                XCTAssertLessThanOrEqual(abs(Double(w.y[i]) - sum), 2e-6 * Double(keys + d) * (size + 1e-30), "\(label) at (\(r), \(c))")
                            }
                        }
                    }
                }
            }
        }
        XCTAssertEqual(cases, 480)
    }

    /// FusedAttention with packed Q, K, V: [B, T, 3·H·D] in, [B, T, H, D] out.
    func model(b: Int, t: Int, h: Int, d: Int, mask: [Int]?) -> Model {
        var g = Graph()
        g.inputs = [ValueInfo(name: "qkv", type: .tensor(.float32, shape: [b, t, 3 * h * d].map { .value($0) }))]
        var inputs = ["qkv", "", ""]
        if let mask {
            g.inputs.append(ValueInfo(name: "mask", type: .tensor(.float32, shape: mask.map { .value($0) })))
            inputs.append("mask")
        }
        g.nodes = [Node(opType: "FusedAttention", domain: internalDomain, inputs: inputs, outputs: ["y"],
                        attributes: ["scale": .float(1 / Float(d).squareRoot()), "qkv_heads": .int(h)])]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17, internalDomain: 1]
        return m
    }

    func run(_ session: InferenceSession, _ feeds: [String: Tensor]) throws -> [Float] {
        try session.run(tensors: feeds)["y"]!.scalars(as: Float.self)
    }

    func testSessionMatchesTheSwiftKernelOnPackedHeadsAndTwoThreads() throws {
        let shapes: [(b: Int, t: Int, h: Int, d: Int, mask: String)] = [
            (1, 128, 4, 64, "padding"), (3, 197, 3, 64, "none"), (1, 70, 2, 64, "causal"), (3, 37, 2, 40, "causal"), (3, 129, 2, 64, "padding"),
        ]
        for s in shapes {
            var maskShape: [Int]? = nil, maskValues: [Float] = []
            switch s.mask {
            case "padding":
                maskShape = [s.b, 1, 1, s.t]
                maskValues = (0..<s.b * s.t).map { ($0 % s.t) < s.t - 7 * ($0 / s.t) ? 0 : -10000 }
            case "causal":
                maskShape = [1, 1, s.t, s.t]
                maskValues = (0..<s.t * s.t).map { ($0 % s.t) > ($0 / s.t) ? -Float.greatestFiniteMagnitude : 0 }
            default: break
            }
            let m = model(b: s.b, t: s.t, h: s.h, d: s.d, mask: maskShape)
            var feeds = ["qkv": Tensor(shape: [s.b, s.t, 3 * s.h * s.d], scalars: values(s.b * s.t * 3 * s.h * s.d, seed: 7))]
            if let maskShape { feeds["mask"] = Tensor(shape: maskShape, scalars: maskValues) }
            setenv("ONNX_TRAIN_DISABLE_PASSES", "attention-avx512", 1)
            let narrowSession = try InferenceSession(model: m)
            unsetenv("ONNX_TRAIN_DISABLE_PASSES")
            let narrow = try run(narrowSession, feeds)
            let session = try InferenceSession(model: m)
            let wide = try run(session, feeds)
            XCTAssertEqual(wide.count, s.b * s.t * s.h * s.d)
            XCTAssertEqual(wide.map(\.bitPattern), narrow.map(\.bitPattern), "\(s)")
            XCTAssertFalse(wide.contains { !$0.isFinite }, "\(s)")
            // Two threads on one session: each run gives the single run's bits.
            nonisolated(unsafe) let shared = session
            nonisolated(unsafe) let sharedFeeds = feeds
            let mismatches = Mutex<Int>(0)
            DispatchQueue.concurrentPerform(iterations: 2) { _ in
                for _ in 0..<5 where (try? shared.run(tensors: sharedFeeds)["y"]?.scalars(as: Float.self)) != wide {
                    mismatches.withLock { $0 += 1 }
                }
            }
            XCTAssertEqual(mismatches.withLock { $0 }, 0, "\(s)")
        }
    }
}
