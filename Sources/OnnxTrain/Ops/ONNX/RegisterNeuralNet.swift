func registerNeuralNetOps(_ registry: OpRegistry) {
}
