/// Sampling and detection ops, each in the file named after it. None is hot in training, so
/// each computes in Double once for every float type.
func registerVisionOps(_ registry: OpRegistry) {
    registry.register("GridSample", since: [16, 20], gridSampleKernel)
    registry.register("AffineGrid", since: 20, affineGridKernel)
    registry.register("RoiAlign", since: [10, 16], roiAlignKernel)
    registry.register("NonMaxSuppression", since: 10, nonMaxSuppressionKernel)
    registry.register("Col2Im", since: 18, col2ImKernel)
    registry.register("Det", since: 11, detKernel)
}

