import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// Hardswish and Hardsigmoid as FusedConv's epilogue (FusedConv.swift, `FusedConvActivation`), and
/// ConvFusion folding them (the ops and the forms PyTorch writes out, MobileNetV3's
/// x·relu6(x + 3)/6 and its squeeze-excite gate relu6(x + 3)/6):
///   * the epilogue's eight-lane form gives the bits of the standalone ops' functions on special
///     values (NaN, infinities, zeros, the kinks, subnormals);
///   * FusedConv with each activation, over the convolution kernels' shapes (depthwise, blocked,
///     per-image, tiled, Winograd), float32 and float64, with and without Z: bit for bit the
///     activation of the standalone Conv (+ Z), and within float rounding of float64;
///   * the fused graph gives the bits of the graph run as written (no BatchNormalization folded,
///     so the arithmetic is the same), and each form becomes one FusedConv.
final class ConvHardActivationFusionTests: XCTestCase {
    /// The activations, with the float64 function each computes (the reference; alpha and beta as
    /// the float32 activation_params carry them).
    static let activations: [(name: String, params: [Float], reference: @Sendable (Double) -> Double)] = [
        ("HardSwish", [], { x in x * max(0, min(1, x / 6 + 0.5)) }),
        ("HardSigmoidMul", [0.2, 0.4], { x in x * max(0, min(1, Double(Float(0.2)) * x + Double(Float(0.4)))) }),
        ("HardSigmoidClip", [3, 0, 6, 6], { x in min(max(x + 3, 0), 6) / 6 }),
        ("HardSwishClip", [3, 0, 6, 6], { x in x * min(max(x + 3, 0), 6) / 6 }),
        ("HardSwishClipRatio", [3, 0, 6, 6], { x in x * (min(max(x + 3, 0), 6) / 6) }),
        ("HardSwishClip", [1.5, -1, 2.5, 5], { x in x * min(max(x + 1.5, -1), 2.5) / 5 }),
        ("HardSigmoid", [0.3, 0.6], { x in max(0, min(1, Double(Float(0.3)) * x + Double(Float(0.6)))) }),
        ("Clip", [-0.5, 1.25], { x in min(max(x, -0.5), 1.25) }),
    ]

    /// The standalone ops' functions, in float32, as the unfused graph computes them.
    static func standalone(_ name: String, _ p: [Float], _ v: Float) -> Float {
        switch name {
        case "HardSwish": return HardSwishFunction()(v)
        case "HardSigmoidMul": return v * HardSigmoidFunction(alpha: Double(p[0]), beta: Double(p[1]))(v)
        case "HardSigmoid": return HardSigmoidFunction(alpha: Double(p[0]), beta: Double(p[1]))(v)
        case "Clip": return clipValue(v, p[0], p[1])
        case "HardSigmoidClip": return clipValue(v + p[0], p[1], p[2]) / p[3]
        case "HardSwishClip": return (v * clipValue(v + p[0], p[1], p[2])) / p[3]
        default: return v * (clipValue(v + p[0], p[1], p[2]) / p[3])
        }
    }

