import OnnxTrain

/// One line naming an optimizer and its hyperparameters, for `run`'s output.
enum OptimizerDescription {
    /// The optimizer node(s) of an `optimizer_model.onnx` with their attributes.
    static func describe(_ model: Model) -> String {
        let nodes = model.graph.nodes.filter { $0.opType.contains("Optimizer") || $0.opType == "InplaceClipGradNorm" }
        guard !nodes.isEmpty else { return "\(model.graph.nodes.count) nodes" }
        return nodes.map { node in
            let attributes = node.attributes.keys.sorted().compactMap { key -> String? in
                switch node.attributes[key] {
                case .float(let v)?: return "\(key) \(v)"
                case .int(let v)?: return "\(key) \(v)"
                case .string(let v)?: return "\(key) \(v)"
                default: return nil
                }
            }
            return node.opType + (attributes.isEmpty ? "" : " (" + attributes.joined(separator: ", ") + ")")
        }.joined(separator: ", ")
    }

    /// An optimizer graph built for a gradient graph.
    static func describe(_ kind: OptimizerGraph.Kind) -> String {
        switch kind {
        case .sgd: return "SGD (SGDOptimizerV2)"
        case .sgdMomentum(let m): return "SGD with momentum \(m) (InPlaceAccumulatorV2 + SGDOptimizerV2)"
        case .adamW(let b1, let b2, let eps, let wd, let correct, let mode):
            return "AdamW (AdamWOptimizer: beta1 \(b1), beta2 \(b2), epsilon \(eps), weight_decay \(wd), correct_bias \(correct ? 1 : 0), adam_mode \(mode))"
        }
    }
}
