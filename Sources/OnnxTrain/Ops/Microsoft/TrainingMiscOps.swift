import Foundation

/// The rest of onnxruntime 1.19.2's CPU training kernels that a graph can use outside ORTModule
/// (docs/TRAINING_KERNELS.md lists them all, with those left out and why):
///   PassThrough(x...) → x...: a barrier; the outputs are the inputs.
///   Group(x...) → bool [1] true: ties values together so they are computed.
///   RecordEvent(event_id, x...) / WaitEvent(event_id, x...) → x...: pipeline-parallel
///     synchronisation points; a single-stage run has nothing to wait for, so they pass through.
///   ReduceAllL2(x...) → float scalar √(Σ over every tensor Σ x²) (the global gradient norm).
///   ShrunkenGather(data, indices; axis) → Gather(data, indices) (padding elimination's gather).
///   FakeQuant and FakeQuantGrad: FakeQuant.swift.

/// PassThrough: its inputs, unchanged.
func passThroughKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in inputs }
}

/// Group: a true scalar once its inputs exist (an ordering point).
func groupKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { _, _ in [.tensor(Tensor(shape: [1], scalars: [true]))] }
}

/// RecordEvent and WaitEvent: the inputs after the int64 event id, unchanged (one stream here).
func eventKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let id = try inputs.tensor(0)
        guard id.dtype == .int64, id.count == 1 else { throw KernelError("event_id must be an int64 scalar, got \(id)") }
        return Array(inputs.dropFirst())
    }
}

func registerTrainingMiscOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    registry.register("PassThrough", domain: ms, since: 1, passThroughKernel)
    registry.register("Group", domain: ms, since: 1, groupKernel)
    registry.register("RecordEvent", domain: ms, since: 1, eventKernel)
    registry.register("WaitEvent", domain: ms, since: 1, eventKernel)
    registry.register("ReduceAllL2", domain: ms, since: 1, reduceAllL2Kernel)
    registry.register("ShrunkenGather", domain: ms, since: 1, shrunkenGatherKernel)
    registry.register("FakeQuant", domain: ms, since: 1) { ctx in try FakeQuantKernel(ctx) }
    registry.register("FakeQuantGrad", domain: ms, since: 1, fakeQuantGradKernel)
}

/// ReduceAllL2 (com.microsoft), since opset 1.
func reduceAllL2Kernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        var sum = 0.0
        for i in inputs.indices {
            let t = try inputs.tensor(i)
            guard t.dtype.isFloatingPoint else { throw KernelError("input \(i) is tensor(\(t.dtype)), a float tensor is expected") }
            for k in 0..<t.count { let v = t.scalarDouble(at: k) ?? 0; sum += v * v }
        }
        return [.tensor(Tensor(shape: [], scalars: [Float(sum.squareRoot())]))]
    }
}

/// ShrunkenGather (com.microsoft), since opset 1: Gather's kernel (the shrinking is a hint for
/// onnxruntime's memory planner).
func shrunkenGatherKernel(_ ctx: NodeContext) throws -> Kernel {
    try gatherKernel(ctx)
}

