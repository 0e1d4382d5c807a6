#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import OnnxTrain
import XCTest

/// The float32 element loop of the activations (`activationLoop8`, eight lanes at a time and a
/// padded tail): every element equals the scalar function of its own inputs bit for bit, wherever
/// it sits (full vectors, the tail, in place), and GELU and its derivative stay within a few float
/// roundings of float64 x·Φ(x) and dY·(Φ(x) + x·φ(x)).
final class ActivationLoopTests: XCTestCase {
    private func values(_ n: Int, seed: UInt64, scale: Float) -> [Float] {
        var state = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return (0..<n).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    /// Runs the loop on count elements (bias and dY optional), out of place and in place on x.
    private func run<F: ActivationElementFunction>(_ f: F, _ x: [Float], _ bias: [Float]?, _ dy: [Float]?) -> ([Float], [Float]) {
        var out = [Float](repeating: .nan, count: x.count), inPlace = x
        func call(_ xp: UnsafePointer<Float>, _ op: UnsafeMutablePointer<Float>) {
            (bias ?? []).withUnsafeBufferPointer { pb in
                (dy ?? []).withUnsafeBufferPointer { pg in
                    activationLoop8(f, x: xp, bias: bias == nil ? nil : pb.baseAddress, dy: dy == nil ? nil : pg.baseAddress, out: op, count: x.count)
                }
            }
        }
        x.withUnsafeBufferPointer { px in out.withUnsafeMutableBufferPointer { po in call(px.baseAddress!, po.baseAddress!) } }
        inPlace.withUnsafeMutableBufferPointer { p in call(UnsafePointer(p.baseAddress!), p.baseAddress!) }
        return (out, inPlace)
    }

    private func phi(_ x: Double) -> Double { 0.5 * (1 + erf(x / 2.0.squareRoot())) }

    func testGeluLoopMatchesScalarAndFloat64() {
        // Lengths around the vector width, and one with several vectors and a tail of 3.
        for count in [1, 2, 7, 8, 9, 15, 16, 17, 67] {
            let x = values(count, seed: UInt64(count), scale: 6)
            let bias = values(count, seed: UInt64(count) + 100, scale: 1)
            let dy = values(count, seed: UInt64(count) + 200, scale: 2)
            for (b, g) in [(nil, nil), (bias, nil), (nil, dy), (bias, dy)] as [([Float]?, [Float]?)] {
                let (fwd, fwdInPlace) = run(GeluForward(), x, b, g)
                let (grad, gradInPlace) = run(GeluDerivative(), x, b, g)
                for i in 0..<count {
                    let h = x[i] + (b?[i] ?? 0), d = g?[i] ?? 1
                    // Bit for bit the scalar form (lane 0 of the same vector code).
                    let expectedForward = (g == nil ? 1 : d) * ActivationMath.gelu(h)
                    let expectedGrad = (g == nil ? 1 : d) * ActivationMath.geluGrad(h)
                    XCTAssertEqual(fwd[i].bitPattern, expectedForward.bitPattern, "gelu count \(count) element \(i)")
                    XCTAssertEqual(fwdInPlace[i].bitPattern, expectedForward.bitPattern, "gelu in place count \(count) element \(i)")
                    XCTAssertEqual(grad[i].bitPattern, expectedGrad.bitPattern, "gelu' count \(count) element \(i)")
                    XCTAssertEqual(gradInPlace[i].bitPattern, expectedGrad.bitPattern, "gelu' in place count \(count) element \(i)")
                    // Against float64, from the float inputs (h rounded as the loop rounds it): a few
                    // roundings relative, plus Φ's absolute rounding (1 + erf near 0) times h.
                    let hd = Double(h), dd = Double(d)
                    let refForward = dd * hd * phi(hd)
                    let refGrad = dd * (phi(hd) + hd * exp(-0.5 * hd * hd) / (2 * Double.pi).squareRoot())
                    let slack = 1.5e-7 * abs(dd) * max(1, abs(hd))
                    XCTAssertLessThanOrEqual(abs(Double(expectedForward) - refForward), 4e-7 * abs(refForward) + slack, "gelu(\(h))")
                    XCTAssertLessThanOrEqual(abs(Double(expectedGrad) - refGrad), 4e-7 * abs(refGrad) + slack, "gelu'(\(h))")
                }
            }
        }
    }
}
