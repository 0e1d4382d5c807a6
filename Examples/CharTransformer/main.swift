// CharTransformer: a small character-level Transformer written with OnnxTrainNN, trained on the
// opening of Alice's Adventures in Wonderland (Examples/tiny-transformer/alice.txt), then sampled.
//
//     tokens [B, T] -> token Embedding(V, 48) + position Embedding(T, 48)
//         -> TransformerEncoder(2 x TransformerEncoderLayer(48, 4 heads, 192, GELU, pre-norm), causal mask)
//         -> LayerNorm -> Linear(48, V) -> next-character logits [B, T, V]
//
// Usage: swift run -c release CharTransformer [STEPS]   (default 1000 AdamW steps of 16 windows of 32 characters)
// Writes runs/CharTransformer/model.onnx (inference, [1, 32] token ids in, logits out).
import Foundation
import OnnxTrain
import OnnxTrainNN

let context = 32
let dModel = 48

final class CharModel: Module, UnaryModule {
    let tokenEmbedding: Embedding
    let positionEmbedding = Embedding(context, dModel)
    let encoder = TransformerEncoder(numLayers: 2) {
        TransformerEncoderLayer(dModel: dModel, nhead: 4, dimFeedforward: 4 * dModel, dropout: 0, activation: .gelu,
                                batchFirst: true, normFirst: true)
    }
    let norm = LayerNorm(dModel)
    let head: Linear

    init(vocabulary: Int) {
        tokenEmbedding = Embedding(vocabulary, dModel)
        head = Linear(dModel, vocabulary)
    }

    func forward(_ tokens: NNTensor) -> NNTensor {
        let t = tokens.size(1)
        let positions = NNTensor((0..<t).map(Int64.init), shape: [t])
        let x = tokenEmbedding(tokens) + positionEmbedding(positions)
        return head(norm(encoder.forward(x, mask: MultiheadAttention.causalMask(t))))
    }
}

let text = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("tiny-transformer/alice.txt").path
let steps = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 1000 : 1000
let output = "runs/CharTransformer"
let batchSize = 16

/// Samples `count` characters after `prompt`, each from the softmax of the last position at `temperature`.
func sample(_ model: CharModel, prompt: [Int64], count: Int, temperature: Float) throws -> [Int64] {
    var tokens = prompt
    for _ in 0..<count {
        let window = Array(tokens.suffix(context))
        let logits = model(NNTensor(window, shape: [1, window.count]))
        let last = try (logits[dim: 1, window.count - 1] / temperature).softmax(dim: -1).scalars()
        var u = NNRandom.uniform(1, low: 0, high: 1)[0]
        var next = last.count - 1
        for (i, p) in last.enumerated() {
            u -= p
            if u <= 0 { next = i; break }
        }
        tokens.append(Int64(next))
    }
    return tokens
}

do {
    NNRandom.manualSeed(1865)
    let characters = Array(try String(contentsOfFile: text, encoding: .utf8))
    let vocabulary = Array(Set(characters)).sorted()
    let id = Dictionary(uniqueKeysWithValues: vocabulary.enumerated().map { ($1, Int64($0)) })
    let encoded = characters.map { id[$0]! }
    let windows = stride(from: 0, to: encoded.count - context - 1, by: 4).map { Array(encoded[$0...($0 + context)]) }
    let model = CharModel(vocabulary: vocabulary.count)
    let optimizer = AdamW(model.parameters(), lr: 3e-3, weightDecay: 0.01)
    optimizer.schedule = .warmup(steps: 20, then: .cosineDecay(from: 3e-3, steps: max(steps - 20, 1), minimum: 3e-4))
    print("CharModel: \(model.parameterCount) parameters, \(vocabulary.count) characters, \(windows.count) windows of \(context + 1)")
    let start = Date()
    var recent: [Float] = []
    for step in 1...steps {
        let batch = NNRandom.permutation(windows.count).prefix(batchSize).map { windows[$0] }
        let inputs = NNTensor(batch.flatMap { $0.prefix(context) }, shape: [batchSize, context])
        let targets = NNTensor(batch.flatMap { $0.suffix(context) }, shape: [batchSize * context])
        optimizer.zeroGrad()
        let loss = F.crossEntropy(model(inputs).reshape([-1, vocabulary.count]), targets)
        try loss.backward()
        try optimizer.step()
        recent.append(try loss.item())
        if step % 50 == 0 || step == steps {
            print(String(format: "step %d: loss %.3f (lr %.2g)", step, recent.reduce(0, +) / Float(recent.count), optimizer.learningRate))
            recent = []
        }
    }
    print(String(format: "trained in %.1f s", Date().timeIntervalSince(start)))
    model.eval()
    let prompt = "Alice ".map { id[$0] ?? 0 }
    let generated = try sample(model, prompt: prompt, count: 160, temperature: 0.7)
    print("sample: " + String(generated.map { vocabulary[Int($0)] }))
    try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
    try model.exportONNX(to: output + "/model.onnx", example: NNTensor(Array(encoded.prefix(context)), shape: [1, context]))
    print("wrote \(output)/model.onnx")
} catch {
    FileHandle.standardError.write(Data("CharTransformer: error: \(error)\n".utf8))
    exit(1)
}
