import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// `ScaleIntoMatMul`: attention's backward scale, a Mul of the softmax gradient by a scalar read by
/// the products giving dQ and dK, becomes those products' alpha. The products are checked against
/// float64 sums, bit for bit against the graph run with the pass off when the scale is a power of
/// two, and the pass is checked to leave Muls whose result is read elsewhere, not a scalar, or
/// whose alpha would not be exact.
final class ScaleIntoMatMulTests: XCTestCase {
    static let (batch, heads, seq, dim) = (2, 3, 7, 5)
    let u = Double(Float.ulpOfOne) / 2

    func values(_ count: Int, seed: UInt64) -> [Double] {
        var g = RandomGenerator(seed: seed)
        return (0..<count).map { _ in g.nextDouble() * 2 - 1 }
    }

    /// g [B, H, S, S] scaled by `scale` (rank-0 constant of `dtype`, or of `scaleShape`), read by
    /// dq = g'·k' (k stored [B, S, H, D] and read through a head Transpose: a StridedMatMul by the
    /// time the pass runs) and dk = 0.5·qᵀ·g' (FusedMatMul transA, q [B, H, S, D]).
    func model(_ dtype: DType, scale: Double, scaleShape: [Int] = []) -> Model {
        let (b, h, s, d) = (Self.batch, Self.heads, Self.seq, Self.dim)
        var g = Graph()
        g.inputs = [ValueInfo(name: "g", type: .tensor(dtype, shape: [b, h, s, s].map { .value($0) })),
                    ValueInfo(name: "k", type: .tensor(dtype, shape: [b, s, h, d].map { .value($0) })),
                    ValueInfo(name: "q", type: .tensor(dtype, shape: [b, h, s, d].map { .value($0) }))]
        let c = dtype == .float64 ? Tensor(shape: scaleShape, scalars: [scale]) : Tensor(shape: scaleShape, scalars: [Float(scale)])
        g.setInitializer("scale", c)
        g.nodes = [
            Node(opType: "Mul", inputs: ["g", "scale"], outputs: ["gs"]),
            Node(opType: "Transpose", inputs: ["k"], outputs: ["kh"], attributes: ["perm": .ints([0, 2, 1, 3])]),
            Node(opType: "MatMul", inputs: ["gs", "kh"], outputs: ["dq"]),
            Node(opType: "FusedMatMul", domain: "com.microsoft", inputs: ["q", "gs"], outputs: ["dk"],
                 attributes: ["transA": .int(1), "alpha": .float(0.5)]),
        ]
        g.outputs = [ValueInfo(name: "dq", type: nil), ValueInfo(name: "dk", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17, "com.microsoft": 1]
        return m
    }

    func feeds(_ dtype: DType) -> (feeds: [String: Tensor], g: [Double], k: [Double], q: [Double]) {
        let (b, h, s, d) = (Self.batch, Self.heads, Self.seq, Self.dim)
        // float32 values (float64 graphs get the same numbers), so the reference reads what the graph reads.
        let g = values(b * h * s * s, seed: 11).map { Double(Float($0)) }
        let k = values(b * s * h * d, seed: 12).map { Double(Float($0)) }
        let q = values(b * h * s * d, seed: 13).map { Double(Float($0)) }
        func tensor(_ x: [Double], _ shape: [Int]) -> Tensor {
            dtype == .float64 ? Tensor(shape: shape, scalars: x) : Tensor(shape: shape, scalars: x.map { Float($0) })
        }
        return (["g": tensor(g, [b, h, s, s]), "k": tensor(k, [b, s, h, d]), "q": tensor(q, [b, h, s, d])], g, k, q)
    }

    /// dq [B, H, S, D] and dk [B, H, D, S] in float64, with each element's Σ|terms| (for the bounds).
    func reference(scale: Double, g: [Double], k: [Double], q: [Double]) -> (dq: [Double], dqSize: [Double], dk: [Double], dkSize: [Double]) {
        let (b, h, s, d) = (Self.batch, Self.heads, Self.seq, Self.dim)
        var dq = [Double](repeating: 0, count: b * h * s * d), dqSize = dq, dk = [Double](repeating: 0, count: b * h * d * s), dkSize = dk
        for n in 0..<b {
            for a in 0..<h {
                for i in 0..<s {
                    for e in 0..<d {
                        var sum = 0.0, size = 0.0
                        for j in 0..<s {
                            let t = g[((n * h + a) * s + i) * s + j] * k[((n * s + j) * h + a) * d + e]
                            sum += t; size += abs(t)
                        }
                        dq[((n * h + a) * s + i) * d + e] = scale * sum
                        dqSize[((n * h + a) * s + i) * d + e] = abs(scale) * size
                    }
                }
                // dk[e, j] = 0.5·Σ_i q[i, e]·gs[i, j].
                for e in 0..<d {
                    for j in 0..<s {
                        var sum = 0.0, size = 0.0
                        for i in 0..<s {
                            let t = q[((n * h + a) * s + i) * d + e] * g[((n * h + a) * s + i) * s + j]
                            sum += t; size += abs(t)
                        }
                        dk[((n * h + a) * d + e) * s + j] = 0.5 * scale * sum
                        dkSize[((n * h + a) * d + e) * s + j] = 0.5 * abs(scale) * size
                    }
                }
            }
        }
        return (dq, dqSize, dk, dkSize)
    }

    func run(_ m: Model, _ feeds: [String: Tensor], disabled: String) throws -> (dq: [Double], dk: [Double]) {
        let out = try withPassesDisabled(disabled) { try InferenceSession(model: m).run(tensors: feeds) }
        return (try out["dq"]!.doubles(), try out["dk"]!.doubles())
    }

    /// The Mul goes into both products' alpha (0.125 and 0.5·0.125), for float32 and float64 and a
    /// scale of rank 0 or [1, 1]; the outputs are within float rounding of float64 sums, and bit for
    /// bit those of the graph with the pass off (the scale is a power of two: scaling an operand or
    /// the sum is exact).
    func testPowerOfTwoScaleBecomesAlphaBitForBit() throws {
        for (dtype, scaleShape) in [(DType.float32, [Int]()), (.float32, [1, 1]), (.float64, [])] {
            let m = model(dtype, scale: 0.125, scaleShape: scaleShape)
            let o = try optimized(m)
            XCTAssertFalse(opTypes(o).contains("Mul"), "\(opTypes(o))")
            let alphas = Dictionary(uniqueKeysWithValues: o.graph.nodes.compactMap { n in n.output(0).map { ($0, n.float("alpha")) } })
            XCTAssertEqual(alphas["dq"], 0.125, "\(dtype) \(scaleShape)")
            XCTAssertEqual(alphas["dk"], 0.0625, "\(dtype) \(scaleShape)")
            XCTAssertEqual(o.graph.nodes.first { $0.output(0) == "dq" }?.opType, "StridedMatMul")

            let (f, g, k, q) = feeds(dtype)
            let r = reference(scale: 0.125, g: g, k: k, q: q)
            let unit = dtype == .float64 ? Double.ulpOfOne / 2 : u
            let fused = try run(m, f, disabled: ""), plain = try run(m, f, disabled: "scale-into-matmul")
            XCTAssertEqual(fused.dq, plain.dq, "\(dtype) \(scaleShape)")
            XCTAssertEqual(fused.dk, plain.dk, "\(dtype) \(scaleShape)")
            for i in r.dq.indices {
                XCTAssertLessThanOrEqual(abs(fused.dq[i] - r.dq[i]), Double(Self.seq + 1) * unit * r.dqSize[i], "dq[\(i)] \(dtype)")
            }
            for i in r.dk.indices {
                XCTAssertLessThanOrEqual(abs(fused.dk[i] - r.dk[i]), Double(Self.seq + 1) * unit * r.dkSize[i], "dk[\(i)] \(dtype)")
            }
        }
    }

    /// A scale that is not a power of two (0.3, exact as a float32 constant): alpha 0.3 and
    /// 0.5·0.3, outputs within float32 rounding of the float64 sums, pass on and off (off: the
    /// scaled operand rounds once more).
    func testOtherFloat32ScaleWithinRounding() throws {
        let m = model(.float32, scale: 0.3)
        let o = try optimized(m)
        XCTAssertFalse(opTypes(o).contains("Mul"))
        XCTAssertEqual(o.graph.nodes.first { $0.output(0) == "dk" }?.float("alpha"), Float(0.3) * 0.5)
        let (f, g, k, q) = feeds(.float32)
        let r = reference(scale: Double(Float(0.3)), g: g, k: k, q: q)
        for disabled in ["", "scale-into-matmul"] {
            let got = try run(m, f, disabled: disabled)
            for i in r.dq.indices {
                XCTAssertLessThanOrEqual(abs(got.dq[i] - r.dq[i]), Double(Self.seq + 2) * u * r.dqSize[i], "dq[\(i)] (\(disabled))")
            }
            for i in r.dk.indices {
                XCTAssertLessThanOrEqual(abs(got.dk[i] - r.dk[i]), Double(Self.seq + 2) * u * r.dkSize[i], "dk[\(i)] (\(disabled))")
            }
        }
    }

    /// The Mul stays when its result is also a graph output or read by another op, when the
    /// constant has more than one element or a higher rank than the scaled value, when a product
    /// reads the result twice, and in a float64 graph whose scale (0.1) is not a float32 value.
    func testMulsThatStay() throws {
        func keepsMul(_ m: Model, _ label: String) throws {
            XCTAssertTrue(opTypes(try optimized(m)).contains("Mul"), label)
        }
        var output = model(.float32, scale: 0.125)
        output.graph.outputs.append(ValueInfo(name: "gs", type: nil))
        try keepsMul(output, "graph output")
        var other = model(.float32, scale: 0.125)
        other.graph.nodes.append(Node(opType: "Add", inputs: ["gs", "g"], outputs: ["sum"]))
        other.graph.outputs.append(ValueInfo(name: "sum", type: nil))
        try keepsMul(other, "another reader")
        var vector = model(.float32, scale: 0.125)
        vector.graph.setInitializer("scale", Tensor(shape: [Self.seq], scalars: [Float](repeating: 0.125, count: Self.seq)))
        try keepsMul(vector, "vector")
        try keepsMul(model(.float32, scale: 0.125, scaleShape: [1, 1, 1, 1, 1]), "higher rank")
        var twice = model(.float32, scale: 0.125)
        twice.graph.nodes.append(Node(opType: "FusedMatMul", domain: "com.microsoft", inputs: ["gs", "gs"], outputs: ["gg"]))
        twice.graph.outputs.append(ValueInfo(name: "gg", type: nil))
        try keepsMul(twice, "read twice")
        try keepsMul(model(.float64, scale: 0.1), "float64 0.1")
    }
}
