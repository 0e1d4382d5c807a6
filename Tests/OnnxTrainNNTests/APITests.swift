import Foundation
import OnnxTrain
@testable import OnnxTrainNN
import OnnxTrainTestSupport
import XCTest

/// Behaviour of the model API beyond matching PyTorch's numbers: errors, gradient bookkeeping,
/// the session cache, state files.
final class APITests: XCTestCase {
    func testFailedOperationSurfacesAtBackwardNamingTheOp() throws {
        let w = NNTensor.parameter(Tensor(shape: [2, 3], scalars: [Float](repeating: 1, count: 6)))
        let bad = (w + NNTensor([1, 2, 3, 4], shape: [4])).sum()
        XCTAssertNotNil(bad.error)
        XCTAssertThrowsError(try bad.backward()) { error in
            XCTAssertTrue("\(error)".contains("Add over inputs [2, 3], [4]"), "\(error)")
        }
        XCTAssertThrowsError(try bad.item())
        XCTAssertTrue(bad.description.hasPrefix("NNTensor(failed: Add over inputs"), bad.description)
    }

    func testBackwardOfLinearIsTheClosedForm() throws {
        // loss = sum(x·Wᵀ + b): dW[j, k] = Σ_n x[n, k], db[j] = N.
        let layer = Linear(3, 2)
        let x = NNTensor([1, 2, 3, 4, 5, 6], shape: [2, 3])
        try layer(x).sum().backward()
        XCTAssertEqual(layer.weight.grad?.scalars(as: Float.self), [5, 7, 9, 5, 7, 9])
        XCTAssertEqual(layer.bias?.grad?.scalars(as: Float.self), [2, 2])
        // Gradients accumulate until zeroGrad, as in PyTorch.
        try layer(x).sum().backward()
        XCTAssertEqual(layer.bias?.grad?.scalars(as: Float.self), [4, 4])
        layer.zeroGrad()
        XCTAssertNil(layer.weight.grad)
    }

    func testFrozenParametersTakeNoGradient() throws {
        let layer = Linear(3, 2)
        layer.bias?.requiresGrad = false
        try layer(NNTensor([1, 2, 3], shape: [1, 3])).sum().backward()
        XCTAssertNil(layer.bias?.grad)
        XCTAssertNotNil(layer.weight.grad)
        layer.requiresGrad(false)
        XCTAssertThrowsError(try layer(NNTensor([1, 2, 3], shape: [1, 3])).sum().backward())
    }

    func testATrainingLoopCompilesItsGraphOnce() throws {
        let net = ProposalNet()
        let optimizer = SGD(net.parameters(), lr: 0.01)
        let before = SessionCache.shared.count
        for step in 0..<4 {
            optimizer.zeroGrad()
            let x = NNTensor.randn([2, 3, 4, 4])
            let loss = F.crossEntropy(net(x), NNTensor([Int64(step % 10), 3], shape: [2]))
            try loss.backward()
            try optimizer.step()
        }
        XCTAssertEqual(SessionCache.shared.count, before + 1)
    }

    func testLoadStateDictReportsMissingUnexpectedAndMismatchedNames() throws {
        let net = ProposalNet()
        var state = net.stateDict()
        state["mlp.bias"] = nil
        state["extra.weight"] = Tensor(scalar: Float(1))
        XCTAssertThrowsError(try net.loadStateDict(state)) { error in
            XCTAssertTrue("\(error)".contains("missing mlp.bias; unexpected extra.weight"), "\(error)")
        }
        let result = try net.loadStateDict(state, strict: false)
        XCTAssertEqual(result, Module.LoadResult(missingKeys: ["mlp.bias"], unexpectedKeys: ["extra.weight"]))
        state = net.stateDict()
        state["mlp.weight"] = Tensor(zeros: .float32, shape: [10, 31])
        XCTAssertThrowsError(try net.loadStateDict(state)) { error in
            XCTAssertTrue("\(error)".contains("'mlp.weight' has shape [10, 31] in the source, [10, 32] in the model"), "\(error)")
        }
    }

