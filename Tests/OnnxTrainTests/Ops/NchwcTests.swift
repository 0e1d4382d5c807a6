@testable import OnnxTrain
import Foundation
import Synchronization
import XCTest

/// The `nchwc` pass (NchwcLayout.swift) and its blocked ops (Nchwc.swift): a small CNN with a
/// 3-channel stem (read nchw), channel counts not a multiple of 16, odd sizes, pads, a residual Z,
/// MaxPool / AveragePool / GlobalAveragePool, a blocked value also read plain (a graph output and
/// a plain Relu), run with the pass on: every output within float32 rounding of the same model in
/// float64 (the plain kernels' path), for batch 1 and 3 in one session (shape changes between
/// runs), from two threads at once, and equal within rounding to the pass switched off.
final class NchwcTests: XCTestCase {
    func values(_ count: Int, seed: UInt64, scale: Double = 1) -> [Double] {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return scale * Double(Int((state >> 33) % 2001) - 1000) / 1000
        }
    }

    /// x [N, 3, 23, 19] -> stem 5x5/2 (3 -> 24) + BN-free Relu -> MaxPool 3x3/2 pad 1 -> a: [N, 24, 6, 5]
    /// -> Conv 3x3 pad 1 (24 -> 20) = r; Conv 1x1 (24 -> 20) + r + Relu (FusedConv with Z) = s
    /// -> AveragePool 3x3/1 pad 1 (exclude pad) -> Conv 1x1 (20 -> 40) + Clip -> GlobalAveragePool -> Flatten -> y
    /// Outputs: y, a (a blocked value read as a graph output), p = Relu(s) read plain.
    func model(_ dtype: DType) -> Model {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(dtype, shape: [.symbol("N"), .value(3), .value(23), .value(19)]))]
        func constant(_ name: String, _ shape: [Int], seed: UInt64, scale: Double) {
            let v = values(shape.reduce(1, *), seed: seed, scale: scale)
            g.setInitializer(name, dtype == .float64 ? Tensor(shape: shape, scalars: v.map { Float($0) }.map { Double($0) })
                                                     : Tensor(shape: shape, scalars: v.map { Float($0) }))
        }
        constant("w1", [24, 3, 5, 5], seed: 1, scale: 0.4)
        constant("b1", [24], seed: 2, scale: 0.2)
        constant("w2", [20, 24, 3, 3], seed: 3, scale: 0.15)
        constant("b2", [20], seed: 4, scale: 0.1)
        constant("w3", [20, 24, 1, 1], seed: 5, scale: 0.3)
        constant("w4", [40, 20, 1, 1], seed: 6, scale: 0.3)
        constant("b4", [40], seed: 7, scale: 0.1)
        g.nodes = [
            Node(opType: "Conv", inputs: ["x", "w1", "b1"], outputs: ["c1"], attributes: ["strides": .ints([2, 2]), "pads": .ints([2, 2, 2, 2])]),
            Node(opType: "Relu", inputs: ["c1"], outputs: ["r1"]),
            Node(opType: "MaxPool", inputs: ["r1"], outputs: ["a"],
                 attributes: ["kernel_shape": .ints([3, 3]), "strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1])]),
            Node(opType: "Conv", inputs: ["a", "w2", "b2"], outputs: ["r"], attributes: ["pads": .ints([1, 1, 1, 1])]),
            Node(opType: "Conv", inputs: ["a", "w3"], outputs: ["c3"]),
            Node(opType: "Add", inputs: ["c3", "r"], outputs: ["s0"]),
            Node(opType: "Relu", inputs: ["s0"], outputs: ["s"]),
            Node(opType: "Relu", inputs: ["s"], outputs: ["p"]),
            Node(opType: "AveragePool", inputs: ["s"], outputs: ["v"],
                 attributes: ["kernel_shape": .ints([3, 3]), "pads": .ints([1, 1, 1, 1])]),
            Node(opType: "Conv", inputs: ["v", "w4", "b4"], outputs: ["c4"]),
            Node(opType: "Clip", inputs: ["c4", "lo", "hi"], outputs: ["k"]),
            Node(opType: "GlobalAveragePool", inputs: ["k"], outputs: ["gp"]),
            Node(opType: "Flatten", inputs: ["gp"], outputs: ["y"]),
        ]
        g.setInitializer("lo", dtype == .float64 ? Tensor(shape: [], scalars: [-0.5]) as Tensor : Tensor(shape: [], scalars: [Float(-0.5)]))
        g.setInitializer("hi", dtype == .float64 ? Tensor(shape: [], scalars: [0.75]) as Tensor : Tensor(shape: [], scalars: [Float(0.75)]))
        g.outputs = [ValueInfo(name: "y", type: nil), ValueInfo(name: "a", type: nil), ValueInfo(name: "p", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    func context(_ node: Node) -> NodeContext {
        NodeContext(node: node, opset: 1, sinceVersion: 1) { _ in throw KernelError("no subgraphs") }
    }

    func input(_ n: Int, seed: UInt64) -> [Double] { values(n * 3 * 23 * 19, seed: seed).map { Double(Float($0)) } }

    /// Float32 outputs against the float64 model's: within `tolerance` of the output's largest magnitude.
    func check(_ got: [String: Tensor], _ want: [String: Tensor], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        for name in ["y", "a", "p"] {
            guard let g = got[name], let w = want[name] else { XCTFail("\(label): no \(name)", file: file, line: line); continue }
            XCTAssertEqual(g.shape, w.shape, "\(label): \(name) shape", file: file, line: line)
            let gv = g.scalars(as: Float.self), wv = w.scalars(as: Double.self)
            let scale = wv.map(abs).max() ?? 1
            var worst = 0.0
            for i in 0..<min(gv.count, wv.count) { worst = max(worst, abs(Double(gv[i]) - wv[i])) }
            XCTAssertLessThanOrEqual(worst, 2e-6 * max(scale, 1) * 8, "\(label): \(name) worst difference \(worst), scale \(scale)", file: file, line: line)
            XCTAssertTrue(gv.allSatisfy { $0.isFinite }, "\(label): \(name) finite", file: file, line: line)
        }
    }

    func testBlockedRegionWithinFloat32RoundingOfFloat64() throws {
        let reference = try withPassesDisabled("all") { try InferenceSession(model: model(.float64)) }
        let session = try InferenceSession(model: model(.float32))
        let ops = session.executor.steps.map(\.node.opType)
        if DnnlConv.available {
            XCTAssertEqual(ops.filter { $0 == "NchwcConv" }.count, 4, "every convolution blocked: \(ops)")
            XCTAssertTrue(ops.contains("NchwcMaxPool") && ops.contains("NchwcAveragePool") && ops.contains("NchwcGlobalAveragePool"), "\(ops)")
            XCTAssertEqual(ops.filter { $0 == "ReorderFromNchwc" }.count, 2, "a (graph output) and s (a plain Relu) also written plain: \(ops)")
            XCTAssertFalse(ops.contains("ReorderToNchwc"), "the stem reads nchw itself: \(ops)")
        } else {
            XCTAssertFalse(ops.contains("NchwcConv"), "no oneDNN AVX-512 convolutions: graph as it was")
        }
        let off = try withPassesDisabled("nchwc") { try InferenceSession(model: model(.float32)) }
        XCTAssertFalse(off.executor.steps.contains { $0.node.opType.hasPrefix("Nchwc") })
        for (n, seed) in [(1, UInt64(11)), (3, 12), (1, 13)] {
            let x = input(n, seed: seed)
            let want = try reference.run(tensors: ["x": Tensor(shape: [n, 3, 23, 19], scalars: x)])
            let feeds = ["x": Tensor(shape: [n, 3, 23, 19], scalars: x.map { Float($0) })]
            let got = try session.run(tensors: feeds)
            check(got, want, "nchwc, batch \(n)")
            check(try off.run(tensors: feeds), want, "nchwc off, batch \(n)")
            let again = try session.run(tensors: feeds)
            for name in ["y", "a", "p"] { XCTAssertEqual(again[name]!.scalars(as: Float.self), got[name]!.scalars(as: Float.self), "second run, same bits") }
        }
        // Two threads on one session: every run the bits of a run alone (checked against float64).
        let x1 = input(1, seed: 21), x3 = input(3, seed: 22)
        let feeds1 = ["x": Tensor(shape: [1, 3, 23, 19], scalars: x1.map { Float($0) })], feeds3 = ["x": Tensor(shape: [3, 3, 23, 19], scalars: x3.map { Float($0) })]
        let alone1 = try session.run(tensors: feeds1), alone3 = try session.run(tensors: feeds3)
        check(alone1, try reference.run(tensors: ["x": Tensor(shape: [1, 3, 23, 19], scalars: x1)]), "batch 1 alone")
        check(alone3, try reference.run(tensors: ["x": Tensor(shape: [3, 3, 23, 19], scalars: x3)]), "batch 3 alone")
        let expected = [alone1, alone3].map { r in r.mapValues { $0.scalars(as: Float.self) } }
        let x1f = x1.map { Float($0) }, x3f = x3.map { Float($0) }
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { thread in
            for run in 0..<6 {
                let k = (thread + run) % 2
                do {
                    let n = k == 0 ? 1 : 3
                    let out = try session.run(tensors: ["x": Tensor(shape: [n, 3, 23, 19], scalars: k == 0 ? x1f : x3f)])
                    for name in ["y", "a", "p"] where out[name]?.scalars(as: Float.self) != expected[k][name] {
                        failures.withLock { $0.append("thread \(thread) run \(run): \(name) differs") }
                    }
                } catch {
                    failures.withLock { $0.append("thread \(thread) run \(run): \(error)") }
                }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
    }

    /// Regions the pass leaves as they were: one convolution, only 1x1s; a region of mostly
    /// 3x3/1 is taken (oneDNN's blocked Winograd runs them); the graph's values the same either way.
    func testRegionsThePassLeaves() throws {
        func chain(_ kernels: [(Int, Int)], channels: Int = 32) -> Model {
            var g = Graph()
            g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(1), .value(channels), .value(9), .value(9)]))]
            var v = "x"
            for (i, (k, s)) in kernels.enumerated() {
                let w = Tensor(shape: [channels, channels, k, k], scalars: values(channels * channels * k * k, seed: UInt64(50 + i), scale: 0.2).map { Float($0) })
                g.setInitializer("w\(i)", w)
                g.nodes.append(Node(opType: "Conv", inputs: [v, "w\(i)"], outputs: ["c\(i)"],
                                    attributes: ["strides": .ints([s, s]), "pads": .ints(Array(repeating: k / 2, count: 4))]))
                v = "c\(i)"
            }
            g.outputs = [ValueInfo(name: v, type: nil)]
            var m = Model(graph: g)
            m.opsetImports = ["": 17]
            return m
        }
        let cases: [(String, [(Int, Int)], Bool)] = [
            ("one convolution", [(3, 2)], false), ("only 1x1", [(1, 1), (1, 1), (1, 1)], false),
            ("mostly 3x3/1", [(3, 2), (3, 1), (3, 1)], true), ("3x3/2, 1x1, 3x3/1", [(3, 2), (1, 1), (3, 1)], true),
        ]
        let x = Tensor(shape: [1, 32, 9, 9], scalars: values(32 * 81, seed: 60).map { Float($0) })
        for (label, kernels, blocked) in cases {
            let model = chain(kernels)
            let session = try InferenceSession(model: model)
            let taken = session.executor.steps.contains { $0.node.opType == "NchwcConv" }
            XCTAssertEqual(taken, blocked && DnnlConv.available, label)
            let off = try withPassesDisabled("nchwc") { try InferenceSession(model: model) }
            let name = "c\(kernels.count - 1)"
            let got = try session.run(tensors: ["x": x])[name]!.scalars(as: Float.self), want = try off.run(tensors: ["x": x])[name]!.scalars(as: Float.self)
            let scale = want.map { abs($0) }.max() ?? 1
            for i in want.indices where abs(got[i] - want[i]) > 1e-5 * max(scale, 1) {
                XCTFail("\(label): element \(i) \(got[i]), pass off \(want[i])")
                break
            }
        }
    }

    /// The reorders and the pooling kernels alone, against float64 loops: C = 21 (a padded block),
    /// odd sizes, asymmetric pads, strides, dilations, count_include_pad both ways.
    func testReordersAndPoolingAgainstFloat64() throws {
        let (n, c, h, w) = (3, 21, 9, 7)
        let x = values(n * c * h * w, seed: 31).map { Float($0) }
        let plain = Tensor(shape: [n, c, h, w], scalars: x)
        let blocked = try Nchwc.block(plain, channels: c)
        XCTAssertEqual(blocked.shape, [n, 2, h, w, 16])
        let bv = blocked.scalars(as: Float.self)
        for image in 0..<n { for k in 0..<2 { for p in 0..<(h * w) { for l in 0..<16 {
            let ch = k * 16 + l, got = bv[(((image * 2 + k) * h * w) + p) * 16 + l]
            XCTAssertEqual(got, ch < c ? x[(image * c + ch) * h * w + p] : 0)
        } } } }
        XCTAssertEqual(try Nchwc.unblock(blocked, channels: c).scalars(as: Float.self), x, "round trip, same bits")
        struct Pool { let kernel: [Int], strides: [Int], pads: [Int], dilations: [Int], average: Bool?, ceil: Bool }
        let pools = [Pool(kernel: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], average: nil, ceil: false),
                     Pool(kernel: [2, 3], strides: [1, 2], pads: [0, 1, 1, 0], dilations: [2, 1], average: nil, ceil: true),
                     Pool(kernel: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], average: false, ceil: false),
                     Pool(kernel: [3, 2], strides: [2, 1], pads: [1, 0, 1, 1], dilations: [1, 1], average: true, ceil: false),
                     Pool(kernel: [3, 3], strides: [2, 2], pads: [0, 0, 0, 0], dilations: [1, 1], average: false, ceil: true)]
        for (index, pool) in pools.enumerated() {
            let g = try ConvGeometry(input: [h, w], kernel: pool.kernel, strides: pool.strides, dilations: pool.dilations, pads: pool.pads, ceilMode: pool.ceil)
            var attributes: [String: Attribute] = ["kernel_shape": .ints(pool.kernel), "strides": .ints(pool.strides), "pads": .ints(pool.pads),
                                                   "dilations": .ints(pool.dilations), "ceil_mode": .int(pool.ceil ? 1 : 0)]
            if let include = pool.average { attributes["count_include_pad"] = .int(include ? 1 : 0); attributes["dilations"] = nil }
            let node = Node(opType: pool.average == nil ? "NchwcMaxPool" : "NchwcAveragePool", domain: internalDomain, inputs: ["x"], outputs: ["y"],
                            attributes: attributes)
            let kernel = try NchwcPoolKernel(context(node), average: pool.average)
            let y = try kernel.run([.tensor(blocked)], ExecutionContext()).first!!.tensor!
            let (oh, ow) = (g.output[0], g.output[1])
            XCTAssertEqual(y.shape, [n, 2, oh, ow, 16], "pool \(index)")
            let yv = y.scalars(as: Float.self)
            for image in 0..<n { for ch in 0..<32 { for i in 0..<oh { for j in 0..<ow {
                var best = -Double.infinity, sum = 0.0, taps = 0
                for a in 0..<pool.kernel[0] { for e in 0..<pool.kernel[1] {
                    let ih = i * pool.strides[0] - pool.pads[0] + a * pool.dilations[0], iw = j * pool.strides[1] - pool.pads[1] + e * pool.dilations[1]
                    guard ih >= 0, ih < h, iw >= 0, iw < w else { continue }
                    let v = ch < c ? Double(x[((image * c + ch) * h + ih) * w + iw]) : 0
                    best = max(best, v); sum += v; taps += 1
                } }
                let want: Double
                if let include = pool.average { want = sum / Double(include ? pool.kernel[0] * pool.kernel[1] : taps) } else { want = best }
                let got = Double(yv[(((image * 2 + ch / 16) * oh + i) * ow + j) * 16 + ch % 16])
                if ch >= c { XCTAssertEqual(got, 0, "pool \(index): padded lane stays zero"); continue }
                XCTAssertEqual(got, want, accuracy: 1e-6 * 9, "pool \(index) image \(image) channel \(ch) (\(i), \(j))")
            } } } }
        }
        let gap = try NchwcGlobalAveragePoolKernel(context(Node(opType: "NchwcGlobalAveragePool", domain: internalDomain, inputs: ["x"],
                                                                        outputs: ["y"], attributes: ["channels": .int(c)])))
        let gy = try gap.run([.tensor(blocked)], ExecutionContext()).first!!.tensor!
        XCTAssertEqual(gy.shape, [n, c, 1, 1])
        let gv = gy.scalars(as: Float.self)
        for image in 0..<n { for ch in 0..<c {
            let want = (0..<(h * w)).map { Double(x[(image * c + ch) * h * w + $0]) }.reduce(0, +) / Double(h * w)
            XCTAssertEqual(Double(gv[image * c + ch]), want, accuracy: 1e-6)
        } }
    }
    /// ReorderToNchwc / ReorderFromNchwc (oneDNN's reorder where it exists, split over the
    /// threads by channel blocks for one image, by images else): the bits of the Swift loops
    /// (`Nchwc.block` / `unblock`, checked element by element above), padded lanes zero, for
    /// channels of whole and partial blocks, one and several images, run twice.
    func testReorderKernelsGiveTheSwiftLoopsBits() throws {
        for (n, c, h, w) in [(1, 21, 9, 7), (3, 21, 9, 7), (1, 48, 13, 11), (2, 70, 5, 6), (1, 3, 4, 4), (1, 128, 28, 28)] {
            let x = values(n * c * h * w, seed: UInt64(c * 7 + n)).map { Float($0) }
            let plain = Tensor(shape: [n, c, h, w], scalars: x)
            let want = try Nchwc.block(plain, channels: c)
            let attributes: [String: Attribute] = ["channels": .int(c)]
            let to = try NchwcReorderKernel(context(Node(opType: "ReorderToNchwc", domain: internalDomain, inputs: ["x"], outputs: ["y"], attributes: attributes)),
                                            toBlocked: true)
            let from = try NchwcReorderKernel(context(Node(opType: "ReorderFromNchwc", domain: internalDomain, inputs: ["x"], outputs: ["y"],
                                                           attributes: attributes)), toBlocked: false)
            XCTAssertEqual(to.dnnl != nil, PackedGemm.engine != nil, "oneDNN's reorder wherever it has an engine")
            for round in 0..<2 {
                let label = "n \(n), c \(c), \(h)x\(w), round \(round)"
                let blocked = try to.run([.tensor(plain)], ExecutionContext()).first!!.tensor!
                XCTAssertEqual(blocked.shape, want.shape, label)
                XCTAssertEqual(blocked.scalars(as: Float.self), want.scalars(as: Float.self), "\(label): to blocked, the Swift loop's bits (padded lanes zero)")
                let back = try from.run([.tensor(blocked)], ExecutionContext()).first!!.tensor!
                XCTAssertEqual(back.shape, [n, c, h, w], label)
                XCTAssertEqual(back.scalars(as: Float.self), x, "\(label): round trip, same bits")
            }
        }
        let from = try NchwcReorderKernel(context(Node(opType: "ReorderFromNchwc", domain: internalDomain, inputs: ["x"], outputs: ["y"],
                                                       attributes: ["channels": .int(40)])), toBlocked: false)
        XCTAssertThrowsError(try from.run([.tensor(Tensor(shape: [1, 2, 3, 3, 16], scalars: [Float](repeating: 0, count: 288)))], ExecutionContext()),
                             "40 channels need 3 blocks")
    }

    /// NchwcConv's 3x3 unit-stride convolutions on oneDNN's Winograd (`DnnlConvCache.Plan` on the
    /// blocked layouts): relu(conv + bias + Z) within Winograd's rounding of float64 (relative to
    /// the largest sum of |terms|, as WinogradTests bounds ours), for 1, 2 and 3 parts of the
    /// outputs and 1 and 3 images, pads 1 and 0; Winograd picked for whole blocks of channels
    /// wherever oneDNN has AVX-512 kernels (partial blocks: whichever it takes, same bound).
    func testBlockedWinogradWithinRoundingOfFloat64() throws {
        struct Case { let c: Int, m: Int, h: Int, w: Int, pad: Int, parts: Int, images: Int, whole: Bool }
        let cases = [Case(c: 64, m: 64, h: 14, w: 14, pad: 1, parts: 2, images: 1, whole: true),
                     Case(c: 64, m: 64, h: 14, w: 14, pad: 1, parts: 1, images: 3, whole: true),
                     Case(c: 32, m: 48, h: 9, w: 11, pad: 1, parts: 3, images: 1, whole: true),
                     Case(c: 16, m: 32, h: 10, w: 10, pad: 0, parts: 1, images: 2, whole: true),
                     Case(c: 128, m: 32, h: 7, w: 7, pad: 1, parts: 2, images: 1, whole: true),
                     Case(c: 37, m: 20, h: 7, w: 9, pad: 1, parts: 1, images: 2, whole: false)]
        for (index, t) in cases.enumerated() {
            let g = try ConvGeometry(input: [t.h, t.w], kernel: [3, 3], strides: [1, 1], dilations: [1, 1], pads: Array(repeating: t.pad, count: 4))
            let n = t.images, P = g.outputSize, I = t.h * t.w, mb = Nchwc.blocks(t.m), (oh, ow) = (g.output[0], g.output[1])
            let x = values(n * t.c * I, seed: UInt64(170 + index)).map { Double(Float($0)) }
            let wv = values(t.m * t.c * 9, seed: UInt64(180 + index), scale: 0.3).map { Double(Float($0)) }
            let bv = values(t.m, seed: UInt64(190 + index)).map { Double(Float($0)) }
            let zv = values(n * t.m * P, seed: UInt64(195 + index)).map { Double(Float($0)) }
            var want = [Double](repeating: 0, count: n * t.m * P), magnitude = 0.0
            for b in 0..<n { for o in 0..<t.m { for i in 0..<oh { for j in 0..<ow {
                let at = (b * t.m + o) * P + i * ow + j
                var s = bv[o] + zv[at], a = abs(bv[o]) + abs(zv[at])
                for ci in 0..<t.c { for ki in 0..<3 { for kj in 0..<3 {
                    let r = i - t.pad + ki, q = j - t.pad + kj
                    guard r >= 0, r < t.h, q >= 0, q < t.w else { continue }
                    let v = wv[((o * t.c + ci) * 3 + ki) * 3 + kj] * x[((b * t.c + ci) * t.h + r) * t.w + q]
                    s += v; a += abs(v)
                } } }
                want[at] = max(s, 0)
                magnitude = max(magnitude, a)
            } } } }
            let weight = Tensor(shape: [t.m, t.c, 3, 3], scalars: wv.map { Float($0) })
            let blocked = try Nchwc.block(Tensor(shape: [n, t.c, t.h, t.w], scalars: x.map { Float($0) }), channels: t.c)
            let z = try Nchwc.block(Tensor(shape: [n, t.m, oh, ow], scalars: zv.map { Float($0) }), channels: t.m)
            let bias = bv.map { Float($0) }
            let label = "\(t.c) -> \(t.m) 3x3/1 pad \(t.pad) at \(t.h)x\(t.w), \(t.parts) parts, \(n) images"
            var y = [Float](repeating: .nan, count: n * mb * 16 * P)
            var winograd = false
            let done = try blocked.withUnsafeBufferPointer(as: Float.self) { px in try weight.withUnsafeBufferPointer(as: Float.self) { pw in
                try z.withUnsafeBufferPointer(as: Float.self) { pz in bias.withUnsafeBufferPointer { pb in y.withUnsafeMutableBufferPointer { py -> Bool in
                    let epilogue = ConvEpilogue<Float>(z: pz.baseAddress, activation: .standard(.relu))
                    guard let plan = DnnlConvCache.Plan(pw.baseAddress!, channels: t.c, outputs: t.m, group: 1, g, bias: true, parts: t.parts,
                                                        layout: .blocked, budget: KernelCacheBudget(limit: 1 << 26)) else { return false }
                    XCTAssertEqual(plan.parts.count, t.parts, label)
                    winograd = plan.winograd
                    return plan.runBlocked(px.baseAddress!, bias: pb.baseAddress, py.baseAddress!, images: n, epilogue: epilogue)
                } } }
            } }
            XCTAssertEqual(done, DnnlConv.hasAVX512Kernels, "\(label): a plan wherever oneDNN has AVX-512 kernels")
            guard done else { continue }
            if t.whole { XCTAssertTrue(winograd, "\(label): oneDNN's Winograd") }
            y.withUnsafeMutableBufferPointer { Nchwc.zeroPadding($0.baseAddress!, images: n, channels: t.m, positions: P) }
            let got = try Nchwc.unblock(Tensor(shape: [n, mb, oh, ow, 16], scalars: y), channels: t.m).scalars(as: Float.self)
            var worst = 0.0
            for i in want.indices { worst = max(worst, abs(Double(got[i]) - want[i]) / magnitude) }
            print("\(label): Winograd \(winograd), worst error / largest sum of |terms| \(worst)")
            XCTAssertLessThanOrEqual(worst, 2e-7, "\(label)")
            XCTAssertTrue(got.allSatisfy { $0.isFinite }, label)
        }
    }

    /// A convolution whose outputs are one block of 16 at one image splits its input channel
    /// blocks over the threads (`DnnlConvCache.Plan` byInputs, SqueezeNet's squeeze 1x1s), the
    /// parts' sums added before the bias-free epilogue: every element within float32 rounding of
    /// float64 (bias, Z, Relu; 1x1 and 3x3, partial input and output blocks, 2 and 3 parts),
    /// the same bits on a second run, and `forwardBlocked` on a convolution above the split's
    /// work within rounding of the unsplit plan.
    func testInputSplitWithinFloat32RoundingOfFloat64() throws {
        struct Case { let c: Int, m: Int, h: Int, w: Int, k: Int, stride: Int, pad: Int, parts: Int }
        let cases = [Case(c: 40, m: 12, h: 9, w: 7, k: 1, stride: 1, pad: 0, parts: 2), Case(c: 37, m: 16, h: 8, w: 9, k: 3, stride: 1, pad: 1, parts: 2),
                     Case(c: 53, m: 16, h: 8, w: 9, k: 3, stride: 1, pad: 1, parts: 3),
                     Case(c: 48, m: 16, h: 11, w: 10, k: 3, stride: 2, pad: 1, parts: 2), Case(c: 96, m: 16, h: 30, w: 30, k: 1, stride: 1, pad: 0, parts: 2)]
        for (index, t) in cases.enumerated() {
            let g = try ConvGeometry(input: [t.h, t.w], kernel: [t.k, t.k], strides: [t.stride, t.stride], dilations: [1, 1], pads: Array(repeating: t.pad, count: 4))
            let P = g.outputSize, K = t.k * t.k, I = t.h * t.w, mb = Nchwc.blocks(t.m)
            let x = values(t.c * I, seed: UInt64(70 + index)).map { Double(Float($0)) }
            let wv = values(t.m * t.c * K, seed: UInt64(80 + index), scale: 0.3).map { Double(Float($0)) }
            let bv = values(t.m, seed: UInt64(90 + index)).map { Double(Float($0)) }
            let zv = values(t.m * P, seed: UInt64(95 + index)).map { Double(Float($0)) }
            // float64: relu(conv + b + z), and the magnitude of the sum's terms.
            var want = [Double](repeating: 0, count: t.m * P), mag = want
            for o in 0..<t.m { for i in 0..<g.output[0] { for j in 0..<g.output[1] {
                var s = bv[o] + zv[o * P + i * g.output[1] + j], a = abs(bv[o]) + abs(zv[o * P + i * g.output[1] + j])
                for ci in 0..<t.c { for ki in 0..<t.k { for kj in 0..<t.k {
                    let r = i * t.stride - t.pad + ki, q = j * t.stride - t.pad + kj
                    guard r >= 0, r < t.h, q >= 0, q < t.w else { continue }
                    let v = wv[((o * t.c + ci) * t.k + ki) * t.k + kj] * x[(ci * t.h + r) * t.w + q]
                    s += v; a += abs(v)
                } } }
                want[o * P + i * g.output[1] + j] = max(s, 0)
                mag[o * P + i * g.output[1] + j] = a
            } } }
            let weight = Tensor(shape: [t.m, t.c, t.k, t.k], scalars: wv.map { Float($0) })
            let blocked = try Nchwc.block(Tensor(shape: [1, t.c, t.h, t.w], scalars: x.map { Float($0) }), channels: t.c)
            let z = try Nchwc.block(Tensor(shape: [1, t.m, g.output[0], g.output[1]], scalars: zv.map { Float($0) }), channels: t.m)
            let bias = bv.map { Float($0) }
            func run(parts: Int, byInputs: Bool, forward: Bool = false) throws -> [Float]? {
                var y = [Float](repeating: .nan, count: mb * 16 * P)
                let budget = KernelCacheBudget(limit: 1 << 26)
                let done = try blocked.withUnsafeBufferPointer(as: Float.self) { px in try weight.withUnsafeBufferPointer(as: Float.self) { pw in
                    try z.withUnsafeBufferPointer(as: Float.self) { pz in bias.withUnsafeBufferPointer { pb in y.withUnsafeMutableBufferPointer { py -> Bool in
                        let epilogue = ConvEpilogue<Float>(z: pz.baseAddress, activation: .standard(.relu))
                        if forward {
                            return DnnlConvCache(budget: budget).forwardBlocked(px.baseAddress!, weight, pw.baseAddress!, bias: pb.baseAddress, py.baseAddress!,
                                                                                images: 1, channels: t.c, outputs: t.m, g, plainSource: false, epilogue: epilogue)
                        }
                        guard let plan = DnnlConvCache.Plan(pw.baseAddress!, channels: t.c, outputs: t.m, group: 1, g, bias: true, parts: parts,
                                                            layout: .blocked, byInputs: byInputs, budget: budget) else { return false }
                        XCTAssertEqual(plan.parts.count, parts)
                        return plan.runBlocked(px.baseAddress!, bias: pb.baseAddress, py.baseAddress!, images: 1, epilogue: epilogue)
                    } } }
                } }
                guard done else { return nil }
                y.withUnsafeMutableBufferPointer { Nchwc.zeroPadding($0.baseAddress!, images: 1, channels: t.m, positions: P) }
                return try Nchwc.unblock(Tensor(shape: [1, mb, g.output[0], g.output[1], 16], scalars: y), channels: t.m).scalars(as: Float.self)
            }
            let label = "\(t.c) -> \(t.m), \(t.k)x\(t.k)/\(t.stride) at \(t.h)x\(t.w), \(t.parts) parts"
            let split = try run(parts: t.parts, byInputs: true)
            XCTAssertEqual(split != nil, DnnlConv.hasAVX512Kernels, "\(label): a plan wherever oneDNN has AVX-512 kernels")
            guard let split else { continue }
            var worst = 0.0
            for i in want.indices {
                let bound = 2 * Double(t.c * K + 3) * 0x1p-24 * mag[i]
                let ratio = abs(Double(split[i]) - want[i]) / max(bound, 1e-30)
                worst = max(worst, ratio)
                if ratio > 1 { XCTFail("\(label): element \(i) \(split[i]), float64 \(want[i]), bound \(bound)"); break }
            }
            print("\(label): worst error / float32 bound \(worst)")
            XCTAssertEqual(try run(parts: t.parts, byInputs: true), split, "\(label): second run, same bits")
            let whole = try run(parts: 1, byInputs: false)
            XCTAssertNotNil(whole)
            if let whole {
                for i in want.indices where abs(whole[i] - split[i]) > Float(2 * Double(t.c * K + 3) * 0x1p-24 * mag[i]) {
                    XCTFail("\(label): element \(i) split \(split[i]), unsplit \(whole[i])"); break
                }
            }
            if t.c * t.m * K * P >= DnnlConv.splitWork, let forwarded = try run(parts: 0, byInputs: false, forward: true) {
                for i in want.indices where abs(Double(forwarded[i]) - want[i]) > 2 * Double(t.c * K + 3) * 0x1p-24 * mag[i] {
                    XCTFail("\(label): forwardBlocked element \(i) \(forwarded[i]), float64 \(want[i])"); break
                }
            } else if t.c * t.m * K * P >= DnnlConv.splitWork {
                XCTFail("\(label): forwardBlocked refused")
            }
        }
    }
}
