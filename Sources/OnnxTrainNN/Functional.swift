import OnnxTrain

/// PyTorch's `torch.nn.functional`: stateless layers and losses over `NNTensor`s.
public enum F {
    /// Reductions of a loss over its elements, as PyTorch's `reduction=` argument.
    public enum Reduction: String, Sendable {
        case mean, sum, none
    }

    // MARK: Activations

    /// max(x, 0).
    public static func relu(_ x: NNTensor) -> NNTensor { x.relu() }
    /// 1 / (1 + e^(−x)).
    public static func sigmoid(_ x: NNTensor) -> NNTensor { x.sigmoid() }
    /// tanh(x).
    public static func tanh(_ x: NNTensor) -> NNTensor { x.tanh() }
    /// x·sigmoid(x) (PyTorch's `silu`).
    public static func silu(_ x: NNTensor) -> NNTensor { x * x.sigmoid() }
    /// GELU, exact (erf) or with the tanh approximation (com.microsoft Gelu/FastGelu: onnxruntime runs
    /// them at any opset, and the library differentiates them with onnxruntime's GeluGrad).
    public static func gelu(_ x: NNTensor, approximate: Bool = false) -> NNTensor {
        Eager.op(approximate ? "FastGelu" : "Gelu", domain: "com.microsoft", [x])
    }
    /// max(x, 0) + slope·min(x, 0).
    public static func leakyRelu(_ x: NNTensor, negativeSlope: Float = 0.01) -> NNTensor {
        Eager.op("LeakyRelu", [x], attributes: ["alpha": .float(negativeSlope)])
    }
    /// Softmax along `dim`.
    public static func softmax(_ x: NNTensor, dim: Int) -> NNTensor { x.softmax(dim: dim) }
    /// Log-softmax along `dim`.
    public static func logSoftmax(_ x: NNTensor, dim: Int) -> NNTensor { x.logSoftmax(dim: dim) }

    // MARK: Layers

    /// x·Wᵀ + b for W [out, in] (Gemm for matrices, MatMul over a transposed weight otherwise).
    public static func linear(_ x: NNTensor, weight: NNTensor, bias: NNTensor? = nil) -> NNTensor {
        if x.rank == 2 { return Eager.op("Gemm", [x, weight, bias], attributes: ["transB": .int(1)]) }
        let y = x.matmul(weight.t())
        return bias.map { y + $0 } ?? y
    }

    /// An N-d convolution (weight [out, in/groups, k...]) with PyTorch's stride/padding/dilation.
    public static func conv(_ x: NNTensor, weight: NNTensor, bias: NNTensor?, stride: [Int], padding: [Int], dilation: [Int],
                            groups: Int) -> NNTensor {
        Eager.op("Conv", [x, weight, bias], attributes: [
            "strides": .ints(stride), "pads": .ints(padding + padding), "dilations": .ints(dilation), "group": .int(groups),
            "kernel_shape": .ints(Array(weight.shape.dropFirst(2))),
        ])
    }

    /// A transposed convolution (weight [in, out/groups, k...]).
    public static func convTranspose(_ x: NNTensor, weight: NNTensor, bias: NNTensor?, stride: [Int], padding: [Int],
                                     outputPadding: [Int], dilation: [Int], groups: Int) -> NNTensor {
        Eager.op("ConvTranspose", [x, weight, bias], attributes: [
            "strides": .ints(stride), "pads": .ints(padding + padding), "dilations": .ints(dilation), "group": .int(groups),
            "output_padding": .ints(outputPadding), "kernel_shape": .ints(Array(weight.shape.dropFirst(2))),
        ])
    }

    /// Max pooling; `stride` defaults to the kernel size, as in PyTorch.
    public static func maxPool(_ x: NNTensor, kernelSize: [Int], stride: [Int]? = nil, padding: [Int], ceilMode: Bool = false) -> NNTensor {
        Eager.op("MaxPool", [x], attributes: [
            "kernel_shape": .ints(kernelSize), "strides": .ints(stride ?? kernelSize), "pads": .ints(padding + padding),
            "ceil_mode": .int(ceilMode ? 1 : 0),
        ])
    }

    /// Average pooling; padding counts in the average (PyTorch's `count_include_pad=True`).
    public static func avgPool(_ x: NNTensor, kernelSize: [Int], stride: [Int]? = nil, padding: [Int], ceilMode: Bool = false,
                               countIncludePad: Bool = true) -> NNTensor {
        Eager.op("AveragePool", [x], attributes: [
            "kernel_shape": .ints(kernelSize), "strides": .ints(stride ?? kernelSize), "pads": .ints(padding + padding),
            "ceil_mode": .int(ceilMode ? 1 : 0), "count_include_pad": .int(countIncludePad ? 1 : 0),
        ])
    }

