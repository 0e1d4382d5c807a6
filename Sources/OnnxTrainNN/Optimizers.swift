import Foundation
import OnnxTrain

/// The base of the model API's optimizers (PyTorch's `torch.optim.Optimizer`).
///
/// An update is an optimizer graph run by an `InferenceSession`, through the same
/// com.microsoft kernels as onnxruntime's training artifacts (SGDOptimizerV2, AdamWOptimizer):
/// the parameters' tensors are fed in sequences and updated where they lie. The graph depends
/// only on which parameters have gradients (and, for SGD, which have a momentum buffer yet), so
/// a training loop compiles it once.
open class NNOptimizer {
    /// The parameters this optimizer updates, in order.
    public let parameters: [NNTensor]
    /// The learning rate of the next step (overridden by `schedule` when one is set).
    public var learningRate: Float
    /// A schedule giving the learning rate of each step from the number of steps taken.
    public var schedule: LearningRateSchedule?
    /// Steps taken.
    public internal(set) var stepCount = 0
    /// Per parameter (same order as `parameters`), its state by onnxruntime's checkpoint keys:
    /// "momentum0" (SGD's momentum buffer, Adam's first moment) and "momentum1" (Adam's second moment).
    public internal(set) var state: [[String: Tensor]]
    /// Steps each parameter has taken (Adam's bias correction counts them per parameter, as PyTorch does).
    var parameterSteps: [Int]
    private var sessions: [String: InferenceSession] = [:]

    init(parameters: [NNTensor], learningRate: Float) {
        self.parameters = parameters
        self.learningRate = learningRate
        state = parameters.map { _ in [:] }
        parameterSteps = parameters.map { _ in 0 }
    }

    /// Clears every parameter's gradient (PyTorch's `zero_grad()`, which sets them to None).
    public func zeroGrad() {
        for p in parameters { p.grad = nil }
    }

    /// Updates every parameter that has a gradient; parameters without one are left alone, as in PyTorch.
    /// - Throws: `.training` when a gradient's shape differs from its parameter's, and kernel errors.
    public func step() throws {
        if let schedule { learningRate = schedule(stepCount) }
        let active = parameters.indices.filter { parameters[$0].grad != nil }
        for i in active where parameters[i].grad!.shape != parameters[i].shape || parameters[i].grad!.dtype != parameters[i].dtype {
            throw OnnxTrainError.training("optimizer: the gradient \(parameters[i].grad!) does not fit parameter \(i) \(parameters[i].value)")
        }
        if !active.isEmpty { try update(active) }
        stepCount += 1
    }

    /// Runs the optimizer graph over parameters `active`.
    func update(_ active: [Int]) throws {
        throw OnnxTrainError.unsupported("\(type(of: self)) does not implement an update")
    }

    /// The compiled graph for `key`, built by `build` the first time.
    func session(_ key: String, _ build: () -> Model) throws -> InferenceSession {
        if let s = sessions[key] { return s }
        let s = try InferenceSession(model: build())
        sessions[key] = s
        return s
    }

    static func sequence(_ tensors: [Tensor]) -> Value { .sequence(tensors.map { .tensor($0) }, elementType: nil) }

    static func optimizerModel(_ graph: Graph) -> Model {
        var model = Model(graph: graph)
        model.irVersion = 9
        model.producerName = "onnx-train"
        model.opsetImports = ["": 18, "com.microsoft": 1]
        return model
    }
}

/// Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay, exactly
/// as `torch.optim.SGD`: g += wd·w; buf = g on a parameter's first step, else
/// momentum·buf + (1 − dampening)·g; d = g + momentum·buf (Nesterov) or buf; w −= lr·d.
public final class SGD: NNOptimizer {
    /// PyTorch's hyper-parameters of the same names.
    public let momentum: Float, dampening: Float, weightDecay: Float
    /// Nesterov momentum.
    public let nesterov: Bool

    /// PyTorch's `torch.optim.SGD(params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False)`.
    public init(_ parameters: [NNTensor], lr: Float, momentum: Float = 0, dampening: Float = 0, weightDecay: Float = 0,
                nesterov: Bool = false) {
        self.momentum = momentum
        self.dampening = dampening
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        super.init(parameters: parameters, learningRate: lr)
    }

