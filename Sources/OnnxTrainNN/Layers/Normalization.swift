import OnnxTrain

/// Layer normalisation over the trailing dimensions `normalizedShape` (PyTorch's `nn.LayerNorm`):
/// weight ones, bias zeros; one LayerNormalization node.
public final class LayerNorm: Module, UnaryModule {
    /// The trailing dimensions normalised over.
    public let normalizedShape: [Int]
    /// Added to the variance before the square root.
    public let eps: Float
    /// Scale of `normalizedShape` (ones), nil without `elementwiseAffine`.
    public let weight: NNTensor?
    /// Shift of `normalizedShape` (zeros), nil without `elementwiseAffine` or `bias`.
    public let bias: NNTensor?

    /// PyTorch's `nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)`.
    public init(_ normalizedShape: [Int], eps: Float = 1e-5, elementwiseAffine: Bool = true, bias: Bool = true) {
        self.normalizedShape = normalizedShape
        self.eps = eps
        weight = elementwiseAffine ? .parameter(Init.constant(normalizedShape, 1)) : nil
        self.bias = elementwiseAffine && bias ? .parameter(Init.constant(normalizedShape, 0)) : nil
    }
    /// Normalisation over one trailing dimension of `size`.
    public convenience init(_ size: Int, eps: Float = 1e-5, elementwiseAffine: Bool = true) {
        self.init([size], eps: eps, elementwiseAffine: elementwiseAffine)
    }

    /// The normalised x (one LayerNormalization node).
    public func forward(_ x: NNTensor) -> NNTensor { F.layerNorm(x, normalizedShape: normalizedShape, weight: weight, bias: bias, eps: eps) }
}

/// Batch normalisation over [N, C, ...] (the shared part of BatchNorm1d/2d).
///
/// In training mode it normalises with the batch's statistics (mean and biased variance over
/// every dimension but C, written as ReduceMean nodes so the gradient flows through them) and
/// updates `running_mean`/`running_var` as PyTorch does: running = (1 − momentum)·running +
/// momentum·batch, with the *unbiased* variance n/(n − 1)·var. In evaluation mode it is one
/// BatchNormalization node over the running statistics, which is what `exportONNX` writes.
public class BatchNormNd: Module, UnaryModule {
    /// Channels (dimension 1 of the input).
    public let numFeatures: Int
    /// Added to the variance before the square root.
    public let eps: Float
    /// The weight of a new batch in the running statistics.
    public let momentum: Float
    /// Per-channel scale (ones) and shift (zeros); nil without `affine`.
    public let weight: NNTensor?
    /// Per-channel shift (zeros); nil without `affine`.
    public let bias: NNTensor?
    /// Running mean and variance (buffers: zeros and ones), nil without `trackRunningStats`.
    public let runningMean: NNTensor?
    /// See `runningMean`.
    public let runningVar: NNTensor?
    /// Training batches seen (an int64 buffer, saved as PyTorch saves it).
    public let numBatchesTracked: NNTensor?

    init(_ numFeatures: Int, eps: Float, momentum: Float, affine: Bool, trackRunningStats: Bool) {
        self.numFeatures = numFeatures
        self.eps = eps
        self.momentum = momentum
        weight = affine ? .parameter(Init.constant([numFeatures], 1)) : nil
        bias = affine ? .parameter(Init.constant([numFeatures], 0)) : nil
        runningMean = trackRunningStats ? .buffer(Init.constant([numFeatures], 0)) : nil
        runningVar = trackRunningStats ? .buffer(Init.constant([numFeatures], 1)) : nil
        numBatchesTracked = trackRunningStats ? .buffer(Tensor(scalar: Int64(0))) : nil
    }

