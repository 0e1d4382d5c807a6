/// Checks the data against the training graph before any step runs: element types and fixed
/// dimensions of the first and the last batch, and class labels within the loss's classes.
enum TrainingDataCheck {
    static func check(_ batches: Batches, module: TrainingModule, dataPath: String) throws {
        let graph = module.trainingModel.graph
        let declared = Dictionary(graph.inputs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let last = batches.count - 1
        let checked = [(0, batches.batch(0))] + (last > 0 && batches.examples(inBatch: last) != batches.batchSize ? [(last, batches.batch(last))] : [])
        for (index, batch) in checked {
            for name in batches.names {
                guard let t = batch[name], case .tensor(let dtype, let dims)? = declared[name]?.type else { continue }
                let whole = batches.arrays[name]!
                let expected = "\(dtype.map { "tensor(\($0))" } ?? "tensor") [\(dims?.map(\.description).joined(separator: ", ") ?? "...")]"
                if let dtype, dtype != t.dtype {
                    throw OnnxTrainError.invalidInput("\(dataPath): array '\(name)' is tensor(\(t.dtype)) \(whole.shape); the graph input '\(name)' is \(expected)")
                }
                if let dims {
                    let fits = dims.count == t.rank && zip(dims, t.shape).allSatisfy { d, n in
                        if case .value(let v) = d { return v == n } else { return true }
                    }
                    guard fits else {
                        if index > 0 {
                            throw OnnxTrainError.invalidInput("\(dataPath): the last batch of array '\(name)' \(whole.shape) is partial, of shape \(t.shape); the graph input '\(name)' is \(expected) (--drop-last drops the examples past the last full batch)")
                        }
                        throw OnnxTrainError.invalidInput("\(dataPath): array '\(name)' \(whole.shape) gives batches of shape \(t.shape) (\(batches.rows[name]!) rows each); the graph input '\(name)' is \(expected)")
                    }
                }
            }
        }
        try checkLabels(batches, module: module, dataPath: dataPath)
    }

    /// Labels of SoftmaxCrossEntropyLoss / NegativeLogLikelihoodLoss fed straight from the data
    /// must be class indices (or the node's ignore_index). The class count comes from a forward
    /// pass of the nodes that compute the scores, on copies of the parameters (so nothing that
    /// updates in place, like BatchNorm statistics, is touched).
    static func checkLabels(_ batches: Batches, module: TrainingModule, dataPath: String) throws {
        let graph = module.trainingModel.graph
        for node in graph.nodes where node.domain.isEmpty && (node.opType == "SoftmaxCrossEntropyLoss" || node.opType == "NegativeLogLikelihoodLoss") {
            guard node.inputs.count >= 2, batches.names.contains(node.inputs[1]), let labels = batches.arrays[node.inputs[1]] else { continue }
            guard let values = labels.intValues() else { continue }
            let ignore: Int? = {
                if case .int(let v)? = node.attributes["ignore_index"] { return v }
                return nil
            }()
            let scores = try module.probe(node.inputs[0], feeds: batches.batch(0))
            guard scores.rank >= 2 else { continue }
            let classes = scores.shape[1]
            for (i, v) in values.enumerated() where v != ignore && (v < 0 || v >= classes) {
                let what = node.opType + (node.name.isEmpty ? "" : " '\(node.name)'")
                throw OnnxTrainError.invalidInput("\(dataPath): array '\(node.inputs[1])' holds label \(v) at element \(i), outside the \(classes) classes of \(what)\(ignore.map { " (ignore_index \($0))" } ?? "")")
            }
        }
    }
}
