func registerPreviewTrainingOps(_ registry: OpRegistry) {
    registerPreviewOptimizerOps(registry)  // Optimizers.swift: Adagrad, Momentum, Adam
    registerPreviewGradientOp(registry)    // Gradient.swift: reverse mode through part of the node's own graph
}
