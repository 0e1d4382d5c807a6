/// Builds optimizer graphs in memory, wired exactly like onnxruntime's `optimizer_model.onnx`
/// (inputs `learning_rate` float[1], `step` int64[1], sequences `params`, `gradients`,
/// `first_order_moments`, and `second_order_moments` for AdamW; one bool[1] output), so a
/// gradient graph, which comes without an optimizer model, trains through the same kind of
/// graph and the same in-place ops as onnxruntime's artifacts.
public enum OptimizerGraph {
    public enum Kind: Equatable {
        /// w -= lr * g (com.microsoft SGDOptimizerV2), as onnxruntime's OptimType.SGD.
        case sgd
        /// PyTorch SGD with momentum (dampening 0, no Nesterov): v = momentum * v + g; w -= lr * v.
        /// v is written in place (InPlaceAccumulatorV2 overwrite), w by SGDOptimizerV2.
        case sgdMomentum(momentum: Float)
        /// com.microsoft AdamWOptimizer; the defaults are onnxruntime's OptimType.AdamW artifact
        /// attributes (epsilon 1e-6, no weight decay, Hugging Face mode 1).
        case adamW(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-6, weightDecay: Float = 0,
                   correctBias: Bool = true, adamMode: Int = 1)

        public static var adamW: Kind { .adamW() }
    }

    /// The optimizer model for `parameters` (their count and types fix the wiring).
    public static func build(_ kind: Kind, parameters: [Parameter], opset: Int = 17) -> Model {
        var graph = Graph()
        graph.name = "optimizer"
        let elementType = parameters.first?.data.dtype ?? .float32
        let sequenceType = ValueType.sequence(.tensor(elementType, shape: nil))
        graph.inputs = [
            ValueInfo(name: "learning_rate", type: .tensor(.float32, shape: [.value(1)])),
            ValueInfo(name: "step", type: .tensor(.int64, shape: [.value(1)])),
            ValueInfo(name: "params", type: sequenceType),
            ValueInfo(name: "gradients", type: sequenceType),
            ValueInfo(name: "first_order_moments", type: sequenceType),
        ]
        let flag = "update_completed"
        switch kind {
        case .sgd:
            graph.nodes = [Node(opType: "SGDOptimizerV2", domain: "com.microsoft", name: "SGDOptimizerV2",
                                inputs: ["learning_rate", "params", "gradients"], outputs: [flag])]
        case .sgdMomentum(let momentum):
            graph.setInitializer("momentum", Tensor(scalar: momentum))
            graph.setInitializer("overwrite", Tensor(shape: [1], scalars: [true]))
            var velocities: [String] = []
            for i in parameters.indices {
                let index = "index_\(i)", g = "gradient_\(i)", v = "velocity_\(i)", scaled = "scaled_velocity_\(i)", next = "next_velocity_\(i)"
                graph.setInitializer(index, Tensor(scalar: Int64(i)))
                graph.nodes += [
                    Node(opType: "SequenceAt", inputs: ["gradients", index], outputs: [g]),
                    Node(opType: "SequenceAt", inputs: ["first_order_moments", index], outputs: [v]),
                    Node(opType: "Mul", inputs: [v, "momentum"], outputs: [scaled]),
                    Node(opType: "Add", inputs: [scaled, g], outputs: [next]),
                    // Writes the new velocity into the state tensor itself.
                    Node(opType: "InPlaceAccumulatorV2", domain: "com.microsoft", inputs: [v, next, "overwrite"],
                         outputs: ["velocity_written_\(i)"]),
                ]
                velocities.append(next)
            }
            graph.nodes += [
                Node(opType: "SequenceConstruct", inputs: velocities, outputs: ["velocities"]),
                Node(opType: "SGDOptimizerV2", domain: "com.microsoft", name: "SGDOptimizerV2",
                     inputs: ["learning_rate", "params", "velocities"], outputs: [flag]),
            ]
        case .adamW(let beta1, let beta2, let epsilon, let weightDecay, let correctBias, let adamMode):
            graph.inputs.append(ValueInfo(name: "second_order_moments", type: sequenceType))
            graph.nodes = [Node(opType: "AdamWOptimizer", domain: "com.microsoft", name: "AdamWOptimizer",
                                inputs: ["learning_rate", "step", "params", "gradients", "first_order_moments", "second_order_moments"],
                                outputs: [flag],
                                attributes: ["alpha": .float(beta1), "beta": .float(beta2), "epsilon": .float(epsilon),
                                             "weight_decay": .float(weightDecay), "correct_bias": .int(correctBias ? 1 : 0),
                                             "adam_mode": .int(adamMode)])]
        }
        graph.outputs = [ValueInfo(name: flag, type: .tensor(.bool, shape: [.value(1)]))]
        var model = Model(graph: graph)
        model.irVersion = 10
        model.producerName = "onnx-train"
        model.opsetImports = ["": opset, "com.microsoft": 1]
        return model
    }
}
