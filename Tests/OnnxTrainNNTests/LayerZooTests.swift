import OnnxTrain
import OnnxTrainNN
import OnnxTrainTestSupport
import XCTest

/// Most layers of the API in two models, as make_torch_nn_fixtures.py defines `ConvZoo` and `RecurrentZoo`.
final class ConvZoo: Module, UnaryModule {
    let features = Sequential {
        Conv2d(1, 4, kernelSize: 3, padding: 1); BatchNorm2d(4); ReLU()
        ConvTranspose2d(4, 4, kernelSize: 2, stride: 2); GroupNorm(2, 4); SiLU()
        AvgPool2d(2); MaxPool2d(3, stride: 1, padding: 1); AdaptiveAvgPool2d(2); Flatten()
    }
    let head = Sequential(Linear(16, 8), BatchNorm1d(8), Tanh(), Dropout(0), Linear(8, 3))

    func forward(_ x: NNTensor) -> NNTensor { head(features(x)) }
}

final class RecurrentZoo: Module, UnaryModule {
    let conv = Conv1d(3, 6, kernelSize: 3, padding: 1)
    let lstm = LSTM(6, 5, numLayers: 2, batchFirst: true, bidirectional: true)
    let gru = GRU(10, 4, batchFirst: true)
    let norm = LayerNorm(4)
    let act = GELU()
    let out = Linear(4, 3)
    let softmax = Softmax(dim: -1)

    func forward(_ x: NNTensor) -> NNTensor {
        let h = conv(x.transpose(1, 2)).transpose(1, 2)
        let (l, _) = lstm(h)
        let (g, _) = gru(l)
        return softmax(out(act(norm(g[dim: 1, -1]))))
    }
}

final class LayerZooTests: XCTestCase {
    func testConvZooMatchesPyTorch() throws {
        let torch = try TorchCase("convzoo")
        let model = ConvZoo()
        let dOut = try torch.loadWeightsAndCompareOutput(model)
        XCTAssertLessThan(dOut, 1e-6)  // measured 7.5e-8
        let dSGD = try torch.lossDifference(model, expected: "sgd_losses", { SGD($0, lr: 0.05, momentum: 0.9, weightDecay: 1e-4) }) { x, y in
            F.crossEntropy(model(x), y)
        }
        XCTAssertLessThan(dSGD, 3e-6)  // measured 1.0e-6
        // BatchNorm's running statistics after 20 training steps, as PyTorch updates them.
        var dStats: Float = 0
        for (name, buffer) in model.namedBuffers() {
            let expected = try XCTUnwrap(torch.reference["after_sgd." + name], name)
            if buffer.dtype == .int64 {
                XCTAssertEqual(buffer.value.intValues(), expected.intValues(), name)
            } else {
                dStats = max(dStats, maxDifference(try buffer.scalars(), expected.scalars(as: Float.self), name))
            }
        }
        XCTAssertLessThan(dStats, 3e-6)  // measured 1.3e-6
        // 20 momentum steps through two BatchNorms amplify float32 rounding: PyTorch's own float32
        // and float64 runs of this loop differ by 4.2e-6 here (losses by 4.2e-7).
        let dTrained = try torch.outputDifference(model, expected: "train_output")
        XCTAssertLessThan(dTrained, 3e-5)  // measured 1.3e-5
        let dAdamW = try torch.lossDifference(model, expected: "adamw_losses", { AdamW($0, lr: 1e-3) }) { x, y in F.crossEntropy(model(x), y) }
        XCTAssertLessThan(dAdamW, 1e-6)  // measured 2.4e-7
        print("ConvZoo vs PyTorch: output \(dOut), SGD losses \(dSGD), running stats \(dStats), trained output \(dTrained), AdamW losses \(dAdamW)")
    }

    func testRecurrentZooMatchesPyTorch() throws {
        let torch = try TorchCase("rnnzoo")
        let model = RecurrentZoo()
        let dOut = try torch.loadWeightsAndCompareOutput(model)
        XCTAssertLessThan(dOut, 1e-7)  // measured 3.0e-8
        let dSGD = try torch.lossDifference(model, expected: "sgd_losses", { SGD($0, lr: 0.05, momentum: 0.9, weightDecay: 1e-4) }) { x, y in
            F.mse(model(x), y)
        }
        XCTAssertLessThan(dSGD, 1e-7)  // measured 1.5e-8
        let dAdamW = try torch.lossDifference(model, expected: "adamw_losses", { AdamW($0, lr: 1e-3) }) { x, y in F.mse(model(x), y) }
        XCTAssertLessThan(dAdamW, 1e-7)  // measured 2.2e-8
        print("RecurrentZoo vs PyTorch: output \(dOut), SGD losses \(dSGD), AdamW losses \(dAdamW)")
    }
}

