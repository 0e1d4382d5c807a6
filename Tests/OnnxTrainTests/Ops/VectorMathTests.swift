#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// VectorMath's float32 exp, tanh, erf and sigmoid against float64 libm, their special values,
/// the vector and padded-tail paths against each other, and the ops that use them (float32
/// against the same node in float64).
final class VectorMathTests: XCTestCase {
    typealias V = SIMD8<Float>

    /// Error of `got` in ulps of the exact result `want` (the ulp of the smallest normal below it,
    /// so subnormal results are measured in units of the smallest subnormal).
    private func ulps(_ got: Float, _ want: Double) -> Double {
        if want.isNaN { return got.isNaN ? 0 : .infinity }
        let rounded = Float(want)
        if rounded.isInfinite { return got == rounded ? 0 : .infinity }
        let unit = Double(max(rounded.magnitude, Float.leastNormalMagnitude).ulp)
        return (Double(got) - want).magnitude / unit
    }

    /// The largest error over every `stride`-th float in [lo, hi] run through the vector loop.
    private func maxError(_ lo: Float, _ hi: Float, stride: Int, _ f: @escaping (V) -> V, _ reference: (Double) -> Double) -> (Double, Float) {
        // Floats in order as integers: the bit pattern for x >= 0, minus the magnitude's below.
        func order(_ x: Float) -> Int64 { x.sign == .minus ? -Int64(x.bitPattern & 0x7FFF_FFFF) : Int64(x.bitPattern) }
        func float(_ i: Int64) -> Float { i < 0 ? -Float(bitPattern: UInt32(-i)) : Float(bitPattern: UInt32(i)) }
        let xs = Swift.stride(from: order(lo), through: order(hi), by: stride).map(float)
        var out = [Float](repeating: 0, count: xs.count)
        xs.withUnsafeBufferPointer { px in
            out.withUnsafeMutableBufferPointer { po in VectorMath.apply(Map(f: f), px.baseAddress!, nil, nil, po.baseAddress!, xs.count) }
        }
        var worst = 0.0, at: Float = lo
        for i in xs.indices {
            let e = ulps(out[i], reference(Double(xs[i])))
            if !(e <= worst) { worst = e; at = xs[i] }
        }
        return (worst, at)
    }

    // Measured over every float of the range (one run each, in a scratch program with the same
    // code): exp 0.939 ulp, tanh 1.501, erf 1.099, sigmoid 2.402 (negative side; 1.498 above 0).
    // The tests sweep every 127th float (~17M points each) and assert just above those figures.

    func testExpWithinOneUlp() {
        let (e, at) = maxError(-104, 89, stride: 127, VectorMath.exp, { Glibc.exp($0) })
        print("VectorMath.exp: max \(e) ulp at \(at)")
        XCTAssertLessThanOrEqual(e, 1.0, "at \(at)")
    }

    /// expNormal (erf's and tanh's exp) is exp bit for bit over its range [-87, 88]: every 61st
    /// float there (2.1e7 values; the whole float range was checked once, erf and tanh before and
    /// after the change alike, with no bit differing).
    func testExpNormalIsExpInItsRange() {
        func order(_ x: Float) -> Int64 { x.sign == .minus ? -Int64(x.bitPattern & 0x7FFF_FFFF) : Int64(x.bitPattern) }
        func float(_ i: Int64) -> Float { i < 0 ? -Float(bitPattern: UInt32(-i)) : Float(bitPattern: UInt32(i)) }
        var differing = 0, first: Float = 0
        var i = order(-87)
        while i <= order(88) {
            var v = V()
            for lane in 0..<8 { v[lane] = Swift.min(float(i + Int64(lane) * 61), 88) }
            let a = VectorMath.exp(v), b = VectorMath.expNormal(v)
            for lane in 0..<8 where a[lane].bitPattern != b[lane].bitPattern {
                if differing == 0 { first = v[lane] }
                differing += 1
            }
            i += 8 * 61
        }
        XCTAssertEqual(differing, 0, "first at \(first)")
    }

    func testTanhWithinOnePointSixUlps() {
        let (e, at) = maxError(-10, 10, stride: 127, VectorMath.tanh, { Glibc.tanh($0) })
        print("VectorMath.tanh: max \(e) ulp at \(at)")
        XCTAssertLessThanOrEqual(e, 1.6, "at \(at)")
    }

    func testErfWithinOnePointTwoUlps() {
        let (e, at) = maxError(-4.5, 4.5, stride: 127, VectorMath.erf, { Glibc.erf($0) })
        print("VectorMath.erf: max \(e) ulp at \(at)")
        XCTAssertLessThanOrEqual(e, 1.2, "at \(at)")
    }

