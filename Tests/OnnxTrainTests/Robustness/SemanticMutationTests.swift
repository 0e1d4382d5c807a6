import Foundation
import XCTest
@testable import OnnxTrain

/// Models damaged in meaning rather than in bytes: attributes set to out-of-range values, inputs
/// rewired or dropped, initializers and declared input shapes changed. Each mutant is written with
/// the ModelWriter, loaded back and run on zero feeds; every failure must be an `OnnxTrainError`.
final class SemanticMutationTests: XCTestCase {
    /// Attribute values tried, including sizes that ask for terabytes (1 << 20 pads) or overflow Int:
    /// kernels check their geometry arithmetic and allocate data-derived outputs through
    /// `Tensor(kernelZeros:)`, so these throw too (seeds 2000-2040 × 300 and 3000-3002 × 1000 pass).
    static let extremeInts = [-1, 0, 1, 2, 3, 7, -100, -(1 << 40), 1 << 20, Int(Int32.max), Int.max, Int.min]

    func mutate(_ model: Model, _ rng: inout SplitMix) -> (Model, String) {
        var m = model
        let nodes = m.graph.nodes
        guard !nodes.isEmpty else { return (m, "unchanged") }
        let index = Int(rng.next() % UInt64(nodes.count))
        var node = nodes[index]
        let values = Array(Set(nodes.flatMap(\.outputs) + m.graph.inputs.map(\.name) + m.graph.initializerNames)).sorted()
        var what = ""
        switch rng.next() % 7 {
        case 0, 1:  // an attribute to an extreme value
            let keys = node.attributes.keys.sorted()
            guard let key = keys.isEmpty ? nil : keys[Int(rng.next() % UInt64(keys.count))] else { fallthrough }
            let v = SemanticMutationTests.extremeInts[Int(rng.next() % UInt64(SemanticMutationTests.extremeInts.count))]
            switch node.attributes[key]! {
            case .int: node.attributes[key] = .int(v)
            case .ints(var list):
                if list.isEmpty || rng.next() % 3 == 0 { list.append(v) } else { list[Int(rng.next() % UInt64(list.count))] = v }
                node.attributes[key] = .ints(list)
            case .float: node.attributes[key] = .float([Float.nan, -1, 0, 1e30, -Float.infinity][Int(rng.next() % 5)])
            case .floats(var list):
                if !list.isEmpty { list[0] = .nan }
                node.attributes[key] = .floats(list)
            case .string: node.attributes[key] = .string(["", "NOTSET", "garbage", "SAME_UPPER"][Int(rng.next() % 4)])
            case .tensor(let t): node.attributes[key] = .tensor(Tensor(zeros: t.dtype == .string ? .float32 : t.dtype, shape: [Int(rng.next() % 3)]))
            default: node.attributes[key] = .int(v)
            }
            what = "attribute \(key) of \(node.label)"
        case 2:  // an input rewired to another value
            guard !node.inputs.isEmpty, !values.isEmpty else { fallthrough }
            let i = Int(rng.next() % UInt64(node.inputs.count))
            node.inputs[i] = values[Int(rng.next() % UInt64(values.count))]
            what = "input \(i) of \(node.label) -> \(node.inputs[i])"
        case 3:  // an input omitted or dropped
            guard !node.inputs.isEmpty else { fallthrough }
            if rng.next() % 2 == 0 { node.inputs[Int(rng.next() % UInt64(node.inputs.count))] = "" } else { node.inputs.removeLast() }
            what = "inputs of \(node.label) -> \(node.inputs)"
        case 4:  // an initializer replaced by zeros of another shape
            guard let name = m.graph.initializerNames.isEmpty ? nil : m.graph.initializerNames[Int(rng.next() % UInt64(m.graph.initializerNames.count))],
                  let t = m.graph.initializers[name], t.dtype != .string else { fallthrough }
            var shape = t.shape
            switch rng.next() % 4 {
            case 0: shape = shape.isEmpty ? [2] : Array(shape.dropLast())
            case 1: shape.append(2)
            case 2: shape = shape.isEmpty ? [0] : [0] + shape.dropFirst()
            default: shape = shape.reversed().map { $0 + 1 }
            }
            m.graph.setInitializer(name, Tensor(zeros: t.dtype, shape: shape))
            what = "initializer \(name) \(t.shape) -> \(shape)"
        case 5:  // a declared input dimension changed
            guard let i = m.graph.inputs.indices.randomElement(using: &rng), case .tensor(let d, var dims?)? = m.graph.inputs[i].type, !dims.isEmpty else { fallthrough }
            dims[Int(rng.next() % UInt64(dims.count))] = .value([0, 1, 5, 64][Int(rng.next() % 4)])
            m.graph.inputs[i].type = .tensor(d, shape: dims)
            what = "input \(m.graph.inputs[i].name) shape -> \(dims)"
        default:  // the node's output count or the opset
            if rng.next() % 2 == 0 { node.outputs.append("extra_\(index)") } else { m.opsetImports[""] = [1, 6, 11, 13, 21, 99][Int(rng.next() % 6)] }
            what = "outputs/opset around \(node.label)"
        }
        m.graph.nodes[index] = node
        return (m, what)
    }