    func testStateDictAndCheckpointFilesRoundTrip() throws {
        let dir = NSTemporaryDirectory() + "onnx-train-nn-state-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let torch = try TorchCase("convzoo")
        let model = ConvZoo()
        try model.loadStateDict(contentsOf: torch.weights)
        let optimizer = AdamW(model.parameters(), lr: 1e-3)
        func loss(_ m: ConvZoo, _ step: Int) -> NNTensor {
            F.crossEntropy(m(torch.rows(torch.x, from: step * torch.batch)), torch.rows(torch.y, from: step * torch.batch))
        }
        for step in 0..<2 {
            optimizer.zeroGrad()
            try loss(model, step).backward()
            try optimizer.step()
        }
        try model.saveStateDict(to: dir + "/model.safetensors")
        try model.saveCheckpoint(to: dir + "/checkpoint", optimizer: optimizer)
        try model.saveTrainingState(to: dir + "/training.safetensors", optimizer: optimizer)
        let fromSafeTensors = ConvZoo()
        try fromSafeTensors.loadStateDict(contentsOf: dir + "/model.safetensors")
        let restored = ConvZoo(), restoredFromSafeTensors = ConvZoo()
        let restoredOptimizer = AdamW(restored.parameters(), lr: 1)
        let safeTensorsOptimizer = AdamW(restoredFromSafeTensors.parameters(), lr: 1)
        try restored.loadCheckpoint(from: dir + "/checkpoint", optimizer: restoredOptimizer)
        try restoredFromSafeTensors.loadTrainingState(from: dir + "/training.safetensors", optimizer: safeTensorsOptimizer)
        for (name, value) in model.stateDict() {
            for copy in [fromSafeTensors, restored, restoredFromSafeTensors] {
                XCTAssertEqual(copy.stateDict()[name]?.rawBytes.elementsEqual(value.rawBytes), true, name)
            }
        }
        for o in [restoredOptimizer, safeTensorsOptimizer] {
            XCTAssertEqual(o.stepCount, 2)
            XCTAssertEqual(o.learningRate, 1e-3)
        }
        // The restored pairs continue exactly as the original.
        for step in 2..<4 {
            for (m, o) in [(model, optimizer as NNOptimizer), (restored, restoredOptimizer), (restoredFromSafeTensors, safeTensorsOptimizer)] {
                o.zeroGrad()
                try loss(m, step).backward()
                try o.step()
            }
        }
        for (name, value) in model.stateDict() {
            XCTAssertEqual(restored.stateDict()[name]?.rawBytes.elementsEqual(value.rawBytes), true, name)
            XCTAssertEqual(restoredFromSafeTensors.stateDict()[name]?.rawBytes.elementsEqual(value.rawBytes), true, name)
        }
    }

    func testDropoutScalesKeptElementsAndIsIdentityInEvalMode() throws {
        NNRandom.manualSeed(7)
        let dropout = Dropout(0.25)
        let y = try dropout(NNTensor.ones([4000])).scalars()
        let kept = y.filter { $0 != 0 }
        XCTAssertEqual(Double(kept.count) / 4000, 0.75, accuracy: 0.03)
        XCTAssertTrue(kept.allSatisfy { Swift.abs($0 - 1 / 0.75) < 1e-6 })
        dropout.eval()
        XCTAssertEqual(try dropout(NNTensor.ones([5])).scalars(), [1, 1, 1, 1, 1])
    }

    func testLossesMatchTheirDefinitions() throws {
        let p = NNTensor([0.2, 0.9], shape: [2]), y = NNTensor([0, 1], shape: [2])
        let bce = try F.binaryCrossEntropy(p, y).item()
        XCTAssertEqual(bce, -(log(0.8) + log(0.9)) / 2, accuracy: 1e-6)
        let logits = NNTensor([0.5, -1], shape: [2])
        let withLogits = try F.binaryCrossEntropyWithLogits(logits, y).item()
        let expected = (-log(1 - 1 / (1 + exp(-0.5))) - log(1 / (1 + exp(1.0)))) / 2
        XCTAssertEqual(withLogits, Float(expected), accuracy: 1e-6)
        let scores = NNTensor([1, 2, 3, 1, 1, 1], shape: [2, 3]), labels = NNTensor([Int64(2), 0], shape: [2])
        let ce = try F.crossEntropy(scores, labels).item()
        let nll = try F.nll(scores.logSoftmax(dim: 1), labels).item()
        XCTAssertEqual(ce, nll, accuracy: 1e-6)
        XCTAssertEqual(ce, Float((log(exp(1.0) + exp(2) + exp(3)) - 3 + log(3.0)) / 2), accuracy: 1e-6)
    }