    func testSigmoidWithinTwoPointFiveUlps() {
        let (e, at) = maxError(-105, 20, stride: 127, VectorMath.sigmoid, { 1 / (1 + Glibc.exp(-$0)) })
        print("VectorMath.sigmoid: max \(e) ulp at \(at)")
        XCTAssertLessThanOrEqual(e, 2.5, "at \(at)")
    }

    func testSpecialValues() {
        let inf = Float.infinity
        // exp
        XCTAssertTrue(VectorMath.exp(Float.nan).isNaN)
        XCTAssertEqual(VectorMath.exp(inf), inf)
        XCTAssertEqual(VectorMath.exp(-inf), 0)
        XCTAssertEqual(VectorMath.exp(0), 1)
        XCTAssertEqual(VectorMath.exp(-0.0), 1)
        XCTAssertEqual(VectorMath.exp(88.73), inf, "overflow")
        XCTAssertEqual(VectorMath.exp(88.72), Float(Glibc.exp(Double(Float(88.72)))), "largest finite range")
        XCTAssertEqual(VectorMath.exp(-104), 0, "underflow")
        XCTAssertEqual(VectorMath.exp(-1000), 0)
        XCTAssertEqual(VectorMath.exp(-103.9), Float.leastNonzeroMagnitude, "smallest subnormal")
        XCTAssertEqual(VectorMath.exp(-90), Float(Glibc.exp(-90.0)), "subnormal")
        // tanh
        XCTAssertTrue(VectorMath.tanh(Float.nan).isNaN)
        XCTAssertEqual(VectorMath.tanh(inf), 1)
        XCTAssertEqual(VectorMath.tanh(-inf), -1)
        XCTAssertEqual(VectorMath.tanh(20), 1)
        XCTAssertEqual(VectorMath.tanh(0).sign, .plus)
        XCTAssertEqual(VectorMath.tanh(-0.0), 0)
        XCTAssertEqual(VectorMath.tanh(-0.0).sign, .minus)
        XCTAssertEqual(VectorMath.tanh(1e-30), 1e-30)
        XCTAssertEqual(VectorMath.tanh(-Float.leastNonzeroMagnitude), -Float.leastNonzeroMagnitude)
        // erf
        XCTAssertTrue(VectorMath.erf(Float.nan).isNaN)
        XCTAssertEqual(VectorMath.erf(inf), 1)
        XCTAssertEqual(VectorMath.erf(-inf), -1)
        XCTAssertEqual(VectorMath.erf(-0.0).sign, .minus)
        XCTAssertEqual(VectorMath.erf(0), 0)
        XCTAssertEqual(VectorMath.erf(1e-30), Float(1.1283791670955126e-30))
        // sigmoid
        XCTAssertTrue(VectorMath.sigmoid(Float.nan).isNaN)
        XCTAssertEqual(VectorMath.sigmoid(inf), 1)
        XCTAssertEqual(VectorMath.sigmoid(-inf), 0)
        XCTAssertEqual(VectorMath.sigmoid(0), 0.5)
        XCTAssertEqual(VectorMath.sigmoid(-0.0), 0.5)
        XCTAssertEqual(VectorMath.sigmoid(-95), Float(Glibc.exp(-95.0)), "tiny results keep their value")
        XCTAssertEqual(VectorMath.sigmoid(-200), 0)
        // NaN in one lane does not leak into the others.
        let mixed = V(.nan, 1, -inf, inf, -0.0, 0.5, -3, 100)
        for (name, f, g) in [("exp", VectorMath.exp as (V) -> V, VectorMath.exp as (Float) -> Float),
                             ("tanh", VectorMath.tanh, VectorMath.tanh), ("erf", VectorMath.erf, VectorMath.erf),
                             ("sigmoid", VectorMath.sigmoid, VectorMath.sigmoid)] {
            let r = f(mixed)
            XCTAssertTrue(r[0].isNaN, name)
            for i in 1..<8 { XCTAssertEqual(r[i].bitPattern, g(mixed[i]).bitPattern, "\(name) lane \(i)") }
        }
    }

