/// Every com.microsoft training op onnxruntime 1.19.2 runs on the CPU, plus the onnx-domain
/// training ops (MaxPoolGrad, AveragePoolGrad, SparseSoftmaxCrossEntropy(Grad),
/// SimplifiedLayerNormalization, contrib LayerNormalization v1). One call per family file.
func registerMicrosoftOps(_ registry: OpRegistry) {
    registerActivationGradOps(registry)   // ActivationGrad.swift: *Grad of activations, Gelu family forwards
    registerSoftmaxGradOps(registry)      // SoftmaxGrad.swift
    registerGatherGradOps(registry)       // GatherGrad.swift
    registerCrossEntropyOps(registry)     // CrossEntropyLoss.swift: SCE loss grads, Internal, legacy, Sparse
    registerDropoutGradOps(registry)      // DropoutGrad.swift
    registerConvGradOps(registry)         // ConvGrad.swift: ConvGrad, ConvTransposeGrad (CUDA-only in onnxruntime 1.19.2)
    registerPoolGradOps(registry)         // PoolGrad.swift: MaxPoolGrad, AveragePoolGrad (onnx domain)
    registerTrainingNormalizationOps(registry) // TrainingNormalization.swift: BatchNormInternal, *LayerNormalization*, grads
    registerTrainingShapeOps(registry)    // TrainingShapeOps.swift: SliceGrad, Split/ConcatTraining, ReduceSumTraining, ...
    registerFusedMatMulOps(registry)      // FusedMatMul.swift: FusedMatMul, TransposeMatMul, DivGrad
    registerFusedConvOps(registry)        // FusedConv.swift: FusedConv (written by the ConvFusion pass)
    registerOptimizerOps(registry)        // TrainingOptimizers.swift: InPlaceAccumulator(V2), AdamW, SGD (own files), clipping, legacy Adam
    registerRecurrentTrainingOps(registry) // RecurrentGrad.swift: LSTMTraining/GRUTraining (Recurrent.swift forwards), LSTMGrad, GRUGrad
    registerTrainingMiscOps(registry)     // TrainingMiscOps.swift: PassThrough, Group, Record/WaitEvent, ReduceAllL2, ShrunkenGather, FakeQuant(Grad)
}