    func testModuleNamesFollowPyTorch() {
        XCTAssertEqual(Module.pytorchName("selfAttn"), "self_attn")
        XCTAssertEqual(Module.pytorchName("numBatchesTracked"), "num_batches_tracked")
        XCTAssertEqual(Module.pytorchName("linear1"), "linear1")
        let lstm = LSTM(2, 3, bidirectional: true)
        XCTAssertEqual(lstm.namedParameters().map(\.0), [
            "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
            "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse",
        ])
    }
}

/// `backward()` against float64 central differences: leaves used several times, a Split whose
/// pieces are used differently, broadcasting, and a reduction.
final class FiniteDifferenceTests: XCTestCase {
    func testBackwardMatchesCentralDifferences() throws {
        let xValues: [Double] = [0.3, -1.2, 0.8, 0.5, -0.4, 1.1, 0.9, -0.7, 0.2, 0.6, -0.3, 1.4]
        let wValues: [Double] = [0.5, -0.2, 0.1, 0.7, -0.6, 0.3, 0.9, -0.1, 0.4, 0.2, -0.8, 0.6, 0.05, -0.3, 0.25, 0.15]
        func loss(_ x: NNTensor, _ w: NNTensor) -> NNTensor {
            let pieces = x.split([1, 3], dim: 1)
            let attention = x.matmul(w).softmax(dim: 1) * x
            return attention.sum() + pieces[1].tanh().mean() * 2 + (x * x).sum([0]).sqrt().sum() + pieces[0].sigmoid().sum()
        }
        let x = NNTensor.parameter(Tensor(shape: [3, 4], scalars: xValues))
        let w = NNTensor.parameter(Tensor(shape: [4, 4], scalars: wValues))
        try loss(x, w).backward()
        let h = 1e-6
        var worst = 0.0
        for (leaf, values, shape) in [(x, xValues, [3, 4]), (w, wValues, [4, 4])] {
            let grad = try XCTUnwrap(leaf.grad).scalars(as: Double.self)
            for i in values.indices {
                func at(_ delta: Double) throws -> Double {
                    var v = values
                    v[i] += delta
                    let moved = NNTensor(Tensor(shape: shape, scalars: v))
                    return Double(try (leaf === x ? loss(moved, NNTensor(w.value)) : loss(NNTensor(x.value), moved)).tensor().scalarDouble() ?? .nan)
                }
                let numeric = (try at(h) - at(-h)) / (2 * h)
                worst = max(worst, Swift.abs(numeric - grad[i]))
            }
        }
        XCTAssertLessThan(worst, 3e-9)  // measured 9.8e-10
        print("backward vs float64 central differences: max |diff| \(worst)")
    }
}

/// Tied weights: one tensor under two names, as PyTorch's `head.weight = embed.weight`.
final class TiedWeightTests: XCTestCase {
    final class Tied: Module, UnaryModule {
        let embed = Embedding(5, 4)
        let head = Linear(4, 5, bias: false)
        override init() {
            super.init()
            head.weight = embed.weight
        }
        func forward(_ x: NNTensor) -> NNTensor { head(embed(x)) }
    }

    func testTiedWeightIsOneParameterUnderBothStateDictNames() throws {
        let model = Tied()
        XCTAssertEqual(model.namedParameters().map(\.0), ["embed.weight"])
        XCTAssertEqual(Set(model.stateDict().keys), ["embed.weight", "head.weight"])
        // Both uses contribute to the one gradient: d/dW sum(W[x] · Wᵀ) for x = [1].
        try model(NNTensor([Int64(1)], shape: [1])).sum().backward()
        let w = model.embed.weight.value.scalars(as: Float.self)
        let columnSums = (0..<4).map { k in (0..<5).reduce(Float(0)) { $0 + w[$1 * 4 + k] } }
        var expected = [Float](repeating: 0, count: 20)
        for j in 0..<5 { for k in 0..<4 { expected[j * 4 + k] += w[4 + k] } }  // through the head: x·Wᵀ, d/dW[j, k] = e[k]
        for k in 0..<4 { expected[4 + k] += columnSums[k] }  // through the embedding row 1
        let grad = try XCTUnwrap(model.embed.weight.grad).scalars(as: Float.self)
        XCTAssertLessThan(zip(grad, expected).map { Swift.abs($0 - $1) }.max() ?? 1, 1e-6)
    }
}

