import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// Every unary op registered through registerFloatUnary / registerNumericUnary declares its input
/// in place: run where its input dies (Neg → op → Neg), for every element type it takes, at sizes
/// with and without a vector tail and above one thread chunk, its output must take the input's
/// block and be bit-identical to the run without the memory plan, the feeds untouched.
final class UnaryInPlaceTests: XCTestCase {
    static let floatOps = ["Reciprocal", "Floor", "Ceil", "Round", "Sqrt", "Exp", "Log", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan",
                           "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Erf", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu",
                           "HardSigmoid", "HardSwish", "Sigmoid", "Swish", "Tanh", "Softplus", "Softsign", "Mish", "ThresholdedRelu"]
    static let numericOps = ["Abs", "Neg", "Sign", "Relu", "Shrink"]

    /// y = Neg(op(Neg(x)[, Neg(x2)][, bias])): the op's full-size inputs are values that die at it.
    private func run(_ op: String, domain: String, _ x: Tensor, second: Tensor?, bias: Tensor?, attributes: [String: Attribute],
                     memoryPlan: Bool) throws -> Tensor {
        var graph = Graph()
        var feeds: [String: Value] = ["x": .tensor(x)]
        graph.nodes = [Node(opType: "Neg", inputs: ["x"], outputs: ["a"])]
        var inputs = ["a"]
        if let second {
            feeds["x2"] = .tensor(second)
            graph.nodes.append(Node(opType: "Neg", inputs: ["x2"], outputs: ["a2"]))
            inputs.append("a2")
        }
        if let bias {
            feeds["bias"] = .tensor(bias)
            inputs.append("bias")
        }
        graph.nodes += [Node(opType: op, domain: domain, inputs: inputs, outputs: ["b"], attributes: attributes),
                        Node(opType: "Neg", inputs: ["b"], outputs: ["y"])]
        graph.inputs = feeds.keys.sorted().map { ValueInfo(name: $0, type: nil) }
        graph.outputs = [ValueInfo(name: "y", type: nil)]
        var model = Model(graph: graph)
        model.opsetImports = ["": op == "Swish" ? 24 : 22, "com.microsoft": 1]
        var options = SessionOptions()
        options.optimize = false
        options.memoryPlan = memoryPlan
        return try XCTUnwrap(try InferenceSession(model: model, options: options).run(feeds)["y"]?.tensor, op)
    }

    private func check(_ op: String, domain: String = "", _ x: Tensor, second: Tensor? = nil, bias: Tensor? = nil,
                       attributes: [String: Attribute] = [:]) throws {
        let feed = Array(x.rawBytes)
        let off = try run(op, domain: domain, x, second: second, bias: bias, attributes: attributes, memoryPlan: false)
        let taken = BufferDonation.takenCount.load(ordering: .relaxed)
        let on = try run(op, domain: domain, x, second: second, bias: bias, attributes: attributes, memoryPlan: true)
        let handed = BufferDonation.takenCount.load(ordering: .relaxed) - taken
        // Neg's output dies at the op and the op's at the last Neg: two blocks handed over.
        XCTAssertEqual(handed, 2, "\(op) \(x.dtype) [\(x.count)]: blocks written over")
        XCTAssertEqual(on.dtype, x.dtype, op)
        XCTAssertTrue(on.rawBytes.elementsEqual(off.rawBytes), "\(op) \(x.dtype) [\(x.count)]: in place differs")
        XCTAssertTrue(x.rawBytes.elementsEqual(feed), "\(op): the feed changed")
    }

    private func values(_ n: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<n).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Double(state >> 11) / Double(1 << 53)) * 8 - 4
        }
    }

    func testEveryUnaryOpInPlaceMatchesTheCopy() throws {
        // 13: a vector tail only; 40_003: above one thread chunk (16384) with a tail.
        for n in [1, 13, 40_003] {
            let x = Tensor(shape: [n], scalars: values(n, seed: UInt64(n)))
            for op in Self.floatOps + Self.numericOps {
                try check(op, x)
                try check(op, Tensor(shape: [n], scalars: x.scalars(as: Float.self).map(Double.init)))
                try check(op, try x.cast(to: .float16))
            }
            try check("Gelu", x, attributes: ["approximate": .string("tanh")])
            for op in Self.numericOps {
                try check(op, try x.cast(to: .int32))
                try check(op, try x.cast(to: .int8))
            }
        }
    }

    /// The com.microsoft activations and their gradients (dY and X or Y both die at the op).
    func testMicrosoftActivationsInPlaceMatchTheCopy() throws {
        let ms = "com.microsoft"
        for (rows, cols) in [(1, 13), (3, 40), (700, 64)] {
            let n = rows * cols
            let x = Tensor(shape: [rows, cols], scalars: values(n, seed: UInt64(n)))
            let dy = Tensor(shape: [rows, cols], scalars: values(n, seed: UInt64(n + 1)))
            let bias = Tensor(shape: [cols], scalars: values(cols, seed: 3))
            for op in ["Gelu", "FastGelu", "QuickGelu"] { try check(op, domain: ms, x) }
            try check("BiasGelu", domain: ms, x, bias: bias)
            try check("FastGelu", domain: ms, x, bias: bias)
            for op in ["ReluGrad", "SigmoidGrad", "TanhGrad", "GeluGrad", "FastGeluGrad", "QuickGeluGrad", "LeakyReluGrad"] {
                try check(op, domain: ms, dy, second: x)
            }
            try check("BiasGeluGrad_dX", domain: ms, dy, second: x, bias: bias)
            try check("BiasFastGeluGrad_dX", domain: ms, dy, second: x, bias: bias)
        }
    }
}
