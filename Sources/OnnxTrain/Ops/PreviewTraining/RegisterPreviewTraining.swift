func registerPreviewTrainingOps(_ registry: OpRegistry) {
}
