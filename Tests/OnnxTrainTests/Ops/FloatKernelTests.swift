#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// The float32 fast paths (FloatMath exp/erf, layer norm, softmax, Gelu, Where) against libm in
/// Double and against the same nodes run in float64, which take the general Double paths.
final class FloatKernelTests: XCTestCase {
    /// Largest error in ulps of the float result, over every 61st float in [lo, hi) (~16M points).
    private func maxUlpError(_ lo: Float, _ hi: Float, _ f: (Float) -> Float, _ reference: (Double) -> Double) -> (Float, Float) {
        var worst: Float = 0, at: Float = lo
        var x = lo
        while x < hi {
            let ref = Float(reference(Double(x)))
            let err = (f(x) - ref).magnitude / ref.ulp
            if !(err <= worst) { worst = err; at = x }
            for _ in 0..<61 { x = x.nextUp }
        }
        return (worst, at)
    }

    func testErfWithinOneUlpOfLibm() {
        let (err, at) = maxUlpError(-5, 5, FloatMath.erf, { erf($0) })
        XCTAssertLessThanOrEqual(err, 1, "erf is off by \(err) ulp at \(at)")
        XCTAssertEqual(FloatMath.erf(.infinity), 1)
        XCTAssertEqual(FloatMath.erf(-.infinity), -1)
        XCTAssertEqual(FloatMath.erf(0), 0)
        XCTAssertEqual(FloatMath.erf(-0.0).sign, .minus)
        XCTAssertTrue(FloatMath.erf(.nan).isNaN)
    }

    func testRationalErfWithin5e7OfLibm() {
        var worst: Float = 0, at: Float = 0
        var x: Float = -6
        while x < 6 {
            let err = (FloatMath.erfRational(x) - Float(erf(Double(x)))).magnitude
            if !(err <= worst) { worst = err; at = x }
            for _ in 0..<61 { x = x.nextUp }
        }
        XCTAssertLessThanOrEqual(worst, 5e-7, "rational erf is off by \(worst) at \(at)")
        XCTAssertEqual(FloatMath.erfRational(.infinity), 1, accuracy: 5e-7)
        XCTAssertEqual(FloatMath.erfRational(-.infinity), -1, accuracy: 5e-7)
        XCTAssertTrue(FloatMath.erfRational(.nan).isNaN)
    }

    func testExpWithinTwoUlpsOfLibm() {
        let (err, at) = maxUlpError(-87, 88, FloatMath.exp, { exp($0) })
        XCTAssertLessThanOrEqual(err, 2, "exp is off by \(err) ulp at \(at)")
        XCTAssertEqual(FloatMath.exp(0), 1)
        XCTAssertEqual(FloatMath.exp(-.infinity), 0)
        XCTAssertEqual(FloatMath.exp(-100), 0)
        XCTAssertTrue(FloatMath.exp(.nan).isNaN)
    }

