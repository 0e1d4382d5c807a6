import OnnxTrain
import XCTest

/// Checks the autodiff's gradient of one node against float64 central finite differences.
///
/// The node's float outputs are folded into a scalar loss `sum_k sum(y_k * r_k)` with fixed
/// random weights r_k (so every output element gets a different upstream gradient), the graph
/// is differentiated with `Autodiff`, and each element of each checked input is perturbed by
/// +-h. Inputs are declared with their static shapes, so the rules see what an exporter states.
public struct GradientCheck {
    public var opType: String
    public var domain: String = ""
    public var opset: Int = 17
    public var inputs: [Tensor?]
    public var attributes: [String: Attribute] = [:]
    /// How many outputs the node has, and which of them feed the loss.
    public var outputs: Int = 1
    public var lossOutputs: [Int] = [0]
    /// Inputs to differentiate (default: every float64 input).
    public var wrt: [Int]?
    /// Inputs given as constant initializers instead of graph inputs (axes, shapes, pads, ...).
    public var constants: Set<Int> = []
    public var step: Double = 1e-6
    /// Builds a new session for every loss evaluation, so a random op (Dropout) draws the same
    /// values each time (a session's generator moves on from run to run).
    public var freshSessions = false

    public init(_ opType: String, domain: String = "", opset: Int = 17, _ inputs: [Tensor?], attributes: [String: Attribute] = [:],
                outputs: Int = 1, lossOutputs: [Int] = [0], wrt: [Int]? = nil, constants: Set<Int> = []) {
        self.opType = opType
        self.domain = domain
        self.opset = opset
        self.inputs = inputs
        self.attributes = attributes
        self.outputs = outputs
        self.lossOutputs = lossOutputs
        self.wrt = wrt
        self.constants = constants
    }

    /// Float64 tensor of `shape` with values uniform in [lo, hi).
    public static func random(_ shape: [Int], _ lo: Double = -1, _ hi: Double = 1, seed: UInt64 = 1) -> Tensor {
        var g = RandomGenerator(seed: seed)
        return Tensor(shape: shape, scalars: (0..<Tensor.elementCount(shape)).map { _ in lo + (hi - lo) * g.nextDouble() })
    }

    public static func ints(_ values: [Int], shape: [Int]? = nil) -> Tensor {
        Tensor(shape: shape ?? [values.count], scalars: values.map(Int64.init))
    }

    func model() throws -> (Model, [String]) {
        var graph = Graph()
        var names: [String] = []
        for (i, t) in inputs.enumerated() {
            guard let t else { names.append(""); continue }
            let name = "x\(i)"
            names.append(name)
            if constants.contains(i) {
                graph.setInitializer(name, t)
            } else {
                graph.inputs.append(ValueInfo(name: name, type: .tensor(t.dtype, shape: t.shape.map { .value($0) })))
            }
        }
        let outs = (0..<outputs).map { "y\($0)" }
        graph.nodes.append(Node(opType: opType, domain: domain, name: "node", inputs: names, outputs: outs, attributes: attributes))
        var terms: [String] = []
        for k in lossOutputs {
            let weight = "r\(k)"
            graph.nodes.append(Node(opType: "Mul", name: "weigh\(k)", inputs: [outs[k], weight], outputs: ["p\(k)"]))
            graph.nodes.append(Node(opType: "ReduceSum", name: "sum\(k)", inputs: ["p\(k)"], outputs: ["s\(k)"], attributes: ["keepdims": .int(0)]))
            terms.append("s\(k)")
        }
        graph.nodes.append(Node(opType: "Sum", name: "total", inputs: terms, outputs: ["loss"]))
        graph.outputs = [ValueInfo(name: "loss", type: .tensor(.float64, shape: []))]
        var model = Model(graph: graph)
        model.irVersion = 9
        model.opsetImports = ["": opset, "com.microsoft": 1]
        return (model, names)
    }

    /// The worst |analytic - numeric| / max(1, |numeric|) over every checked element.
    @discardableResult
    public func run(tolerance: Double = 1e-7, file: StaticString = #filePath, line: UInt = #line) throws -> Double {
        var (model, names) = try model()
        let checked = wrt ?? inputs.indices.filter { inputs[$0]?.dtype == .float64 && !constants.contains($0) }
        XCTAssertFalse(checked.isEmpty, "\(opType): nothing to differentiate", file: file, line: line)
        // Output shapes come from one forward run, so the loss weights fit them.
        var feeds: [String: Value] = [:]
        for (i, t) in inputs.enumerated() where t != nil && !constants.contains(i) { feeds[names[i]] = .tensor(t!) }
        var probe = model
        probe.graph.nodes = [model.graph.nodes[0]]
        probe.graph.outputs = (0..<outputs).map { ValueInfo(name: "y\($0)", type: nil) }
        let forward = try InferenceSession(model: probe, options: Self.options).run(feeds)
        for k in lossOutputs {
            guard let y = forward["y\(k)"]?.tensor else { throw KernelError("no output y\(k)") }
            model.graph.setInitializer("r\(k)", GradientCheck.random(y.shape, -1, 1, seed: 100 + UInt64(k)))
        }
        let params = checked.map { names[$0] }
        let result = try Autodiff.differentiate(model.graph, opsets: model.opsetImports, loss: "loss", parameters: params)
        var gradModel = model
        gradModel.graph = result.graph
        gradModel.graph.outputs = result.gradients.map { ValueInfo(name: $0.gradient, type: nil) }
        let analytic = try InferenceSession(model: gradModel, options: Self.options).run(feeds)
        let lossSession = try InferenceSession(model: model, options: Self.options)
        func loss(_ feeds: [String: Value]) throws -> Double {
            let session = freshSessions ? try InferenceSession(model: model, options: Self.options) : lossSession
            return try session.run(feeds)["loss"]!.tensor!.scalarDouble()!
        }
        var worst = 0.0
        for (i, (_, gradName)) in zip(checked, result.gradients) {
            let x = inputs[i]!
            let grad = try XCTUnwrap(analytic[gradName]?.tensor, file: file, line: line)
            XCTAssertEqual(grad.shape, x.shape, "\(opType): gradient of input \(i) has the wrong shape", file: file, line: line)
            let g = grad.scalars(as: Double.self)
            var values = x.scalars(as: Double.self)
            for e in values.indices {
                let saved = values[e]
                let h = step * max(1, abs(saved))
                values[e] = saved + h
                var f = feeds
                f[names[i]] = .tensor(Tensor(shape: x.shape, scalars: values))
                let plus = try loss(f)
                values[e] = saved - h
                f[names[i]] = .tensor(Tensor(shape: x.shape, scalars: values))
                let minus = try loss(f)
                values[e] = saved
                let numeric = (plus - minus) / (2 * h)
                let error = abs(g[e] - numeric) / max(1, abs(numeric))
                worst = max(worst, error)
                if error > tolerance {
                    XCTFail("\(opType) \(attributes.keys.sorted()): d/d input \(i)[\(e)] analytic \(g[e]) vs numeric \(numeric)", file: file, line: line)
                    return worst
                }
            }
        }
        GradientCheck.worstSeen = max(GradientCheck.worstSeen, worst)
        return worst
    }

    /// The worst relative error of every check run so far (printed by the suite, for the record).
    nonisolated(unsafe) public static var worstSeen = 0.0

    static var options: SessionOptions {
        var o = SessionOptions()
        o.seed = 7
        return o
    }
}
