import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// `AttentionFusion`'s projection packing and FusedAttention's packed input (`qkv_heads`): three
/// MatMul + Add projections of one input (BERT, ViT) become one product by the concatenated
/// weights, and GPT-2's one product's Split goes; the FusedAttention reads Q, K, V from the
/// packed product by strides. The optimised graph is inspected and its output checked against
/// float64 attention over float64 projections, with the pass on and off; projections the pass
/// must not pack (weights that are graph inputs, Q from another input) keep their ops.
final class QKVPackingTests: XCTestCase {
    struct Shape { var b = 2, t = 37, e = 12, h = 3, d = 4 }

    enum Layout { case separate, split }

    func values(_ count: Int, seed: UInt64, scale: Double = 1) -> [Double] {
        var g = RandomGenerator(seed: seed)
        return (0..<count).map { _ in Double(Float((g.nextDouble() * 2 - 1) * scale)) }
    }

    func tensor(_ x: [Double], _ shape: [Int], _ dtype: DType) -> Tensor {
        dtype == .float64 ? Tensor(shape: shape, scalars: x) : Tensor(shape: shape, scalars: x.map { Float($0) })
    }

    /// Weights [E, 3·H·D] (Q's columns, then K's, then V's) and bias [3·H·D].
    func parameters(_ s: Shape) -> (w: [Double], b: [Double]) {
        (values(s.e * 3 * s.h * s.d, seed: 11, scale: 0.5), values(3 * s.h * s.d, seed: 12, scale: 0.5))
    }

    /// Columns c0..<c0+n of a row-major [rows, cols] matrix.
    func columns(_ m: [Double], rows: Int, cols: Int, _ c0: Int, _ n: Int) -> [Double] {
        (0..<rows).flatMap { r in (0..<n).map { m[r * cols + c0 + $0] } }
    }

