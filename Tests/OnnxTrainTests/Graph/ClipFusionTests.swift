import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// Clip inside elementwise chains (Hardswish and Hardsigmoid written out as clamps, as torchvision's
/// MobileNetV3 exports them) and Clip's gradient as one ClipGradient node: the passes fire where
/// they should, not where they must not, and the outputs are bit-identical to the ops run one by
/// one (the same function per element), NaN and infinities included.
final class ClipFusionTests: XCTestCase {
    /// An ElementwiseChain's steps.
    func ops(_ node: Node) -> [String] {
        if case .strings(let s)? = node.attributes["ops"] { return s }
        return []
    }

    func model(_ dtype: DType, _ inputs: [(String, [Int])], _ constants: [String: Tensor], _ nodes: [Node], outputs: [String]) -> Model {
        var g = Graph()
        g.inputs = inputs.map { ValueInfo(name: $0.0, type: .tensor(dtype, shape: $0.1.map { .value($0) })) }
        for (k, t) in constants.sorted(by: { $0.key < $1.key }) { g.setInitializer(k, t) }
        g.nodes = nodes
        g.outputs = outputs.map { ValueInfo(name: $0, type: nil) }
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    /// Random values in ±scale with NaN, ±infinity, the clamp edges and exact zeros sprinkled in.
    func values(_ dtype: DType, _ shape: [Int], seed: UInt64, scale: Double = 5) -> Tensor {
        var g = RandomGenerator(seed: seed)
        let n = shape.reduce(1, *)
        let specials: [Double] = [.nan, .infinity, -.infinity, -3, 3, 0, 6, -6]
        let v = (0..<n).map { i in i % 37 == 5 ? specials[(i / 37) % specials.count] : (g.nextDouble() * 2 - 1) * scale }
        return dtype == .float64 ? Tensor(shape: shape, scalars: v) : Tensor(shape: shape, scalars: v.map { Float($0) })
    }

    func scalar(_ dtype: DType, _ v: Double) -> Tensor { dtype == .float64 ? Tensor(scalar: v) : Tensor(scalar: Float(v)) }

    /// Runs `model` without and with the optimisations; every output must have the same bits
    /// (NaN where the plain run has NaN).
    func assertBitIdentical(_ model: Model, _ feeds: [String: Tensor], _ label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        var plainOptions = SessionOptions()
        plainOptions.optimize = false
        let plain = try InferenceSession(model: model, options: plainOptions).run(tensors: feeds)
        let fast = try InferenceSession(model: model).run(tensors: feeds)
        XCTAssertEqual(Set(plain.keys), Set(fast.keys), label, file: file, line: line)
        for (name, reference) in plain {
            guard let actual = fast[name] else { continue }
            XCTAssertEqual(actual.shape, reference.shape, "\(label)/\(name)", file: file, line: line)
            XCTAssertEqual(actual.dtype, reference.dtype, "\(label)/\(name)", file: file, line: line)
            let a = try actual.doubles(), r = try reference.doubles()
            let differing = zip(a, r).filter { !($0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN)) }.count
            XCTAssertEqual(differing, 0, "\(label)/\(name): elements that differ", file: file, line: line)
        }
    }

    // MARK: - Clip in chains

