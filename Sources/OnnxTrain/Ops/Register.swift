/// The one list of op families. Each area owns one registration function, which calls the
/// `register...` function of every family file in that area.
func registerAllOps(_ registry: OpRegistry) {
    registerMathOps(registry)          // Ops/ONNX/RegisterMath.swift: elementwise, activations, reductions, softmax, casts
    registerNeuralNetOps(registry)     // Ops/ONNX/RegisterNeuralNet.swift: matmul, conv, pooling, normalization, losses, RNNs, quantization
    registerTensorOps(registry)        // Ops/ONNX/RegisterTensor.swift: shape and data movement, control flow, sequences, optionals
    registerPreviewTrainingOps(registry) // Ops/PreviewTraining/RegisterPreviewTraining.swift
    registerMLOps(registry)            // Ops/ML/RegisterML.swift: ai.onnx.ml ops and TfIdfVectorizer
    registerMicrosoftOps(registry)     // Ops/Microsoft/RegisterMicrosoft.swift: com.microsoft training ops
    registerInternalOps(registry)      // Ops/Internal/ElementwiseChain.swift: ops only graph passes write (onnx-train internal domain)
    registerChannelAffineOps(registry) // Ops/Internal/ChannelAffine.swift: the per-channel scale, shift and activation of ChannelAffineFusion
    registerShuffledDepthwiseConvOps(registry) // Ops/Internal/ShuffledDepthwiseConv.swift: a depthwise Conv reading a channel shuffle in place (ChannelShuffleFusion)
    registerProductAccumulatorOps(registry) // Ops/Internal/ProductAccumulator.swift: a weight gradient's GEMM into its accumulation buffer (ProductIntoAccumulator)
    registerMatMulBiasOps(registry)    // Ops/Internal/MatMulBias.swift: a batch of rows times a weight plus its bias, one GEMM (MatMulAddToGemm)
    registerFusedAttentionOps(registry) // Ops/Internal/FusedAttention.swift: scaled dot-product attention in blocks of query rows (AttentionFusion)
    registerGatherGradAccumulatorOps(registry) // Ops/Internal/GatherGradAccumulator.swift: an embedding's gradient scattered into its accumulation buffer (ProductIntoAccumulator)
    registerNchwcOps(registry)         // Ops/Internal/Nchwc.swift: the blocked-layout convolution, pooling and reorders (NchwcLayout)
}
