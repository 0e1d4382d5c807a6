func registerMicrosoftOps(_ registry: OpRegistry) {
}
