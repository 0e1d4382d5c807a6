@testable import OnnxTrain
import Foundation
import XCTest

/// oneDNN's convolutions on a weight packed once (`DnnlConvCache`): every element within float32
/// rounding of float64 loops, for strides 1/2/4, asymmetric pads, dilations, groups and depthwise,
/// batch 1 (split by output channels) and batch > 1 (split by images), with and without a bias, and
/// FusedConv's epilogues (Z, Relu, Clip, HardSwish, HardSigmoid); a second run gives the same bits.
/// Sessions: a constant weight takes it, a fed weight (a training graph's) and the switch
/// `dnnl-conv` do not, both giving the same values within rounding.
final class DnnlConvTests: XCTestCase {
    struct Case {
        let label: String
        let x: [Int], w: [Int], strides: [Int], pads: [Int]
        var dilations = [1, 1]
        var group = 1
        /// oneDNN has no AVX-512 kernel for it (groups of 24 outputs): the caller's kernels run it.
        var refused = false
    }

    let cases: [Case] = [
        Case(label: "7x7/2 stem 3 -> 32 at 30x30", x: [1, 3, 30, 30], w: [32, 3, 7, 7], strides: [2, 2], pads: [3, 3, 3, 3]),
        Case(label: "7x7/2 stem 3 -> 32 at 30x30, 3 images", x: [3, 3, 30, 30], w: [32, 3, 7, 7], strides: [2, 2], pads: [3, 3, 3, 3]),
        Case(label: "11x11/4 3 -> 16 at 47x47", x: [1, 3, 47, 47], w: [16, 3, 11, 11], strides: [4, 4], pads: [2, 2, 2, 2]),
        Case(label: "3x3/2 64 -> 48 at 15x15", x: [1, 64, 15, 15], w: [48, 64, 3, 3], strides: [2, 2], pads: [1, 1, 1, 1]),
        Case(label: "3x3/1 64 -> 48 at 15x15, 2 images", x: [2, 64, 15, 15], w: [48, 64, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1]),
        Case(label: "3x3 dilation 2, 16 -> 24, 2 images", x: [2, 16, 12, 12], w: [24, 16, 3, 3], strides: [1, 1], pads: [2, 2, 2, 2], dilations: [2, 2]),
        Case(label: "3x3 asymmetric pads, 24 -> 20", x: [1, 24, 9, 11], w: [20, 24, 3, 3], strides: [1, 1], pads: [0, 1, 2, 0]),
        Case(label: "1x1/1 64 -> 40 at 14x14", x: [1, 64, 14, 14], w: [40, 64, 1, 1], strides: [1, 1], pads: [0, 0, 0, 0]),
        Case(label: "1x1/2 64 -> 40 at 14x14, 2 images", x: [2, 64, 14, 14], w: [40, 64, 1, 1], strides: [2, 2], pads: [0, 0, 0, 0]),
        Case(label: "5x3 kernel, 8 -> 36 at 13x10", x: [1, 8, 13, 10], w: [36, 8, 5, 3], strides: [1, 2], pads: [2, 1, 2, 1]),
        Case(label: "grouped 4, 64 -> 64 at 10x10", x: [1, 64, 10, 10], w: [64, 16, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1], group: 4),
        Case(label: "grouped 2, 32 -> 64, 2 images", x: [2, 32, 8, 8], w: [64, 16, 1, 1], strides: [1, 1], pads: [0, 0, 0, 0], group: 2),
        Case(label: "grouped 2, 32 -> 48, 2 images (refused)", x: [2, 32, 8, 8], w: [48, 16, 1, 1], strides: [1, 1], pads: [0, 0, 0, 0], group: 2,
             refused: true),
        Case(label: "depthwise 3x3/2 32 at 11x11, 2 images", x: [2, 32, 11, 11], w: [32, 1, 3, 3], strides: [2, 2], pads: [1, 1, 1, 1], group: 32),
        Case(label: "depthwise 3x3/1 64 at 40x40", x: [1, 64, 40, 40], w: [64, 1, 3, 3], strides: [1, 1], pads: [1, 1, 1, 1], group: 64),
        Case(label: "depthwise 5x5/1 48 at 9x9", x: [1, 48, 9, 9], w: [48, 1, 5, 5], strides: [1, 1], pads: [2, 2, 2, 2], group: 48),
    ]

    func geometry(_ c: Case) throws -> ConvGeometry {
        try ConvGeometry(input: Array(c.x.dropFirst(2)), kernel: Array(c.w.dropFirst(2)), strides: c.strides, dilations: c.dilations, pads: c.pads)
    }