    /// Pseudo-random floats in [-scale, scale) + offset, repeatable.
    private func values(_ n: Int, seed: UInt64, scale: Float = 2, offset: Float = 0) -> [Float] {
        var state = seed
        return (0..<n).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Double(state >> 11) / Double(1 << 53)) * 2 * scale - scale + offset
        }
    }

    private func wide(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, scalars: t.scalars(as: Float.self).map(Double.init)) }

    /// Runs one node in float32 and in float64 and compares every output.
    private func assertFloatMatchesDouble(_ op: String, domain: String = "", opset: Int, _ inputs: [Tensor],
                                          attributes: [String: Attribute] = [:], outputs: Int = 1, tolerance: Double = 2e-5,
                                          file: StaticString = #filePath, line: UInt = #line) throws {
        func run(_ feeds: [Tensor]) throws -> [Tensor] {
            var graph = Graph()
            let names = feeds.indices.map { "x\($0)" }, outs = (0..<outputs).map { "y\($0)" }
            graph.nodes = [Node(opType: op, domain: domain, inputs: names, outputs: outs, attributes: attributes)]
            graph.inputs = names.map { ValueInfo(name: $0, type: nil) }
            graph.outputs = outs.map { ValueInfo(name: $0, type: nil) }
            var model = Model(graph: graph)
            model.opsetImports = ["": opset, "com.microsoft": 1]
            let result = try InferenceSession(model: model).run(Dictionary(uniqueKeysWithValues: zip(names, feeds.map { Value.tensor($0) })))
            return try outs.map { name in
                guard let t = result[name]?.tensor else { throw KernelError("no output \(name)") }
                return t
            }
        }
        let single = try run(inputs), double = try run(inputs.map { $0.dtype == .float32 ? wide($0) : $0 })
        for (k, (s, d)) in zip(single, double).enumerated() {
            XCTAssertEqual(s.dtype, .float32, "output \(k) type", file: file, line: line)
            XCTAssertEqual(s.shape, d.shape, "output \(k) shape", file: file, line: line)
            let a = s.scalars(as: Float.self), b = d.scalars(as: Double.self)
            var worst = 0.0, at = 0
            for i in a.indices where !(a[i].isNaN && b[i].isNaN) {
                let err = (Double(a[i]) - b[i]).magnitude / max(1, b[i].magnitude)
                if !(err <= worst) { worst = err; at = i }
            }
            XCTAssertLessThanOrEqual(worst, tolerance, "\(op) output \(k): element \(at) float \(a[at]) vs double \(b[at])", file: file, line: line)
        }
    }

    func testLayerNormalizationFloatMatchesDouble() throws {
        // 37 rows of 45 (not a multiple of 8: the vector loops' tails run too), a large common offset.
        let x = Tensor(shape: [37, 45], scalars: values(37 * 45, seed: 1, offset: 300))
        let scale = Tensor(shape: [45], scalars: values(45, seed: 2)), bias = Tensor(shape: [45], scalars: values(45, seed: 3))
        try assertFloatMatchesDouble("LayerNormalization", opset: 17, [x, scale, bias], outputs: 3, tolerance: 1e-4)
        try assertFloatMatchesDouble("LayerNormalization", opset: 17, [x, scale], outputs: 3, tolerance: 1e-4)
    }

    func testLayerNormalizationGradFloatMatchesDouble() throws {
        let (rows, cols) = (37, 45)
        let x = Tensor(shape: [rows, cols], scalars: values(rows * cols, seed: 4))
        let scale = Tensor(shape: [cols], scalars: values(cols, seed: 5)), bias = Tensor(shape: [cols], scalars: values(cols, seed: 6))
        let forward = try runNode("LayerNormalization", opset: 17, [x, scale, bias], outputs: 3)
        let dy = Tensor(shape: [rows, cols], scalars: values(rows * cols, seed: 7))
        try assertFloatMatchesDouble("LayerNormalizationGrad", domain: "com.microsoft", opset: 17,
                                     [dy, x, scale, forward[1], forward[2]], outputs: 3, tolerance: 2e-5)
    }

    func testSoftmaxAndGradFloatMatchDouble() throws {
        var logits = values(6 * 70, seed: 8, scale: 20)
        for i in stride(from: 3, to: logits.count, by: 5) { logits[i] = -.infinity }  // masked entries
        let x = Tensor(shape: [6, 70], scalars: logits)
        try assertFloatMatchesDouble("Softmax", opset: 13, [x])
        try assertFloatMatchesDouble("LogSoftmax", opset: 13, [Tensor(shape: [6, 70], scalars: values(6 * 70, seed: 9, scale: 20))])
        let y = try runNode("Softmax", opset: 13, [x])[0]
        XCTAssertEqual(y.scalars(as: Float.self)[3], 0, "exp(-inf) is exactly 0")
        let dy = Tensor(shape: [6, 70], scalars: values(6 * 70, seed: 10))
        try assertFloatMatchesDouble("SoftmaxGrad_13", domain: "com.microsoft", opset: 13, [dy, y])
        let logY = try runNode("LogSoftmax", opset: 13, [x])[0]
        try assertFloatMatchesDouble("LogSoftmaxGrad_13", domain: "com.microsoft", opset: 13, [dy, logY])
    }

    func testGeluFamilyFloatMatchesDouble() throws {
        let x = Tensor(shape: [5, 3, 21], scalars: values(5 * 3 * 21, seed: 11, scale: 6))
        let bias = Tensor(shape: [21], scalars: values(21, seed: 12))
        let dy = Tensor(shape: [5, 3, 21], scalars: values(5 * 3 * 21, seed: 13))
        try assertFloatMatchesDouble("BiasGelu", domain: "com.microsoft", opset: 17, [x, bias])
        try assertFloatMatchesDouble("Gelu", domain: "com.microsoft", opset: 17, [x])
        try assertFloatMatchesDouble("BiasGeluGrad_dX", domain: "com.microsoft", opset: 17, [dy, x, bias])
        try assertFloatMatchesDouble("GeluGrad", domain: "com.microsoft", opset: 17, [dy, x])
        try assertFloatMatchesDouble("Erf", opset: 13, [x])
    }

    func testFloatBinaryFastPathMatchesDouble() throws {
        let full = Tensor(shape: [3, 4, 40], scalars: values(480, seed: 15))
        let other = Tensor(shape: [3, 4, 40], scalars: values(480, seed: 16, offset: 3))
        let row = Tensor(shape: [40], scalars: values(40, seed: 17, offset: 3))
        let plane = Tensor(shape: [1, 4, 40], scalars: values(160, seed: 18, offset: 3))
        let scalar = Tensor(shape: [1], scalars: [Float(1.7)])
        let column = Tensor(shape: [3, 1, 1], scalars: values(3, seed: 19, offset: 3))  // general broadcasting
        for op in ["Add", "Sub", "Mul", "Div"] {
            for (x, y) in [(full, other), (full, row), (row, full), (plane, full), (full, scalar), (scalar, full), (column, full)] {
                try assertFloatMatchesDouble(op, opset: 14, [x, y], tolerance: 1e-6)
            }
        }
        try assertFloatMatchesDouble("Sum", opset: 13, [full, other, row], tolerance: 1e-6)
    }

    func testWhereWithSuffixMaskMatchesElementwise() throws {
        // cond [4, 5] under [2, 3, 4, 5], X a scalar, Y full: each element checked by hand.
        let mask = (0..<20).map { $0 % 3 == 0 }
        let cond = Tensor(shape: [4, 5], scalars: mask)
        let y = values(120, seed: 14)
        let out = try runNode("Where", opset: 16, [cond, Tensor(scalar: Float(-7)), Tensor(shape: [2, 3, 4, 5], scalars: y)])[0]
        XCTAssertEqual(out.shape, [2, 3, 4, 5])
        XCTAssertEqual(out.scalars(as: Float.self), (0..<120).map { mask[$0 % 20] ? -7 : y[$0] })
        // X [3, 1, 1] is not a suffix of the output shape: the general path.
        let x3 = Tensor(shape: [3, 1, 1], scalars: [Float(1), 2, 3])
        let general = try runNode("Where", opset: 16, [cond, x3, Tensor(shape: [2, 3, 4, 5], scalars: y)])[0]
        XCTAssertEqual(general.scalars(as: Float.self), (0..<120).map { mask[$0 % 20] ? Float(($0 / 20) % 3 + 1) : y[$0] })
    }
}
