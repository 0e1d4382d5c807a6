import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// `AttentionFusion` and `FusedAttentionKernel`: attention as PyTorch exports it (head Transposes,
/// MatMul, scale, mask Add, Softmax, Casts, MatMul, Transpose back) becomes one FusedAttention,
/// whose output is checked against float64 attention, with the pass on and off, for causal
/// (GPT-2's most-negative-float mask), padding (BERT's [B, 1, 1, T]) and no mask (ViT, with its
/// Casts and a Div scale), sizes that are not multiples of the kernel's row blocks, cross
/// attention (Tq ≠ Tk, Dv ≠ D) and float64; the pass leaves attention whose probabilities
/// something else reads (a training graph's backward pass).
final class AttentionFusionTests: XCTestCase {
    struct Shape { var b = 2, tq = 70, tk = 70, h = 3, d = 5, dv = 5 }

    enum Mask { case none, causal, padding([Int]) }

    func values(_ count: Int, seed: UInt64) -> [Double] {
        var g = RandomGenerator(seed: seed)
        return (0..<count).map { _ in Double(Float(g.nextDouble() * 4 - 2)) }
    }

    /// The mask as a float64 array of its own shape: causal [1, 1, Tq, Tk] (key j > query i gets
    /// −Float.greatestFiniteMagnitude, as GPT-2's export writes it), or padding [B, 1, 1, Tk] with
    /// the last `lengths[b]`… keys of each batch entry masked by −10000 (BERT's extended mask).
    func maskValues(_ mask: Mask, _ s: Shape) -> (shape: [Int], values: [Double])? {
        switch mask {
        case .none: return nil
        case .causal:
            var m = [Double](repeating: 0, count: s.tq * s.tk)
            for i in 0..<s.tq { for j in 0..<s.tk where j > i + (s.tk - s.tq) { m[i * s.tk + j] = -Double(Float.greatestFiniteMagnitude) } }
            return ([1, 1, s.tq, s.tk], m)
        case .padding(let lengths):
            var m = [Double](repeating: 0, count: s.b * s.tk)
            for n in 0..<s.b { for j in lengths[n]..<s.tk { m[n * s.tk + j] = -10000 } }
            return ([s.b, 1, 1, s.tk], m)
        }
    }

