// NetDigits: the torch.js proposal's `Net`, written with OnnxTrainNN as in PyTorch, trained on the
// bundled 8x8 digits (Examples/digits). The digits are one channel, so the first Conv2d takes 1
// channel instead of 3, and two 2x2 pools leave 32 x 2 x 2 features for the Linear layer:
//
//     class Net(nn.Module):
//         convs = Sequential(Conv2d(1, 16, 5, stride=1, padding=2), MaxPool2d(2), ReLU(),
//                            Conv2d(16, 32, 5, stride=1, padding=2), MaxPool2d(2), ReLU())
//         mlp = Linear(32 * 2 * 2, 10)
//         def forward(x): x = convs(x); x = x.view([x.size(0), -1]); return mlp(x)
//
// Usage: swift run -c release NetDigits [EPOCHS]   (default 5)
// Writes runs/NetDigits/: model.onnx (inference, eval mode), model.safetensors (state_dict) and
// checkpoint (onnxruntime format, with the optimizer's state).
import Foundation
import OnnxTrain
import OnnxTrainNN

final class Net: Module, UnaryModule {
    let convs = Sequential(Conv2d(1, 16, kernelSize: 5, stride: 1, padding: 2), MaxPool2d(2), ReLU(),
                           Conv2d(16, 32, kernelSize: 5, stride: 1, padding: 2), MaxPool2d(2), ReLU())
    let mlp = Linear(32 * 2 * 2, 10)

    func forward(_ x: NNTensor) -> NNTensor {
        let h = convs(x)
        return mlp(h.view(h.size(0), -1))
    }
}

let digits = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("digits").path
let epochs = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 5 : 5
let output = "runs/NetDigits"
let batchSize = 32

/// Images [N, 64] as [N, 1, 8, 8] and their labels.
func load(_ name: String) throws -> (images: Tensor, labels: Tensor) {
    let data = try Npz.readDictionary(contentsOf: "\(digits)/\(name).npz")
    guard let images = data["input"], let labels = data["labels"] else {
        throw OnnxTrainError.invalidInput("\(digits)/\(name).npz needs 'input' and 'labels'")
    }
    return (images.reshaped([images.shape[0], 1, 8, 8]), labels)
}

/// Rows `indices` of `t` as a fresh tensor.
func rows(_ t: Tensor, _ indices: [Int]) -> NNTensor {
    NNTensor(t).indexSelect(dim: 0, NNTensor(indices.map(Int64.init), shape: [indices.count])).detach()
}

/// The share of `data` the model classifies correctly.
func accuracy(_ model: Net, _ data: (images: Tensor, labels: Tensor)) throws -> Double {
    model.eval()
    defer { model.train() }
    let predicted = try model(NNTensor(data.images)).argmax(dim: 1).tensor().intValues() ?? []
    let labels = data.labels.intValues() ?? []
    return Double(zip(predicted, labels).filter { $0 == $1 }.count) / Double(max(labels.count, 1))
}

do {
    NNRandom.manualSeed(1)
    let train = try load("train"), test = try load("test")
    let model = Net()
    let optimizer = SGD(model.parameters(), lr: 0.05, momentum: 0.9)
    let stepsPerEpoch = train.images.shape[0] / batchSize
    optimizer.schedule = .cosineDecay(from: 0.05, steps: epochs * stepsPerEpoch)
    print("Net: \(model.parameterCount) parameters; \(train.images.shape[0]) training and \(test.images.shape[0]) test digits")
    let start = Date()
    for epoch in 1...epochs {
        let order = NNRandom.permutation(train.images.shape[0])
        var total: Float = 0
        for step in 0..<stepsPerEpoch {
            let batch = Array(order[(step * batchSize)..<((step + 1) * batchSize)])
            optimizer.zeroGrad()
            let loss = F.crossEntropy(model(rows(train.images, batch)), rows(train.labels, batch))
            try loss.backward()
            try optimizer.step()
            total += try loss.item()
        }
        print(String(format: "epoch %d: loss %.4f, test accuracy %.1f%%", epoch, total / Float(stepsPerEpoch), 100 * (try accuracy(model, test))))
    }
    print(String(format: "trained in %.1f s", Date().timeIntervalSince(start)))
    try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
    try model.exportONNX(to: output + "/model.onnx", example: rows(test.images, Array(0..<1)))
    try model.saveStateDict(to: output + "/model.safetensors")
    try model.saveCheckpoint(to: output + "/checkpoint", optimizer: optimizer)
    print("wrote \(output)/model.onnx, model.safetensors and checkpoint")
} catch {
    FileHandle.standardError.write(Data("NetDigits: error: \(error)\n".utf8))
    exit(1)
}
