import Foundation
import OnnxTrain

/// Runs recorded nodes at once through the library's kernels (one `Kernel` per distinct op and
/// attributes, built once and reused) and wraps their outputs as `NNTensor`s.
enum Eager {
    /// The opsets every recorded graph imports: ai.onnx 18 (Reduce* and Split take axes and
    /// sizes as inputs, LayerNormalization exists) and com.microsoft 1 (Gelu).
    static let opsets: [String: Int] = ["": 18, "com.microsoft": 1]

    private static let lock = NSLock()
    nonisolated(unsafe) private static var kernels: [String: Kernel] = [:]
    nonisolated(unsafe) private static let context = ExecutionContext()

    /// Records `opType` over `inputs` (nil for an omitted optional input) and computes it.
    ///
    /// - Parameters:
    ///   - differentiable: false for ops whose outputs carry no gradient (Shape, comparisons).
    /// - Returns: `outputs` tensors; all of them failed when an input failed or the kernel threw.
    static func apply(_ opType: String, domain: String = "", _ inputs: [NNTensor?], attributes: [String: Attribute] = [:],
                      outputs: Int = 1, differentiable: Bool = true) -> [NNTensor] {
        if let failed = inputs.lazy.compactMap({ $0?.error }).first {
            return (0..<outputs).map { _ in NNTensor(failure: failed) }
        }
        let key = attributeKey(attributes)
        let node = Node(opType: opType, domain: domain, name: opType, inputs: inputs.map { $0 == nil ? "" : "x" },
                        outputs: (0..<outputs).map { "y\($0)" }, attributes: attributes)
        let results: [Value?]
        do {
            let kernel = try cachedKernel(node, key: domain + "|" + opType + "|" + key)
            results = try kernel.run(inputs.map { $0.map { Value.tensor($0.value) } }, context)
        } catch {
            let message = (error as? OnnxTrainError)?.message ?? (error as? KernelError)?.message ?? "\(error)"
            let shapes = inputs.map { $0.map { "\($0.value.shape)" } ?? "-" }.joined(separator: ", ")
            let failure = OnnxTrainError(.kernel, "\(opType) over inputs \(shapes): \(message)")
            return (0..<outputs).map { _ in NNTensor(failure: failure) }
        }
        let anyGrad = differentiable && inputs.contains { $0?.requiresGrad == true }
        let record = NodeRecord(opType: opType, domain: domain, attributes: attributes, attributeKey: key,
                                inputs: inputs, outputCount: outputs)
        record.outputValues = (0..<outputs).map { k in k < results.count ? results[k]?.tensor : nil }
        return (0..<outputs).map { k in
            guard k < results.count, let t = results[k]?.tensor else {
                return NNTensor(failure: OnnxTrainError(.kernel, "\(opType) produced no tensor for output \(k)"))
            }
            return NNTensor(value: t, producer: (record, k), requiresGrad: anyGrad && t.dtype.isFloatingPoint)
        }
    }

    /// One-output `apply`.
    static func op(_ opType: String, domain: String = "", _ inputs: [NNTensor?], attributes: [String: Attribute] = [:],
                   differentiable: Bool = true) -> NNTensor {
        apply(opType, domain: domain, inputs, attributes: attributes, outputs: 1, differentiable: differentiable)[0]
    }

    private static func cachedKernel(_ node: Node, key: String) throws -> Kernel {
        lock.lock()
        defer { lock.unlock() }
        if let k = kernels[key] { return k }
        let k = try OpRegistry.standard.kernel(for: node, opsets: opsets)
        kernels[key] = k
        return k
    }

    /// A canonical text of `attributes`, sorted by name: equal attributes give equal keys.
    static func attributeKey(_ attributes: [String: Attribute]) -> String {
        attributes.keys.sorted().map { name in "\(name)=\(describe(attributes[name]!))" }.joined(separator: ",")
    }

    private static func describe(_ a: Attribute) -> String {
        switch a {
        case .float(let v): return "f\(v.bitPattern)"
        case .int(let v): return "i\(v)"
        case .string(let v): return "s\(v.count):\(v)"
        case .floats(let v): return "F" + v.map { String($0.bitPattern) }.joined(separator: ":")
        case .ints(let v): return "I" + v.map(String.init).joined(separator: ":")
        case .strings(let v): return "S" + v.map { "\($0.count):\($0)" }.joined(separator: ":")
        case .tensor(let t): return "T" + tensorKey(t)
        default: return "?\(a)"
        }
    }

    /// dtype, shape and bytes of a small tensor (constants are shapes, axes and scalars).
    static func tensorKey(_ t: Tensor) -> String {
        let bytes = t.dtype == .string ? t.strings.joined(separator: "\u{1}") : t.rawBytes.map { String($0, radix: 16) }.joined(separator: ".")
        return "\(t.dtype)\(t.shape)\(bytes)"
    }
}

extension NNTensor {
    /// A graph constant (shapes, axes, scalar factors): an initializer of every recorded graph.
    static func constant(_ tensor: Tensor) -> NNTensor { NNTensor(tensor, role: .constant, requiresGrad: false) }

    /// An int64 vector constant.
    static func ints(_ values: [Int]) -> NNTensor { constant(Tensor(shape: [values.count], scalars: values.map { Int64($0) })) }

    /// A scalar constant of this tensor's element type (float32 or float64).
    func scalarLike(_ v: Double) -> NNTensor {
        switch dtype {
        case .float64: return .constant(Tensor(scalar: v))
        case .int64: return .constant(Tensor(scalar: Int64(v)))
        default: return .constant(Tensor(scalar: Float(v)))
        }
    }
}
