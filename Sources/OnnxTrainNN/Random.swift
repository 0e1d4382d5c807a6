import Foundation
import OnnxTrain

/// The random source of the model API: parameter initialisation, `Dropout` masks and
/// `NNTensor.randn`/`rand`. One seedable generator (the library's SplitMix64), like
/// `torch.manual_seed`; the numbers differ from PyTorch's, which is why tests load weights.
public enum NNRandom {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var generator = RandomGenerator(seed: 0x5EED)

    /// Restarts the sequence (PyTorch's `torch.manual_seed`).
    public static func manualSeed(_ seed: UInt64) {
        lock.lock()
        generator = RandomGenerator(seed: seed)
        lock.unlock()
    }

    /// `count` draws from U[low, high).
    public static func uniform(_ count: Int, low: Float, high: Float) -> [Float] {
        lock.lock()
        defer { lock.unlock() }
        return (0..<count).map { _ in low + (high - low) * generator.nextFloat() }
    }

    /// `count` draws from N(mean, std²) (Box-Muller in Double, so tails are not cut at float precision).
    public static func normal(_ count: Int, mean: Float = 0, std: Float = 1) -> [Float] {
        lock.lock()
        defer { lock.unlock() }
        var out: [Float] = []
        out.reserveCapacity(count + 1)
        while out.count < count {
            let u1 = max(generator.nextDouble(), Double.leastNormalMagnitude), u2 = generator.nextDouble()
            let r = (-2 * log(u1)).squareRoot()
            out.append(mean + std * Float(r * cos(2 * Double.pi * u2)))
            out.append(mean + std * Float(r * sin(2 * Double.pi * u2)))
        }
        return Array(out.prefix(count))
    }

    /// `count` Bernoulli draws: 1 with probability `p`.
    static func bernoulli(_ count: Int, p: Float) -> [Float] {
        lock.lock()
        defer { lock.unlock() }
        return (0..<count).map { _ in generator.nextFloat() < p ? 1 : 0 }
    }

    /// A uniformly random permutation of 0..<n (shuffling batches).
    public static func permutation(_ n: Int) -> [Int] {
        lock.lock()
        defer { lock.unlock() }
        var p = Array(0..<n)
        if n > 1 {
            for i in stride(from: n - 1, to: 0, by: -1) {
                let j = Int(generator.next() % UInt64(i + 1))
                p.swapAt(i, j)
            }
        }
        return p
    }
}

/// PyTorch's `torch.nn.init`: fills for parameters, as the layers use them by default.
public enum Init {
    /// U(-bound, bound) of `shape`.
    public static func uniform(_ shape: [Int], bound: Float) -> Tensor {
        Tensor(shape: shape, scalars: NNRandom.uniform(Tensor.elementCount(shape), low: -bound, high: bound))
    }

    /// N(0, std²) of `shape`.
    public static func normal(_ shape: [Int], std: Float = 1) -> Tensor {
        Tensor(shape: shape, scalars: NNRandom.normal(Tensor.elementCount(shape), std: std))
    }

    /// `kaiming_uniform_(w, a=sqrt(5))`, PyTorch's default for Linear and Conv weights: the bound
    /// gain·sqrt(3/fan_in) with gain sqrt(2/(1+a²)) is 1/sqrt(fan_in).
    public static func kaimingUniformDefault(_ shape: [Int], fanIn: Int) -> Tensor {
        uniform(shape, bound: 1 / Float(max(fanIn, 1)).squareRoot())
    }

    /// `xavier_uniform_`: U(±sqrt(6/(fan_in+fan_out))) (MultiheadAttention's in_proj_weight).
    public static func xavierUniform(_ shape: [Int], fanIn: Int, fanOut: Int) -> Tensor {
        uniform(shape, bound: (6 / Float(max(fanIn + fanOut, 1))).squareRoot())
    }

    /// A tensor of `shape` filled with `value`.
    public static func constant(_ shape: [Int], _ value: Float) -> Tensor {
        Tensor(shape: shape, scalars: [Float](repeating: value, count: Tensor.elementCount(shape)))
    }
}
