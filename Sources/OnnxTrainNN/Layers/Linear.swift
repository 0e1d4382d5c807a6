import OnnxTrain

/// y = x·Wᵀ + b (PyTorch's `nn.Linear`): weight [out, in], bias [out], both
/// U(±1/sqrt(in)) as PyTorch initialises them.
public final class Linear: Module, UnaryModule {
    /// Input and output sizes.
    public let inFeatures: Int
    /// The number of outputs.
    public let outFeatures: Int
    /// [out, in]; assign another layer's weight to tie them (`head.weight = embedding.weight`).
    public var weight: NNTensor
    /// [out], or nil for `bias: false`.
    public var bias: NNTensor?

    /// PyTorch's `nn.Linear(in_features, out_features, bias=True)`.
    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = .parameter(Init.kaimingUniformDefault([outFeatures, inFeatures], fanIn: inFeatures))
        self.bias = bias ? .parameter(Init.uniform([outFeatures], bound: 1 / Float(max(inFeatures, 1)).squareRoot())) : nil
    }

    /// The layer's computation (PyTorch's `forward`).
    public func forward(_ x: NNTensor) -> NNTensor { F.linear(x, weight: weight, bias: bias) }
}

/// Rows of a [count, dim] table picked by int64 indices (PyTorch's `nn.Embedding`, N(0, 1) init).
public final class Embedding: Module, UnaryModule {
    /// [count, dim]; assign to tie it with another layer.
    public var weight: NNTensor

    /// PyTorch's `nn.Embedding(num_embeddings, embedding_dim)`.
    public init(_ count: Int, _ dim: Int) {
        weight = .parameter(Init.normal([count, dim]))
    }

    /// The layer's computation (PyTorch's `forward`).
    public func forward(_ x: NNTensor) -> NNTensor { F.embedding(x, weight: weight) }
}

/// Layers applied in order (PyTorch's `nn.Sequential`); its layers are named "0", "1", ...
///
///     let net = Sequential(Linear(4, 8), ReLU(), Linear(8, 2))
///     let same = Sequential { Linear(4, 8); ReLU(); Linear(8, 2) }
public final class Sequential: Module, UnaryModule {
    /// The layers, in order.
    public let layers: [any UnaryModule]

    /// The layers of an array.
    public init(_ layers: [any UnaryModule]) { self.layers = layers }
    /// The layers as arguments: `Sequential(Linear(4, 8), ReLU())`.
    public convenience init(_ layers: any UnaryModule...) { self.init(layers) }
    /// The layers of a block: `Sequential { Linear(4, 8); ReLU() }`.
    public convenience init(@SequentialBuilder _ build: () -> [any UnaryModule]) { self.init(build()) }

    /// The layers named "0", "1", ... as in PyTorch.
    public override func namedChildren() -> [(String, Module)] { layers.enumerated().map { ("\($0.offset)", $0.element) } }

    /// Each layer applied to the previous one's output.
    public func forward(_ x: NNTensor) -> NNTensor { layers.reduce(x) { $1.forward($0) } }

    /// Layer `index`, as PyTorch's `seq[i]`.
    public subscript(_ index: Int) -> any UnaryModule { layers[index] }
    /// The number of layers.
    public var count: Int { layers.count }
}

/// Modules in a list, named "0", "1", ... without a `forward` of its own (PyTorch's `nn.ModuleList`).
public final class ModuleList: Module {
    /// The modules, in order.
    public let modules: [Module]
    /// PyTorch's `nn.ModuleList(modules)`.
    public init(_ modules: [Module]) { self.modules = modules }
    /// The modules named "0", "1", ...
    public override func namedChildren() -> [(String, Module)] { modules.enumerated().map { ("\($0.offset)", $0.element) } }
    /// Module `index`.
    public subscript(_ index: Int) -> Module { modules[index] }
    /// The number of modules.
    public var count: Int { modules.count }
}

/// Builds `Sequential`'s layer list from a block of layers.
@resultBuilder
public enum SequentialBuilder {
    /// One layer.
    public static func buildExpression(_ layer: any UnaryModule) -> [any UnaryModule] { [layer] }
    public static func buildBlock(_ parts: [any UnaryModule]...) -> [any UnaryModule] { parts.flatMap { $0 } }
    public static func buildOptional(_ part: [any UnaryModule]?) -> [any UnaryModule] { part ?? [] }
    public static func buildEither(first: [any UnaryModule]) -> [any UnaryModule] { first }
    public static func buildEither(second: [any UnaryModule]) -> [any UnaryModule] { second }
    public static func buildArray(_ parts: [[any UnaryModule]]) -> [any UnaryModule] { parts.flatMap { $0 } }
}

