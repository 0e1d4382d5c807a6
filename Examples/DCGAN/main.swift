// DCGAN: a deep convolutional GAN on the bundled 8x8 digits (Examples/digits), as gotorch's headline
// example: two models, two optimizers, and the generator trained by gradients that flow back
// through the discriminator.
//
//     G: z [N, 32] -> Linear(32, 128·2·2) -> view [N, 128, 2, 2] -> BatchNorm2d -> ReLU
//        -> ConvTranspose2d(128, 64, 4, stride 2, padding 1) [N, 64, 4, 4] -> BatchNorm2d -> ReLU
//        -> ConvTranspose2d(64, 1, 4, stride 2, padding 1) [N, 1, 8, 8] -> Tanh
//     D: x [N, 1, 8, 8] -> Conv2d(1, 64, 4, stride 2, padding 1) -> LeakyReLU(0.2)
//        -> Conv2d(64, 128, 4, stride 2, padding 1) -> BatchNorm2d -> LeakyReLU(0.2) -> Flatten -> Linear(512, 1)
//
// Usage: swift run -c release DCGAN [EPOCHS]   (default 15 epochs of 1440 digits in batches of 64)
// Writes runs/DCGAN/real.png (training digits), samples_epoch_<k>.png during training and
// samples.png (8x8 grids, one fixed batch of noise), and generator.onnx (z [64, 32] -> images).
import Foundation
import OnnxTrain
import OnnxTrainNN

let latent = 32

final class Generator: Module, UnaryModule {
    let project = Linear(latent, 128 * 2 * 2)
    let body = Sequential(BatchNorm2d(128), ReLU(),
                          ConvTranspose2d(128, 64, kernelSize: 4, stride: 2, padding: 1), BatchNorm2d(64), ReLU(),
                          ConvTranspose2d(64, 1, kernelSize: 4, stride: 2, padding: 1), Tanh())

    func forward(_ z: NNTensor) -> NNTensor { body(project(z).view(z.size(0), 128, 2, 2)) }
}

final class Discriminator: Module, UnaryModule {
    let body = Sequential(Conv2d(1, 64, kernelSize: 4, stride: 2, padding: 1), LeakyReLU(0.2),
                          Conv2d(64, 128, kernelSize: 4, stride: 2, padding: 1), BatchNorm2d(128), LeakyReLU(0.2),
                          Flatten(), Linear(128 * 2 * 2, 1))

    func forward(_ x: NNTensor) -> NNTensor { body(x) }
}

/// An 8-bit grayscale PNG of `images` [N, 1, 8, 8] in [-1, 1], tiled `columns` wide, each pixel
/// drawn `scale` x `scale`. Stored (uncompressed) deflate blocks keep the writer dependency-free.
func png(_ images: Tensor, columns: Int = 8, scale: Int = 4) -> Data {
    let n = images.shape[0], side = 8, gap = 2
    let rowsOfTiles = (n + columns - 1) / columns
    let width = columns * (side * scale + gap) + gap, height = rowsOfTiles * (side * scale + gap) + gap
    let values = images.scalars(as: Float.self)
    var pixels = [UInt8](repeating: 40, count: width * height)
    for k in 0..<n {
        let ox = gap + (k % columns) * (side * scale + gap), oy = gap + (k / columns) * (side * scale + gap)
        for y in 0..<(side * scale) {
            for x in 0..<(side * scale) {
                let v = values[k * side * side + (y / scale) * side + x / scale]
                pixels[(oy + y) * width + ox + x] = UInt8(max(0, min(255, (v + 1) * 127.5)))
            }
        }
    }
    var raw: [UInt8] = []
    for y in 0..<height { raw.append(0); raw += pixels[(y * width)..<((y + 1) * width)] }
    func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 255), UInt8((v >> 8) & 255), UInt8(v & 255)] }
    func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return ~c
    }
    func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
        let typed = Array(type.utf8) + body
        return be32(UInt32(body.count)) + typed + be32(crc32(typed))
    }
    var zlib: [UInt8] = [0x78, 0x01]
    var offset = 0
    repeat {
        let length = min(65535, raw.count - offset)
        let final: UInt8 = offset + length == raw.count ? 1 : 0
        zlib += [final, UInt8(length & 255), UInt8(length >> 8), UInt8(~length & 255), UInt8((~length >> 8) & 255)]
        zlib += raw[offset..<(offset + length)]
        offset += length
    } while offset < raw.count
    var a: UInt32 = 1, b: UInt32 = 0
    for byte in raw { a = (a + UInt32(byte)) % 65521; b = (b + a) % 65521 }
    zlib += be32(b << 16 | a)
    let header = be32(UInt32(width)) + be32(UInt32(height)) + [8, 0, 0, 0, 0]
    return Data([137, 80, 78, 71, 13, 10, 26, 10] + chunk("IHDR", header) + chunk("IDAT", zlib) + chunk("IEND", []))
}

