/// The gradient rules of the shape and data-movement ops: the gradient is the inverse movement,
/// or a scatter-add (GatherGrad, SliceGrad, ...) where the forward op selects. Each rule lives
/// beside its kernel (Transpose.swift, Slice.swift, Pad.swift, GatherScatter.swift, ...); the
/// reshape family's is the loop below.
func registerTensorGradients(_ registry: OpRegistry) {
    for name in ["Reshape", "Flatten", "Squeeze", "Unsqueeze"] {
        registry.registerGradient(name) { g in
            var grads: [String?] = Array(repeating: nil, count: g.node.inputs.count)
            if g.needs(0) { grads[0] = g.reshape(try g.requiredDY(), like: g.input(0)) }
            return grads
        }
    }
    registry.registerGradient("Transpose", transposeGradient)
    registry.registerGradient("Trilu", triluGradient)
    registry.registerGradient("Expand", expandGradient)
    registry.registerGradient("Concat", concatGradient)
    registry.registerGradient("Split", splitGradient)
    registry.registerGradient("Slice", sliceGradient)
    registry.registerGradient("Gather", gatherGradient)
    registry.registerGradient("GatherElements", gatherElementsGradient)
    registry.registerGradient("GatherND", gatherNDGradient)
    registry.registerGradient("ScatterElements", scatterElementsGradient)
    registry.registerGradient("ScatterND", scatterNDGradient)
    registry.registerGradient("Tile", tileGradient)
    registry.registerGradient("Pad", padGradient)
}

