import OnnxTrain
import OnnxTrainNN
import OnnxTrainTestSupport
import XCTest

/// Embedding, two Transformer encoder layers (post-norm ReLU with a causal mask, pre-norm GELU)
/// and a Linear head, as Tests/Fixtures/scripts/make_torch_nn_fixtures.py defines `Encoder`.
final class TinyEncoder: Module, UnaryModule {
    let embed = Embedding(11, 16)
    let layer1 = TransformerEncoderLayer(dModel: 16, nhead: 2, dimFeedforward: 32, dropout: 0, batchFirst: true)
    let layer2 = TransformerEncoderLayer(dModel: 16, nhead: 2, dimFeedforward: 32, dropout: 0, activation: .gelu, batchFirst: true,
                                         normFirst: true)
    let head = Linear(16, 11)

    func forward(_ tokens: NNTensor) -> NNTensor {
        let mask = MultiheadAttention.causalMask(tokens.size(1))
        return head(layer2(layer1.forward(embed(tokens), mask: mask)))
    }

    /// Next-token cross entropy over every position.
    func loss(_ tokens: NNTensor, _ targets: NNTensor) -> NNTensor {
        let logits = forward(tokens)
        return F.crossEntropy(logits.reshape([-1, 11]), targets.reshape([-1]))
    }
}

final class EncoderTests: XCTestCase {
    func testStateDictNamesArePyTorchs() throws {
        let names = Set(try SafeTensors.read(contentsOf: try TorchCase("encoder").weights).dictionary.keys)
        XCTAssertEqual(Set(TinyEncoder().stateDict().keys), names)
    }

    func testOutputMatchesPyTorch() throws {
        let d = try TorchCase("encoder").loadWeightsAndCompareOutput(TinyEncoder())
        XCTAssertLessThan(d, 1e-6)  // measured 3.0e-7
        print("Encoder output vs PyTorch: max |diff| \(d)")
    }

    func testTrainsLikePyTorchWithSGD() throws {
        let torch = try TorchCase("encoder")
        let model = TinyEncoder()
        let d = try torch.lossDifference(model, expected: "sgd_losses", { SGD($0, lr: 0.05, momentum: 0.9, weightDecay: 1e-4) }, loss: model.loss)
        XCTAssertLessThan(d, 1e-6)  // measured 2.4e-7
        let dOut = try torch.outputDifference(model, expected: "train_output")
        XCTAssertLessThan(dOut, 2e-6)  // measured 6.0e-7
        print("Encoder SGD losses vs PyTorch: max |diff| \(d); output after 20 steps: \(dOut)")
    }

    func testTrainsLikePyTorchWithAdamW() throws {
        let torch = try TorchCase("encoder")
        let model = TinyEncoder()
        let d = try torch.lossDifference(model, expected: "adamw_losses", { AdamW($0, lr: 1e-3, weightDecay: 1e-2) }, loss: model.loss)
        XCTAssertLessThan(d, 2e-6)  // measured 4.8e-7
        print("Encoder AdamW losses vs PyTorch: max |diff| \(d)")
    }
}