let digits = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("digits").path
let epochs = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 15 : 15
let output = "runs/DCGAN"
let batchSize = 64

do {
    NNRandom.manualSeed(7)
    guard let input = try Npz.readDictionary(contentsOf: digits + "/train.npz")["input"] else {
        throw OnnxTrainError.invalidInput("\(digits)/train.npz has no 'input'")
    }
    // Pixels in [0, 1] to [-1, 1], the generator's Tanh range.
    let real = (NNTensor(input.reshaped([input.shape[0], 1, 8, 8])) * 2 - 1).detach()
    let generator = Generator(), discriminator = Discriminator()
    let optimizerG = Adam(generator.parameters(), lr: 5e-4, betas: (0.5, 0.999))
    let optimizerD = Adam(discriminator.parameters(), lr: 5e-4, betas: (0.5, 0.999))
    let fixedNoise = NNTensor.randn([64, latent])
    let ones = NNTensor.ones([batchSize, 1]), zeros = NNTensor.zeros([batchSize, 1])
    try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
    try png(try real[0..<64].tensor()).write(to: URL(fileURLWithPath: output + "/real.png"), options: .atomic)

    func writeSamples(_ name: String) throws {
        generator.eval()
        defer { generator.train() }
        try png(try generator(fixedNoise).tensor()).write(to: URL(fileURLWithPath: "\(output)/\(name).png"), options: .atomic)
    }

    print("G: \(generator.parameterCount) parameters, D: \(discriminator.parameterCount) parameters, \(real.size(0)) digits")
    let start = Date()
    let stepsPerEpoch = real.size(0) / batchSize
    for epoch in 1...epochs {
        let order = NNRandom.permutation(real.size(0))
        var lossD: Float = 0, lossG: Float = 0
        for step in 0..<stepsPerEpoch {
            let indices = order[(step * batchSize)..<((step + 1) * batchSize)].map(Int64.init)
            let batch = real.indexSelect(dim: 0, NNTensor(indices, shape: [batchSize])).detach()
            let fake = generator(NNTensor.randn([batchSize, latent]))

            // Discriminator: real digits are 1, generated ones 0 (detached: no gradient into G).
            optimizerD.zeroGrad()
            let dLoss = F.binaryCrossEntropyWithLogits(discriminator(batch), ones)
                + F.binaryCrossEntropyWithLogits(discriminator(fake.detach()), zeros)
            try dLoss.backward()
            try optimizerD.step()

            // Generator: make D call the fakes real; the gradient flows through D into G.
            optimizerG.zeroGrad()
            let gLoss = F.binaryCrossEntropyWithLogits(discriminator(fake), ones)
            try gLoss.backward()
            try optimizerG.step()
            lossD += try dLoss.item()
            lossG += try gLoss.item()
        }
        print(String(format: "epoch %d: D loss %.3f, G loss %.3f", epoch, lossD / Float(stepsPerEpoch), lossG / Float(stepsPerEpoch)))
        if epoch % 5 == 0 || epoch == 1 { try writeSamples("samples_epoch_\(epoch)") }
    }
    print(String(format: "trained in %.1f s", Date().timeIntervalSince(start)))
    try writeSamples("samples")
    try generator.exportONNX(to: output + "/generator.onnx", example: fixedNoise)
    print("wrote \(output)/real.png, samples.png and generator.onnx")
} catch {
    FileHandle.standardError.write(Data("DCGAN: error: \(error)\n".utf8))
    exit(1)
}