    func run(_ path: String, count: Int, seed: UInt64) throws -> [MutationHarness.Outcome: Int] {
        let original = try Model(contentsOf: path)
        var rng = SplitMix(seed: seed)
        var outcomes: [MutationHarness.Outcome: Int] = [:]
        for i in 0..<count {
            let (mutant, what) = mutate(original, &rng)
            let bytes = [UInt8](try mutant.serialized())
            outcomes[MutationHarness.exercise(bytes, "\(path) semantic mutation \(i): \(what)"), default: 0] += 1
        }
        return outcomes
    }

    func testReshapeToAnOverflowingShapeThrows() throws {
        // Found by the training-graph mutants: a Reshape fed MaxPool's indices as its shape.
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(4)])), ValueInfo(name: "s", type: .tensor(.int64, shape: [.value(3)]))]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        g.nodes = [Node(opType: "Reshape", inputs: ["x", "s"], outputs: ["y"])]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        let session = try InferenceSession(model: m)
        for shape: [Int64] in [[1 << 40, 1 << 40, -1], [1 << 40, 1 << 40, 4], [Int64.max, 2, 1]] {
            assertOnnxTrainError(.kernel, containing: ["Reshape", "cannot reshape"]) {
                try session.run(tensors: ["x": Tensor(zeros: .float32, shape: [4]), "s": Tensor(shape: [3], scalars: shape)])
            }
        }
    }

    /// 150 mutants per model by default; ONNX_TRAIN_MUTATIONS=N and ONNX_TRAIN_MUTATION_SEED=S search further.
    func testSemanticMutationsOfTheInferenceFixtures() throws {
        let env = ProcessInfo.processInfo.environment
        let count = env["ONNX_TRAIN_MUTATIONS"].flatMap { Int($0) } ?? 150
        let seed = env["ONNX_TRAIN_MUTATION_SEED"].flatMap { UInt64($0) } ?? 1000
        var total: [MutationHarness.Outcome: Int] = [:]
        let models = ["inference/mlp_dynamic_opset17", "inference/cnn_opset17", "inference/gpt_opset17", "inference/cnn_opset14"]
            .map { DataFixtures.root + "/\($0)/model.onnx" }
            + ["mlp_ce_adamw", "cnn_ce_adamw", "gpt_ce_adamw"].map { DataFixtures.root + "/training/\($0)/training_model.onnx" }
        for (i, path) in models.enumerated() {
            let outcomes = try run(path, count: count, seed: seed + UInt64(i))
            total.merge(outcomes, uniquingKeysWith: +)
        }
        print("semantic mutation outcomes over \(total.values.reduce(0, +)) models: \(total)")
        XCTAssertGreaterThan(total[.ran, default: 0], 0)
        XCTAssertGreaterThan(total[.buildFailed, default: 0] + total[.runFailed, default: 0], 0)
    }
}

extension SplitMix: RandomNumberGenerator {}