    /// Every element gets lane 0's value, wherever it falls (full vectors or the padded tail),
    /// and writing over the input gives the same values.
    func testVectorTailScalarAndInPlaceAgree() {
        for n in [1, 5, 7, 8, 9, 15, 16, 17, 63, 100] {
            let xs = values(n, seed: UInt64(n), scale: 12)
            for (name, f, g) in [("exp", VectorMath.exp as (V) -> V, VectorMath.exp as (Float) -> Float),
                                 ("tanh", VectorMath.tanh, VectorMath.tanh), ("erf", VectorMath.erf, VectorMath.erf),
                                 ("sigmoid", VectorMath.sigmoid, VectorMath.sigmoid)] {
                var out = [Float](repeating: 0, count: n), inPlace = xs
                xs.withUnsafeBufferPointer { px in
                    out.withUnsafeMutableBufferPointer { po in VectorMath.apply(Map(f: f), px.baseAddress!, nil, nil, po.baseAddress!, n) }
                }
                inPlace.withUnsafeMutableBufferPointer { p in VectorMath.apply(Map(f: f), p.baseAddress!, nil, nil, p.baseAddress!, n) }
                for i in 0..<n {
                    XCTAssertEqual(out[i].bitPattern, g(xs[i]).bitPattern, "\(name) n \(n) element \(i)")
                    XCTAssertEqual(inPlace[i].bitPattern, out[i].bitPattern, "\(name) in place, n \(n) element \(i)")
                }
            }
        }
    }

