import Foundation
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// GELU written out with Erf (PyTorch's export of nn.GELU, BERT's and ViT's activation) and its
/// gradient as the rules write it become com.microsoft Gelu and GeluGrad in a training graph:
/// the pass fires on the whole pattern, not when a value in it is read elsewhere or a
/// constant differs, and both the fused and the plain graph stay within float32 rounding of a
/// float64 computation of the same maths. Also the type rule of ElementwiseChain.
final class GeluFusionTests: XCTestCase {
    let u = Double(Float.ulpOfOne) / 2

    func values(_ shape: [Int], seed: UInt64, scale: Double) -> [Float] {
        var g = RandomGenerator(seed: seed)
        return (0..<shape.reduce(1, *)).map { _ in Float((g.nextDouble() * 2 - 1) * scale) }
    }

    /// x [rows, k] · W [k, n], then GELU as PyTorch exports it; with `loss`, ReduceSum(y·y).
    func model(rows: Int, k: Int, n: Int, sqrt2: Float = Float(2).squareRoot(), loss: Bool) -> Model {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(rows), .value(k)]))]
        g.setInitializer("W", Tensor(shape: [k, n], scalars: values([k, n], seed: 7, scale: 0.6)))
        g.setInitializer("sqrt2", Tensor(scalar: sqrt2))
        g.setInitializer("one", Tensor(scalar: Float(1)))
        g.setInitializer("half", Tensor(scalar: Float(0.5)))
        g.nodes = [
            Node(opType: "MatMul", inputs: ["x", "W"], outputs: ["h"]),
            Node(opType: "Div", inputs: ["h", "sqrt2"], outputs: ["d"]),
            Node(opType: "Erf", inputs: ["d"], outputs: ["e"]),
            Node(opType: "Add", inputs: ["e", "one"], outputs: ["a"]),
            Node(opType: "Mul", inputs: ["h", "a"], outputs: ["m"]),
            Node(opType: "Mul", inputs: ["m", "half"], outputs: ["y"]),
        ]
        if loss {
            g.nodes += [Node(opType: "Mul", inputs: ["y", "y"], outputs: ["sq"]),
                        Node(opType: "ReduceSum", inputs: ["sq"], outputs: ["loss"], attributes: ["keepdims": .int(0)])]
            g.outputs = [ValueInfo(name: "loss", type: .tensor(.float32, shape: []))]
        } else {
            g.outputs = [ValueInfo(name: "y", type: nil)]
        }
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    static func phi(_ x: Double) -> Double { 0.5 * (1 + erf(x / 2.0.squareRoot())) }
    static func gelu(_ x: Double) -> Double { x * phi(x) }
    static func geluDerivative(_ x: Double) -> Double { phi(x) + x * exp(-0.5 * x * x) / (2 * Double.pi).squareRoot() }

    /// Inference (no gradient): the pass leaves the GELU to elementwise-fusion's chain (the ops'
    /// own values in one pass); y within float32 rounding of x·Φ(x) of the float64 product, for
    /// the optimised graph and the graph run as written.
    func testInferenceGeluStaysAChain() throws {
        let (rows, k, n) = (33, 40, 9)
        let m = model(rows: rows, k: k, n: n, loss: false)
        XCTAssertEqual(opTypes(try optimized(m)), ["MatMul", "ElementwiseChain"])
        let xs = values([rows, k], seed: 3, scale: 2)
        let w: [Float] = m.graph.initializers["W"]!.scalars()
        var plainOptions = SessionOptions()
        plainOptions.optimize = false
        let feeds = ["x": Tensor(shape: [rows, k], scalars: xs)]
        for session in [try InferenceSession(model: m), try InferenceSession(model: m, options: plainOptions)] {
            let y = try session.run(tensors: feeds)["y"]!.doubles()
            for i in 0..<rows {
                for j in 0..<n {
                    var h = 0.0, size = 0.0
                    for q in 0..<k { h += Double(xs[i * k + q]) * Double(w[q * n + j]); size += abs(Double(xs[i * k + q]) * Double(w[q * n + j])) }
                    // The product's rounding (k + 1 roundings of the sum's size) through a slope of
                    // at most 1.13, then the activation's: Φ to a few roundings of 1 (absolute:
                    // 1 + erf cancels for negative h), times h.
                    let r = GeluFusionTests.gelu(h)
                    XCTAssertLessThanOrEqual(abs(y[i * n + j] - r), 1.13 * Double(k + 1) * u * size + 16 * u * abs(h) + 1e-30, "y[\(i), \(j)]")
                }
            }
        }
    }

    /// Training: the gradient graph the artifacts builder writes gets Gelu and GeluGrad and no
    /// Erf, Exp or Neg; the loss and W's gradient are within float32 rounding of float64
    /// (dW = xᵀ·(2y·GELU'(h))), with the pass on and off.
    func testGradientBecomesGeluGrad() throws {
        let (rows, k, n) = (64, 50, 7)
        let m = model(rows: rows, k: k, n: n, loss: true)
        let gradient = try TrainingArtifacts.build(from: m, options: .init(loss: .output("loss"), requiresGrad: ["W"])).gradientGraph
        XCTAssertTrue(gradient.graph.nodes.contains { $0.opType == "Erf" })
        let types = Set(opTypes(try optimized(gradient)))
        XCTAssertTrue(types.isSuperset(of: ["Gelu", "GeluGrad"]), "\(types)")
        XCTAssertTrue(types.isDisjoint(with: ["Erf", "Exp", "Neg", "Div"]), "\(types)")

        let xs = values([rows, k], seed: 5, scale: 2), w = values([k, n], seed: 6, scale: 0.6)
        let feeds = ["x": Tensor(shape: [rows, k], scalars: xs), "W": Tensor(shape: [k, n], scalars: w)]
        // float64: h, y, dH = 2y·GELU'(h), dW = xᵀ·dH; each dW element's size Σ|x|·|dH| and h's Σ|x|·|W|.
        // yError: as in testForwardBecomesGelu; dHError: h's error through |d(2y·GELU')/dh| <= 3,
        // and the activation's (y's and GELU''s absolute errors, each a few roundings times |h|).
        var dH = [Double](repeating: 0, count: rows * n), dHError = dH, loss = 0.0, lossError = 0.0
        for i in 0..<rows {
            for j in 0..<n {
                var h = 0.0, hSize = 0.0
                for q in 0..<k { h += Double(xs[i * k + q]) * Double(w[q * n + j]); hSize += abs(Double(xs[i * k + q]) * Double(w[q * n + j])) }
                let y = GeluFusionTests.gelu(h)
                loss += y * y
                lossError += 2 * abs(y) * (1.13 * Double(k + 1) * u * hSize + 16 * u * abs(h)) + Double(rows * n + 2) * u * y * y
                dH[i * n + j] = 2 * y * GeluFusionTests.geluDerivative(h)
                dHError[i * n + j] = 3 * Double(k + 1) * u * hSize + 64 * u * abs(h) * max(1, abs(h))
            }
        }
        for disabled in ["", "gelu-fusion"] {
            let out = try withPassesDisabled(disabled) { try InferenceSession(model: gradient).run(tensors: feeds) }
            let got = try out["loss"]!.doubles()[0]
            XCTAssertLessThanOrEqual(abs(got - loss), lossError, "loss (\(disabled))")
            let dW = try out["W_grad"]!.doubles()
            XCTAssertEqual(dW.count, k * n)
            for q in 0..<k {
                for j in 0..<n {
                    // dH's errors carried through the rows-long sum, plus the sum's own rounding.
                    var r = 0.0, size = 0.0, carried = 0.0
                    for i in 0..<rows {
                        let xv = Double(xs[i * k + q])
                        r += xv * dH[i * n + j]; size += abs(xv * dH[i * n + j]); carried += abs(xv) * dHError[i * n + j]
                    }
                    XCTAssertLessThanOrEqual(abs(dW[q * n + j] - r), carried + Double(rows + 1) * u * size + 1e-30, "dW[\(q), \(j)] (\(disabled))")
                }
            }
        }
    }

    /// Nothing changes when a value inside the pattern is read elsewhere (the Erf's output is a
    /// graph output) or a constant is not √2.
    func testPatternsThatStay() throws {
        let other = try TrainingArtifacts.build(from: model(rows: 4, k: 3, n: 2, sqrt2: 1.5, loss: true),
                                                options: .init(loss: .output("loss"), requiresGrad: ["W"])).gradientGraph
        XCTAssertTrue(Set(opTypes(try optimized(other))).isDisjoint(with: ["Gelu", "GeluGrad"]))
        // The training graph with its Erf's output also a graph output keeps Erf and its gradient.
        var training = try TrainingArtifacts.build(from: model(rows: 4, k: 3, n: 2, loss: true),
                                                   options: .init(loss: .output("loss"), requiresGrad: ["W"])).gradientGraph
        training.graph.outputs.append(ValueInfo(name: "e", type: nil))
        let types = opTypes(try optimized(training))
        XCTAssertFalse(types.contains("Gelu") || types.contains("GeluGrad"), "\(types)")
    }

    static func fastGelu(_ x: Double) -> Double { 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x))) }

    /// A Linear layer (x [rows, k] · W [k, n] + bias [n]) and then GELU: with `tanh`, GPT-2's
    /// gelu_new after a Gemm whose result is reshaped to [2, rows/2, n] (as its Conv1D exports),
    /// h³ as Pow(h, 3); else the erf form after a [2, rows/2, k] batch of rows (a MatMulBias).
    /// `alsoOutput` makes h a graph output too.
    func linearGelu(rows: Int, k: Int, n: Int, tanh: Bool, alsoOutput: Bool = false) -> Model {
        var g = Graph()
        let xShape = tanh ? [rows, k] : [2, rows / 2, k]
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: xShape.map { .value($0) }))]
        g.setInitializer("W", Tensor(shape: [k, n], scalars: values([k, n], seed: 7, scale: 0.6)))
        g.setInitializer("bias", Tensor(shape: [n], scalars: values([n], seed: 8, scale: 1)))
        g.setInitializer("shape", Tensor(shape: [3], scalars: [Int64(2), Int64(rows / 2), Int64(n)]))
        for (name, v) in [("sqrt2", Float(2).squareRoot()), ("one", 1), ("half", 0.5), ("three", 3), ("gamma", 0.044715),
                          ("a", Float((2 / Double.pi).squareRoot()))] as [(String, Float)] {
            g.setInitializer(name, Tensor(scalar: v))
        }
        if tanh {
            g.nodes = [
                Node(opType: "Gemm", inputs: ["x", "W", "bias"], outputs: ["g"]),
                Node(opType: "Reshape", inputs: ["g", "shape"], outputs: ["h"]),
                Node(opType: "Mul", inputs: ["h", "half"], outputs: ["m0"]),
                Node(opType: "Pow", inputs: ["h", "three"], outputs: ["cube"]),
                Node(opType: "Mul", inputs: ["cube", "gamma"], outputs: ["c1"]),
                Node(opType: "Add", inputs: ["h", "c1"], outputs: ["s"]),
                Node(opType: "Mul", inputs: ["s", "a"], outputs: ["i"]),
                Node(opType: "Tanh", inputs: ["i"], outputs: ["t"]),
                Node(opType: "Add", inputs: ["t", "one"], outputs: ["a1"]),
                Node(opType: "Mul", inputs: ["m0", "a1"], outputs: ["y"]),
            ]
        } else {
            g.nodes = [
                Node(opType: "MatMul", inputs: ["x", "W"], outputs: ["p"]),
                Node(opType: "Add", inputs: ["p", "bias"], outputs: ["h"]),
                Node(opType: "Div", inputs: ["h", "sqrt2"], outputs: ["d"]),
                Node(opType: "Erf", inputs: ["d"], outputs: ["e"]),
                Node(opType: "Add", inputs: ["e", "one"], outputs: ["a1"]),
                Node(opType: "Mul", inputs: ["h", "a1"], outputs: ["m"]),
                Node(opType: "Mul", inputs: ["m", "half"], outputs: ["y"]),
            ]
        }
        g.outputs = [ValueInfo(name: "y", type: nil)] + (alsoOutput ? [ValueInfo(name: "h", type: nil)] : [])
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    /// Inference: the GELU after a Linear layer becomes the MatMulBias's activation (the erf form
    /// after a batch of rows, GPT-2's tanh form after a Gemm and a Reshape, which stays after it);
    /// y within float32 rounding of the float64 activation of the float64 product, pass on and
    /// off, for a product small enough to run on one thread and one split over both (an odd n:
    /// an eight-lane tail in every row).
    func testInferenceGeluBecomesMatMulBiasActivation() throws {
        for tanh in [false, true] {
            for (rows, k, n) in [(6, 5, 9), (256, 64, 131)] {
                let m = linearGelu(rows: rows, k: k, n: n, tanh: tanh)
                let o = try optimized(m)
                XCTAssertEqual(opTypes(o), tanh ? ["MatMulBias", "Reshape"] : ["MatMulBias"], "tanh \(tanh)")
                XCTAssertEqual(o.graph.nodes[0].string("activation"), tanh ? "FastGelu" : "Gelu")
                let xs = values([rows, k], seed: 3, scale: 2)
                let w: [Float] = m.graph.initializers["W"]!.scalars(), bias: [Float] = m.graph.initializers["bias"]!.scalars()
                let xShape = tanh ? [rows, k] : [2, rows / 2, k]
                for disabled in ["", "gelu-into-matmul"] {
                    let out = try withPassesDisabled(disabled) { try InferenceSession(model: m).run(tensors: ["x": Tensor(shape: xShape, scalars: xs)])["y"]! }
                    XCTAssertEqual(out.shape, [2, rows / 2, n])
                    let y = try out.doubles()
                    for i in 0..<rows {
                        for j in 0..<n {
                            var h = Double(bias[j]), size = abs(Double(bias[j]))
                            for q in 0..<k { h += Double(xs[i * k + q]) * Double(w[q * n + j]); size += abs(Double(xs[i * k + q]) * Double(w[q * n + j])) }
                            // The product's rounding (k + 1 roundings of its size) through a slope of at
                            // most 1.13, then the activation's few roundings (absolute for negative h).
                            let r = tanh ? GeluFusionTests.fastGelu(h) : GeluFusionTests.gelu(h)
                            XCTAssertLessThanOrEqual(abs(y[i * n + j] - r), 1.13 * Double(k + 2) * u * size + 16 * u * abs(h) + 1e-30,
                                                     "y[\(i), \(j)] tanh \(tanh) (\(disabled))")
                        }
                    }
                }
            }
        }
    }

    /// The GELU stays written out when h is also read elsewhere (a graph output).
    func testInferenceGeluStaysWhenHIsRead() throws {
        for tanh in [false, true] {
            let types = opTypes(try optimized(linearGelu(rows: 4, k: 3, n: 2, tanh: tanh, alsoOutput: true)))
            XCTAssertTrue(types.contains("ElementwiseChain"), "\(types)")
        }
    }

    /// ElementwiseChain's output: its start's type, the start broadcast with the binary steps'
    /// operands; a Clip step's bounds do not widen it.
    func testTypeInferenceOfElementwiseChains() {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.symbol("b"), .value(1), .value(5)])),
                    ValueInfo(name: "bias", type: .tensor(.float32, shape: [.value(4), .value(1)])),
                    ValueInfo(name: "lo", type: .tensor(.float32, shape: [.value(1), .value(1), .value(1), .value(1)])),
                    ValueInfo(name: "hi", type: .tensor(.float32, shape: []))]
        g.nodes = [Node(opType: "ElementwiseChain", domain: internalDomain, inputs: ["x", "bias", "lo", "hi"], outputs: ["y"],
                        attributes: ["ops": .strings(["Add", "Clip", "Erf"]), "operands": .ints([1, 2, -1]),
                                     "chain_left": .ints([1, 1, 1]), "alphas": .floats([0, 0, 0])]),
                   Node(opType: "Relu", inputs: ["y"], outputs: ["z"])]
        let t = TypeInference(graph: g, opsets: ["": 17, internalDomain: 1])
        XCTAssertEqual(t["y"], TensorInfo(dtype: .float32, shape: [.symbol("b"), .value(4), .value(5)]))
        XCTAssertEqual(t["z"], TensorInfo(dtype: .float32, shape: [.symbol("b"), .value(4), .value(5)]))
    }
}