    /// x [B, T, E] → projections → Reshape (its shape from Shape(x) or a constant) →
    /// attention (scale 1/√D, the causal or a padding mask) → y [B, T, H, D].
    /// `separate`: three MatMul + Add (the bias first in one of them); `split`: one MatMul by
    /// [E, 3·H·D] + Add, then a Split into three. `weightsAsInputs` makes the weights graph
    /// inputs (not constants); `constantShape` writes the Reshape target as a constant.
    func model(_ dtype: DType, _ s: Shape, _ layout: Layout, causal: Bool, weightsAsInputs: Bool = false,
               constantShape: Bool = false, symbolicBatch: Bool = true, unknownBatch: Bool = false) -> Model {
        var g = Graph()
        let hd = s.h * s.d
        func info(_ name: String, _ shape: [Dim]) -> ValueInfo { ValueInfo(name: name, type: .tensor(dtype, shape: shape)) }
        let batch: Dim = unknownBatch ? .unknown : symbolicBatch ? .symbol("batch") : .value(s.b)
        g.inputs = [info("x", [batch, .value(s.t), .value(s.e)])]
        let (w, b) = parameters(s)
        var nodes: [Node] = []
        func weight(_ name: String, _ values: [Double], _ shape: [Int]) {
            if weightsAsInputs {
                g.inputs.append(info(name, shape.map { .value($0) }))
            } else {
                g.setInitializer(name, tensor(values, shape, dtype))
            }
        }
        var sources: [String] = []
        switch layout {
        case .separate:
            for (p, name) in ["q", "k", "v"].enumerated() {
                weight("w\(name)", columns(w, rows: s.e, cols: 3 * hd, p * hd, hd), [s.e, hd])
                g.setInitializer("b\(name)", tensor(Array(b[(p * hd)..<((p + 1) * hd)]), [hd], dtype))
                nodes.append(Node(opType: "MatMul", inputs: ["x", "w\(name)"], outputs: ["\(name)_mm"]))
                let operands = p == 1 ? ["b\(name)", "\(name)_mm"] : ["\(name)_mm", "b\(name)"]
                nodes.append(Node(opType: "Add", inputs: operands, outputs: ["\(name)_proj"]))
                sources.append("\(name)_proj")
            }
        case .split:
            weight("w", w, [s.e, 3 * hd])
            g.setInitializer("b", tensor(b, [3 * hd], dtype))
            g.setInitializer("sizes", Tensor(shape: [3], scalars: [Int64(hd), Int64(hd), Int64(hd)]))
            nodes += [
                Node(opType: "MatMul", inputs: ["x", "w"], outputs: ["mm"]),
                Node(opType: "Add", inputs: ["mm", "b"], outputs: ["proj"]),
                Node(opType: "Split", inputs: ["proj", "sizes"], outputs: ["q_proj", "k_proj", "v_proj"], attributes: ["axis": .int(2)]),
            ]
            sources = ["q_proj", "k_proj", "v_proj"]
        }
        // The Reshape targets: [B, T, H, D] as PyTorch writes y.size()[:-1] + (H, D).
        g.setInitializer("i0", Tensor(shape: [], scalars: [Int64(0)]))
        g.setInitializer("i1", Tensor(shape: [], scalars: [Int64(1)]))
        g.setInitializer("axes0", Tensor(shape: [1], scalars: [Int64(0)]))
        g.setInitializer("hd", Tensor(shape: [2], scalars: [Int64(s.h), Int64(s.d)]))
        g.setInitializer("target", Tensor(shape: [4], scalars: [Int64(0), Int64(s.t), Int64(s.h), Int64(s.d)]))
        for (p, src) in sources.enumerated() {
            let name = ["q", "k", "v"][p]
            var target = "target"
            if !constantShape {
                // Split's pieces take their own Shape, V K's (GPT-2); the separate ones x's (BERT).
                let of = layout == .split ? (name == "v" ? "k_proj" : src) : "x"
                nodes += [
                    Node(opType: "Shape", inputs: [of], outputs: ["\(name)_shape"]),
                    Node(opType: "Gather", inputs: ["\(name)_shape", "i0"], outputs: ["\(name)_b"], attributes: ["axis": .int(0)]),
                    Node(opType: "Gather", inputs: ["\(name)_shape", "i1"], outputs: ["\(name)_t"], attributes: ["axis": .int(0)]),
                    Node(opType: "Unsqueeze", inputs: ["\(name)_b", "axes0"], outputs: ["\(name)_b1"]),
                    Node(opType: "Unsqueeze", inputs: ["\(name)_t", "axes0"], outputs: ["\(name)_t1"]),
                    Node(opType: "Concat", inputs: ["\(name)_b1", "\(name)_t1", "hd"], outputs: ["\(name)_target"], attributes: ["axis": .int(0)]),
                ]
                target = "\(name)_target"
            }
            nodes.append(Node(opType: "Reshape", inputs: [src, target], outputs: [name]))
        }
        g.setInitializer("scale", dtype == .float64 ? Tensor(shape: [], scalars: [0.5]) : Tensor(shape: [], scalars: [Float(0.5)]))
        nodes += [
            Node(opType: "Transpose", inputs: ["q"], outputs: ["qt"], attributes: ["perm": .ints([0, 2, 1, 3])]),
            Node(opType: "Transpose", inputs: ["k"], outputs: ["kt"], attributes: ["perm": .ints([0, 2, 3, 1])]),
            Node(opType: "Transpose", inputs: ["v"], outputs: ["vt"], attributes: ["perm": .ints([0, 2, 1, 3])]),
            Node(opType: "MatMul", inputs: ["qt", "kt"], outputs: ["scores"]),
            Node(opType: "Mul", inputs: ["scores", "scale"], outputs: ["scaled"]),
        ]
        g.inputs.append(info("mask", causal ? [.value(1), .value(1), .value(s.t), .value(s.t)]
                                            : [batch, .value(1), .value(1), .value(s.t)]))
        nodes += [
            Node(opType: "Add", inputs: ["scaled", "mask"], outputs: ["masked"]),
            Node(opType: "Softmax", inputs: ["masked"], outputs: ["p"], attributes: ["axis": .int(-1)]),
            Node(opType: "MatMul", inputs: ["p", "vt"], outputs: ["context"]),
            Node(opType: "Transpose", inputs: ["context"], outputs: ["y"], attributes: ["perm": .ints([0, 2, 1, 3])]),
        ]
        g.nodes = nodes
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    func maskValues(_ s: Shape, causal: Bool) -> [Double] {
        if causal {
            return (0..<(s.t * s.t)).map { ($0 % s.t) > ($0 / s.t) ? -Double(Float.greatestFiniteMagnitude) : 0 }
        }
        // Batch entry n keeps its first t − 5·n keys.
        return (0..<(s.b * s.t)).map { ($0 % s.t) >= s.t - 5 * ($0 / s.t) ? -10000 : 0 }
    }

    /// Float64 projections and attention: y [B, T, H, D] and, per element, Σ_j p_j·|v_j| + the
    /// projections' magnitudes (for the bound).
    func reference(_ s: Shape, x: [Double], mask: [Double], causal: Bool) -> (y: [Double], size: [Double]) {
        let (w, b) = parameters(s)
        let hd = s.h * s.d, rows = s.b * s.t
        var proj = [Double](repeating: 0, count: rows * 3 * hd), projSize = proj
        for r in 0..<rows {
            for c in 0..<(3 * hd) {
                var sum = b[c], mag = abs(b[c])
                for e in 0..<s.e { sum += x[r * s.e + e] * w[e * 3 * hd + c]; mag += abs(x[r * s.e + e] * w[e * 3 * hd + c]) }
                proj[r * 3 * hd + c] = sum
                projSize[r * 3 * hd + c] = mag
            }
        }
        func at(_ part: Int, _ n: Int, _ i: Int, _ a: Int, _ e: Int) -> Int { (n * s.t + i) * 3 * hd + part * hd + a * s.d + e }
        var y = [Double](repeating: 0, count: rows * hd), size = y
        for n in 0..<s.b {
            for a in 0..<s.h {
                for i in 0..<s.t {
                    var logits = [Double](repeating: 0, count: s.t)
                    for j in 0..<s.t {
                        var dot = 0.0
                        for e in 0..<s.d { dot += proj[at(0, n, i, a, e)] * proj[at(1, n, j, a, e)] }
                        logits[j] = 0.5 * dot + (causal ? mask[i * s.t + j] : mask[n * s.t + j])
                    }
                    let top = logits.max()!
                    let ex = logits.map { Foundation.exp($0 - top) }
                    let total = ex.reduce(0, +)
                    for f in 0..<s.d {
                        var sum = 0.0, mag = 0.0
                        for j in 0..<s.t {
                            let p = ex[j] / total
                            sum += p * proj[at(2, n, j, a, f)]
                            mag += p * (abs(proj[at(2, n, j, a, f)]) + projSize[at(2, n, j, a, f)])
                            // A logit's error moves p by about p·|Δlogit|: bound it by the key's size.
                            var dq = 0.0
                            for e in 0..<s.d { dq += projSize[at(0, n, i, a, e)] * projSize[at(1, n, j, a, e)] }
                            mag += p * dq * abs(proj[at(2, n, j, a, f)])
                        }
                        y[((n * s.t + i) * s.h + a) * s.d + f] = sum
                        size[((n * s.t + i) * s.h + a) * s.d + f] = mag
                    }
                }
            }
        }
        return (y, size)
    }

    func run(_ m: Model, _ feeds: [String: Tensor], disabled: String) throws -> [Double] {
        try withPassesDisabled(disabled) { try InferenceSession(model: m).run(tensors: feeds)["y"]!.doubles() }
    }

    /// Builds, optimises and runs one case; checks the packing fired (or not) and the output
    /// against the float64 reference with the pass on and off.
    func check(_ dtype: DType, _ s: Shape, _ layout: Layout, causal: Bool, packs: Bool = true, weightsAsInputs: Bool = false,
               constantShape: Bool = false, symbolicBatch: Bool = true, unknownBatch: Bool = false,
               file: StaticString = #filePath, line: UInt = #line) throws {
        let m = model(dtype, s, layout, causal: causal, weightsAsInputs: weightsAsInputs, constantShape: constantShape,
                      symbolicBatch: symbolicBatch, unknownBatch: unknownBatch)
        let opt = try optimized(m)
        let attention = opt.graph.nodes.filter { $0.opType == "FusedAttention" }
        XCTAssertEqual(attention.count, 1, "\(opTypes(opt))", file: file, line: line)
        let ops = opTypes(opt)
        if packs {
            XCTAssertEqual(attention.first?.int("qkv_heads"), s.h, "\(ops)", file: file, line: line)
            XCTAssertEqual(attention.first?.inputs.count, 4, file: file, line: line)
            XCTAssertEqual(ops.filter { $0 == "MatMulBias" }.count, 1, "\(ops)", file: file, line: line)
            XCTAssertFalse(ops.contains("Split") || ops.contains("Reshape") || ops.contains("MatMul"), "\(ops)", file: file, line: line)
        } else {
            XCTAssertNil(attention.first?.int("qkv_heads"), "\(ops)", file: file, line: line)
        }
        let x = values(s.b * s.t * s.e, seed: 1, scale: 2)
        let mask = maskValues(s, causal: causal)
        var feeds = ["x": tensor(x, [s.b, s.t, s.e], dtype),
                     "mask": tensor(mask, causal ? [1, 1, s.t, s.t] : [s.b, 1, 1, s.t], dtype)]
        if weightsAsInputs {
            let (w, _) = parameters(s)
            let hd = s.h * s.d
            switch layout {
            case .separate:
                for (p, name) in ["q", "k", "v"].enumerated() {
                    feeds["w\(name)"] = tensor(columns(w, rows: s.e, cols: 3 * hd, p * hd, hd), [s.e, hd], dtype)
                }
            case .split: feeds["w"] = tensor(w, [s.e, 3 * hd], dtype)
            }
        }
        let r = reference(s, x: x, mask: mask, causal: causal)
        let unit = dtype == .float64 ? 1e-15 : 1.2e-7
        for disabled in ["", "attention-fusion"] {
            let y = try run(m, feeds, disabled: disabled)
            XCTAssertEqual(y.count, r.y.count, file: file, line: line)
            var worst = 0.0
            for i in r.y.indices { worst = max(worst, abs(y[i] - r.y[i]) / (r.size[i] + 1e-30)) }
            XCTAssertLessThanOrEqual(worst, unit * Double(4 * (s.t + s.e + s.d)), "\(layout) \(dtype) disabled: '\(disabled)'",
                                     file: file, line: line)
        }
    }

    /// BERT: three projections, a padding mask; the Reshape target from Shape(x), a symbolic batch.
    func testSeparateProjectionsPack() throws {
        try check(.float32, Shape(), .separate, causal: false)
        try check(.float32, Shape(b: 3, t: 50, e: 24, h: 2, d: 16), .separate, causal: true)
        try check(.float64, Shape(b: 2, t: 9, e: 5, h: 2, d: 3), .separate, causal: false)
    }

    /// A constant Reshape target [0, T, H, D] with a static batch, as a traced export writes it.
    func testConstantReshapeTargetPacks() throws {
        try check(.float32, Shape(b: 2, t: 37, e: 12, h: 3, d: 4), .separate, causal: false, constantShape: true, symbolicBatch: false)
        try check(.float32, Shape(b: 1, t: 20, e: 8, h: 2, d: 8), .split, causal: true, constantShape: true, symbolicBatch: false)
    }

    /// A batch size the types do not know (as after an embedding Gather): the Reshape targets'
    /// Shape → Gather → Concat entries say B and T stay (V's from K's piece, as GPT-2 writes it).
    func testUnknownBatchPacks() throws {
        try check(.float32, Shape(), .separate, causal: false, unknownBatch: true)
        try check(.float32, Shape(b: 2, t: 40, e: 16, h: 2, d: 8), .split, causal: true, unknownBatch: true)
    }

    /// GPT-2: one [E, 3·H·D] product, a Split, the causal mask (the trim reads the packed K, V).
    func testSplitProductPacks() throws {
        try check(.float32, Shape(b: 2, t: 70, e: 16, h: 2, d: 8), .split, causal: true)
        try check(.float32, Shape(b: 1, t: 3, e: 4, h: 1, d: 5), .split, causal: true)
        try check(.float64, Shape(b: 2, t: 11, e: 6, h: 3, d: 2), .split, causal: true)
    }

    /// Weights that are graph inputs (trainable, or fed) are not concatenated: three MatMuls
    /// stay; GPT-2's Split still goes (its product is whatever the weight is).
    func testWeightsAsInputs() throws {
        try check(.float32, Shape(), .separate, causal: false, packs: false, weightsAsInputs: true)
        try check(.float32, Shape(), .split, causal: true, weightsAsInputs: true)
    }

    /// A packed input of the wrong width fails with an error, not a read out of bounds.
    func testPackedKernelRejectsBadWidth() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "p", type: .tensor(.float32, shape: [.value(1), .value(2), .value(7)]))]
        g.nodes = [Node(opType: "FusedAttention", domain: internalDomain, inputs: ["p", "", ""], outputs: ["y"],
                        attributes: ["qkv_heads": .int(1)])]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17, internalDomain: 1]
        XCTAssertThrowsError(try InferenceSession(model: m).run(tensors: ["p": Tensor(shape: [1, 2, 7], scalars: [Float](repeating: 0, count: 14))]))
    }
}
