func registerTensorOps(_ registry: OpRegistry) {
}
