import Foundation
import OnnxTrainTestSupport
import Synchronization
import XCTest
@testable import OnnxTrain

/// AddLayerNormFusion: a residual Add and the LayerNormalization of its sum as one internal
/// AddLayerNormalization, bit for bit the two ops' outputs.
extension GraphOptimizationTests {
    /// x, r [N, D, S] (N and S symbolic) -> a, b = their transposes [N, S, D] (values no
    /// elementwise fusion takes, which die at the Add) -> Add -> LayerNormalization (scale, bias)
    /// -> y; with `preLN` the sum also goes on (Add with a, a second graph output `h`), as in
    /// GPT-2's and ViT's blocks.
    func addLayerNormModel(d: Int, preLN: Bool, bias: Bool = true, meanOutput: Bool = false) -> Model {
        var g = Graph()
        let shape: [Dim] = [.symbol("N"), .value(d), .symbol("S")]
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: shape)), ValueInfo(name: "r", type: .tensor(.float32, shape: shape))]
        g.setInitializer("gamma", Self.random([d], seed: 120, scale: 2))
        if bias { g.setInitializer("beta", Self.random([d], seed: 121)) }
        g.nodes = [
            Node(opType: "Transpose", inputs: ["x"], outputs: ["a"], attributes: ["perm": .ints([0, 2, 1])]),
            Node(opType: "Transpose", inputs: ["r"], outputs: ["b"], attributes: ["perm": .ints([0, 2, 1])]),
            Node(opType: "Add", name: "residual", inputs: ["a", "b"], outputs: ["s"]),
            Node(opType: "LayerNormalization", name: "ln", inputs: ["s", "gamma"] + (bias ? ["beta"] : []),
                 outputs: ["y"] + (meanOutput ? ["mean"] : []), attributes: ["axis": .int(-1), "epsilon": .float(1e-5)]),
        ]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        if meanOutput { g.outputs.append(ValueInfo(name: "mean", type: nil)) }
        if preLN {
            g.nodes.append(Node(opType: "Add", inputs: ["s", "a"], outputs: ["h"]))
            g.outputs.append(ValueInfo(name: "h", type: nil))
        }
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    /// LayerNormalization(xᵀ + rᵀ) over the last axis in float64 ([N, S, D] rows), from the float32
    /// sum (the Add rounds once in float32 in both forms).
    func addLayerNormReference(_ x: Tensor, _ r: Tensor, gamma: Tensor, beta: Tensor?) throws -> [Double] {
        let xs = x.scalars(as: Float.self), rs = r.scalars(as: Float.self), g = try gamma.doubles(), b = try beta?.doubles()
        let d = g.count, steps = x.shape[2]
        var out = [Double](repeating: 0, count: xs.count)
        for row in 0..<(xs.count / d) {
            let n = row / steps, t = row % steps
            let s = (0..<d).map { j -> Double in
                let k = (n * d + j) * steps + t
                return Double(xs[k] + rs[k])
            }
            let mean = s.reduce(0, +) / Double(d)
            let variance = s.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(d)
            let inv = 1 / (variance + Double(Float(1e-5))).squareRoot()
            for j in 0..<d { out[row * d + j] = (s[j] - mean) * inv * g[j] + (b?[j] ?? 0) }
        }
        return out
    }

    /// Post-LN (BERT): the sum has no other reader, so the fused node has one output. Against the
    /// float64 definition, and bit for bit against the session with the pass off.
    func testPostLNResidualAddAndLayerNormBecomeOneNode() throws {
        for (d, bias) in [(64, true), (37, false)] {
            let model = addLayerNormModel(d: d, preLN: false, bias: bias)
            let m = try optimized(model)
            XCTAssertEqual(opTypes(m), ["Transpose", "Transpose", "AddLayerNormalization"], "d \(d)")
            let fused = try XCTUnwrap(m.graph.nodes.first { $0.opType == "AddLayerNormalization" })
            XCTAssertEqual(fused.domain, internalDomain)
            XCTAssertEqual(fused.outputs, ["y"])
            let x = Self.random([2, d, 5], seed: 122, scale: 3), r = Self.random([2, d, 5], seed: 123, scale: 2)
            let session = try InferenceSession(model: model)
            let y = try XCTUnwrap(session.run(tensors: ["x": x, "r": r])["y"])
            let expected = try addLayerNormReference(x, r, gamma: model.graph.initializers["gamma"]!, beta: model.graph.initializers["beta"])
            let worst = try largestRelativeDifference(y, expected)
            print("AddLayerNormalization (d \(d)) vs float64 definition: largest relative difference \(worst)")
            XCTAssertLessThanOrEqual(worst, 2e-6)
            let unfused = try withPassesDisabled("add-layernorm") { try InferenceSession(model: model).run(tensors: ["x": x, "r": r]) }
            XCTAssertEqual(y.scalars(as: Float.self), try XCTUnwrap(unfused["y"]).scalars(as: Float.self), "bit for bit the Add and LayerNormalization (d \(d))")
            try assertSameOutputs(model, ["x": x, "r": r], tolerance: 1e-6, "post-LN d \(d)")
        }
    }

    /// Pre-LN (GPT-2, ViT): the sum is also read by the next residual Add and is a graph output,
    /// so it stays, as the fused node's second output; every output bit for bit the unfused ones.
    func testPreLNKeepsTheSumAsSecondOutput() throws {
        let model = addLayerNormModel(d: 48, preLN: true)
        let m = try optimized(model)
        let fused = try XCTUnwrap(m.graph.nodes.first { $0.opType == "AddLayerNormalization" })
        XCTAssertEqual(fused.outputs, ["y", "s"])
        XCTAssertFalse(m.graph.nodes.contains { $0.opType == "LayerNormalization" })
        let x = Self.random([3, 48, 7], seed: 124, scale: 3), r = Self.random([3, 48, 7], seed: 125)
        let fast = try InferenceSession(model: model).run(tensors: ["x": x, "r": r])
        let plain = try withPassesDisabled("add-layernorm") { try InferenceSession(model: model).run(tensors: ["x": x, "r": r]) }
        for name in ["y", "h"] {
            XCTAssertEqual(try XCTUnwrap(fast[name]).scalars(as: Float.self), try XCTUnwrap(plain[name]).scalars(as: Float.self), name)
        }
        let expected = try addLayerNormReference(x, r, gamma: model.graph.initializers["gamma"]!, beta: model.graph.initializers["beta"])
        XCTAssertLessThanOrEqual(try largestRelativeDifference(try XCTUnwrap(fast["y"]), expected), 2e-6)
    }

    /// What must stay: a LayerNormalization whose Mean is read (a training graph's gradient reads
    /// it), an Add that broadcasts (a bias), and a Scale some node computes.
    func testAddLayerNormStaysWhereItMust() throws {
        let withMean = addLayerNormModel(d: 16, preLN: false, meanOutput: true)
        XCTAssertTrue(opTypes(try optimized(withMean)).contains("LayerNormalization"), "Mean is read")

        var broadcast = addLayerNormModel(d: 16, preLN: false)
        broadcast.graph.nodes[2].inputs = ["a", "beta"]
        XCTAssertTrue(opTypes(try optimized(broadcast)).contains("LayerNormalization"), "the Add broadcasts")

        var computedScale = addLayerNormModel(d: 16, preLN: false)
        computedScale.graph.nodes.insert(Node(opType: "Abs", inputs: ["gamma"], outputs: ["g2"]), at: 0)
        computedScale.graph.nodes[4].inputs[1] = "g2"
        // Constant folding turns Abs(gamma) into an initializer; with folding off the Scale is computed.
        XCTAssertTrue(try withPassesDisabled("constant-folding") { opTypes(try optimized(computedScale)) }.contains("LayerNormalization"),
                      "the Scale is computed")
    }

    /// One session run from two threads at once, each cycling through three shapes (N and S):
    /// every output bit for bit the unfused session's.
    func testAddLayerNormTwoThreadsAndShapeChanges() throws {
        let model = addLayerNormModel(d: 40, preLN: true)
        let session = try InferenceSession(model: model)
        let shapes = [[1, 40, 3], [4, 40, 9], [2, 40, 1]]
        func feeds(_ k: Int) -> [String: Tensor] {
            ["x": Self.random(shapes[k], seed: 130 + UInt64(k), scale: 2), "r": Self.random(shapes[k], seed: 140 + UInt64(k))]
        }
        let expected = try withPassesDisabled("add-layernorm") { () -> [[String: [Float]]] in
            let plain = try InferenceSession(model: model)
            return try shapes.indices.map { k in try plain.run(tensors: feeds(k)).mapValues { $0.scalars(as: Float.self) } }
        }
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { thread in
            for run in 0..<30 {
                let k = (thread + run) % shapes.count
                do {
                    let out = try session.run(tensors: ["x": Self.random(shapes[k], seed: 130 + UInt64(k), scale: 2),
                                                        "r": Self.random(shapes[k], seed: 140 + UInt64(k))])
                    guard out["y"]?.scalars(as: Float.self) == expected[k]["y"], out["h"]?.scalars(as: Float.self) == expected[k]["h"] else {
                        failures.withLock { $0.append("thread \(thread) run \(run) shape \(shapes[k])") }
                        continue
                    }
                } catch {
                    failures.withLock { $0.append("thread \(thread) run \(run): \(error)") }
                }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
    }

    /// The kernel itself on operands whose shapes differ (a model written with the internal node;
    /// the pass never fuses such an Add): it runs the broadcasting Add, then the norm.
    func testAddLayerNormKernelBroadcastsWhenShapesDiffer() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "a", type: .tensor(.float32, shape: [.value(2), .value(3), .value(8)])),
                    ValueInfo(name: "b", type: .tensor(.float32, shape: [.value(8)]))]
        g.setInitializer("gamma", Self.random([8], seed: 150))
        g.nodes = [Node(opType: "AddLayerNormalization", domain: internalDomain, inputs: ["a", "b", "gamma"], outputs: ["y", "s"])]
        g.outputs = [ValueInfo(name: "y", type: nil), ValueInfo(name: "s", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17, internalDomain: 1]
        var reference = m
        reference.graph.nodes = [Node(opType: "Add", inputs: ["a", "b"], outputs: ["s"]),
                                 Node(opType: "LayerNormalization", inputs: ["s", "gamma"], outputs: ["y"])]
        let feeds = ["a": Self.random([2, 3, 8], seed: 151), "b": Self.random([8], seed: 152)]
        let got = try InferenceSession(model: m).run(tensors: feeds), want = try InferenceSession(model: reference).run(tensors: feeds)
        for name in ["y", "s"] { XCTAssertEqual(try XCTUnwrap(got[name]).scalars(as: Float.self), try XCTUnwrap(want[name]).scalars(as: Float.self), name) }
    }
}
