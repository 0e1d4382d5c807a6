import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// `StridedMatMulFusion` and its `StridedMatMul` kernel: attention's head Transposes around batched
/// products are read and written in place. Checked against float64 evaluation of the graph as
/// written, and against the plain graph (optimisations off).
final class StridedMatMulTests: XCTestCase {
    static let (batch, seq, heads, dim) = (2, 5, 3, 4)

    /// q, k, v [B, S, H, D]: scores = q' · k'ᵀ (q' = q [0, 2, 1, 3], k'ᵀ = k [0, 2, 3, 1]), context =
    /// scores · v' written back [B, S, H, D], and 0.5 · q'ᵀ · scores (FusedMatMul transA) written
    /// [B, S, H, D] through [0, 3, 1, 2] (the backward pass's dK layout).
    func attentionModel(_ dtype: DType) -> Model {
        let (b, s, h, d) = (Self.batch, Self.seq, Self.heads, Self.dim)
        var g = Graph()
        g.inputs = ["q", "k", "v"].map { ValueInfo(name: $0, type: .tensor(dtype, shape: [b, s, h, d].map { .value($0) })) }
        g.nodes = [
            Node(opType: "Transpose", inputs: ["q"], outputs: ["qh"], attributes: ["perm": .ints([0, 2, 1, 3])]),
            Node(opType: "Transpose", inputs: ["k"], outputs: ["kt"], attributes: ["perm": .ints([0, 2, 3, 1])]),
            Node(opType: "Transpose", inputs: ["v"], outputs: ["vh"], attributes: ["perm": .ints([0, 2, 1, 3])]),
            Node(opType: "MatMul", inputs: ["qh", "kt"], outputs: ["scores"]),
            Node(opType: "MatMul", inputs: ["scores", "vh"], outputs: ["context"]),
            Node(opType: "Transpose", inputs: ["context"], outputs: ["y"], attributes: ["perm": .ints([0, 2, 1, 3])]),
            Node(opType: "FusedMatMul", domain: "com.microsoft", inputs: ["qh", "scores"], outputs: ["z"],
                 attributes: ["transA": .int(1), "alpha": .float(0.5)]),
            Node(opType: "Transpose", inputs: ["z"], outputs: ["w"], attributes: ["perm": .ints([0, 3, 1, 2])]),
        ]
        g.outputs = [ValueInfo(name: "y", type: nil), ValueInfo(name: "w", type: nil), ValueInfo(name: "scores", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17, "com.microsoft": 1]
        return m
    }

    /// y, w and scores of `attentionModel` in float64 from the same inputs.
    static func reference(q: [Double], k: [Double], v: [Double]) -> (y: [Double], w: [Double], scores: [Double]) {
        let (b, s, h, d) = (batch, seq, heads, dim)
        func at(_ x: [Double], _ i0: Int, _ i1: Int, _ i2: Int, _ i3: Int) -> Double { x[((i0 * s + i1) * h + i2) * d + i3] }
        var scores = [Double](repeating: 0, count: b * h * s * s)
        var y = [Double](repeating: 0, count: b * s * h * d), w = y
        for n in 0..<b {
            for hh in 0..<h {
                for i in 0..<s {
                    for j in 0..<s {
                        scores[((n * h + hh) * s + i) * s + j] = (0..<d).reduce(0) { $0 + at(q, n, i, hh, $1) * at(k, n, j, hh, $1) }
                    }
                }
                for i in 0..<s {
                    for e in 0..<d {
                        // context[n, hh, i, e] lands at y[n, i, hh, e].
                        y[((n * s + i) * h + hh) * d + e] = (0..<s).reduce(0) { $0 + scores[((n * h + hh) * s + i) * s + $1] * at(v, n, $1, hh, e) }
                    }
                }
                for e in 0..<d {
                    for j in 0..<s {
                        // z[n, hh, e, j] = 0.5 Σ_i q[n, i, hh, e] scores[n, hh, i, j], at w[n, j, hh, e].
                        w[((n * s + j) * h + hh) * d + e] = 0.5 * (0..<s).reduce(0) { $0 + at(q, n, $1, hh, e) * scores[((n * h + hh) * s + $1) * s + j] }
                    }
                }
            }
        }
        return (y, w, scores)
    }

    /// Every Transpose goes; float32 and float64 results match float64 evaluation within the
    /// rounding of two chained 5-term sums of values below 1 in magnitude (float32: 1e-5 covers
    /// 10 roundings of sums below 20 at 2⁻²⁴ with room; float64 1e-13), and the plain graph's
    /// results to the same bounds.
    func testAttentionTransposesAreReadAndWrittenInPlace() throws {
        var optimized = attentionModel(.float32)
        try PassPipeline.optimizing().run(&optimized)
        XCTAssertEqual(optimized.graph.nodes.map(\.opType), ["StridedMatMul", "StridedMatMul", "StridedMatMul"])
        XCTAssertEqual(optimized.graph.nodes[0].ints("permA"), [0, 2, 1, 3])
        XCTAssertEqual(optimized.graph.nodes[0].ints("permB"), [0, 2, 3, 1])
        XCTAssertEqual(optimized.graph.nodes[1].ints("permY"), [0, 2, 1, 3])
        XCTAssertEqual(optimized.graph.nodes[2].ints("permY"), [0, 3, 1, 2])
        let shape = [Self.batch, Self.seq, Self.heads, Self.dim]
        let count = shape.reduce(1, *)
        var g = RandomGenerator(seed: 71)
        let values = (0..<3).map { _ in (0..<count).map { _ in g.nextDouble() * 2 - 1 } }
        for (dtype, tolerance) in [(DType.float32, 1e-5), (.float64, 1e-13)] {
            let model = attentionModel(dtype)
            // Inputs rounded to the type first, so the reference reads what the graph reads.
            let feeds = try Dictionary(uniqueKeysWithValues: zip(["q", "k", "v"], values).map { name, v in
                (name, try Tensor(dtype: dtype, shape: shape, doubles: v))
            })
            let rounded = try ["q", "k", "v"].map { try feeds[$0]!.doubles() }
            let expected = Self.reference(q: rounded[0], k: rounded[1], v: rounded[2])
            var plainOptions = SessionOptions()
            plainOptions.optimize = false
            let fast = try InferenceSession(model: model).run(tensors: feeds)
            let plain = try InferenceSession(model: model, options: plainOptions).run(tensors: feeds)
            for (name, reference) in [("y", expected.y), ("w", expected.w), ("scores", expected.scores)] {
                let actual = try XCTUnwrap(fast[name]), other = try XCTUnwrap(plain[name])
                XCTAssertEqual(actual.dtype, dtype)
                XCTAssertEqual(actual.shape, other.shape, name)
                let a = try actual.doubles(), p = try other.doubles()
                XCTAssertEqual(a.count, reference.count, name)
                let worst = zip(a, reference).reduce(0.0) { max($0, abs($1.0 - $1.1)) }
                let worstPlain = zip(p, reference).reduce(0.0) { max($0, abs($1.0 - $1.1)) }
                XCTAssertLessThan(worst, tolerance, "\(dtype) \(name)")
                XCTAssertLessThan(worstPlain, tolerance, "\(dtype) \(name) (plain)")
            }
        }
    }

    /// An int32 MatMul between head Transposes is fused too and computes through copies and
    /// MatMul: exactly the plain graph's values.
    func testIntegerProductsMatchThePlainGraph() throws {
        let shape = [Self.batch, Self.seq, Self.heads, Self.dim]
        var g = Graph()
        g.inputs = ["q", "k"].map { ValueInfo(name: $0, type: .tensor(.int32, shape: shape.map { .value($0) })) }
        g.nodes = [
            Node(opType: "Transpose", inputs: ["q"], outputs: ["qh"], attributes: ["perm": .ints([0, 2, 1, 3])]),
            Node(opType: "Transpose", inputs: ["k"], outputs: ["kt"], attributes: ["perm": .ints([0, 2, 3, 1])]),
            Node(opType: "MatMul", inputs: ["qh", "kt"], outputs: ["scores"]),
        ]
        g.outputs = [ValueInfo(name: "scores", type: nil)]
        var model = Model(graph: g)
        model.opsetImports = ["": 17]
        var optimized = model
        try PassPipeline.optimizing().run(&optimized)
        XCTAssertEqual(optimized.graph.nodes.map(\.opType), ["StridedMatMul"])
        let count = shape.reduce(1, *)
        let q = Tensor(shape: shape, scalars: (0..<count).map { Int32($0 % 7 - 3) })
        let k = Tensor(shape: shape, scalars: (0..<count).map { Int32($0 % 5 - 2) })
        var plainOptions = SessionOptions()
        plainOptions.optimize = false
        let fast = try InferenceSession(model: model).run(tensors: ["q": q, "k": k])["scores"]
        let plain = try InferenceSession(model: model, options: plainOptions).run(tensors: ["q": q, "k": k])["scores"]
        XCTAssertEqual(fast?.dtype, .int32)
        XCTAssertEqual(fast?.shape, [Self.batch, Self.heads, Self.seq, Self.seq])
        XCTAssertEqual(fast?.scalars(as: Int32.self), plain?.scalars(as: Int32.self))
    }

    /// A Transpose that another kind of node also reads stays (the product still reads it as it
    /// did), and so does one whose last stored axis would not be a matrix axis.
    func testTransposesReadElsewhereOrMovingTheLastAxisStay() throws {
        let shape = [Self.batch, Self.seq, Self.heads, Self.dim]
        var g = Graph()
        g.inputs = ["q", "k"].map { ValueInfo(name: $0, type: .tensor(.float32, shape: shape.map { .value($0) })) }
        g.nodes = [
            Node(opType: "Transpose", inputs: ["q"], outputs: ["qh"], attributes: ["perm": .ints([0, 2, 1, 3])]),
            Node(opType: "Relu", inputs: ["qh"], outputs: ["r"]),
            Node(opType: "Transpose", inputs: ["k"], outputs: ["kx"], attributes: ["perm": .ints([3, 2, 1, 0])]),
            Node(opType: "MatMul", inputs: ["qh", "kx"], outputs: ["p"]),
        ]
        g.outputs = [ValueInfo(name: "r", type: nil), ValueInfo(name: "p", type: nil)]
        var model = Model(graph: g)
        model.opsetImports = ["": 17]
        var optimized = model
        try PassPipeline.optimizing().run(&optimized)
        XCTAssertEqual(optimized.graph.nodes.map(\.opType), ["Transpose", "Relu", "Transpose", "MatMul"])
    }
}