    /// Batch statistics (and a running-statistics update) in training mode, the running
    /// statistics in evaluation mode.
    public func forward(_ x: NNTensor) -> NNTensor {
        let c = numFeatures
        guard x.rank >= 2, x.size(1) == c else { return x.failed("BatchNorm(\(c)): input of shape \(x.shape) has not \(c) channels in dimension 1") }
        let broadcast = [1, c] + Array(repeating: 1, count: x.rank - 2)
        if !training, let runningMean, let runningVar {
            let scale = weight ?? .constant(Init.constant([c], 1)), shift = bias ?? .constant(Init.constant([c], 0))
            return Eager.op("BatchNormalization", [x, scale, shift, runningMean, runningVar], attributes: ["epsilon": .float(eps)])
        }
        let axes = [0] + Array(2..<x.rank)
        let mean = x.mean(axes, keepDim: true)
        let centred = x - mean
        let variance = (centred * centred).mean(axes, keepDim: true)
        var y = centred / (variance + eps).sqrt()
        if let weight { y = y * weight.reshape(broadcast) }
        if let bias { y = y + bias.reshape(broadcast) }
        if training, let runningMean, let runningVar, let numBatchesTracked, mean.error == nil, variance.error == nil {
            // Read through Double so a float64 model updates its statistics too (never a trap).
            func values(_ t: Tensor) -> [Double] { (0..<t.count).map { t.scalarDouble(at: $0) ?? .nan } }
            let n = Double(x.value.count / c), m = Double(momentum)
            let rm = zip(values(runningMean.value), values(mean.value)).map { (1 - m) * $0 + m * $1 }
            let rv = zip(values(runningVar.value), values(variance.value)).map { (1 - m) * $0 + m * $1 * n / max(n - 1, 1) }
            func tensor(_ v: [Double], like t: Tensor) -> Tensor {
                t.dtype == .float64 ? Tensor(shape: [c], scalars: v) : Tensor(shape: [c], scalars: v.map { Float($0) })
            }
            runningMean.setValue(tensor(rm, like: runningMean.value))
            runningVar.setValue(tensor(rv, like: runningVar.value))
            numBatchesTracked.setValue(Tensor(scalar: Int64(numBatchesTracked.value.scalarDouble() ?? 0) + 1))
        }
        return y
    }
}

/// Batch normalisation over [N, C] or [N, C, L] (PyTorch's `nn.BatchNorm1d`).
public final class BatchNorm1d: BatchNormNd {
    /// PyTorch's arguments: `(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)`.
    public override init(_ numFeatures: Int, eps: Float = 1e-5, momentum: Float = 0.1, affine: Bool = true, trackRunningStats: Bool = true) {
        super.init(numFeatures, eps: eps, momentum: momentum, affine: affine, trackRunningStats: trackRunningStats)
    }
}

/// Batch normalisation over [N, C, H, W] (PyTorch's `nn.BatchNorm2d`).
public final class BatchNorm2d: BatchNormNd {
    /// PyTorch's arguments: `(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)`.
    public override init(_ numFeatures: Int, eps: Float = 1e-5, momentum: Float = 0.1, affine: Bool = true, trackRunningStats: Bool = true) {
        super.init(numFeatures, eps: eps, momentum: momentum, affine: affine, trackRunningStats: trackRunningStats)
    }
}

/// Group normalisation (PyTorch's `nn.GroupNorm`): channels in `numGroups` groups, each
/// normalised over its channels and positions; per-channel weight ones and bias zeros.
public final class GroupNorm: Module, UnaryModule {
    /// Groups, and channels (dimension 1 of the input; a multiple of the groups).
    public let numGroups: Int, numChannels: Int
    /// Added to the variance before the square root.
    public let eps: Float
    /// Per-channel scale (ones); nil without `affine`.
    public let weight: NNTensor?
    /// Per-channel shift (zeros); nil without `affine`.
    public let bias: NNTensor?

    /// PyTorch's `nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True)`.
    public init(_ numGroups: Int, _ numChannels: Int, eps: Float = 1e-5, affine: Bool = true) {
        self.numGroups = numGroups
        self.numChannels = numChannels
        self.eps = eps
        weight = affine ? .parameter(Init.constant([numChannels], 1)) : nil
        bias = affine ? .parameter(Init.constant([numChannels], 0)) : nil
    }

    /// x [N, C, ...] normalised per sample and group.
    public func forward(_ x: NNTensor) -> NNTensor {
        guard x.rank >= 2, x.size(1) == numChannels, numChannels % numGroups == 0 else {
            return x.failed("GroupNorm(\(numGroups), \(numChannels)): input of shape \(x.shape) does not fit")
        }
        let grouped = x.reshape([x.size(0), numGroups, -1])
        let centred = grouped - grouped.mean([2], keepDim: true)
        let normalised = (centred / ((centred * centred).mean([2], keepDim: true) + eps).sqrt()).reshape(x.shape)
        let broadcast = [1, numChannels] + Array(repeating: 1, count: x.rank - 2)
        var y = normalised
        if let weight { y = y * weight.reshape(broadcast) }
        if let bias { y = y + bias.reshape(broadcast) }
        return y
    }
}
