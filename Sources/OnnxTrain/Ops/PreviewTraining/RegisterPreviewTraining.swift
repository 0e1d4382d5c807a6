func registerPreviewTrainingOps(_ registry: OpRegistry) {
    registerPreviewOptimizerOps(registry)  // Optimizers.swift: Adagrad, Momentum, Adam
}