    func testEightLanesGiveTheStandaloneBitsOnSpecialValues() throws {
        var values: [Float] = [.nan, -.nan, .infinity, -.infinity, 0, -0, 3, -3, 6, -6, 2.5, -2.5, 0.5, -0.5, 1, -1,
                               .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .leastNormalMagnitude, .greatestFiniteMagnitude,
                               -.greatestFiniteMagnitude, 1e-30, -1e-30, 0x1p-99, 3.0000002, 2.9999998, -2.9999998, -3.0000002]
        var g = RandomGenerator(seed: 77)
        for _ in 0..<1000 { values.append(Float((g.nextDouble() * 2 - 1) * 8)) }
        for _ in 0..<200 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: Int(g.nextDouble() * 4294967296)))) }
        for (name, params, _) in Self.activations {
            let activation = try FusedConvActivation(name: name, parameters: params)
            let z = values.map { $0 * 0.25 }
            for withZ in [false, true] {
                var y = values
                z.withUnsafeBufferPointer { pz in
                    let epilogue = ConvEpilogue<Float>(z: withZ ? pz.baseAddress : nil, activation: activation)
                    y.withUnsafeMutableBufferPointer { py in
                        // Uneven runs: the eight-lane loop, the scalar tail, and a run's offset.
                        epilogue.apply(py.baseAddress!, 0, 13)
                        epilogue.apply(py.baseAddress!, 13, values.count - 13)
                    }
                }
                for (i, v) in values.enumerated() {
                    let expected = Self.standalone(name, params, withZ ? v + z[i] : v)
                    guard y[i].bitPattern != expected.bitPattern && !(y[i].isNaN && expected.isNaN) else { continue }
                    XCTFail("\(name) Z \(withZ): \(v) gives \(y[i]), the standalone ops \(expected)")
                    break
                }
            }
        }
    }

    static let cases: [ConvKernelTests.Case] = ConvKernelTests.cases + [
        .init(label: "winograd 3x3 32 channels", x: [2, 32, 12, 12], w: [32, 32, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], group: 1),
    ]

    func testFusedConvEpilogueMatchesTheStandaloneOpsAndFloat64() throws {
        var worst = 0.0
        for (i, c) in Self.cases.enumerated() {
            let x64 = randomDoubles(c.x, seed: UInt64(2500 + i), low: -3, high: 3), w64 = randomDoubles(c.w, seed: UInt64(2600 + i))
            let b64 = randomDoubles([c.w[0]], seed: UInt64(2700 + i))
            let y64 = try runTrainingOp("Conv", "", [x64, w64, b64], attributes: c.attributes, opset: 11)[0]
            let z64 = randomDoubles(y64.shape, seed: UInt64(2800 + i))
            let (x, w, b, z) = (float32(x64), float32(w64), float32(b64), float32(z64))
            let y = try runTrainingOp("Conv", "", [x, w, b], attributes: c.attributes, opset: 11)[0]
            let scale = y64.scalars(as: Double.self).reduce(1) { max($0, abs($1)) }
            for (name, params, reference) in Self.activations {
                let attributes = c.attributes.merging(["activation": .string(name), "activation_params": .floats(params)]) { $1 }
                for withZ in [false, true] {
                    let label = "\(c.label) \(name) \(params) Z \(withZ)"
                    let fused = try runTrainingOp("FusedConv", "com.microsoft", [x, w, b] + (withZ ? [z] : []), attributes: attributes)[0]
                    XCTAssertEqual(fused.shape, y.shape, label)
                    let sums = withZ ? zip(y.scalars(as: Float.self), z.scalars(as: Float.self)).map { $0 + $1 } : y.scalars(as: Float.self)
                    let expected = sums.map { Self.standalone(name, params, $0) }
                    XCTAssertEqual(fused.scalars(as: Float.self).map(\.bitPattern), expected.map(\.bitPattern), "\(label): not the standalone ops' bits")
                    // float64: the same fused kernel against the float64 function of the float64 convolution.
                    let fused64 = try runTrainingOp("FusedConv", "com.microsoft", [x64, w64, b64] + (withZ ? [z64] : []), attributes: attributes)[0]
                    let exact = zip(y64.scalars(as: Double.self), withZ ? z64.scalars(as: Double.self) : Array(repeating: 0, count: y64.count))
                        .map { reference($0 + $1) }
                    for (k, e) in exact.enumerated() {
                        let d64 = abs(fused64.scalars(as: Double.self)[k] - e) / scale, d32 = abs(Double(fused.scalars(as: Float.self)[k]) - e) / scale
                        worst = max(worst, d32)
                        if d64 > 1e-13 || d32 > 2e-6 {
                            XCTFail("\(label)[\(k)]: float64 \(fused64.scalars(as: Double.self)[k]), float32 \(fused.scalars(as: Float.self)[k]), reference \(e)")
                            break
                        }
                    }
                }
            }
        }
        print("ConvHardActivationFusionTests: float32 FusedConv against float64, largest error / scale \(worst)")
    }

    // MARK: - The pass

    /// x [2, C, 9, 9] -> Conv (bias; 3×3 pads 1, or depthwise) -> the activation's nodes -> y.
    func model(_ form: String, depthwise: Bool = false, channels: Int = 4) -> Model {
        var g = Graph()
        let c = channels
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.symbol("N"), .value(c), .value(9), .value(9)]))]
        g.setInitializer("W", GraphOptimizationTests.random(depthwise ? [c, 1, 3, 3] : [c, c, 3, 3], seed: 21, scale: 1.5))
        g.setInitializer("B", GraphOptimizationTests.random([c], seed: 22))
        for (name, v) in [("three", 3), ("zero", 0), ("six", 6)] { g.setInitializer(name, Tensor(scalar: Float(v))) }
        g.nodes = [Node(opType: "Conv", name: "conv", inputs: ["x", "W", "B"], outputs: ["c"],
                        attributes: ["pads": .ints([1, 1, 1, 1]), "kernel_shape": .ints([3, 3]), "group": .int(depthwise ? c : 1)])]
        func node(_ op: String, _ inputs: [String], _ out: String, _ attributes: [String: Attribute] = [:]) {
            g.nodes.append(Node(opType: op, name: out, inputs: inputs, outputs: [out], attributes: attributes))
        }
        switch form {
        case "HardSwish": node("HardSwish", ["c"], "y")
        case "HardSigmoidMul":
            node("HardSigmoid", ["c"], "h", ["alpha": .float(1.0 / 6), "beta": .float(0.5)])
            node("Mul", ["h", "c"], "y")
        case "HardSigmoidClip":
            node("Add", ["c", "three"], "a"); node("Clip", ["a", "zero", "six"], "k"); node("Div", ["k", "six"], "y")
        case "HardSwishClip":
            node("Add", ["three", "c"], "a"); node("Clip", ["a", "zero", "six"], "k"); node("Mul", ["c", "k"], "m"); node("Div", ["m", "six"], "y")
        default:
            node("Add", ["c", "three"], "a"); node("Clip", ["a", "zero", "six"], "k"); node("Div", ["k", "six"], "d"); node("Mul", ["c", "d"], "y")
        }
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    func testHardActivationsFuseIntoOneFusedConvWithTheUnfusedBits() throws {
        for form in ["HardSwish", "HardSigmoidMul", "HardSigmoidClip", "HardSwishClip", "HardSwishClipRatio"] {
            for depthwise in [false, true] {
                let label = "\(form) depthwise \(depthwise)"
                let model = model(form, depthwise: depthwise)
                let m = try optimized(model)
                XCTAssertEqual(opTypes(m), ["FusedConv"], label)
                XCTAssertEqual(m.graph.nodes.first?.string("activation"), form, label)
                XCTAssertEqual(m.graph.nodes.first?.inputs.count, 3, "\(label): no Z (the Add of 3 is the activation's)")
                let feeds = ["x": GraphOptimizationTests.random([2, 4, 9, 9], seed: 23, scale: 2)]
                var plainOptions = SessionOptions()
                plainOptions.optimize = false
                let plain = try InferenceSession(model: model, options: plainOptions).run(tensors: feeds)["y"]
                let fused = try InferenceSession(model: model).run(tensors: feeds)["y"]
                let p = try XCTUnwrap(plain, label), f = try XCTUnwrap(fused, label)
                XCTAssertEqual(f.shape, p.shape, label)
                XCTAssertEqual(f.scalars(as: Float.self).map(\.bitPattern), p.scalars(as: Float.self).map(\.bitPattern), "\(label): not the unfused graph's bits")
            }
        }
    }

    /// The written-out forms stay as they are where a value between their nodes is read elsewhere
    /// or the constants are not one element; a Conv and BatchNormalization before them still fold.
    func testWrittenOutFormsNeedTheirValuesAloneAndScalarConstants() throws {
        var shared = model("HardSwishClip")
        shared.graph.outputs.append(ValueInfo(name: "k", type: nil))
        XCTAssertFalse(try optimized(shared).graph.nodes.contains { $0.opType == "FusedConv" }, "the Clip's value is fetched")
        var vector = model("HardSigmoidClip")
        vector.graph.setInitializer("three", Tensor(shape: [1, 4, 1, 1], scalars: [Float](repeating: 3, count: 4)))
        let m = try optimized(vector)
        XCTAssertNotEqual(m.graph.nodes.first { $0.opType == "FusedConv" }?.string("activation"), "HardSigmoidClip", "a per-channel shift")
        XCTAssertLessThanOrEqual(try largestDifference(vector, ["x": GraphOptimizationTests.random([1, 4, 9, 9], seed: 24)]), 1e-6, "per-channel shift")
    }

    /// Conv, BatchNormalization and the written-out Hardswish (MobileNetV3's block): one FusedConv
    /// within float rounding of the graph as written (the fold rounds the weights once).
    func testConvBatchNormHardSwishBecomesOneFusedConv() throws {
        var model = model("HardSwishClip")
        var g = model.graph
        g.nodes[0].outputs = ["c0"]
        for (name, seed) in [("scale", 31), ("beta", 32), ("mean", 33)] { g.setInitializer(name, GraphOptimizationTests.random([4], seed: UInt64(seed))) }
        g.setInitializer("var", Tensor(shape: [4], scalars: [Float(0.5), 1.5, 0.01, 2]))
        g.nodes.insert(Node(opType: "BatchNormalization", name: "bn", inputs: ["c0", "scale", "beta", "mean", "var"], outputs: ["c"]), at: 1)
        model.graph = g
        let m = try optimized(model)
        XCTAssertEqual(opTypes(m), ["FusedConv"])
        XCTAssertEqual(m.graph.nodes.first?.string("activation"), "HardSwishClip")
        let worst = try largestDifference(model, ["x": GraphOptimizationTests.random([3, 4, 9, 9], seed: 25, scale: 2)])
        print("conv+bn+hardswish: largest relative difference \(worst)")
        XCTAssertLessThanOrEqual(worst, 1e-5, "conv+bn+hardswish")
    }

    /// The largest difference of y, optimised against as written, relative to max(1, |as written|).
    private func largestDifference(_ model: Model, _ feeds: [String: Tensor]) throws -> Double {
        var plainOptions = SessionOptions()
        plainOptions.optimize = false
        let plain = try XCTUnwrap(try InferenceSession(model: model, options: plainOptions).run(tensors: feeds)["y"])
        let fast = try XCTUnwrap(try InferenceSession(model: model).run(tensors: feeds)["y"])
        XCTAssertEqual(fast.shape, plain.shape)
        return zip(try fast.doubles(), try plain.doubles()).reduce(0) { max($0, abs($1.0 - $1.1) / max(1, abs($1.1))) }
    }

    private func float32(_ t: Tensor) -> Tensor { Tensor(shape: t.shape, scalars: t.scalars(as: Double.self).map { Float($0) }) }
}