    /// Hardswish written out (Add 3, Clip 0..6, Mul by x, Div 6) becomes one chain; the
    /// squeeze-excite Hardsigmoid (Add 3, Clip, Div 6 on [N, C, 1, 1]) is a chain of its own: the
    /// Mul that broadcasts it over [N, C, H, W] stays outside it (a chain stops where its value
    /// grows). float32 and float64, odd sizes, NaN and infinities: bit-identical.
    func testHardswishAndHardsigmoidWrittenOutFuse() throws {
        for dtype in [DType.float32, .float64] {
            let consts = ["three": scalar(dtype, 3), "six": scalar(dtype, 6), "zero": scalar(dtype, 0)]
            let m = model(dtype, [("x", [3, 5, 7, 9]), ("s", [3, 5, 1, 1])], consts, [
                Node(opType: "Add", inputs: ["x", "three"], outputs: ["a"]),
                Node(opType: "Clip", inputs: ["a", "zero", "six"], outputs: ["c"]),
                Node(opType: "Mul", inputs: ["x", "c"], outputs: ["m"]),
                Node(opType: "Div", inputs: ["m", "six"], outputs: ["hs"]),
                Node(opType: "Add", inputs: ["s", "three"], outputs: ["sa"]),
                Node(opType: "Clip", inputs: ["sa", "zero", "six"], outputs: ["sc"]),
                Node(opType: "Div", inputs: ["sc", "six"], outputs: ["sd"]),
                Node(opType: "Mul", inputs: ["sd", "hs"], outputs: ["y"]),
            ], outputs: ["y"])
            let o = try optimized(m)
            // The product of the two reads the Hardswish chain's value at full size, the scale broadcast: it joins that chain.
            XCTAssertEqual(opTypes(o), ["ElementwiseChain", "ElementwiseChain"], "\(dtype)")
            XCTAssertEqual(Set(o.graph.nodes.map { ops($0).joined(separator: " ") }), ["Add Clip Div", "Add Clip Mul Div Mul"], "\(dtype)")
            try assertBitIdentical(m, ["x": values(dtype, [3, 5, 7, 9], seed: 1), "s": values(dtype, [3, 5, 1, 1], seed: 2)], "hardswish \(dtype)")
        }
    }

    /// The squeeze-excite scale of an exported model, whose batch is symbolic ([batch, C, 1, 1]
    /// times [batch, C, H, W]): the Hardsigmoid chain stops before the broadcasting Mul as with
    /// static shapes (it ran its Add, Clip and Div once per element of the larger result), and
    /// the outputs stay bit-identical.
    func testSqueezeExciteScaleWithSymbolicBatchStaysSmall() throws {
        for dtype in [DType.float32, .float64] {
            var m = model(dtype, [], ["three": scalar(dtype, 3), "six": scalar(dtype, 6), "zero": scalar(dtype, 0)], [
                Node(opType: "Add", inputs: ["s", "three"], outputs: ["sa"]),
                Node(opType: "Clip", inputs: ["sa", "zero", "six"], outputs: ["sc"]),
                Node(opType: "Div", inputs: ["sc", "six"], outputs: ["sd"]),
                Node(opType: "Mul", inputs: ["sd", "x"], outputs: ["y"]),
            ], outputs: ["y"])
            m.graph.inputs = [ValueInfo(name: "x", type: .tensor(dtype, shape: [.symbol("batch"), .value(5), .value(7), .value(9)])),
                              ValueInfo(name: "s", type: .tensor(dtype, shape: [.symbol("batch"), .value(5), .value(1), .value(1)]))]
            let o = try optimized(m)
            XCTAssertEqual(opTypes(o), ["ElementwiseChain", "Mul"], "\(dtype)")
            XCTAssertEqual(o.graph.nodes.first.map { ops($0).joined(separator: " ") }, "Add Clip Div", "\(dtype)")
            try assertBitIdentical(m, ["x": values(dtype, [3, 5, 7, 9], seed: 3), "s": values(dtype, [3, 5, 1, 1], seed: 4)], "squeeze-excite \(dtype)")
        }
    }

