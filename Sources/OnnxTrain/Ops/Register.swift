/// The one list of op families; each family registers its ops in its own file.
func registerAllOps(_ registry: OpRegistry) {
    registerElementwiseOps(registry)
}
