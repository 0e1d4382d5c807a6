func registerMathOps(_ registry: OpRegistry) {
    registerElementwiseOps(registry)
}
