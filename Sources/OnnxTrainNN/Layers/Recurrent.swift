import OnnxTrain

/// The shared part of LSTM and GRU: PyTorch's parameters per layer and direction
/// (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, `..._reverse`), all
/// U(±1/sqrt(hidden)), gates stacked in PyTorch's order.
///
/// The recurrence is unrolled into MatMul/Sigmoid/Tanh nodes, one group per time step, so it
/// trains through the same gradient rules as everything else and exports as plain ONNX.
public class RecurrentBase: Module {
    /// Features in, hidden features, and stacked layers.
    public let inputSize: Int, hiddenSize: Int, numLayers: Int
    /// A second, reversed pass per layer; [N, L, ...] inputs and outputs.
    public let bidirectional: Bool, batchFirst: Bool
    /// Dropout between stacked layers in training mode.
    public let dropout: Float
    let gates: Int
    /// Per layer and direction: weight_ih, weight_hh, bias_ih?, bias_hh?.
    let cells: [(suffix: String, weightIH: NNTensor, weightHH: NNTensor, biasIH: NNTensor?, biasHH: NNTensor?)]

    init(gates: Int, inputSize: Int, hiddenSize: Int, numLayers: Int, bias: Bool, batchFirst: Bool, dropout: Float, bidirectional: Bool) {
        self.inputSize = inputSize
        self.hiddenSize = hiddenSize
        self.numLayers = numLayers
        self.bidirectional = bidirectional
        self.batchFirst = batchFirst
        self.dropout = dropout
        self.gates = gates
        let bound = 1 / Float(max(hiddenSize, 1)).squareRoot()
        var cells: [(String, NNTensor, NNTensor, NNTensor?, NNTensor?)] = []
        for layer in 0..<numLayers {
            let input = layer == 0 ? inputSize : hiddenSize * (bidirectional ? 2 : 1)
            for direction in 0..<(bidirectional ? 2 : 1) {
                cells.append(("_l\(layer)" + (direction == 1 ? "_reverse" : ""),
                              .parameter(Init.uniform([gates * hiddenSize, input], bound: bound)),
                              .parameter(Init.uniform([gates * hiddenSize, hiddenSize], bound: bound)),
                              bias ? .parameter(Init.uniform([gates * hiddenSize], bound: bound)) : nil,
                              bias ? .parameter(Init.uniform([gates * hiddenSize], bound: bound)) : nil))
            }
        }
        self.cells = cells
    }

    /// PyTorch's parameter names: `weight_ih_l0`, `bias_hh_l1_reverse`, ...
    public override func namedLocalTensors() -> [(String, NNTensor)] {
        cells.flatMap { c -> [(String, NNTensor)] in
            [("weight_ih" + c.suffix, c.weightIH), ("weight_hh" + c.suffix, c.weightHH)]
                + (c.biasIH.map { [("bias_ih" + c.suffix, $0)] } ?? []) + (c.biasHH.map { [("bias_hh" + c.suffix, $0)] } ?? [])
        }
    }

    /// One step of the cell: new (h, c) from the input projection `xProjected` [N, gates·H] and the state.
    func cell(_ xProjected: NNTensor, h: NNTensor, c: NNTensor?, _ index: Int) -> (NNTensor, NNTensor?) {
        (xProjected.failed("\(type(of: self)) defines no cell"), nil)
    }

    /// Runs every layer and direction over `input`; `h0`/`c0` are [layers·dirs, N, H] or zeros.
    func run(_ input: NNTensor, h0: NNTensor?, c0: NNTensor?, hasCell: Bool) -> (NNTensor, NNTensor, NNTensor?) {
        let x = batchFirst ? input.transpose(0, 1) : input  // [L, N, in]
        let steps = x.size(0), batch = x.size(1)
        let directions = bidirectional ? 2 : 1
        let zeros = NNTensor(Tensor(zeros: input.dtype, shape: [numLayers * directions, batch, hiddenSize]))
        var layerInput = x
        var hN: [NNTensor] = [], cN: [NNTensor] = []
        for layer in 0..<numLayers {
            var outputs: [NNTensor] = []
            for direction in 0..<directions {
                let index = layer * directions + direction
                let cellWeights = cells[index]
                // The input projection of every step at once: [L, N, gates·H].
                let projected = F.linear(layerInput, weight: cellWeights.weightIH, bias: cellWeights.biasIH)
                var h = (h0 ?? zeros)[index]
                var c: NNTensor? = hasCell ? (c0 ?? zeros)[index] : nil
                var states = [NNTensor?](repeating: nil, count: steps)
                let order = direction == 0 ? Array(0..<steps) : Array((0..<steps).reversed())
                for t in order {
                    (h, c) = cell(projected[t], h: h, c: c, index)
                    states[t] = h
                }
                outputs.append(NNTensor.stack(states.compactMap { $0 }, dim: 0))
                hN.append(h)
                if let c { cN.append(c) }
            }
            layerInput = directions == 1 ? outputs[0] : NNTensor.cat(outputs, dim: 2)
            if layer < numLayers - 1 { layerInput = F.dropout(layerInput, p: dropout, training: training) }
        }
        let output = batchFirst ? layerInput.transpose(0, 1) : layerInput
        return (output, NNTensor.stack(hN, dim: 0), hasCell ? NNTensor.stack(cN, dim: 0) : nil)
    }

