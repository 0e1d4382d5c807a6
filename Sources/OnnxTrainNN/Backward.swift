import Foundation
import OnnxTrain
import Synchronization

/// Compiled gradient graphs, by trace key: a training loop records the same graph every step
/// and compiles it once. Shared by every thread that calls `backward()`: its tables sit behind
/// a mutex; a graph is compiled outside it (two threads may compile the same graph once each,
/// the first stored wins).
final class SessionCache: Sendable {
    struct Entry: Sendable {
        let session: InferenceSession
        /// Graph input name per leaf of the trace.
        let leafNames: [String]
        /// Gradient value name per leaf that takes a gradient.
        let gradients: [(leaf: Int, name: String)]
        /// Forward values the gradient nodes read, fed from the eager outputs: (node, output, input name).
        let forwardValues: [(record: Int, output: Int, name: String)]
    }

    private struct Tables {
        var entries: [String: Entry] = [:]
        /// Keys oldest first.
        var order: [String] = []
    }

    static let shared = SessionCache()
    /// Beyond this many graphs the oldest is dropped (a loop over varying shapes must not grow without bound).
    static let capacity = 64
    private let tables = Mutex(Tables())

    func entry(_ key: String, build: () throws -> Entry) throws -> Entry {
        if let e = tables.withLock({ $0.entries[key] }) { return e }
        let e = try build()
        return tables.withLock { t in
            if let first = t.entries[key] { return first }
            t.entries[key] = e
            t.order.append(key)
            if t.order.count > SessionCache.capacity { t.entries[t.order.removeFirst()] = nil }
            return e
        }
    }

    /// How many compiled graphs are cached (for tests of the cache).
    var count: Int { tables.withLock { $0.entries.count } }
}

extension NNTensor {
    /// Computes the gradient of this one-element tensor with respect to every leaf that requires
    /// it and adds it to the leaf's `grad` (PyTorch's `loss.backward()`: gradients accumulate
    /// until `zeroGrad()`).
    ///
    /// The recorded graph is differentiated by `Autodiff.differentiate` and run as one
    /// `InferenceSession`, compiled once per distinct graph (see `SessionCache`).
    /// - Throws: the error of a failed operation on the way, `.invalidInput` when this tensor
    ///   has more than one element or needs no gradient, and Autodiff's errors (an op without a
    ///   gradient rule, named with its node).
    public func backward() throws {
        if let error { throw error }
        guard value.count == 1, dtype.isFloatingPoint else {
            throw OnnxTrainError.invalidInput("backward(): the loss must be one floating-point element, got \(value)")
        }
        guard requiresGrad, producer != nil else {
            throw OnnxTrainError.invalidInput("backward(): the loss does not depend on any tensor that requires a gradient")
        }
        let trace = GraphTrace(outputs: [self])
        let entry = try SessionCache.shared.entry("backward|" + trace.key) {
            let leafNames = trace.leaves.indices.map { "input_\($0)" }
            let graph = trace.graph(outputs: [self], leafNames: leafNames)
            let loss = graph.outputs[0].name
            let targets = trace.leaves.indices.filter { trace.leaves[$0].requiresGrad }
            let result = try Autodiff.differentiate(graph, opsets: Eager.opsets, loss: loss, parameters: targets.map { leafNames[$0] })
            var differentiated = result.graph
            differentiated.outputs = result.gradients.map { ValueInfo(name: $0.gradient, type: nil) }
            let forwardValues = GraphTrace.feedForwardValues(&differentiated, forward: graph, trace: trace)
            let session = try InferenceSession(model: GraphTrace.model(differentiated))
            return SessionCache.Entry(session: session, leafNames: leafNames,
                                      gradients: zip(targets, result.gradients).map { ($0, $1.gradient) }, forwardValues: forwardValues)
        }
        var feeds: [String: Tensor] = [:]
        for (i, leaf) in trace.leaves.enumerated() { feeds[entry.leafNames[i]] = leaf.value }
        for (record, output, name) in entry.forwardValues {
            guard let value = trace.records[record].outputValues[output] else {
                throw OnnxTrainError.training("backward(): the forward value '\(name)' was not computed")
            }
            feeds[name] = value
        }
        let results = try entry.session.run(tensors: feeds, fetches: entry.gradients.map(\.name))
        for (leaf, name) in entry.gradients {
            guard let g = results[name] else { throw OnnxTrainError.training("backward(): no gradient '\(name)' was computed") }
            let target = trace.leaves[leaf]
            target.grad = try target.grad.map { try accumulate($0, g) } ?? g.copied()
        }
    }
}

/// `a + b` elementwise for gradients of one shape and float type.
func accumulate(_ a: Tensor, _ b: Tensor) throws -> Tensor {
    guard a.shape == b.shape, a.dtype == b.dtype else {
        throw OnnxTrainError.training("cannot add a gradient \(b) to the accumulated \(a)")
    }
    var sum = a.copied()
    switch a.dtype {
    case .float32:
        try b.withUnsafeBufferPointer(as: Float.self) { src in
            try sum.withUnsafeMutableBufferPointer(as: Float.self) { dst in for i in 0..<dst.count { dst[i] += src[i] } }
        }
    case .float64:
        try b.withUnsafeBufferPointer(as: Double.self) { src in
            try sum.withUnsafeMutableBufferPointer(as: Double.self) { dst in for i in 0..<dst.count { dst[i] += src[i] } }
        }
    default:
        throw OnnxTrainError.unsupported("gradients of tensor(\(a.dtype)) cannot be accumulated")
    }
    return sum
}
