func registerTensorOps(_ registry: OpRegistry) {
    registerShapeOps(registry)          // ShapeOps.swift: Reshape, Flatten, Squeeze, Unsqueeze, Shape, Size, Identity, Constant, ...
    registerMovementOps(registry)       // MovementOps.swift: Transpose, Concat, Split, Slice, Expand, Tile, Pad, Trilu, ...
    registerGatherScatterOps(registry)  // GatherScatter.swift: Gather*, Scatter*, Unique
    registerControlFlowOps(registry)    // ControlFlow.swift: If, Loop, Scan
    registerSequenceOps(registry)       // Sequences.swift: Sequence*, SplitToSequence, ConcatFromSequence, SequenceMap, Optional*
    registerResizeOps(registry)         // Resize.swift: Resize, Upsample
    registerVisionOps(registry)         // Vision.swift: GridSample, AffineGrid, RoiAlign, NonMaxSuppression, Col2Im, Det
    registerSignalOps(registry)         // Signal.swift: DFT, STFT, window functions, MelWeightMatrix
    registerStringOps(registry)         // Strings.swift: StringNormalizer, StringConcat, StringSplit, RegexFullMatch
    registerRandomOps(registry)         // Random.swift: RandomNormal/Uniform(Like), Bernoulli, Multinomial
}