    override func update(_ active: [Int]) throws {
        let fresh = active.map { state[$0]["momentum0"] == nil }
        let dtype = parameters[active[0]].dtype
        let key = "\(dtype)|" + fresh.map { $0 ? "n" : "o" }.joined()
        let session = try self.session(key) { buildGraph(fresh: fresh, dtype: dtype) }
        var feeds: [String: Value] = [
            "learning_rate": .tensor(Tensor(shape: [1], scalars: [learningRate])),
            "params": NNOptimizer.sequence(active.map { parameters[$0].value }),
            "gradients": NNOptimizer.sequence(active.map { parameters[$0].grad! }),
        ]
        if momentum != 0 {
            feeds["first_order_moments"] = NNOptimizer.sequence(active.map { state[$0]["momentum0"] ?? Tensor(zeros: dtype, shape: parameters[$0].shape) })
        }
        let buffers = momentum != 0 ? active.indices.map { "buffer_\($0)" } : []
        let results = try session.run(feeds, fetches: ["update_completed"] + buffers)
        for (k, i) in active.enumerated() where momentum != 0 {
            guard let b = results["buffer_\(k)"]?.tensor else { throw OnnxTrainError.training("SGD: no momentum buffer computed") }
            state[i]["momentum0"] = b
        }
        for i in active { parameterSteps[i] += 1 }
    }

    private func buildGraph(fresh: [Bool], dtype: DType) -> Model {
        var b = GraphBuilder(Graph())
        let sequenceType = ValueType.sequence(.tensor(dtype, shape: nil))
        b.addInput(ValueInfo(name: "learning_rate", type: .tensor(.float32, shape: [.value(1)])))
        b.addInput(ValueInfo(name: "params", type: sequenceType))
        b.addInput(ValueInfo(name: "gradients", type: sequenceType))
        if momentum != 0 { b.addInput(ValueInfo(name: "first_order_moments", type: sequenceType)) }
        func scalar(_ v: Float, _ name: String) -> String {
            b.constant(dtype == .float64 ? Tensor(scalar: Double(v)) : Tensor(scalar: v), name: name)
        }
        var updates: [String] = []
        var outputs: [ValueInfo] = []
        for (i, isFresh) in fresh.enumerated() {
            let index = b.constant(Tensor(scalar: Int64(i)), name: "index_\(i)")
            var g = b.op("SequenceAt", ["gradients", index], output: "gradient_\(i)")
            if weightDecay != 0 {
                let w = b.op("SequenceAt", ["params", index], output: "param_\(i)")
                g = b.op("Add", [g, b.op("Mul", [w, scalar(weightDecay, "weight_decay")])], output: "decayed_gradient_\(i)")
            }
            var d = g
            if momentum != 0 {
                let buffer: String
                if isFresh {
                    buffer = b.op("Identity", [g], output: "buffer_\(i)")
                } else {
                    let v = b.op("SequenceAt", ["first_order_moments", index], output: "velocity_\(i)")
                    let kept = b.op("Mul", [v, scalar(momentum, "momentum")])
                    let added = dampening == 0 ? g : b.op("Mul", [g, scalar(1 - dampening, "one_minus_dampening")])
                    buffer = b.op("Add", [kept, added], output: "buffer_\(i)")
                }
                outputs.append(ValueInfo(name: buffer, type: nil))
                d = nesterov ? b.op("Add", [g, b.op("Mul", [buffer, scalar(momentum, "momentum")])], output: "nesterov_\(i)") : buffer
            }
            updates.append(d)
        }
        let seq = b.op("SequenceConstruct", updates, output: "updates")
        let flag = b.op("SGDOptimizerV2", domain: "com.microsoft", ["learning_rate", "params", seq], output: "update_completed")
        var graph = b.graph
        graph.name = "sgd"
        graph.outputs = [ValueInfo(name: flag, type: .tensor(.bool, shape: [.value(1)]))] + outputs
        return NNOptimizer.optimizerModel(graph)
    }
}

/// Adam (`torch.optim.Adam`, weight decay as L2 added to the gradient) and AdamW
/// (`torch.optim.AdamW`, decoupled decay w −= lr·wd·w): com.microsoft AdamWOptimizer in
/// PyTorch mode (adam_mode 0) with bias correction, run once per group of parameters that have
/// taken the same number of steps.
public class Adam: NNOptimizer {
    /// The moments' decay rates (β1, β2).
    public let betas: (Float, Float)
    /// Added to the second moment's square root.
    public let eps: Float
    /// L2 (Adam) or decoupled (AdamW) weight decay.
    public let weightDecay: Float
    /// Decoupled weight decay (AdamW) rather than L2 (Adam).
    let decoupled: Bool

    /// PyTorch's `torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)`.
    public convenience init(_ parameters: [NNTensor], lr: Float = 1e-3, betas: (Float, Float) = (0.9, 0.999), eps: Float = 1e-8,
                            weightDecay: Float = 0) {
        self.init(parameters, lr: lr, betas: betas, eps: eps, weightDecay: weightDecay, decoupled: false)
    }

