import OnnxTrain

/// The shared part of Conv1d/Conv2d: weight [out, in/groups, k...] and bias [out], both
/// U(±1/sqrt(fan_in)), fan_in = in/groups · prod(k), as PyTorch initialises them.
public class ConvNd: Module, UnaryModule {
    /// [out, in/groups, k...].
    public let weight: NNTensor
    /// [out], or nil for `bias: false`.
    public let bias: NNTensor?
    /// Per spatial dimension: step, zero padding on each side, and kernel dilation.
    public let stride: [Int], padding: [Int], dilation: [Int]
    /// Channel groups (`groups == in` is a depthwise convolution).
    public let groups: Int

    init(_ inChannels: Int, _ outChannels: Int, kernelSize: [Int], stride: [Int], padding: [Int], dilation: [Int], groups: Int, bias: Bool) {
        let fanIn = inChannels / max(groups, 1) * kernelSize.reduce(1, *)
        weight = .parameter(Init.kaimingUniformDefault([outChannels, inChannels / max(groups, 1)] + kernelSize, fanIn: fanIn))
        self.bias = bias ? .parameter(Init.uniform([outChannels], bound: 1 / Float(max(fanIn, 1)).squareRoot())) : nil
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
    }

    /// The convolution of x [N, in, spatial...] (one Conv node).
    public func forward(_ x: NNTensor) -> NNTensor {
        F.conv(x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups)
    }
}

/// A 1-d convolution over [N, C, L] (PyTorch's `nn.Conv1d`).
public final class Conv1d: ConvNd {
    /// PyTorch's `nn.Conv1d(in, out, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True)`.
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
                groups: Int = 1, bias: Bool = true) {
        super.init(inChannels, outChannels, kernelSize: [kernelSize], stride: [stride], padding: [padding], dilation: [dilation],
                   groups: groups, bias: bias)
    }
}

/// A 2-d convolution over [N, C, H, W] (PyTorch's `nn.Conv2d`); square sizes as one number.
public final class Conv2d: ConvNd {
    /// PyTorch's `nn.Conv2d(in, out, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True)`.
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
                groups: Int = 1, bias: Bool = true) {
        super.init(inChannels, outChannels, kernelSize: [kernelSize, kernelSize], stride: [stride, stride], padding: [padding, padding],
                   dilation: [dilation, dilation], groups: groups, bias: bias)
    }

    /// Rectangular sizes, as PyTorch's tuples.
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                dilation: (Int, Int) = (1, 1), groups: Int = 1, bias: Bool = true) {
        super.init(inChannels, outChannels, kernelSize: [kernelSize.0, kernelSize.1], stride: [stride.0, stride.1],
                   padding: [padding.0, padding.1], dilation: [dilation.0, dilation.1], groups: groups, bias: bias)
    }
}

/// A 2-d transposed convolution (PyTorch's `nn.ConvTranspose2d`): weight [in, out/groups, kH, kW],
/// U(±1/sqrt(fan_in)) with PyTorch's fan_in = out/groups · kH · kW for this layout.
public final class ConvTranspose2d: Module, UnaryModule {
    /// [in, out/groups, k, k].
    public let weight: NNTensor
    /// [out], or nil for `bias: false`.
    public let bias: NNTensor?
    /// PyTorch's arguments of the same names (square sizes).
    public let stride: Int, padding: Int, outputPadding: Int, dilation: Int, groups: Int

    /// PyTorch's `nn.ConvTranspose2d(in, out, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True, dilation=1)`.
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, outputPadding: Int = 0,
                groups: Int = 1, bias: Bool = true, dilation: Int = 1) {
        let fanIn = outChannels / max(groups, 1) * kernelSize * kernelSize
        weight = .parameter(Init.kaimingUniformDefault([inChannels, outChannels / max(groups, 1), kernelSize, kernelSize], fanIn: fanIn))
        self.bias = bias ? .parameter(Init.uniform([outChannels], bound: 1 / Float(max(fanIn, 1)).squareRoot())) : nil
        self.stride = stride
        self.padding = padding
        self.outputPadding = outputPadding
        self.dilation = dilation
        self.groups = groups
    }

    /// The transposed convolution of x [N, in, H, W] (one ConvTranspose node).
    public func forward(_ x: NNTensor) -> NNTensor {
        F.convTranspose(x, weight: weight, bias: bias, stride: [stride, stride], padding: [padding, padding],
                        outputPadding: [outputPadding, outputPadding], dilation: [dilation, dilation], groups: groups)
    }
}

/// 2-d max pooling (PyTorch's `nn.MaxPool2d`; the stride defaults to the kernel size).
public final class MaxPool2d: Module, UnaryModule {
    /// Window, step and padding (square).
    public let kernelSize: Int, stride: Int, padding: Int
    /// Round the output size up rather than down.
    public let ceilMode: Bool
    /// PyTorch's `nn.MaxPool2d(kernel_size, stride=None, padding=0, ceil_mode=False)`.
    public init(_ kernelSize: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false) {
        self.kernelSize = kernelSize
        self.stride = stride ?? kernelSize
        self.padding = padding
        self.ceilMode = ceilMode
    }
    /// The largest element of each window (one MaxPool node).
    public func forward(_ x: NNTensor) -> NNTensor {
        F.maxPool(x, kernelSize: [kernelSize, kernelSize], stride: [stride, stride], padding: [padding, padding], ceilMode: ceilMode)
    }
}

/// 2-d average pooling (PyTorch's `nn.AvgPool2d`, padding counted in the average).
public final class AvgPool2d: Module, UnaryModule {
    /// Window, step and padding (square).
    public let kernelSize: Int, stride: Int, padding: Int
    /// Round the output size up; count padded zeros in the average.
    public let ceilMode: Bool, countIncludePad: Bool
    /// PyTorch's `nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True)`.
    public init(_ kernelSize: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false, countIncludePad: Bool = true) {
        self.kernelSize = kernelSize
        self.stride = stride ?? kernelSize
        self.padding = padding
        self.ceilMode = ceilMode
        self.countIncludePad = countIncludePad
    }
    /// The mean of each window (one AveragePool node).
    public func forward(_ x: NNTensor) -> NNTensor {
        F.avgPool(x, kernelSize: [kernelSize, kernelSize], stride: [stride, stride], padding: [padding, padding], ceilMode: ceilMode,
                  countIncludePad: countIncludePad)
    }
}

/// Average pooling to a fixed output size (PyTorch's `nn.AdaptiveAvgPool2d`; the input size
/// must be a multiple of the output size, or the output 1×1).
public final class AdaptiveAvgPool2d: Module, UnaryModule {
    /// The output's height and width.
    public let outputSize: (Int, Int)
    /// A square output, PyTorch's `nn.AdaptiveAvgPool2d(n)`.
    public init(_ outputSize: Int) { self.outputSize = (outputSize, outputSize) }
    /// PyTorch's `nn.AdaptiveAvgPool2d((h, w))`.
    public init(_ outputSize: (Int, Int)) { self.outputSize = outputSize }
    /// The pooled x [N, C, H, W].
    public func forward(_ x: NNTensor) -> NNTensor { F.adaptiveAvgPool(x, outputSize: [outputSize.0, outputSize.1]) }
}