    func model(_ dtype: DType, _ s: Shape, mask: Mask, scaleOp: String = "Mul", scale: Double = 0.125, casts: Int = 0,
               probabilitiesOut: Bool = false) -> Model {
        var g = Graph()
        func info(_ name: String, _ shape: [Int]) -> ValueInfo { ValueInfo(name: name, type: .tensor(dtype, shape: shape.map { .value($0) })) }
        g.inputs = [info("q", [s.b, s.tq, s.h, s.d]), info("k", [s.b, s.tk, s.h, s.d]), info("v", [s.b, s.tk, s.h, s.dv])]
        let c = dtype == .float64 ? Tensor(shape: [], scalars: [scale]) : Tensor(shape: [], scalars: [Float(scale)])
        g.setInitializer("scale", c)
        var nodes = [
            Node(opType: "Transpose", inputs: ["q"], outputs: ["qt"], attributes: ["perm": .ints([0, 2, 1, 3])]),
            Node(opType: "Transpose", inputs: ["k"], outputs: ["kt"], attributes: ["perm": .ints([0, 2, 3, 1])]),
            Node(opType: "Transpose", inputs: ["v"], outputs: ["vt"], attributes: ["perm": .ints([0, 2, 1, 3])]),
            Node(opType: "MatMul", inputs: ["qt", "kt"], outputs: ["scores"]),
            Node(opType: scaleOp, inputs: ["scores", "scale"], outputs: ["scaled"]),
        ]
        var logits = "scaled"
        if let (shape, _) = maskValues(mask, s) {
            g.inputs.append(info("mask", shape))
            nodes.append(Node(opType: "Add", inputs: ["scaled", "mask"], outputs: ["masked"]))
            logits = "masked"
        }
        nodes.append(Node(opType: "Softmax", inputs: [logits], outputs: ["p0"], attributes: ["axis": .int(-1)]))
        for i in 0..<casts {
            nodes.append(Node(opType: "Cast", inputs: ["p\(i)"], outputs: ["p\(i + 1)"], attributes: ["to": .int(Int(dtype.rawValue))]))
        }
        nodes += [
            Node(opType: "MatMul", inputs: ["p\(casts)", "vt"], outputs: ["context"]),
            Node(opType: "Transpose", inputs: ["context"], outputs: ["y"], attributes: ["perm": .ints([0, 2, 1, 3])]),
        ]
        g.nodes = nodes
        g.outputs = [ValueInfo(name: "y", type: nil)] + (probabilitiesOut ? [ValueInfo(name: "p0", type: nil)] : [])
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    func tensor(_ x: [Double], _ shape: [Int], _ dtype: DType) -> Tensor {
        dtype == .float64 ? Tensor(shape: shape, scalars: x) : Tensor(shape: shape, scalars: x.map { Float($0) })
    }

    /// Float64 attention: y [B, Tq, H, Dv] and, per element, Σ_j p_j·|v_j| (for the bound).
    func reference(_ s: Shape, q: [Double], k: [Double], v: [Double], mask: (shape: [Int], values: [Double])?, scale: Double)
        -> (y: [Double], size: [Double]) {
        var y = [Double](repeating: 0, count: s.b * s.tq * s.h * s.dv), size = y
        for n in 0..<s.b {
            for a in 0..<s.h {
                for i in 0..<s.tq {
                    var logits = [Double](repeating: 0, count: s.tk)
                    for j in 0..<s.tk {
                        var dot = 0.0
                        for e in 0..<s.d { dot += q[((n * s.tq + i) * s.h + a) * s.d + e] * k[((n * s.tk + j) * s.h + a) * s.d + e] }
                        logits[j] = scale * dot
                        if let mask {
                            let ms = mask.shape
                            logits[j] += mask.values[(((ms[0] == 1 ? 0 : n) * ms[1] + 0) * ms[2] + (ms[2] == 1 ? 0 : i)) * ms[3] + j]
                        }
                    }
                    let top = logits.max()!
                    let e = logits.map { Foundation.exp($0 - top) }
                    let total = e.reduce(0, +)
                    for f in 0..<s.dv {
                        var sum = 0.0, mag = 0.0
                        for j in 0..<s.tk {
                            let t = e[j] / total * v[((n * s.tk + j) * s.h + a) * s.dv + f]
                            sum += t; mag += abs(t)
                        }
                        y[((n * s.tq + i) * s.h + a) * s.dv + f] = sum
                        size[((n * s.tq + i) * s.h + a) * s.dv + f] = mag
                    }
                }
            }
        }
        return (y, size)
    }

    func run(_ m: Model, _ feeds: [String: Tensor], disabled: String) throws -> [Double] {
        try withPassesDisabled(disabled) { try InferenceSession(model: m).run(tensors: feeds)["y"]!.doubles() }
    }

    /// Builds, optimises and runs one case; checks the fusion fired (or not) and the output
    /// against float64 attention with the pass on and off.
    func check(_ dtype: DType, _ s: Shape, mask: Mask, scaleOp: String = "Mul", scale: Double = 0.125, casts: Int = 0,
               fuses: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws {
        let m = model(dtype, s, mask: mask, scaleOp: scaleOp, scale: scale, casts: casts)
        let ops = opTypes(try optimized(m))
        if fuses {
            XCTAssertEqual(ops, ["FusedAttention"], "\(mask) \(dtype)", file: file, line: line)
        } else {
            XCTAssertFalse(ops.contains("FusedAttention"), "\(ops)", file: file, line: line)
        }
        let q = values(s.b * s.tq * s.h * s.d, seed: 1), k = values(s.b * s.tk * s.h * s.d, seed: 2)
        let v = values(s.b * s.tk * s.h * s.dv, seed: 3)
        let mv = maskValues(mask, s)
        var feeds = ["q": tensor(q, [s.b, s.tq, s.h, s.d], dtype), "k": tensor(k, [s.b, s.tk, s.h, s.d], dtype),
                     "v": tensor(v, [s.b, s.tk, s.h, s.dv], dtype)]
        if let mv { feeds["mask"] = tensor(mv.values, mv.shape, dtype) }
        let factor = scaleOp == "Div" ? 1 / scale : scale
        let r = reference(s, q: q, k: k, v: v, mask: mv, scale: dtype == .float32 ? Double(Float(factor)) : factor)
        let unit = dtype == .float64 ? 1e-13 : 2e-6
        for disabled in ["", "attention-fusion"] {
            let y = try run(m, feeds, disabled: disabled)
            XCTAssertEqual(y.count, r.y.count, file: file, line: line)
            var worst = 0.0
            for i in r.y.indices { worst = max(worst, abs(y[i] - r.y[i]) / (r.size[i] + 1e-30)) }
            XCTAssertLessThanOrEqual(worst, unit * Double(s.tk + s.d), "\(mask) \(dtype) disabled: '\(disabled)'", file: file, line: line)
        }
    }

    func testCausalMaskGPT2() throws {
        try check(.float32, Shape(), mask: .causal)
        try check(.float32, Shape(b: 1, tq: 130, tk: 130, h: 2, d: 32, dv: 32), mask: .causal)
        try check(.float64, Shape(b: 2, tq: 67, tk: 67, h: 2, d: 3, dv: 3), mask: .causal)
    }

    func testPaddingMaskBERT() throws {
        try check(.float32, Shape(b: 3, tq: 37, tk: 37, h: 2, d: 7, dv: 7), mask: .padding([37, 20, 1]))
        try check(.float64, Shape(b: 2, tq: 9, tk: 9, h: 1, d: 4, dv: 4), mask: .padding([9, 3]))
    }

    /// ViT: no mask, the probabilities through two Casts to float, and 1/√d as a Div.
    func testNoMaskViTWithCastsAndDiv() throws {
        try check(.float32, Shape(b: 2, tq: 197 - 130, tk: 67, h: 3, d: 8, dv: 8), mask: .none, scaleOp: "Div", scale: 8.0.squareRoot(), casts: 2)
        try check(.float32, Shape(b: 1, tq: 1, tk: 1, h: 1, d: 1, dv: 1), mask: .none)
    }

    /// Cross attention: fewer queries than keys, values wider than keys, a causal mask aligned
    /// to the end (the last query sees every key).
    func testCrossAttentionShapes() throws {
        try check(.float32, Shape(b: 2, tq: 5, tk: 80, h: 3, d: 6, dv: 11), mask: .causal)
        try check(.float32, Shape(b: 2, tq: 66, tk: 3, h: 2, d: 6, dv: 2), mask: .none)
    }

    /// Head and value widths around the float32 block kernel's 16- and 8-wide column passes
    /// (16 + 8 + 3, 32 + 8, 64), query counts around its 16-lane groups and 6-row groups, and
    /// key counts around its 6-key groups.
    func testOddSizesAroundTheBlockKernel() throws {
        try check(.float32, Shape(b: 1, tq: 45, tk: 45, h: 2, d: 64, dv: 27), mask: .causal)
        try check(.float32, Shape(b: 2, tq: 33, tk: 41, h: 3, d: 13, dv: 40), mask: .none)
        try check(.float32, Shape(b: 2, tq: 17, tk: 17, h: 1, d: 64, dv: 64), mask: .padding([17, 5]))
        try check(.float32, Shape(b: 1, tq: 97, tk: 97, h: 1, d: 32, dv: 32), mask: .causal)
        try check(.float32, Shape(b: 1, tq: 7, tk: 100, h: 2, d: 9, dv: 16), mask: .causal)
    }

    /// The causal trim leaves out keys whose probability is 0 in the unfused ops, unless an
    /// infinity or NaN reaches them: a query times a left-out key that overflows (logit +inf,
    /// so the unfused row is NaN) or a NaN in a left-out value (0·NaN). Then the fused kernel
    /// keeps every key and gives the same NaNs; elsewhere the same values.
    func testNonFiniteValuesUnderTrimmedKeys() throws {
        let s = Shape(b: 1, tq: 40, tk: 40, h: 2, d: 8, dv: 8)
        let m = model(.float32, s, mask: .causal)
        XCTAssertEqual(opTypes(try optimized(m)), ["FusedAttention"])
        let mv = maskValues(.causal, s)!
        for poison in ["query times key overflows", "value is NaN", "key is inf"] {
            var q = values(s.b * s.tq * s.h * s.d, seed: 1), k = values(s.b * s.tk * s.h * s.d, seed: 2)
            var v = values(s.b * s.tk * s.h * s.dv, seed: 3)
            let last = s.tk - 1  // a key every row but the last leaves out
            switch poison {
            case "query times key overflows":
                for e in 0..<s.d { q[e] = 1e20; k[(last * s.h) * s.d + e] = 1e20 }  // row 0, head 0
            case "value is NaN":
                v[(last * s.h + 1) * s.dv + 3] = .nan  // head 1
            default:
                k[(last * s.h) * s.d + 2] = .infinity
            }
            let feeds = ["q": tensor(q, [s.b, s.tq, s.h, s.d], .float32), "k": tensor(k, [s.b, s.tk, s.h, s.d], .float32),
                         "v": tensor(v, [s.b, s.tk, s.h, s.dv], .float32), "mask": tensor(mv.values, mv.shape, .float32)]
            let fused = try run(m, feeds, disabled: ""), unfused = try run(m, feeds, disabled: "attention-fusion")
            XCTAssertTrue(unfused.contains { $0.isNaN }, poison)
            for i in unfused.indices {
                if unfused[i].isNaN || fused[i].isNaN {
                    XCTAssertEqual(fused[i].isNaN, unfused[i].isNaN, "\(poison) at \(i)")
                } else {
                    XCTAssertEqual(fused[i], unfused[i], accuracy: 1e-5 * max(1, abs(unfused[i])), "\(poison) at \(i)")
                }
            }
        }
    }

    /// A graph whose probabilities are read elsewhere (here a graph output) keeps its ops.
    func testProbabilitiesReadElsewhereStay() throws {
        let m = model(.float32, Shape(), mask: .causal, probabilitiesOut: true)
        let ops = opTypes(try optimized(m))
        XCTAssertFalse(ops.contains("FusedAttention"), "\(ops)")
        XCTAssertTrue(ops.contains("Softmax") || ops.contains("ElementwiseChain"), "\(ops)")
    }

    /// The kernel on shapes the pass did not see (a mask that does not broadcast to the scores)
    /// reports the Add's error rather than reading out of bounds.
    func testMaskThatDoesNotBroadcastFails() throws {
        let s = Shape(b: 2, tq: 4, tk: 4, h: 1, d: 2, dv: 2)
        let m = model(.float32, s, mask: .padding([4, 4]))
        var feeds = ["q": tensor(values(16, seed: 1), [2, 4, 1, 2], .float32), "k": tensor(values(16, seed: 2), [2, 4, 1, 2], .float32),
                     "v": tensor(values(16, seed: 3), [2, 4, 1, 2], .float32)]
        feeds["mask"] = tensor([Double](repeating: 0, count: 3), [1, 1, 1, 3], .float32)
        XCTAssertThrowsError(try InferenceSession(model: m).run(tensors: feeds))
    }
}