    /// conv(x, w) + b in float64, and per element Σ|w·x| + |b|.
    func reference(_ x: [Double], _ w: [Double], _ b: [Double]?, _ c: Case, _ g: ConvGeometry) -> ([Double], [Double]) {
        let (n, ch, ih, iw) = (c.x[0], c.x[1], c.x[2], c.x[3]), (m, cg, kh, kw) = (c.w[0], c.w[1], c.w[2], c.w[3])
        let (oh, ow) = (g.output[0], g.output[1]), mg = m / c.group
        var y = [Double](repeating: 0, count: n * m * oh * ow), mag = y
        for b0 in 0..<n { for o in 0..<m {
            let gi = o / mg
            for i in 0..<oh { for j in 0..<ow {
                var s = b?[o] ?? 0, a = abs(s)
                for ci in 0..<cg { for ki in 0..<kh { for kj in 0..<kw {
                    let r = i * c.strides[0] - g.padsBegin[0] + ki * c.dilations[0], q = j * c.strides[1] - g.padsBegin[1] + kj * c.dilations[1]
                    guard r >= 0, r < ih, q >= 0, q < iw else { continue }
                    let t = w[((o * cg + ci) * kh + ki) * kw + kj] * x[((b0 * ch + gi * cg + ci) * ih + r) * iw + q]
                    s += t
                    a += abs(t)
                } } }
                y[((b0 * m + o) * oh + i) * ow + j] = s
                mag[((b0 * m + o) * oh + i) * ow + j] = a
            } }
        } }
        return (y, mag)
    }

