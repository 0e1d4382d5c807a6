import OnnxTrain

/// Multi-head attention (PyTorch's `nn.MultiheadAttention`) with PyTorch's parameters and names:
/// `in_proj_weight` [3E, E] (Xavier-uniform), `in_proj_bias` [3E] (zeros) and `out_proj`
/// (a Linear with zero bias).
///
/// Inputs are [L, N, E] ([N, L, E] with `batchFirst`). `attnMask` is [L, S] (or [N·heads, L, S]):
/// a bool mask is true where attention is *not* allowed, a float mask is added to the scores;
/// `keyPaddingMask` is bool [N, S], true for padding. Attention weights drop out with
/// probability `dropout` in training mode.
public final class MultiheadAttention: Module {
    /// Model width and heads (`embedDim` is a multiple of `numHeads`).
    public let embedDim: Int, numHeads: Int
    /// Dropout probability of the attention weights in training mode.
    public let dropout: Float
    /// Inputs and outputs are [N, L, E] rather than [L, N, E].
    public let batchFirst: Bool
    /// The query, key and value projections stacked: [3E, E].
    public let inProjWeight: NNTensor
    /// Their biases [3E], nil for `bias: false`.
    public let inProjBias: NNTensor?
    /// The output projection.
    public let outProj: Linear

    /// PyTorch's `nn.MultiheadAttention(embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False)`.
    public init(_ embedDim: Int, _ numHeads: Int, dropout: Float = 0, bias: Bool = true, batchFirst: Bool = false) {
        self.embedDim = embedDim
        self.numHeads = numHeads
        self.dropout = dropout
        self.batchFirst = batchFirst
        inProjWeight = .parameter(Init.xavierUniform([3 * embedDim, embedDim], fanIn: embedDim, fanOut: 3 * embedDim))
        inProjBias = bias ? .parameter(Init.constant([3 * embedDim], 0)) : nil
        outProj = Linear(embedDim, embedDim, bias: bias)
        if let b = outProj.bias { b.setValue(Init.constant([embedDim], 0)) }
    }

    /// Attention of `query` over `key`/`value`; returns the output and, when `needWeights`, the
    /// attention weights averaged over heads [N, L, S] (PyTorch's defaults).
    public func callAsFunction(_ query: NNTensor, _ key: NNTensor, _ value: NNTensor, keyPaddingMask: NNTensor? = nil,
                               needWeights: Bool = true, attnMask: NNTensor? = nil) -> (NNTensor, NNTensor?) {
        forward(query, key, value, keyPaddingMask: keyPaddingMask, needWeights: needWeights, attnMask: attnMask)
    }

    /// See `callAsFunction`.
    public func forward(_ query: NNTensor, _ key: NNTensor, _ value: NNTensor, keyPaddingMask: NNTensor? = nil,
                        needWeights: Bool = true, attnMask: NNTensor? = nil) -> (NNTensor, NNTensor?) {
        guard numHeads > 0, embedDim % numHeads == 0 else {
            return (query.failed("MultiheadAttention: embedDim \(embedDim) is not divisible by numHeads \(numHeads)"), nil)
        }
        // Work batch-first: [N, L, E].
        let q0 = batchFirst ? query : query.transpose(0, 1)
        let k0 = batchFirst ? key : key.transpose(0, 1)
        let v0 = batchFirst ? value : value.transpose(0, 1)
        let e = embedDim, h = numHeads, d = embedDim / numHeads
        let n = q0.size(0), l = q0.size(1), s = k0.size(1)
        let q, k, v: NNTensor
        if query === key && key === value {
            // Self-attention: one projection split in three, as PyTorch computes it.
            let qkv = F.linear(q0, weight: inProjWeight, bias: inProjBias).split(e, dim: -1)
            guard qkv.count == 3 else { return (query.failed("MultiheadAttention: input of shape \(query.shape) does not have \(e) features"), nil) }
            (q, k, v) = (qkv[0], qkv[1], qkv[2])
        } else {
            let w = inProjWeight.split(e, dim: 0)
            let b = inProjBias?.split(e, dim: 0)
            q = F.linear(q0, weight: w[0], bias: b?[0])
            k = F.linear(k0, weight: w[1], bias: b?[1])
            v = F.linear(v0, weight: w[2], bias: b?[2])
        }
        func heads(_ t: NNTensor, _ length: Int) -> NNTensor { t.reshape([n, length, h, d]).transpose(1, 2) }
        var scores = heads(q, l).matmul(heads(k, s).transpose(2, 3)) * (1 / Float(d).squareRoot())  // [N, H, L, S]
        if let attnMask {
            let additive = MultiheadAttention.additiveMask(attnMask)
            scores = scores + (additive.rank == 3 ? additive.reshape([n, h, l, s]) : additive)
        }
        if let keyPaddingMask {
            scores = scores + MultiheadAttention.additiveMask(keyPaddingMask).reshape([n, 1, 1, s])
        }
        let weights = F.dropout(scores.softmax(dim: -1), p: dropout, training: training)
        let averaged = needWeights ? weights.mean([1]) : nil
        let context = weights.matmul(heads(v, s)).transpose(1, 2).reshape([n, l, e])
        let out = outProj(context)
        return (batchFirst ? out : out.transpose(0, 1), averaged)
    }