/// Dimensions `startDim...endDim` merged (PyTorch's `nn.Flatten`, from dimension 1 by default).
public final class Flatten: Module, UnaryModule {
    /// The first and last dimension merged.
    public let startDim: Int, endDim: Int
    /// PyTorch's `nn.Flatten(start_dim=1, end_dim=-1)`.
    public init(startDim: Int = 1, endDim: Int = -1) {
        self.startDim = startDim
        self.endDim = endDim
    }
    /// The layer's computation (PyTorch's `forward`).
    public func forward(_ x: NNTensor) -> NNTensor { x.flatten(startDim: startDim, endDim: endDim) }
}

/// Zeroes elements with probability `p` in training mode (PyTorch's `nn.Dropout`); identity in eval mode.
public final class Dropout: Module, UnaryModule {
    /// The probability of zeroing an element.
    public let p: Float
    /// PyTorch's `nn.Dropout(p=0.5)`.
    public init(_ p: Float = 0.5) { self.p = p }
    /// The layer's computation (PyTorch's `forward`).
    public func forward(_ x: NNTensor) -> NNTensor { F.dropout(x, p: p, training: training) }
}

/// max(x, 0).
public final class ReLU: Module, UnaryModule {
    /// The layer (it has no parameters).
    public override init() {}
    /// The activation applied elementwise.
    public func forward(_ x: NNTensor) -> NNTensor { x.relu() }
}

/// max(x, 0) + slope·min(x, 0).
public final class LeakyReLU: Module, UnaryModule {
    /// The slope for negative inputs.
    public let negativeSlope: Float
    /// PyTorch's `nn.LeakyReLU(negative_slope=0.01)`.
    public init(_ negativeSlope: Float = 0.01) { self.negativeSlope = negativeSlope }
    /// The layer's computation (PyTorch's `forward`).
    public func forward(_ x: NNTensor) -> NNTensor { F.leakyRelu(x, negativeSlope: negativeSlope) }
}

/// GELU, exact or with `approximate: true` the tanh form.
public final class GELU: Module, UnaryModule {
    /// The tanh approximation rather than the exact erf form.
    public let approximate: Bool
    /// PyTorch's `nn.GELU(approximate='none')` (or `'tanh'` with `approximate: true`).
    public init(approximate: Bool = false) { self.approximate = approximate }
    /// The layer's computation (PyTorch's `forward`).
    public func forward(_ x: NNTensor) -> NNTensor { F.gelu(x, approximate: approximate) }
}

/// x·sigmoid(x).
public final class SiLU: Module, UnaryModule {
    /// The layer (it has no parameters).
    public override init() {}
    /// The activation applied elementwise.
    public func forward(_ x: NNTensor) -> NNTensor { F.silu(x) }
}

/// tanh(x).
public final class Tanh: Module, UnaryModule {
    /// The layer (it has no parameters).
    public override init() {}
    /// The activation applied elementwise.
    public func forward(_ x: NNTensor) -> NNTensor { x.tanh() }
}

/// 1 / (1 + e^(−x)).
public final class Sigmoid: Module, UnaryModule {
    /// The layer (it has no parameters).
    public override init() {}
    /// The activation applied elementwise.
    public func forward(_ x: NNTensor) -> NNTensor { x.sigmoid() }
}

/// Softmax along `dim`.
public final class Softmax: Module, UnaryModule {
    /// The dimension normalised.
    public let dim: Int
    /// PyTorch's `nn.Softmax(dim)`.
    public init(dim: Int) { self.dim = dim }
    /// The layer's computation (PyTorch's `forward`).
    public func forward(_ x: NNTensor) -> NNTensor { x.softmax(dim: dim) }
}

/// The input unchanged (a placeholder layer).
public final class Identity: Module, UnaryModule {
    /// The layer (it has no parameters).
    public override init() {}
    /// The activation applied elementwise.
    public func forward(_ x: NNTensor) -> NNTensor { x }
}