    /// A scale whose shape the passes do not know (MobileNetV3's fc2 output, a FusedConv's with no
    /// inferred shape) joins the broadcasting Mul in one chain: its leading Add, Clip and Div run
    /// on the [N, C, 1, 1] start alone, then the Mul and what follows at full size (starts of
    /// lower rank and scalar starts too). Bit-identical to the ops one by one.
    func testChainOfBroadcastStartRunsLeadingStepsSmall() throws {
        for dtype in [DType.float32, .float64] {
            for sShape in [[3, 5, 1, 1], [5, 1, 1], [1], []] {
                var m = model(dtype, [], ["three": scalar(dtype, 3), "six": scalar(dtype, 6), "zero": scalar(dtype, 0)], [
                    Node(opType: "Add", inputs: ["s", "three"], outputs: ["sa"]),
                    Node(opType: "Clip", inputs: ["sa", "zero", "six"], outputs: ["sc"]),
                    Node(opType: "Div", inputs: ["sc", "six"], outputs: ["sd"]),
                    Node(opType: "Mul", inputs: ["sd", "x"], outputs: ["m"]),
                    Node(opType: "Sigmoid", inputs: ["m"], outputs: ["y"]),
                    Node(opType: "Sub", inputs: ["s", "three"], outputs: ["t"]),
                    Node(opType: "Relu", inputs: ["t"], outputs: ["u"]),
                    Node(opType: "Add", inputs: ["u", "x"], outputs: ["z"]),
                ], outputs: ["y", "z"])
                m.graph.inputs = [ValueInfo(name: "x", type: .tensor(dtype, shape: [.value(3), .value(5), .value(7), .value(9)])),
                                  ValueInfo(name: "s", type: .tensor(dtype, shape: nil))]
                let o = try optimized(m)
                XCTAssertEqual(Set(o.graph.nodes.map { ops($0).joined(separator: " ") }), ["Add Clip Div Mul Sigmoid", "Sub Relu Add"], "\(dtype) \(sShape)")
                try assertBitIdentical(m, ["x": values(dtype, [3, 5, 7, 9], seed: 5), "s": values(dtype, sShape, seed: 6, scale: 8)],
                                       "broadcast start \(dtype) \(sShape)")
            }
        }
    }

    /// A chain's float32 division by a scalar multiplies where that gives the same bits
    /// (`ReciprocalDivision`: powers of two; ±3 and ±6 with Markstein's correction, checked for
    /// all 2^32 inputs when it was written): here every 9973rd bit pattern (430K values of every
    /// exponent) and the edges (zeros, subnormals, the 2^-99 bound, the largest float, infinities,
    /// NaN) against x / d, bit for bit, at every offset of the eight-lane loop. Other divisors divide.
    func testReciprocalDivisionIsDivision() throws {
        var x: [Float] = [0, -0, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .leastNormalMagnitude, .greatestFiniteMagnitude,
                          -.greatestFiniteMagnitude, .infinity, -.infinity, .nan, Float(bitPattern: 0x0E00_0000), Float(bitPattern: 0x0DFF_FFFF),
                          Float(bitPattern: 0x8E00_0000), Float(bitPattern: 0x8DFF_FFFF), 1, 3, 6, -6, 1e-30, 7e-31]
        var bits: UInt64 = 0
        while bits < 1 << 32 {
            x.append(Float(bitPattern: UInt32(bits)))
            bits += 9973
        }
        for d: Float in [6, -6, 3, -3, 2, 0.5, -0.25, 1024, 7, 0.1] {
            guard let division = ReciprocalDivision(divisor: d) else {
                #if ONNX_TRAIN_X86_64_V3 && arch(x86_64)
                XCTAssertTrue([7, 0.1].contains(d), "divisor \(d) should multiply")
                #endif
                continue
            }
            XCTAssertFalse([7, 0.1].contains(d), "divisor \(d) must divide")
            for offset in 0..<3 {
                var y = Array(x[offset...])
                y.withUnsafeMutableBufferPointer { division.divide($0.baseAddress!, $0.count) }
                let differing = zip(y, x[offset...]).filter { q, v in
                    let r = v / d
                    return !(q.bitPattern == r.bitPattern || (q.isNaN && r.isNaN))
                }
                XCTAssertEqual(differing.count, 0, "divisor \(d), offset \(offset): \(differing.prefix(3))")
            }
        }
        XCTAssertNil(ReciprocalDivision(divisor: 0))
        XCTAssertNil(ReciprocalDivision(divisor: .infinity))
        XCTAssertNil(ReciprocalDivision(divisor: .nan))
    }

