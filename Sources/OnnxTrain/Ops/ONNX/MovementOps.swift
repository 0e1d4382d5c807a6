/// Data movement ops, each one index map applied by the element-size generic `take` (the copy
/// paths are in TensorMovement.swift). Each op's kernel and gradient rule are in the file named
/// after it (Expand.swift holds Tile, Pad.swift CenterCropPad, DepthToSpace.swift SpaceToDepth).
func registerMovementOps(_ registry: OpRegistry) {
    registry.register("Transpose", since: 1, transposeKernel)
    registry.register("Concat", since: 1, concatKernel)
    registry.register("Split", since: 1, splitKernel)
    registry.register("Slice", since: [1, 10], sliceKernel)
    registry.register("Expand", since: 8, expandKernel)
    registry.register("Tile", since: 6, tileKernel)
    registry.register("Pad", since: [1, 2, 11], padKernel)
    registry.register("CenterCropPad", since: 18, centerCropPadKernel)
    registry.register("Trilu", since: 14, triluKernel)
    registry.register("DepthToSpace", since: 1, depthToSpaceKernel)
    registry.register("SpaceToDepth", since: 1, spaceToDepthKernel)
    registry.register("ReverseSequence", since: 10, reverseSequenceKernel)
    registry.register("Compress", since: 9, compressKernel)
    registry.register("NonZero", since: 9, nonZeroKernel)
    registry.register("OneHot", since: 9, oneHotKernel)

    // Gradient rules (GradientContext):
    registry.registerGradient("Transpose", transposeGradient)
    registry.registerGradient("Concat", concatGradient)
    registry.registerGradient("Split", splitGradient)
    registry.registerGradient("Slice", sliceGradient)
    registry.registerGradient("Expand", expandGradient)
    registry.registerGradient("Tile", tileGradient)
    registry.registerGradient("Pad", padGradient)
    registry.registerGradient("Trilu", triluGradient)
}