    /// Adaptive average pooling to `outputSize` over the trailing dimensions: GlobalAveragePool
    /// for 1×1, else an AveragePool whose window tiles the input (sizes must divide evenly).
    public static func adaptiveAvgPool(_ x: NNTensor, outputSize: [Int]) -> NNTensor {
        let spatial = Array(x.shape.suffix(outputSize.count))
        if outputSize.allSatisfy({ $0 == 1 }) { return Eager.op("GlobalAveragePool", [x]) }
        guard zip(spatial, outputSize).allSatisfy({ $1 > 0 && $0 % $1 == 0 }) else {
            return x.failed("adaptiveAvgPool: output size \(outputSize) does not divide the input size \(spatial) (only even tilings are supported)")
        }
        let k = zip(spatial, outputSize).map { $0 / $1 }
        return avgPool(x, kernelSize: k, stride: k, padding: k.map { _ in 0 })
    }

    /// Layer normalisation over the trailing `normalizedShape.count` dimensions (LayerNormalization).
    public static func layerNorm(_ x: NNTensor, normalizedShape: [Int], weight: NNTensor?, bias: NNTensor?, eps: Float = 1e-5) -> NNTensor {
        let scale = weight ?? NNTensor.constant(Init.constant(normalizedShape, 1))
        return Eager.op("LayerNormalization", [x, scale, bias], attributes: ["axis": .int(-normalizedShape.count), "epsilon": .float(eps)])
    }

    /// Rows `indices` of `weight` (PyTorch's `embedding`).
    public static func embedding(_ indices: NNTensor, weight: NNTensor) -> NNTensor {
        Eager.op("Gather", [weight, indices], attributes: ["axis": .int(0)])
    }

    /// Zeroes each element with probability `p` and scales the rest by 1/(1-p) when `training`.
    /// The mask is drawn from `NNRandom` and enters the graph as data, so the gradient graph
    /// sees the very mask the eager value used.
    public static func dropout(_ x: NNTensor, p: Float = 0.5, training: Bool = true) -> NNTensor {
        guard training, p > 0 else { return x }
        if p >= 1 { return x * 0 }
        let mask = Tensor(shape: x.shape, scalars: NNRandom.bernoulli(x.value.count, p: 1 - p).map { $0 / (1 - p) })
        return x * NNTensor(x.dtype == .float32 ? mask : Tensor(shape: x.shape, scalars: mask.scalars(as: Float.self).map(Double.init)))
    }

    // MARK: Losses

    private static func reduce(_ x: NNTensor, _ reduction: Reduction) -> NNTensor {
        switch reduction {
        case .mean: return x.mean()
        case .sum: return x.sum()
        case .none: return x
        }
    }

    /// Cross entropy of logits [N, C, ...] against int64 class indices [N, ...]
    /// (SoftmaxCrossEntropyLoss, as PyTorch's exporter writes it).
    public static func crossEntropy(_ logits: NNTensor, _ target: NNTensor, reduction: Reduction = .mean,
                                    ignoreIndex: Int? = nil) -> NNTensor {
        var attributes: [String: Attribute] = ["reduction": .string(reduction.rawValue)]
        if let ignoreIndex { attributes["ignore_index"] = .int(ignoreIndex) }
        return Eager.op("SoftmaxCrossEntropyLoss", [logits, target], attributes: attributes)
    }

    /// Mean squared error.
    public static func mse(_ input: NNTensor, _ target: NNTensor, reduction: Reduction = .mean) -> NNTensor {
        let d = input - target
        return reduce(d * d, reduction)
    }

    /// Mean absolute error (PyTorch's `l1_loss`).
    public static func l1(_ input: NNTensor, _ target: NNTensor, reduction: Reduction = .mean) -> NNTensor {
        reduce((input - target).abs(), reduction)
    }

    /// Negative log-likelihood of log-probabilities [N, C] against int64 classes [N].
    public static func nll(_ logProbabilities: NNTensor, _ target: NNTensor, reduction: Reduction = .mean) -> NNTensor {
        // -logp[n, target[n]], picked with a one-hot mask so the gradient is a plain product.
        let classes = logProbabilities.size(1)
        let oneHot = Eager.op("OneHot", [target, NNTensor.ints([classes]), NNTensor.constant(Tensor(shape: [2], scalars: [Float(0), 1]))],
                              attributes: ["axis": .int(1)], differentiable: false)
        return reduce(-(logProbabilities * oneHot).sum([1]), reduction)
    }

    /// Binary cross entropy of probabilities; the logarithms are clamped at -100 as PyTorch does.
    public static func binaryCrossEntropy(_ input: NNTensor, _ target: NNTensor, reduction: Reduction = .mean) -> NNTensor {
        let logP = input.log().clamp(min: -100), log1mP = (1 - input).log().clamp(min: -100)
        return reduce(-(target * logP + (1 - target) * log1mP), reduction)
    }

    /// Binary cross entropy of logits, in the stable form max(x, 0) − x·y + log(1 + e^(−|x|)).
    public static func binaryCrossEntropyWithLogits(_ input: NNTensor, _ target: NNTensor, reduction: Reduction = .mean) -> NNTensor {
        let softplus = (1 + (-input.abs()).exp()).log()
        return reduce(input.relu() - input * target + softplus, reduction)
    }
}