    /// The three-input form: each lane reads its own element of every input (full vectors and
    /// the tail), a nil input reads as zeros, and the output may be any of the inputs.
    func testApplyReadsThreeInputsAndNilAsZeros() {
        for n in [1, 7, 8, 9, 16, 23] {
            let a = values(n, seed: 1, scale: 4), b = values(n, seed: 2, scale: 4), c = values(n, seed: 3, scale: 4)
            func run(_ useB: Bool, _ useC: Bool, inPlace: Bool) -> [Float] {
                var out = inPlace ? c : [Float](repeating: .nan, count: n)
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        c.withUnsafeBufferPointer { pc in
                            out.withUnsafeMutableBufferPointer { po in
                                let third = inPlace ? UnsafePointer(po.baseAddress!) : pc.baseAddress!
                                VectorMath.apply(MultiplyAdd(), pa.baseAddress!, useB ? pb.baseAddress! : nil,
                                                 useC ? third : nil, po.baseAddress!, n)
                            }
                        }
                    }
                }
                return out
            }
            for (useB, useC) in [(true, true), (true, false), (false, true), (false, false)] {
                let want = (0..<n).map { i in a[i] * (useB ? b[i] : 0) + (useC ? c[i] : 0) }
                XCTAssertEqual(run(useB, useC, inPlace: false), want, "n \(n) b \(useB) c \(useC)")
            }
            XCTAssertEqual(run(true, true, inPlace: true), (0..<n).map { a[$0] * b[$0] + c[$0] }, "n \(n) in place")
        }
    }

    // MARK: - Ops: float32 against the same node in float64 (libm)

    /// Pseudo-random floats in [-scale, scale), repeatable.
    private func values(_ n: Int, seed: UInt64, scale: Float = 4) -> [Float] {
        var state = seed
        return (0..<n).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Double(state >> 11) / Double(1 << 53)) * 2 * scale - scale
        }
    }

    private func run(_ op: String, domain: String, opset: Int, attributes: [String: Attribute], _ inputs: [Tensor]) throws -> Tensor {
        let names = inputs.indices.map { "in\($0)" }
        var graph = Graph()
        graph.nodes = [Node(opType: op, domain: domain, inputs: names, outputs: ["y"], attributes: attributes)]
        graph.inputs = names.map { ValueInfo(name: $0, type: nil) }
        graph.outputs = [ValueInfo(name: "y", type: nil)]
        var model = Model(graph: graph)
        model.opsetImports = ["": opset, "com.microsoft": 1]
        let result = try InferenceSession(model: model).run(Dictionary(uniqueKeysWithValues: zip(names, inputs.map { Value.tensor($0) })))
        return try XCTUnwrap(result["y"]?.tensor)
    }

    /// The largest |float32 − float64| / max(1, |float64|) of one node over `inputs`.
    private func assertMatchesDouble(_ op: String, domain: String = "", opset: Int = 20, attributes: [String: Attribute] = [:],
                                     _ inputs: [Tensor], tolerance: Double, file: StaticString = #filePath, line: UInt = #line) throws {
        let single = try run(op, domain: domain, opset: opset, attributes: attributes, inputs)
        let double = try run(op, domain: domain, opset: opset, attributes: attributes,
                             inputs.map { Tensor(shape: $0.shape, scalars: $0.scalars(as: Float.self).map(Double.init)) })
        let a = single.scalars(as: Float.self), b = double.scalars(as: Double.self)
        XCTAssertEqual(a.count, b.count, op, file: file, line: line)
        var worst = 0.0, at = 0
        for i in a.indices where !(a[i].isNaN && b[i].isNaN) {
            let err = (Double(a[i]) - b[i]).magnitude / max(1, b[i].magnitude)
            if !(err <= worst) { worst = err; at = i }
        }
        print("\(op)\(attributes.isEmpty ? "" : " \(attributes)"): max error \(worst) vs float64")
        XCTAssertLessThanOrEqual(worst, tolerance, "\(op) element \(at): \(a[at]) vs \(b[at])", file: file, line: line)
    }

    func testOpsMatchFloat64() throws {
        // 3·7·45 = 945 elements: not a multiple of 8, so every op's tail runs too.
        let shape = [3, 7, 45], n = 945
        let x = Tensor(shape: shape, scalars: values(n, seed: 1, scale: 6))
        let dy = Tensor(shape: shape, scalars: values(n, seed: 2))
        let bias = Tensor(shape: [45], scalars: values(45, seed: 3, scale: 1))
        let big = Tensor(shape: shape, scalars: values(n, seed: 4, scale: 80))
        let y = Tensor(shape: shape, scalars: values(n, seed: 5, scale: 1))
        try assertMatchesDouble("Tanh", opset: 13, [x], tolerance: 1e-7)
        try assertMatchesDouble("Sigmoid", opset: 13, [big], tolerance: 1e-7)
        try assertMatchesDouble("Exp", opset: 13, [x], tolerance: 1e-7)
        try assertMatchesDouble("Erf", opset: 13, [x], tolerance: 1e-7)
        try assertMatchesDouble("Gelu", opset: 20, [x], tolerance: 1e-7)
        try assertMatchesDouble("Gelu", opset: 20, attributes: ["approximate": .string("tanh")], [x], tolerance: 2e-7)
        try assertMatchesDouble("Swish", opset: 24, attributes: ["alpha": .float(1.5)], [x], tolerance: 2e-7)
        try assertMatchesDouble("LeakyRelu", opset: 16, [x], tolerance: 5e-9)  // alpha·x rounded once
        try assertMatchesDouble("Relu", opset: 14, [x], tolerance: 0)
        try assertMatchesDouble("Softmax", opset: 13, [big], tolerance: 2e-7)
        try assertMatchesDouble("Softmax", opset: 13, attributes: ["axis": .int(1)], [x], tolerance: 2e-7)  // strided rows
        try assertMatchesDouble("LogSoftmax", opset: 13, [x], tolerance: 1e-6)
        let ms = "com.microsoft"
        try assertMatchesDouble("Gelu", domain: ms, [x], tolerance: 1e-7)
        try assertMatchesDouble("BiasGelu", domain: ms, [x, bias], tolerance: 2e-7)
        try assertMatchesDouble("FastGelu", domain: ms, [x], tolerance: 2e-7)
        try assertMatchesDouble("FastGelu", domain: ms, [x, bias], tolerance: 2e-7)
        try assertMatchesDouble("QuickGelu", domain: ms, [x], tolerance: 2e-7)
        try assertMatchesDouble("GeluGrad", domain: ms, [dy, x], tolerance: 2e-7)
        // 1 − t² with t = tanh(...) near ±1 times a·x + 3aγx³ (~28 at |x| = 6): the float32
        // rounding of t alone gives a few 1e-6 where the derivative is ~1e-5.
        try assertMatchesDouble("FastGeluGrad", domain: ms, [dy, x], tolerance: 4e-6)
        try assertMatchesDouble("QuickGeluGrad", domain: ms, [dy, x], tolerance: 7e-7)
        try assertMatchesDouble("BiasGeluGrad_dX", domain: ms, [dy, x, bias], tolerance: 2e-7)
        try assertMatchesDouble("BiasFastGeluGrad_dX", domain: ms, [dy, x, bias], tolerance: 4e-6)
        try assertMatchesDouble("TanhGrad", domain: ms, [dy, y], tolerance: 2e-7)
        try assertMatchesDouble("SigmoidGrad", domain: ms, [dy, y], tolerance: 2e-7)
        try assertMatchesDouble("ReluGrad", domain: ms, [dy, x], tolerance: 0)
    }
}

/// A closure as a VectorStep on its first input (the tests' functions are plain closures).
private struct Map: VectorStep {
    let f: (SIMD8<Float>) -> SIMD8<Float>
    func callAsFunction(_ a: SIMD8<Float>, _: SIMD8<Float>, _: SIMD8<Float>) -> SIMD8<Float> { f(a) }
}

/// a·b + c, unfused (the reference multiplies and adds separately).
private struct MultiplyAdd: VectorStep {
    func callAsFunction(_ a: SIMD8<Float>, _ b: SIMD8<Float>, _ c: SIMD8<Float>) -> SIMD8<Float> { a * b + c }
}
