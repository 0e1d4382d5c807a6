import OnnxTrain

/// y = x·Wᵀ + b (PyTorch's `nn.Linear`): weight [out, in], bias [out], both
/// U(±1/sqrt(in)) as PyTorch initialises them.
public final class Linear: Module, UnaryModule {
    public let inFeatures: Int
    public let outFeatures: Int
    public let weight: NNTensor
    public let bias: NNTensor?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = .parameter(Init.kaimingUniformDefault([outFeatures, inFeatures], fanIn: inFeatures))
        self.bias = bias ? .parameter(Init.uniform([outFeatures], bound: 1 / Float(max(inFeatures, 1)).squareRoot())) : nil
    }

    public func forward(_ x: NNTensor) -> NNTensor { F.linear(x, weight: weight, bias: bias) }
}

/// Rows of a [count, dim] table picked by int64 indices (PyTorch's `nn.Embedding`, N(0, 1) init).
public final class Embedding: Module, UnaryModule {
    public let weight: NNTensor

    public init(_ count: Int, _ dim: Int) {
        weight = .parameter(Init.normal([count, dim]))
    }

    public func forward(_ x: NNTensor) -> NNTensor { F.embedding(x, weight: weight) }
}

/// Layers applied in order (PyTorch's `nn.Sequential`); its layers are named "0", "1", ...
///
///     let net = Sequential(Linear(4, 8), ReLU(), Linear(8, 2))
///     let same = Sequential { Linear(4, 8); ReLU(); Linear(8, 2) }
public final class Sequential: Module, UnaryModule {
    public let layers: [any UnaryModule]

    public init(_ layers: [any UnaryModule]) { self.layers = layers }
    public convenience init(_ layers: any UnaryModule...) { self.init(layers) }
    public convenience init(@SequentialBuilder _ build: () -> [any UnaryModule]) { self.init(build()) }

    public override func namedChildren() -> [(String, Module)] { layers.enumerated().map { ("\($0.offset)", $0.element) } }

    public func forward(_ x: NNTensor) -> NNTensor { layers.reduce(x) { $1.forward($0) } }

    /// Layer `index`, as PyTorch's `seq[i]`.
    public subscript(_ index: Int) -> any UnaryModule { layers[index] }
    public var count: Int { layers.count }
}

/// Modules in a list, named "0", "1", ... without a `forward` of its own (PyTorch's `nn.ModuleList`).
public final class ModuleList: Module {
    public let modules: [Module]
    public init(_ modules: [Module]) { self.modules = modules }
    public override func namedChildren() -> [(String, Module)] { modules.enumerated().map { ("\($0.offset)", $0.element) } }
    public subscript(_ index: Int) -> Module { modules[index] }
    public var count: Int { modules.count }
}

/// Builds `Sequential`'s layer list from a block of layers.
@resultBuilder
public enum SequentialBuilder {
    public static func buildExpression(_ layer: any UnaryModule) -> [any UnaryModule] { [layer] }
    public static func buildBlock(_ parts: [any UnaryModule]...) -> [any UnaryModule] { parts.flatMap { $0 } }
    public static func buildOptional(_ part: [any UnaryModule]?) -> [any UnaryModule] { part ?? [] }
    public static func buildEither(first: [any UnaryModule]) -> [any UnaryModule] { first }
    public static func buildEither(second: [any UnaryModule]) -> [any UnaryModule] { second }
    public static func buildArray(_ parts: [[any UnaryModule]]) -> [any UnaryModule] { parts.flatMap { $0 } }
}

/// Dimensions `startDim...endDim` merged (PyTorch's `nn.Flatten`, from dimension 1 by default).
public final class Flatten: Module, UnaryModule {
    public let startDim: Int, endDim: Int
    public init(startDim: Int = 1, endDim: Int = -1) {
        self.startDim = startDim
        self.endDim = endDim
    }
    public func forward(_ x: NNTensor) -> NNTensor { x.flatten(startDim: startDim, endDim: endDim) }
}

/// Zeroes elements with probability `p` in training mode (PyTorch's `nn.Dropout`); identity in eval mode.
public final class Dropout: Module, UnaryModule {
    public let p: Float
    public init(_ p: Float = 0.5) { self.p = p }
    public func forward(_ x: NNTensor) -> NNTensor { F.dropout(x, p: p, training: training) }
}

/// max(x, 0).
public final class ReLU: Module, UnaryModule {
    public override init() {}
    public func forward(_ x: NNTensor) -> NNTensor { x.relu() }
}

/// max(x, 0) + slope·min(x, 0).
public final class LeakyReLU: Module, UnaryModule {
    public let negativeSlope: Float
    public init(_ negativeSlope: Float = 0.01) { self.negativeSlope = negativeSlope }
    public func forward(_ x: NNTensor) -> NNTensor { F.leakyRelu(x, negativeSlope: negativeSlope) }
}

/// GELU, exact or with `approximate: true` the tanh form.
public final class GELU: Module, UnaryModule {
    public let approximate: Bool
    public init(approximate: Bool = false) { self.approximate = approximate }
    public func forward(_ x: NNTensor) -> NNTensor { F.gelu(x, approximate: approximate) }
}

/// x·sigmoid(x).
public final class SiLU: Module, UnaryModule {
    public override init() {}
    public func forward(_ x: NNTensor) -> NNTensor { F.silu(x) }
}

/// tanh(x).
public final class Tanh: Module, UnaryModule {
    public override init() {}
    public func forward(_ x: NNTensor) -> NNTensor { x.tanh() }
}

/// 1 / (1 + e^(−x)).
public final class Sigmoid: Module, UnaryModule {
    public override init() {}
    public func forward(_ x: NNTensor) -> NNTensor { x.sigmoid() }
}

/// Softmax along `dim`.
public final class Softmax: Module, UnaryModule {
    public let dim: Int
    public init(dim: Int) { self.dim = dim }
    public func forward(_ x: NNTensor) -> NNTensor { x.softmax(dim: dim) }
}

/// The input unchanged (a placeholder layer).
public final class Identity: Module, UnaryModule {
    public override init() {}
    public func forward(_ x: NNTensor) -> NNTensor { x }
}
