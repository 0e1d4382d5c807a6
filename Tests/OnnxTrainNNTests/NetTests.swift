import OnnxTrain
import OnnxTrainNN
import OnnxTrainTestSupport
import XCTest

/// The torch.js proposal's network, written as its PyTorch original (Tests/Fixtures/scripts/make_torch_nn_fixtures.py).
final class ProposalNet: Module, UnaryModule {
    let convs = Sequential(Conv2d(3, 16, kernelSize: 5, stride: 1, padding: 2), MaxPool2d(2), ReLU(),
                           Conv2d(16, 32, kernelSize: 5, stride: 1, padding: 2), MaxPool2d(2), ReLU())
    let mlp = Linear(32, 10)

    func forward(_ x: NNTensor) -> NNTensor {
        let h = convs(x)
        return mlp(h.view(h.size(0), -1))
    }
}

/// A PyTorch case of Tests/Fixtures/torch-nn: weights, data and PyTorch's results.
struct TorchCase {
    let folder: String
    let x: Tensor, y: Tensor
    let batch: Int
    let reference: [String: Tensor]

    init(_ name: String) throws {
        folder = Fixtures.path("torch-nn/" + name)
        let data = try Npz.readDictionary(contentsOf: folder + "/data.npz")
        guard let x = data["x"], let y = data["y"], let batch = data["batch"]?.intValues()?.first else {
            throw OnnxTrainError.invalidInput("\(folder)/data.npz lacks x, y or batch")
        }
        self.x = x
        self.y = y
        self.batch = batch
        reference = try Npz.readDictionary(contentsOf: folder + "/reference.npz")
    }

    var weights: String { folder + "/weights.safetensors" }

    func expected(_ name: String) throws -> [Float] {
        guard let t = reference[name] else { throw OnnxTrainError.invalidInput("\(folder)/reference.npz has no '\(name)'") }
        return t.scalars(as: Float.self)
    }

    /// Rows `start..<start + batch` of `t` as a fresh leaf (so every step records the same graph).
    func rows(_ t: Tensor, from start: Int) -> NNTensor { NNTensor(t)[start..<(start + batch)].detach() }

    /// The model's eval-mode output on the first batch, compared with PyTorch's `expected` output.
    func outputDifference(_ model: some UnaryModule, expected: String = "output") throws -> Float {
        model.eval()
        return maxDifference(try model(rows(x, from: 0)).scalars(), try self.expected(expected), expected)
    }

    /// Checks that `model`'s state-dict names are PyTorch's, loads PyTorch's initial weights into it
    /// and returns its eval-mode output's largest difference from PyTorch's.
    func loadWeightsAndCompareOutput<M: Module & UnaryModule>(_ model: M, file: StaticString = #filePath, line: UInt = #line) throws -> Float {
        XCTAssertEqual(Set(model.stateDict().keys), Set(try SafeTensors.read(contentsOf: weights).dictionary.keys), folder, file: file, line: line)
        try model.loadStateDict(contentsOf: weights)
        return try outputDifference(model)
    }

    /// Loads the weights, trains 20 steps and returns the largest loss difference from PyTorch's `expected` losses.
    func lossDifference(_ model: Module, expected: String, _ makeOptimizer: ([NNTensor]) -> NNOptimizer,
                        loss: (NNTensor, NNTensor) -> NNTensor) throws -> Float {
        try model.loadStateDict(contentsOf: weights)
        let losses = try train(model, optimizer: makeOptimizer(model.parameters()), loss: loss)
        return maxDifference(losses, try self.expected(expected), expected)
    }

    /// PyTorch's loop: batches cycle through x; the loss before each step.
    func train(_ model: Module, optimizer: NNOptimizer, steps: Int = 20, loss: (NNTensor, NNTensor) -> NNTensor) throws -> [Float] {
        model.train()
        var losses: [Float] = []
        let n = x.shape[0]
        for step in 0..<steps {
            let start = (step * batch) % n
            optimizer.zeroGrad()
            let l = loss(rows(x, from: start), rows(y, from: start))
            try l.backward()
            try optimizer.step()
            losses.append(try l.item())
        }
        return losses
    }
}

/// The largest |a - b|; fails when the counts differ.
func maxDifference(_ a: [Float], _ b: [Float], _ label: String, file: StaticString = #filePath, line: UInt = #line) -> Float {
    XCTAssertEqual(a.count, b.count, "\(label): element counts", file: file, line: line)
    return zip(a, b).map { Swift.abs($0 - $1) }.max() ?? .infinity
}

final class NetTests: XCTestCase {
    func testStateDictNamesArePyTorchs() throws {
        let torch = try TorchCase("net")
        let names = Set(try SafeTensors.read(contentsOf: torch.weights).dictionary.keys)
        let net = ProposalNet()
        XCTAssertEqual(Set(net.stateDict().keys), names)
        XCTAssertEqual(net.namedParameters().map(\.0), ["convs.0.weight", "convs.0.bias", "convs.3.weight", "convs.3.bias", "mlp.weight", "mlp.bias"])
    }

    func testOutputMatchesPyTorch() throws {
        let d = try TorchCase("net").loadWeightsAndCompareOutput(ProposalNet())
        XCTAssertLessThan(d, 1e-7)  // measured 4.5e-8
        print("Net output vs PyTorch: max |diff| \(d)")
    }

    func testLoadsTheInitializersOfATorchOnnxExport() throws {
        let torch = try TorchCase("net")
        let net = ProposalNet()
        let result = try net.loadStateDict(contentsOf: torch.folder + "/torch_export.onnx")
        XCTAssertEqual(result.missingKeys + result.unexpectedKeys, [])
        let d = try torch.outputDifference(net)
        XCTAssertLessThan(d, 1e-7)  // measured 4.5e-8, as from the safetensors file
    }

    func testTrainsLikePyTorchWithSGD() throws {
        let torch = try TorchCase("net")
        let net = ProposalNet()
        let d = try torch.lossDifference(net, expected: "sgd_losses", { SGD($0, lr: 0.05, momentum: 0.9, weightDecay: 1e-4) }) { x, y in
            F.crossEntropy(net(x), y)
        }
        XCTAssertLessThan(d, 1e-6)  // measured 2.4e-7
        let dOut = try torch.outputDifference(net, expected: "train_output")
        XCTAssertLessThan(dOut, 1e-6)  // measured 4.8e-7
        print("Net SGD losses vs PyTorch: max |diff| \(d); output after 20 steps: \(dOut)")
    }

    func testTrainsLikePyTorchWithAdamW() throws {
        let torch = try TorchCase("net")
        let net = ProposalNet()
        let d = try torch.lossDifference(net, expected: "adamw_losses", { AdamW($0, lr: 1e-3, weightDecay: 1e-2) }) { x, y in
            F.crossEntropy(net(x), y)
        }
        XCTAssertLessThan(d, 1e-6)  // measured 2.4e-7
        print("Net AdamW losses vs PyTorch: max |diff| \(d)")
    }
}