    /// x·Wᵀ + b for the hidden state.
    func hiddenProjection(_ h: NNTensor, _ index: Int) -> NNTensor {
        F.linear(h, weight: cells[index].weightHH, bias: cells[index].biasHH)
    }
}

/// A long short-term memory network (PyTorch's `nn.LSTM`): gates i, f, g, o;
/// c = f·c + i·g, h = o·tanh(c). Input [L, N, in] ([N, L, in] with `batchFirst`).
public final class LSTM: RecurrentBase {
    /// PyTorch's `nn.LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0, bidirectional=False)`.
    public init(_ inputSize: Int, _ hiddenSize: Int, numLayers: Int = 1, bias: Bool = true, batchFirst: Bool = false,
                dropout: Float = 0, bidirectional: Bool = false) {
        super.init(gates: 4, inputSize: inputSize, hiddenSize: hiddenSize, numLayers: numLayers, bias: bias, batchFirst: batchFirst,
                   dropout: dropout, bidirectional: bidirectional)
    }

    override func cell(_ xProjected: NNTensor, h: NNTensor, c: NNTensor?, _ index: Int) -> (NNTensor, NNTensor?) {
        let g = (xProjected + hiddenProjection(h, index)).chunk(4, dim: -1)
        guard g.count == 4, let c else { return (xProjected.failed("LSTM: gates of shape \(xProjected.shape) do not split in 4"), nil) }
        let next = g[1].sigmoid() * c + g[0].sigmoid() * g[2].tanh()
        return (g[3].sigmoid() * next.tanh(), next)
    }

    /// The output [L, N, dirs·H] and the final (h, c), each [layers·dirs, N, H].
    public func callAsFunction(_ input: NNTensor, _ state: (h: NNTensor, c: NNTensor)? = nil) -> (NNTensor, (h: NNTensor, c: NNTensor)) {
        let (out, h, c) = run(input, h0: state?.h, c0: state?.c, hasCell: true)
        return (out, (h, c ?? h))
    }
}

/// A gated recurrent unit network (PyTorch's `nn.GRU`): gates r, z, n;
/// n = tanh(W_in·x + b_in + r·(W_hn·h + b_hn)), h = (1 − z)·n + z·h.
public final class GRU: RecurrentBase {
    /// PyTorch's `nn.GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0, bidirectional=False)`.
    public init(_ inputSize: Int, _ hiddenSize: Int, numLayers: Int = 1, bias: Bool = true, batchFirst: Bool = false,
                dropout: Float = 0, bidirectional: Bool = false) {
        super.init(gates: 3, inputSize: inputSize, hiddenSize: hiddenSize, numLayers: numLayers, bias: bias, batchFirst: batchFirst,
                   dropout: dropout, bidirectional: bidirectional)
    }

    override func cell(_ xProjected: NNTensor, h: NNTensor, c: NNTensor?, _ index: Int) -> (NNTensor, NNTensor?) {
        let x = xProjected.chunk(3, dim: -1), hh = hiddenProjection(h, index).chunk(3, dim: -1)
        guard x.count == 3, hh.count == 3 else { return (xProjected.failed("GRU: gates of shape \(xProjected.shape) do not split in 3"), nil) }
        let r = (x[0] + hh[0]).sigmoid(), z = (x[1] + hh[1]).sigmoid()
        let n = (x[2] + r * hh[2]).tanh()
        return ((1 - z) * n + z * h, nil)
    }

    /// The output [L, N, dirs·H] and the final h [layers·dirs, N, H].
    public func callAsFunction(_ input: NNTensor, _ h0: NNTensor? = nil) -> (NNTensor, NNTensor) {
        let (out, h, _) = run(input, h0: h0, c0: nil, hasCell: false)
        return (out, h)
    }
}