    func values(_ count: Int, seed: UInt64) -> [Double] {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(Int((state >> 33) % 2001) - 1000) / 500
        }
    }

    /// Whether oneDNN has its AVX-512 convolutions on this CPU (the path is taken only then).
    func dnnlRuns() -> Bool { DnnlConv.hasAVX512Kernels }

    func testEveryClassAndEpilogueWithinFloat32Rounding() throws {
        let avx512 = dnnlRuns()
        print("oneDNN AVX-512 convolutions on this CPU: \(avx512)")
        let activations: [(String, FusedConvActivation?, Bool)] = [
            ("plain", nil, false), ("bias", .standard(.none), false), ("Z + Relu", .standard(.relu), true),
            ("Clip", .standard(.clip(min: -0.5, max: 1.5)), false), ("Z + HardSwish", .hardSwish, true),
            ("HardSigmoid", .standard(.hardSigmoid(alpha: 0.2, beta: 0.5)), false),
        ]
        for (index, c) in cases.enumerated() {
            let g = try geometry(c)
            let n = c.x[0], m = c.w[0], P = g.outputSize
            let x = values(c.x.reduce(1, *), seed: UInt64(3 * index + 1)), w = values(c.w.reduce(1, *), seed: UInt64(3 * index + 2))
            let b = values(m, seed: UInt64(3 * index + 3)), z = values(n * m * P, seed: UInt64(100 + index))
            let xf = x.map { Float($0) }, wf = w.map { Float($0) }, bf = b.map { Float($0) }, zf = z.map { Float($0) }
            let weight = Tensor(shape: c.w, scalars: wf)
            for (name, activation, withZ) in activations {
                let hasBias = activation != nil
                let (sum, mag) = reference(x, w, hasBias ? b : nil, c, g)
                let budget = KernelCacheBudget(limit: 1 << 26)
                let cache = DnnlConvCache(budget: budget)
                // The split `forward` picks (by output channels for one image, by images else).
                let parts = n == 1 && m * c.w[1] * c.w[2] * c.w[3] * P >= DnnlConv.splitWork
                    ? DnnlConv.channelParts(channels: c.x[1], outputs: m, group: c.group, threads: Parallel.threadCount) : 1
                var y = [Float](repeating: .nan, count: n * m * P)
                // Through `forward` (the classes `DnnlConv.takes` names), or the plan itself (every class).
                func run(plan: Bool) throws -> Bool {
                    try weight.withUnsafeBufferPointer(as: Float.self) { pw in
                        xf.withUnsafeBufferPointer { px in bf.withUnsafeBufferPointer { pb in zf.withUnsafeBufferPointer { pz in
                            y.withUnsafeMutableBufferPointer { py in
                                let epilogue = activation.map { ConvEpilogue<Float>(z: withZ ? pz.baseAddress : nil, activation: $0) }
                                if plan {
                                    guard let made = DnnlConvCache.Plan(pw.baseAddress!, channels: c.x[1], outputs: m, group: c.group, g, bias: hasBias,
                                                                        parts: parts, budget: budget) else { return false }
                                    return made.run(px.baseAddress!, bias: hasBias ? pb.baseAddress : nil, py.baseAddress!, images: n, epilogue: epilogue)
                                }
                                return cache.forward(px.baseAddress!, weight, pw.baseAddress!, bias: hasBias ? pb.baseAddress : nil, py.baseAddress!,
                                                     images: n, channels: c.x[1], outputs: m, group: c.group, g, epilogue: epilogue)
                            }
                        } } }
                    }
                }
                let takes = DnnlConv.takes(images: n, channels: c.x[1], outputs: m, group: c.group, g)
                let forwarded = try run(plan: false)
                XCTAssertEqual(forwarded, avx512 && takes && !c.refused, "\(c.label) \(name): forward takes the classes DnnlConv.takes names")
                let viaForward = y
                y = [Float](repeating: .nan, count: n * m * P)
                let taken = try run(plan: true)
                XCTAssertEqual(taken, avx512 && !c.refused, "\(c.label) \(name): a plan where oneDNN has AVX-512 kernels")
                guard taken else { continue }
                if forwarded { XCTAssertEqual(viaForward, y, "\(c.label) \(name): forward and its plan, same bits") }
                if forwarded { XCTAssertGreaterThan(budget.reserved, 0, "packed weight kept by the cache, in the budget") }
                var worst = 0.0
                for i in 0..<y.count {
                    var want = sum[i], bound = Double(c.w[1] * c.w[2] * c.w[3] + 2) * 0x1p-24 * mag[i]
                    if withZ { want += z[i]; bound += 0x1p-24 * (abs(want) + abs(z[i])) }
                    if let activation {
                        want = activation.value(want)
                        bound = 2 * bound + 0x1p-23 * max(1, abs(want))
                    }
                    let ratio = abs(Double(y[i]) - want) / max(bound, 1e-30)
                    worst = max(worst, ratio)
                    if ratio > 1 {
                        XCTFail("\(c.label) \(name): element \(i) is \(y[i]), float64 \(want), bound \(bound)")
                        break
                    }
                }
                print("\(c.label) \(name): worst error / float32 bound \(worst)")
                let first = y
                y = [Float](repeating: .nan, count: n * m * P)
                XCTAssertTrue(try run(plan: true))
                XCTAssertEqual(y, first, "\(c.label) \(name): second run, same bits")
            }
        }
    }

    /// A budget too small for the packed weight leaves the convolution to the caller.
    func testRefusedBudgetIsNotTaken() throws {
        let c = cases[3], g = try geometry(c)
        let weight = Tensor(shape: c.w, scalars: values(c.w.reduce(1, *), seed: 9).map { Float($0) })
        let x = values(c.x.reduce(1, *), seed: 8).map { Float($0) }
        var y = [Float](repeating: 0, count: c.w[0] * g.outputSize)
        let budget = KernelCacheBudget(limit: 1024)
        let taken = try weight.withUnsafeBufferPointer(as: Float.self) { pw in
            x.withUnsafeBufferPointer { px in y.withUnsafeMutableBufferPointer { py in
                DnnlConvCache(budget: budget).forward(px.baseAddress!, weight, pw.baseAddress!, bias: nil, py.baseAddress!, images: 1,
                                                      channels: c.x[1], outputs: c.w[0], group: 1, g, epilogue: nil)
            } }
        }
        XCTAssertFalse(taken)
        XCTAssertEqual(budget.reserved, 0)
    }

    /// Conv + Add + Relu (fused into FusedConv with Z) and a depthwise Conv, weights initializers:
    /// the session takes oneDNN (where it runs), the same values as with `dnnl-conv` off and as with
    /// the weights fed (no cache: a training graph's weights are inputs), all within rounding of float64.
    func testSessionsTakeItOnlyForConstantWeights() throws {
        let c = Case(label: "3x3/2 64 -> 48 at 15x15, 2 images", x: [2, 64, 15, 15], w: [48, 64, 3, 3], strides: [2, 2], pads: [1, 1, 1, 1])
        let d = cases.first { $0.label.hasPrefix("depthwise 3x3/2") }!
        let zShape = [2, 48, 8, 8]
        XCTAssertTrue(DnnlConv.takes(images: 2, channels: 64, outputs: 48, group: 1, try geometry(c)))
        XCTAssertTrue(DnnlConv.takes(images: 2, channels: 32, outputs: 32, group: 32, try geometry(d)))
        let x64 = values(c.x.reduce(1, *), seed: 41), w64 = values(c.w.reduce(1, *), seed: 42), b64 = values(c.w[0], seed: 43)
        let dx64 = values(d.x.reduce(1, *), seed: 44), dw64 = values(d.w.reduce(1, *), seed: 45)
        func model(fed: Bool) -> Model {
            var g = Graph()
            g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: c.x.map { .value($0) })),
                        ValueInfo(name: "z", type: .tensor(.float32, shape: zShape.map { .value($0) })),
                        ValueInfo(name: "dx", type: .tensor(.float32, shape: d.x.map { .value($0) }))]
            let weights: [(String, Tensor)] = [("w", Tensor(shape: c.w, scalars: w64.map { Float($0) })), ("b", Tensor(shape: [c.w[0]], scalars: b64.map { Float($0) })),
                                               ("dw", Tensor(shape: d.w, scalars: dw64.map { Float($0) }))]
            for (name, t) in weights {
                if fed { g.inputs.append(ValueInfo(name: name, type: .tensor(.float32, shape: t.shape.map { .value($0) }))) } else { g.setInitializer(name, t) }
            }
            let attrs: (Case) -> [String: Attribute] = { k in
                ["strides": .ints(k.strides), "pads": .ints(k.pads), "group": .int(k.group), "kernel_shape": .ints(Array(k.w.dropFirst(2)))]
            }
            g.nodes = [Node(opType: "Conv", inputs: ["x", "w", "b"], outputs: ["c"], attributes: attrs(c)),
                       Node(opType: "Add", inputs: ["c", "z"], outputs: ["s"]),
                       Node(opType: "Relu", inputs: ["s"], outputs: ["y"]),
                       Node(opType: "Conv", inputs: ["dx", "dw"], outputs: ["dy"], attributes: attrs(d))]
            g.outputs = [ValueInfo(name: "y", type: nil), ValueInfo(name: "dy", type: nil)]
            var m = Model(graph: g)
            m.opsetImports = ["": 17]
            return m
        }
        let z64 = values(zShape.reduce(1, *), seed: 46)
        let feeds = ["x": Tensor(shape: c.x, scalars: x64.map { Float($0) }), "z": Tensor(shape: zShape, scalars: z64.map { Float($0) }),
                     "dx": Tensor(shape: d.x, scalars: dx64.map { Float($0) })]
        let (sum, mag) = reference(x64, w64, b64, c, try geometry(c))
        let (dsum, dmag) = reference(dx64, dw64, nil, d, try geometry(d))
        func check(_ out: [String: Tensor], _ label: String) {
            let y = out["y"]!.scalars(as: Float.self), dy = out["dy"]!.scalars(as: Float.self)
            for i in 0..<y.count {
                let want = max(sum[i] + z64[i], 0), bound = 2 * (Double(c.w[1] * 9 + 3) * 0x1p-24 * (mag[i] + abs(z64[i])))
                if abs(Double(y[i]) - want) > bound { XCTFail("\(label): y[\(i)] \(y[i]), float64 \(want)"); break }
            }
            for i in 0..<dy.count where abs(Double(dy[i]) - dsum[i]) > 11 * 0x1p-24 * dmag[i] {
                XCTFail("\(label): dy[\(i)] \(dy[i]), float64 \(dsum[i])")
                break
            }
        }
        // The convolutions themselves (the `nchwc` pass would take the group-1 one: NchwcTests).
        let session = try withPassesDisabled("nchwc") { try InferenceSession(model: model(fed: false)) }
        let convs = session.executor.steps.compactMap { ($0.kernel as? ConvKernel) ?? ($0.kernel as? FusedConvKernel)?.conv }
        XCTAssertEqual(convs.count, 2)
        XCTAssertTrue(session.executor.steps.contains { $0.node.opType == "FusedConv" }, "Conv + Add + Relu fused")
        XCTAssertEqual(convs.map { $0.dnnlCache != nil }, [dnnlRuns(), dnnlRuns()], "constant weights: a oneDNN cache where it runs")
        let out = try session.run(tensors: feeds)
        check(out, "oneDNN")
        if dnnlRuns() { XCTAssertGreaterThan(session.executor.cacheBudget?.reserved ?? 0, 0) }

        let off = try withPassesDisabled("dnnl-conv") { try InferenceSession(model: model(fed: false)) }
        let offConvs = off.executor.steps.compactMap { ($0.kernel as? ConvKernel) ?? ($0.kernel as? FusedConvKernel)?.conv }
        XCTAssertTrue(offConvs.allSatisfy { $0.dnnlCache == nil }, "switch off: no oneDNN cache")
        check(try off.run(tensors: feeds), "dnnl-conv off")

        var fedFeeds = feeds
        fedFeeds["w"] = Tensor(shape: c.w, scalars: w64.map { Float($0) })
        fedFeeds["b"] = Tensor(shape: [c.w[0]], scalars: b64.map { Float($0) })
        fedFeeds["dw"] = Tensor(shape: d.w, scalars: dw64.map { Float($0) })
        let fed = try InferenceSession(model: model(fed: true))
        let fedConvs = fed.executor.steps.compactMap { ($0.kernel as? ConvKernel) ?? ($0.kernel as? FusedConvKernel)?.conv }
        XCTAssertTrue(fedConvs.allSatisfy { $0.dnnlCache == nil }, "fed weights: no oneDNN cache")
        check(try fed.run(tensors: fedFeeds), "fed weights")
    }
}
