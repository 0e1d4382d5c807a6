import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// LRN (Normalization.swift) against the operator's definition written as plain float64 loops
/// with `pow`: beta 0.75 (the default, which the kernel computes as sqrt(b)·sqrt(sqrt(b))) and
/// other betas, odd and even window sizes, windows at the channel edges, images of rank 3 and 4.
final class LRNTests: XCTestCase {
    private func reference(_ x: [Double], shape: [Int], size: Int, alpha: Double, beta: Double, bias: Double) -> [Double] {
        let n = shape[0], c = shape[1], inner = shape.dropFirst(2).reduce(1, *)
        let before = (size - 1) / 2, after = size - 1 - before
        var y = [Double](repeating: 0, count: x.count)
        for b in 0..<n {
            for ch in 0..<c {
                for i in 0..<inner {
                    var sum = 0.0
                    for j in max(0, ch - before)...min(c - 1, ch + after) { sum += x[(b * c + j) * inner + i] * x[(b * c + j) * inner + i] }
                    y[(b * c + ch) * inner + i] = x[(b * c + ch) * inner + i] / pow(bias + alpha / Double(size) * sum, beta)
                }
            }
        }
        return y
    }

    func testMatchesTheDefinition() throws {
        let cases: [(shape: [Int], size: Int, alpha: Double, beta: Double, bias: Double)] = [
            ([2, 7, 5, 6], 5, 1e-4, 0.75, 1),      // AlexNet's attributes
            ([1, 6, 4, 3], 3, 0.5, 0.75, 2),       // a large alpha: the sum matters
            ([2, 5, 9], 4, 0.3, 0.5, 1.5),         // even size, rank 3
            ([1, 3, 2, 2], 7, 0.2, 1.3, 0.7),      // window wider than the channels
            ([1, 4, 3, 3], 3, 0.9, 0.75, 1e-3),    // b near zero where x is: float32 roots still refine exactly
        ]
        var worst64 = 0.0, worst32 = 0.0
        for (k, c) in cases.enumerated() {
            let x = randomDoubles(c.shape, seed: UInt64(11 + k))
            let attributes: [String: Attribute] = ["size": .int(c.size), "alpha": .float(Float(c.alpha)),
                                                   "beta": .float(Float(c.beta)), "bias": .float(Float(c.bias))]
            // The attributes are float32: the reference uses the same rounded values.
            let (alpha, beta, bias) = (Double(Float(c.alpha)), Double(Float(c.beta)), Double(Float(c.bias)))
            let expected = reference(x.scalars(as: Double.self), shape: c.shape, size: c.size, alpha: alpha, beta: beta, bias: bias)
            let y64 = try runNode("LRN", opset: 13, [x], attributes: attributes)[0]
            XCTAssertEqual(y64.shape, c.shape)
            for (a, b) in zip(y64.scalars(as: Double.self), expected) { worst64 = max(worst64, abs(a - b) / max(abs(b), 1)) }
            let x32 = Tensor(shape: c.shape, scalars: x.scalars(as: Double.self).map { Float($0) })
            let expected32 = reference(x32.scalars(as: Float.self).map { Double($0) }, shape: c.shape, size: c.size, alpha: alpha, beta: beta, bias: bias)
            let y32 = try runNode("LRN", opset: 13, [x32], attributes: attributes)[0]
            for (a, b) in zip(y32.scalars(as: Float.self), expected32) { worst32 = max(worst32, abs(Double(a) - b) / max(abs(b), 1)) }
        }
        // b beyond float32's range (x ~ 1e17, b ~ 1e34): the float32 kernel takes the Double roots.
        let huge = Tensor(shape: [1, 3, 2, 2], scalars: (0..<12).map { Float($0 + 1) * 1e17 })
        let hugeExpected = reference(huge.scalars(as: Float.self).map { Double($0) }, shape: [1, 3, 2, 2], size: 3, alpha: Double(Float(0.5)), beta: 0.75, bias: 1)
        let hugeY = try runNode("LRN", opset: 13, [huge], attributes: ["size": .int(3), "alpha": .float(0.5), "beta": .float(0.75), "bias": .float(1)])[0]
        for (a, b) in zip(hugeY.scalars(as: Float.self), hugeExpected) { worst32 = max(worst32, abs(Double(a) - b) / max(abs(b), 1e-30)) }
        // A NaN poisons the outputs whose window holds it, and only those, as in the definition.
        var withNaN = (0..<45).map { Float($0 % 7) * 0.25 - 0.5 }
        withNaN[9 * 2 + 4] = .nan  // channel 2, position 4
        let nanExpected = reference(withNaN.map { Double($0) }, shape: [1, 5, 3, 3], size: 3, alpha: Double(Float(0.5)), beta: 0.75, bias: 1)
        let nanY = try runNode("LRN", opset: 13, [Tensor(shape: [1, 5, 3, 3], scalars: withNaN)],
                               attributes: ["size": .int(3), "alpha": .float(0.5), "beta": .float(0.75), "bias": .float(1)])[0]
        for (k, (a, b)) in zip(nanY.scalars(as: Float.self), nanExpected).enumerated() {
            XCTAssertEqual(a.isNaN, b.isNaN, "element \(k)")
            if !b.isNaN { worst32 = max(worst32, abs(Double(a) - b) / max(abs(b), 1)) }
        }
        XCTAssertEqual(nanExpected.filter(\.isNaN).count, 3)  // channels 1, 2 and 3 at position 4
        print("LRN: worst relative difference float64 \(worst64), float32 \(worst32)")
        XCTAssertLessThan(worst64, 1e-15)
        XCTAssertLessThan(worst32, 1e-7)
    }
}