/// PyTorch's default initialisation: the bounds and spreads each layer draws from.
final class InitialisationTests: XCTestCase {
    /// The largest |value| and the standard deviation.
    func spread(_ t: NNTensor) -> (max: Float, std: Float) {
        let v = t.value.scalars(as: Float.self)
        let mean = v.reduce(0, +) / Float(v.count)
        let variance = v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(v.count)
        return (v.map { Swift.abs($0) }.max() ?? 0, variance.squareRoot())
    }

    /// U(±bound): every value inside, the largest near the bound, the spread bound/√3.
    func assertUniform(_ t: NNTensor, bound: Float, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        let (largest, std) = spread(t)
        XCTAssertLessThanOrEqual(largest, bound, label, file: file, line: line)
        XCTAssertGreaterThan(largest, 0.95 * bound, label, file: file, line: line)
        XCTAssertEqual(std, bound / Float(3).squareRoot(), accuracy: 0.05 * bound, label, file: file, line: line)
    }

    func testLayersDrawFromPyTorchsDefaults() throws {
        NNRandom.manualSeed(3)
        let linear = Linear(100, 50)
        assertUniform(linear.weight, bound: 0.1, "Linear.weight: kaiming_uniform(a=√5) = U(±1/√in)")
        assertUniform(try XCTUnwrap(linear.bias), bound: 0.1, "Linear.bias")
        let conv = Conv2d(8, 16, kernelSize: 3)
        assertUniform(conv.weight, bound: 1 / Float(72).squareRoot(), "Conv2d.weight: fan_in = 8·3·3")
        let transposed = ConvTranspose2d(16, 8, kernelSize: 4)
        assertUniform(transposed.weight, bound: 1 / Float(8 * 16).squareRoot(), "ConvTranspose2d.weight: fan_in = out·k·k")
        let attention = MultiheadAttention(32, 4)
        assertUniform(attention.inProjWeight, bound: (6 / Float(32 + 96)).squareRoot(), "in_proj_weight: xavier_uniform")
        XCTAssertEqual(Set(try XCTUnwrap(attention.inProjBias).value.scalars(as: Float.self)), [0])
        XCTAssertEqual(Set(try XCTUnwrap(attention.outProj.bias).value.scalars(as: Float.self)), [0])
        let lstm = LSTM(10, 25)
        for (name, p) in lstm.namedParameters() { assertUniform(p, bound: 0.2, "LSTM.\(name): U(±1/√hidden)") }
        XCTAssertEqual(spread(Embedding(100, 40).weight).std, 1, accuracy: 0.05, "Embedding: N(0, 1)")
        let norm = BatchNorm2d(6)
        XCTAssertEqual(norm.weight?.value.scalars(as: Float.self), [Float](repeating: 1, count: 6))
        XCTAssertEqual(norm.runningVar?.value.scalars(as: Float.self), [Float](repeating: 1, count: 6))
        XCTAssertEqual(norm.numBatchesTracked?.value.intValues(), [0])
    }
}

/// Bad arguments give failed tensors with a message, never a trap.
final class BadInputTests: XCTestCase {
    func testMismatchedValuesAndHeadsFailWithAMessage() {
        let values = NNTensor([1, 2, 3], shape: [2, 2])
        XCTAssertEqual(values.error?.message, "3 values cannot fill shape [2, 2]")
        let x = NNTensor.zeros([2, 3, 10])
        let (y, _) = MultiheadAttention(10, 3)(x, x, x)
        XCTAssertEqual(y.error?.message, "MultiheadAttention: embedDim 10 is not divisible by numHeads 3")
        XCTAssertTrue("\(String(describing: Linear(4, 2)(x).error))".contains("MatMul over inputs [2, 3, 10], [4, 2]"))
    }
}