    /// A Clip whose bounds are graph inputs of known scalar shape joins too (read when the chain
    /// runs), including min > max (max wins, as the Clip kernel); a chain large enough to be split
    /// across threads; a Clip with a bound omitted or of unknown shape stays a Clip.
    func testClipBoundsAsInputsAndClipsThatStay() throws {
        var m = model(.float32, [("x", [70_001]), ("lo", []), ("hi", [1])], [:], [
            Node(opType: "Neg", inputs: ["x"], outputs: ["n"]),
            Node(opType: "Clip", inputs: ["n", "lo", "hi"], outputs: ["c"]),
            Node(opType: "Exp", inputs: ["c"], outputs: ["y"]),
            Node(opType: "Abs", inputs: ["x"], outputs: ["b"]),
            Node(opType: "Clip", inputs: ["b", "", "hi"], outputs: ["d"]),
            Node(opType: "Sqrt", inputs: ["d"], outputs: ["z"]),
        ], outputs: ["y", "z"])
        XCTAssertEqual(opTypes(try optimized(m)), ["ElementwiseChain", "Abs", "Clip", "Sqrt"])
        let x = values(.float32, [70_001], seed: 3)
        try assertBitIdentical(m, ["x": x, "lo": Tensor(scalar: Float(-1.5)), "hi": Tensor(shape: [1], scalars: [Float(2.25)])], "bounds as inputs")
        try assertBitIdentical(m, ["x": x, "lo": Tensor(scalar: Float(2)), "hi": Tensor(shape: [1], scalars: [Float(-1)])], "min > max")
        m.graph.inputs[1] = ValueInfo(name: "lo", type: .tensor(.float32, shape: [.symbol("k")]))
        XCTAssertEqual(opTypes(try optimized(m)), ["Neg", "Clip", "Exp", "Abs", "Clip", "Sqrt"], "a bound of unknown size")
    }