/// Cross-attention, sequence-first as PyTorch's default, with a key padding mask (make_torch_nn_fixtures.py `CrossAttention`).
final class CrossAttention: Module, UnaryModule {
    let memory = Linear(12, 12)
    let attention = MultiheadAttention(12, 3)
    let out = Linear(12, 12)

    func forward(_ x: NNTensor) -> NNTensor {
        // Padding: the last key position of every odd batch row.
        let n = x.size(1), s = x.size(0)
        let padding = Tensor(shape: [n, s], scalars: (0..<(n * s)).map { ($0 / s) % 2 == 1 && $0 % s == s - 1 })
        let m = memory(x)
        let (attended, weights) = attention(x, m, m, keyPaddingMask: NNTensor(padding))
        return out(attended) + weights!.mean()
    }
}

/// Batch-first data [N, L, E] into a sequence-first module, results batch-first again.
final class SequenceFirst: Module, UnaryModule {
    let inner: any UnaryModule
    init(_ inner: any UnaryModule) { self.inner = inner }
    override func namedChildren() -> [(String, Module)] { [("inner", inner)] }
    func forward(_ x: NNTensor) -> NNTensor { inner.forward(x.transpose(0, 1)).transpose(0, 1) }
}

final class OptimizerVariantTests: XCTestCase {
    func lossDifference(_ key: String, _ makeOptimizer: ([NNTensor]) -> NNOptimizer) throws -> Float {
        let torch = try TorchCase("net")
        let net = ProposalNet()
        return try torch.lossDifference(net, expected: key, makeOptimizer) { x, y in F.crossEntropy(net(x), y) }
    }

    func testNesterovSGDMatchesPyTorch() throws {
        let d = try lossDifference("nesterov_losses") { SGD($0, lr: 0.05, momentum: 0.9, weightDecay: 1e-4, nesterov: true) }
        XCTAssertLessThan(d, 1e-6)  // measured 2.4e-7
        print("Nesterov SGD losses vs PyTorch: max |diff| \(d)")
    }

    func testDampenedSGDMatchesPyTorch() throws {
        let d = try lossDifference("dampening_losses") { SGD($0, lr: 0.05, momentum: 0.5, dampening: 0.3) }
        XCTAssertLessThan(d, 1e-6)  // measured 2.4e-7
        print("dampened SGD losses vs PyTorch: max |diff| \(d)")
    }

    func testAdamWithL2DecayMatchesPyTorch() throws {
        let d = try lossDifference("adam_losses") { Adam($0, lr: 1e-3, weightDecay: 1e-3) }
        XCTAssertLessThan(d, 1e-6)  // measured 2.4e-7
        print("Adam losses vs PyTorch: max |diff| \(d)")
    }

    func testCrossAttentionMatchesPyTorch() throws {
        let torch = try TorchCase("attention")
        let model = SequenceFirst(CrossAttention())
        let dOut = try torch.loadWeightsAndCompareOutput(model)
        XCTAssertLessThan(dOut, 1e-7)  // measured 3.0e-8
        let dSGD = try torch.lossDifference(model, expected: "sgd_losses", { SGD($0, lr: 0.05, momentum: 0.9, weightDecay: 1e-4) }) { x, y in
            F.mse(model(x), y)
        }
        XCTAssertLessThan(dSGD, 1e-6)  // measured 1.8e-7
        let dAdamW = try torch.lossDifference(model, expected: "adamw_losses", { AdamW($0, lr: 1e-3) }) { x, y in F.mse(model(x), y) }
        XCTAssertLessThan(dAdamW, 1e-6)  // measured 2.4e-7
        print("CrossAttention vs PyTorch: output \(dOut), SGD losses \(dSGD), AdamW losses \(dAdamW)")
    }

    func testScheduleSetsEachStepsLearningRate() throws {
        let layer = Linear(2, 1)
        let optimizer = SGD(layer.parameters(), lr: 1)
        optimizer.schedule = .linearWarmup(to: 0.4, steps: 4)
        var rates: [Float] = []
        for _ in 0..<3 {
            optimizer.zeroGrad()
            try layer(NNTensor([1, 2], shape: [1, 2])).sum().backward()
            try optimizer.step()
            rates.append(optimizer.learningRate)
        }
        XCTAssertEqual(rates, [0, 0.1, 0.2])
        XCTAssertEqual(optimizer.stepCount, 3)
    }
}