    init(_ parameters: [NNTensor], lr: Float, betas: (Float, Float), eps: Float, weightDecay: Float, decoupled: Bool) {
        self.betas = betas
        self.eps = eps
        self.weightDecay = weightDecay
        self.decoupled = decoupled
        super.init(parameters: parameters, learningRate: lr)
    }

    override func update(_ active: [Int]) throws {
        // Parameters that joined later have their own step count; each count is one kernel call.
        let groups = Dictionary(grouping: active) { parameterSteps[$0] }
        for step in groups.keys.sorted() {
            let members = groups[step]!
            let dtype = parameters[members[0]].dtype
            let session = try self.session("\(dtype)|\(members.count)") { buildGraph(count: members.count, dtype: dtype) }
            for i in members where state[i]["momentum0"] == nil {
                state[i]["momentum0"] = Tensor(zeros: dtype, shape: parameters[i].shape)
                state[i]["momentum1"] = Tensor(zeros: dtype, shape: parameters[i].shape)
            }
            let feeds: [String: Value] = [
                "learning_rate": .tensor(Tensor(shape: [1], scalars: [learningRate])),
                "step": .tensor(Tensor(shape: [1], scalars: [Int64(step + 1)])),
                "params": NNOptimizer.sequence(members.map { parameters[$0].value }),
                "gradients": NNOptimizer.sequence(members.map { parameters[$0].grad! }),
                "first_order_moments": NNOptimizer.sequence(members.map { state[$0]["momentum0"]! }),
                "second_order_moments": NNOptimizer.sequence(members.map { state[$0]["momentum1"]! }),
            ]
            let flag = try session.run(feeds, fetches: ["update_completed"])["update_completed"]?.tensor
            guard flag?.scalarDouble() == 1 else { throw OnnxTrainError.training("\(decoupled ? "AdamW" : "Adam"): the update did not run") }
            for i in members { parameterSteps[i] += 1 }
        }
    }

    private func buildGraph(count: Int, dtype: DType) -> Model {
        var b = GraphBuilder(Graph())
        let sequenceType = ValueType.sequence(.tensor(dtype, shape: nil))
        b.addInput(ValueInfo(name: "learning_rate", type: .tensor(.float32, shape: [.value(1)])))
        b.addInput(ValueInfo(name: "step", type: .tensor(.int64, shape: [.value(1)])))
        for name in ["params", "gradients", "first_order_moments", "second_order_moments"] {
            b.addInput(ValueInfo(name: name, type: sequenceType))
        }
        var gradients = "gradients"
        if !decoupled && weightDecay != 0 {
            // Adam's L2 decay: g + wd·w goes into the moments, as torch.optim.Adam does.
            let wd = b.constant(dtype == .float64 ? Tensor(scalar: Double(weightDecay)) : Tensor(scalar: weightDecay), name: "weight_decay")
            let decayed = (0..<count).map { i -> String in
                let index = b.constant(Tensor(scalar: Int64(i)), name: "index_\(i)")
                let w = b.op("SequenceAt", ["params", index]), g = b.op("SequenceAt", ["gradients", index])
                return b.op("Add", [g, b.op("Mul", [w, wd])], output: "decayed_gradient_\(i)")
            }
            gradients = b.op("SequenceConstruct", decayed, output: "decayed_gradients")
        }
        let flag = b.op("AdamWOptimizer", domain: "com.microsoft",
                        ["learning_rate", "step", "params", gradients, "first_order_moments", "second_order_moments"],
                        output: "update_completed",
                        attributes: ["alpha": .float(betas.0), "beta": .float(betas.1), "epsilon": .float(eps),
                                     "weight_decay": .float(decoupled ? weightDecay : 0), "correct_bias": .int(1), "adam_mode": .int(0)])
        var graph = b.graph
        graph.name = decoupled ? "adamw" : "adam"
        graph.outputs = [ValueInfo(name: flag, type: .tensor(.bool, shape: [.value(1)]))]
        return NNOptimizer.optimizerModel(graph)
    }
}

/// AdamW (`torch.optim.AdamW`): Adam with decoupled weight decay, PyTorch's defaults (wd 0.01).
public final class AdamW: Adam {
    /// PyTorch's `torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)`.
    public init(_ parameters: [NNTensor], lr: Float = 1e-3, betas: (Float, Float) = (0.9, 0.999), eps: Float = 1e-8, weightDecay: Float = 1e-2) {
        super.init(parameters, lr: lr, betas: betas, eps: eps, weightDecay: weightDecay, decoupled: true)
    }
}
