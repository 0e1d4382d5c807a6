/// Neural-network ops: one registration function per family file (kernels and gradient rules).
func registerNeuralNetOps(_ registry: OpRegistry) {
    registerMatMulOps(registry)        // MatMul.swift: Gemm, MatMul, MatMulInteger
    registerEinsumOps(registry)        // Einsum.swift
    registerConvOps(registry)          // Conv.swift: Conv, ConvTranspose, ConvInteger, QLinearConv
    registerPoolingOps(registry)       // Pooling.swift: Max/Average/Lp pooling, global pooling, MaxUnpool
    registerNormalizationOps(registry) // Normalization.swift: Batch/Layer (own files)/Instance/Group/RMS/Lp norm, LRN, MVN
    registerDropoutOps(registry)       // Dropout.swift
    registerAttentionOps(registry)     // Attention.swift
    registerRecurrentOps(registry)     // Recurrent.swift: RNN, GRU, LSTM
    registerRecurrentStateOps(registry) // RecurrentState.swift: CausalConvWithState, LinearAttention
    registerLossOps(registry)          // Losses.swift: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss
    registerQuantizationOps(registry)  // Quantization.swift: Quantize/Dequantize/DynamicQuantizeLinear, QLinearMatMul
    registerConvPoolGradients(registry) // ConvPool+Gradients.swift: gradient rules of Conv, ConvTranspose, pooling
}