    /// A chain's Clip bounds that are not single elements fail with a clear error, not a wrong value.
    func testChainClipWithWideBoundsIsAnError() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(4)])),
                    ValueInfo(name: "lo", type: .tensor(.float32, shape: [.value(2)])),
                    ValueInfo(name: "hi", type: .tensor(.float32, shape: []))]
        g.nodes = [Node(opType: "ElementwiseChain", domain: internalDomain, inputs: ["x", "lo", "hi"], outputs: ["y"],
                        attributes: ["ops": .strings(["Clip"]), "operands": .ints([1]), "chain_left": .ints([1]), "alphas": .floats([0])])]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17, internalDomain: 1]
        let feeds = ["x": Tensor(shape: [4], scalars: [Float(1), 2, 3, 4]), "lo": Tensor(shape: [2], scalars: [Float(0), 1]), "hi": Tensor(scalar: Float(3))]
        XCTAssertThrowsError(try InferenceSession(model: m).run(tensors: feeds)) { error in
            XCTAssertTrue("\(error)".contains("Clip bounds must be scalars"), "\(error)")
        }
    }

    // MARK: - Clip's gradient

    /// Clip's gradient rule, x → Less / Greater → Not → And → Where(mask, dY, 0), with both bounds
    /// and with one, becomes one ClipGradient node (float32 and float64, odd sizes, NaN and
    /// infinities in x and dY, [1, 1, 1]-shaped bounds): bit-identical.
    func testClipGradientFusesExactly() throws {
        for dtype in [DType.float32, .float64] {
            let consts = ["lo": dtype == .float64 ? Tensor(shape: [1, 1, 1], scalars: [-0.5]) : Tensor(shape: [1, 1, 1], scalars: [Float(-0.5)]),
                          "hi": scalar(dtype, 2.5), "zero": scalar(dtype, 0)]
            let m = model(dtype, [("x", [2, 9, 301]), ("dy", [2, 9, 301])], consts, [
                Node(opType: "Less", inputs: ["x", "lo"], outputs: ["l"]),
                Node(opType: "Not", inputs: ["l"], outputs: ["nl"]),
                Node(opType: "Greater", inputs: ["x", "hi"], outputs: ["g"]),
                Node(opType: "Not", inputs: ["g"], outputs: ["ng"]),
                Node(opType: "And", inputs: ["nl", "ng"], outputs: ["mask"]),
                Node(opType: "Where", inputs: ["mask", "dy", "zero"], outputs: ["dx"]),
                Node(opType: "Greater", inputs: ["x", "hi"], outputs: ["g2"]),
                Node(opType: "Not", inputs: ["g2"], outputs: ["ng2"]),
                Node(opType: "Where", inputs: ["ng2", "dy", "zero"], outputs: ["dx2"]),
            ], outputs: ["dx", "dx2"])
            let o = try optimized(m)
            XCTAssertEqual(opTypes(o), ["ClipGradient", "ClipGradient"], "\(dtype)")
            XCTAssertEqual(o.graph.nodes[0].inputs, ["dy", "x", "lo", "hi", "zero"])
            XCTAssertEqual(o.graph.nodes[1].inputs, ["dy", "x", "", "hi", "zero"])
            try assertBitIdentical(m, ["x": values(dtype, [2, 9, 301], seed: 4, scale: 4), "dy": values(dtype, [2, 9, 301], seed: 5)], "clip grad \(dtype)")
        }
    }

    /// The pattern stays as written where a mask value is read elsewhere; where dY broadcasts (a
    /// [6] row under [4, 6]), the fill is a row and a bound a column, it fuses and the broadcasts
    /// give the ops' own bits.
    func testClipGradientPatternsThatStayAndBroadcasts() throws {
        let nodes = [
            Node(opType: "Less", inputs: ["x", "lo"], outputs: ["l"]),
            Node(opType: "Not", inputs: ["l"], outputs: ["nl"]),
            Node(opType: "Where", inputs: ["nl", "dy", "fill"], outputs: ["dx"]),
        ]
        let shared = model(.float32, [("x", [4, 6]), ("dy", [4, 6]), ("fill", [])], ["lo": Tensor(scalar: Float(0))], nodes, outputs: ["dx", "nl"])
        XCTAssertEqual(opTypes(try optimized(shared)), ["Less", "Not", "Where"], "the mask is a graph output")
        let broadcast = model(.float32, [("x", [4, 6]), ("dy", [6]), ("fill", [6]), ("lo", [4, 1])], [:], nodes, outputs: ["dx"])
        XCTAssertEqual(opTypes(try optimized(broadcast)), ["ClipGradient"])
        try assertBitIdentical(broadcast, ["x": values(.float32, [4, 6], seed: 6), "dy": values(.float32, [6], seed: 7),
                                           "fill": values(.float32, [6], seed: 8), "lo": values(.float32, [4, 1], seed: 9, scale: 1)], "broadcasts")
        let fused = model(.float32, [("x", [3, 40_000]), ("dy", [3, 40_000]), ("fill", [])], ["lo": Tensor(scalar: Float(0))], nodes, outputs: ["dx"])
        XCTAssertEqual(opTypes(try optimized(fused)), ["ClipGradient"])
        try assertBitIdentical(fused, ["x": values(.float32, [3, 40_000], seed: 10), "dy": values(.float32, [3, 40_000], seed: 11),
                                       "fill": Tensor(scalar: Float(-7))], "fill -7, across threads")
    }

    /// Hardswish's backward as the gradient rules write it: dM = dY / 6, dX = dM·c + Clip's
    /// gradient of dM·x: the ClipGradient joins the chain of the product before it (its dY), and
    /// the sum joins the other product's chain; bit-identical, float32 and float64.
    func testClipGradientJoinsElementwiseChains() throws {
        for dtype in [DType.float32, .float64] {
            let consts = ["six": scalar(dtype, 6), "zero": scalar(dtype, 0), "lo": scalar(dtype, 0)]
            let m = model(dtype, [("x", [2, 3, 17, 19]), ("c", [2, 3, 17, 19]), ("dy", [2, 3, 17, 19])], consts, [
                Node(opType: "Div", inputs: ["dy", "six"], outputs: ["dm"]),
                Node(opType: "Mul", inputs: ["dm", "c"], outputs: ["p"]),
                Node(opType: "Mul", inputs: ["dm", "x"], outputs: ["q"]),
                Node(opType: "Less", inputs: ["x", "lo"], outputs: ["l"]),
                Node(opType: "Not", inputs: ["l"], outputs: ["nl"]),
                Node(opType: "Greater", inputs: ["x", "six"], outputs: ["g"]),
                Node(opType: "Not", inputs: ["g"], outputs: ["ng"]),
                Node(opType: "And", inputs: ["nl", "ng"], outputs: ["mask"]),
                Node(opType: "Where", inputs: ["mask", "q", "zero"], outputs: ["w"]),
                Node(opType: "Sum", inputs: ["p", "w"], outputs: ["dx"]),
            ], outputs: ["dx"])
            let o = try optimized(m)
            XCTAssertEqual(opTypes(o), ["Div", "ElementwiseChain", "ElementwiseChain"], "\(dtype)")
            XCTAssertEqual(Set(o.graph.nodes.dropFirst().map { ops($0).joined(separator: " ") }), ["Mul Add", "Mul ClipGradient"], "\(dtype)")
            try assertBitIdentical(m, ["x": values(dtype, [2, 3, 17, 19], seed: 12), "c": values(dtype, [2, 3, 17, 19], seed: 13),
                                       "dy": values(dtype, [2, 3, 17, 19], seed: 14)], "hardswish backward \(dtype)")
        }
    }

    /// End to end: the gradient graph the artifacts builder writes for Hardswish written out
    /// (MatMul, Add 3, Clip 0..6, Mul, Div 6, a sum of squares as the loss) gets ClipGradient nodes,
    /// and its parameter gradient has the same bits with the pass on and off.
    func testClipGradientOfTheRuleMatches() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(3), .value(50)]))]
        g.setInitializer("W", values(.float32, [50, 7], seed: 10, scale: 0.5))
        for (name, v) in [("zero", 0.0), ("three", 3), ("six", 6)] { g.setInitializer(name, scalar(.float32, v)) }
        g.nodes = [
            Node(opType: "MatMul", inputs: ["x", "W"], outputs: ["h"]),
            Node(opType: "Add", inputs: ["h", "three"], outputs: ["a"]),
            Node(opType: "Clip", inputs: ["a", "zero", "six"], outputs: ["c"]),
            Node(opType: "Mul", inputs: ["h", "c"], outputs: ["m"]),
            Node(opType: "Div", inputs: ["m", "six"], outputs: ["y"]),
            Node(opType: "Mul", inputs: ["y", "y"], outputs: ["sq"]),
            Node(opType: "ReduceSum", inputs: ["sq"], outputs: ["loss"], attributes: ["keepdims": .int(0)]),
        ]
        g.outputs = [ValueInfo(name: "loss", type: .tensor(.float32, shape: []))]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        let gradient = try TrainingArtifacts.build(from: m, options: .init(loss: .output("loss"), requiresGrad: ["W"])).gradientGraph
        let fused = try optimized(gradient).graph.nodes
        XCTAssertTrue(fused.contains { $0.opType == "ClipGradient" || ops($0).contains("ClipGradient") }, "\(fused.map(\.opType))")
        XCTAssertFalse(fused.contains { $0.opType == "Where" }, "\(fused.map(\.opType))")
        var feeds: [String: Tensor] = [:]
        for (k, input) in gradient.graph.inputs.enumerated() {
            guard case .tensor(_, let dims?)? = input.type else { continue }
            feeds[input.name] = values(.float32, dims.map { if case .value(let v) = $0 { return v } else { return 1 } }, seed: 20 + UInt64(k), scale: 4)
        }
        let without = try withPassesDisabled("clip-gradient-fusion") { try InferenceSession(model: gradient).run(tensors: feeds) }
        let with = try InferenceSession(model: gradient).run(tensors: feeds)
        XCTAssertFalse(without.isEmpty)
        for (name, reference) in without {
            let a = try with[name]?.doubles() ?? [], r = try reference.doubles()
            XCTAssertEqual(a.count, r.count, name)
            XCTAssertEqual(zip(a, r).filter { !($0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN)) }.count, 0, name)
        }
    }
}