    /// A bool mask (true = masked) as 0 / −∞ floats; a float mask as it is.
    static func additiveMask(_ mask: NNTensor) -> NNTensor {
        guard mask.dtype == .bool else { return mask }
        let t = mask.value
        let values = (0..<t.count).map { (t.scalarDouble(at: $0) ?? 0) != 0 ? -Float.infinity : 0 }
        return NNTensor(Tensor(shape: t.shape, scalars: values))
    }

    /// The [size, size] float mask that hides future positions (PyTorch's
    /// `Transformer.generate_square_subsequent_mask`): −∞ above the diagonal, 0 elsewhere.
    public static func causalMask(_ size: Int) -> NNTensor {
        var values = [Float](repeating: 0, count: size * size)
        for i in 0..<size { for j in (i + 1)..<max(i + 1, size) { values[i * size + j] = -.infinity } }
        return NNTensor(Tensor(shape: [size, size], scalars: values))
    }
}

/// One Transformer encoder block (PyTorch's `nn.TransformerEncoderLayer`, same names and
/// defaults: feed-forward 2048, dropout 0.1, ReLU, LayerNorm eps 1e-5, post-norm, [L, N, E]).
public final class TransformerEncoderLayer: Module, UnaryModule {
    /// The feed-forward activation.
    public enum Activation: Sendable { case relu, gelu }

    /// The self-attention block.
    public let selfAttn: MultiheadAttention
    /// The feed-forward block: linear1, activation, dropout, linear2.
    public let linear1: Linear
    /// Dropout inside the feed-forward block.
    public let dropout: Dropout
    /// The feed-forward block's output layer.
    public let linear2: Linear
    /// LayerNorm before each block (pre-norm) rather than after the residual sum.
    public let normFirst: Bool
    /// The attention block's LayerNorm.
    public let norm1: LayerNorm
    /// The feed-forward block's LayerNorm.
    public let norm2: LayerNorm
    /// Dropout on the attention block's output.
    public let dropout1: Dropout
    /// Dropout on the feed-forward block's output.
    public let dropout2: Dropout
    /// The feed-forward activation.
    public let activation: Activation

    /// PyTorch's `nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=2048, dropout=0.1,
    /// activation="relu", layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True)`.
    public init(dModel: Int, nhead: Int, dimFeedforward: Int = 2048, dropout: Float = 0.1, activation: Activation = .relu,
                layerNormEps: Float = 1e-5, batchFirst: Bool = false, normFirst: Bool = false, bias: Bool = true) {
        selfAttn = MultiheadAttention(dModel, nhead, dropout: dropout, bias: bias, batchFirst: batchFirst)
        linear1 = Linear(dModel, dimFeedforward, bias: bias)
        self.dropout = Dropout(dropout)
        linear2 = Linear(dimFeedforward, dModel, bias: bias)
        self.normFirst = normFirst
        norm1 = LayerNorm([dModel], eps: layerNormEps, bias: bias)
        norm2 = LayerNorm([dModel], eps: layerNormEps, bias: bias)
        dropout1 = Dropout(dropout)
        dropout2 = Dropout(dropout)
        self.activation = activation
    }

    /// The block over `src`; `mask` is the attention mask (`MultiheadAttention.causalMask(L)` for
    /// a causal model), `srcKeyPaddingMask` marks padding.
    public func forward(_ src: NNTensor, mask: NNTensor?, srcKeyPaddingMask: NNTensor? = nil) -> NNTensor {
        func attention(_ x: NNTensor) -> NNTensor {
            dropout1(selfAttn(x, x, x, keyPaddingMask: srcKeyPaddingMask, needWeights: false, attnMask: mask).0)
        }
        func feedForward(_ x: NNTensor) -> NNTensor {
            let hidden = linear1(x)
            return dropout2(linear2(dropout(activation == .relu ? hidden.relu() : F.gelu(hidden))))
        }
        if normFirst {
            let x = src + attention(norm1(src))
            return x + feedForward(norm2(x))
        }
        let x = norm1(src + attention(src))
        return norm2(x + feedForward(x))
    }

    /// The block without masks.
    public func forward(_ x: NNTensor) -> NNTensor { forward(x, mask: nil) }
}

/// A stack of encoder layers (PyTorch's `nn.TransformerEncoder`: `layers.0`, `layers.1`, ... and an optional final `norm`).
public final class TransformerEncoder: Module, UnaryModule {
    /// The layers, in order.
    public let layers: [TransformerEncoderLayer]
    /// A LayerNorm after the last layer, if any.
    public let norm: LayerNorm?

    /// `numLayers` layers made by `makeLayer` (PyTorch deep-copies one layer; each gets its own initial weights here).
    public init(numLayers: Int, norm: LayerNorm? = nil, _ makeLayer: () -> TransformerEncoderLayer) {
        layers = (0..<numLayers).map { _ in makeLayer() }
        self.norm = norm
    }

    /// Every layer with the same masks, then `norm`.
    public func forward(_ src: NNTensor, mask: NNTensor?, srcKeyPaddingMask: NNTensor? = nil) -> NNTensor {
        let x = layers.reduce(src) { $1.forward($0, mask: mask, srcKeyPaddingMask: srcKeyPaddingMask) }
        return norm.map { $0(x) } ?? x
    }

    /// The stack without masks.
    public func forward(_ x: NNTensor) -> NNTensor { forward(x, mask: nil) }
}
