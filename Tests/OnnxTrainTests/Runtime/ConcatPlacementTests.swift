import Foundation
import Synchronization
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// Concats whose inputs are computed in their slices of the output (`ConcatPlacement`): from the
/// second run of a fetch list, the producers write into the Concat's buffer and the Concat copies
/// nothing; the outputs must be the very bytes a copying Concat gives, whatever reads, fetches or
/// overwrites the values around it, when shapes change, and on two threads at once.
final class ConcatPlacementTests: XCTestCase {
    /// Tensors the test op `KeepScratch` keeps from one run to the next (behind `lock`).
    final class Kept: @unchecked Sendable {
        let lock = NSLock()
        var tensors: [Tensor] = []
        func withLock<R>(_ body: (inout [Tensor]) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&tensors) }
    }
    static let kept = Kept()

    /// The standard ops plus `test.concat` `KeepScratch` (y = x + 1), which first allocates and
    /// keeps a scratch tensor of its output's size filled with 7s: it takes an offered slice for
    /// something that is not its output.
    static let registry: OpRegistry = {
        let registry = OpRegistry()
        registerAllOps(registry)
        registry.register("KeepScratch", domain: "test.concat", since: [1]) { _ in
            AnyKernel { inputs, _ in
                let x = try inputs.tensor(0)
                var scratch = Tensor(uninitialized: .float32, shape: x.shape)
                scratch.uncheckedMutableBufferPointer(as: Float.self) { for i in $0.indices { $0[i] = 7 } }
                ConcatPlacementTests.kept.withLock { $0.append(scratch) }
                var out = Tensor(uninitialized: .float32, shape: x.shape)
                try x.withUnsafeBufferPointer(as: Float.self) { px in
                    out.uncheckedMutableBufferPointer(as: Float.self) { po in for i in po.indices { po[i] = px[i] + 1 } }
                }
                return [.tensor(out)]
            }
        }
        return registry
    }()

    func session(_ g: Graph, placing: Bool = true) throws -> InferenceSession {
        var m = Model(graph: g)
        m.opsetImports = ["": 17, "test.concat": 1]
        var options = SessionOptions()
        options.registry = Self.registry
        options.optimize = false
        options.memoryPlan = placing
        return try InferenceSession(model: m, options: options)
    }

    func node(_ op: String, _ inputs: [String], _ output: String, axis: Int? = nil) -> Node {
        Node(opType: op, name: output, inputs: inputs, outputs: [output], attributes: axis.map { ["axis": .int($0)] } ?? [:])
    }

    func graph(_ nodes: [Node], outputs: [String], inputs: [String] = ["x"]) -> Graph {
        var g = Graph()
        g.inputs = inputs.map { ValueInfo(name: $0, type: nil) }
        g.nodes = nodes
        g.outputs = outputs.map { ValueInfo(name: $0, type: nil) }
        return g
    }

    func input(_ shape: [Int], seed: Float = 0) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, scalars: (0..<n).map { Float($0 % 23) * 0.37 - 3.1 + seed })
    }

    func bits(_ v: Value?) -> [UInt32]? { v?.tensor?.scalars(as: Float.self).map(\.bitPattern) }

    /// Runs `session` on `feeds`; returns the outputs and the Concat inputs found in place and copied.
    func counted(_ session: InferenceSession, _ feeds: [String: Tensor], fetches: [String]? = nil) throws
        -> (outputs: [String: Value], placed: Int, copied: Int) {
        let placed = ConcatKernel.placedInputs.load(ordering: .relaxed), copied = ConcatKernel.copiedInputs.load(ordering: .relaxed)
        let outputs = try session.run(feeds.mapValues { .tensor($0) }, fetches: fetches)
        return (outputs, ConcatKernel.placedInputs.load(ordering: .relaxed) - placed, ConcatKernel.copiedInputs.load(ordering: .relaxed) - copied)
    }

    /// The outputs of `g` with placement on (three runs: observed, then placed twice) equal the
    /// copying Concat's bit for bit; returns the counts of the last run.
    @discardableResult
    func checkAgainstCopying(_ g: Graph, _ feeds: [String: Tensor], fetches: [String]? = nil,
                             file: StaticString = #filePath, line: UInt = #line) throws -> (placed: Int, copied: Int) {
        let expected = try session(g, placing: false).run(feeds.mapValues { .tensor($0) }, fetches: fetches)
        let s = try session(g)
        var last = (placed: 0, copied: 0)
        for run in 0..<3 {
            let (outputs, placed, copied) = try counted(s, feeds, fetches: fetches)
            for (name, value) in expected {
                XCTAssertEqual(bits(outputs[name]), bits(value), "run \(run): output \(name)", file: file, line: line)
            }
            last = (placed, copied)
        }
        return last
    }

    /// DenseNet's block: Concat_k = Concat(Concat_{k-1}, new_k), new_k computed from Concat_{k-1}.
    /// Every input is computed in place, the block is one buffer and each Concat a prefix of the next.
    func testDenseChainCopiesNothing() throws {
        var nodes = [node("Neg", ["x"], "c0")]
        for k in 1...4 {
            nodes.append(node(k % 2 == 0 ? "Abs" : "Sigmoid", ["c\(k - 1)"], "n\(k)"))
            nodes.append(node("Concat", ["c\(k - 1)", "n\(k)"], "c\(k)", axis: 1))
        }
        nodes.append(node("Relu", ["c4"], "y"))
        let g = graph(nodes, outputs: ["y"])
        let x = input([1, 3, 5, 4])
        let counts = try checkAgainstCopying(g, ["x": x])
        XCTAssertEqual(counts.placed, 8, "every input of the four Concats was computed in place")
        XCTAssertEqual(counts.copied, 0)

        // Against float64: c_k = [c_{k-1}, f_k(c_{k-1})], y = relu(c_4).
        var c = x.scalars(as: Float.self).map { -Double($0) }
        let plane = 20
        for k in 1...4 {
            let f: (Double) -> Double = k % 2 == 0 ? { abs($0) } : { 1 / (1 + exp(-$0)) }
            c += c.map(f)
            XCTAssertEqual(c.count, 3 * plane << k)
        }
        let y = try XCTUnwrap(try session(g).run(["x": .tensor(x)])["y"]?.tensor)
        XCTAssertEqual(y.shape, [1, 48, 5, 4])
        for (a, b) in zip(y.scalars(as: Float.self), c.map { max($0, 0) }) { XCTAssertEqual(Double(a), b, accuracy: 1e-6) }

        let s = try session(g)
        _ = try s.run(["x": .tensor(x)])
        let placement = try XCTUnwrap(s.executor.concatPlacement(for: [s.executor.slotOf["y"]!]))
        XCTAssertEqual(placement.groupBytes, [48 * plane * 4], "one buffer: the last Concat's output")
    }

    /// The runs that place allocate other blocks than the first (which observed), and record
    /// their own memory pattern: from the third run on, the group's buffer comes from the arena.
    func testPlacingRunsReplayTheirPattern() throws {
        let nodes = [node("Neg", ["x"], "c0"), node("Sigmoid", ["c0"], "n1"), node("Concat", ["c0", "n1"], "c1", axis: 1),
                     node("Abs", ["c1"], "n2"), node("Concat", ["c1", "n2"], "c2", axis: 1), node("GlobalAveragePool", ["c2"], "y")]
        let g = graph(nodes, outputs: ["y"])
        let x = input([1, 8, 32, 32])  // 32 KiB: the buffer (128 KiB) is a large block
        let expected = try session(g, placing: false).run(["x": .tensor(x)])["y"]
        let s = try session(g)
        for run in 0..<5 {
            let before = MemoryPattern.arenaBlocks.load(ordering: .relaxed)
            let (outputs, placed, copied) = try counted(s, ["x": x])
            let fromArena = MemoryPattern.arenaBlocks.load(ordering: .relaxed) - before
            XCTAssertEqual(bits(outputs["y"]), bits(expected), "run \(run)")
            XCTAssertEqual(placed, run == 0 ? 0 : 4, "run \(run)")
            XCTAssertEqual(copied, 0, "run \(run)")
            XCTAssertEqual(fromArena, run >= 2 ? 1 : 0, "run \(run): the buffer from the arena")
        }
    }

    /// A fetched Concat keeps its buffer; a fetched input of a Concat is not placed (the caller
    /// could write it), nor is a value two Concats read, or one a Concat reads twice, or a Reshape
    /// view; the rest still are.
    func testFetchedAndSharedValuesAreCopied() throws {
        let nodes = [node("Neg", ["x"], "a"), node("Abs", ["x"], "b"), node("Sigmoid", ["x"], "d"),
                     node("Concat", ["a", "b", "d"], "c1", axis: 1),
                     node("Concat", ["b", "x"], "c2", axis: 1),
                     node("Tanh", ["x"], "t"), node("Concat", ["t", "t"], "c3", axis: 1),
                     node("Reshape", ["d", "shape"], "r"), node("Neg", ["x"], "e"), node("Concat", ["r", "e"], "c4", axis: 0)]
        var g = graph(nodes, outputs: ["c1", "c2", "c3", "c4"])
        g.setInitializer("shape", Tensor(shape: [4], scalars: [Int64(1), 2, 4, 4]))
        let x = input([1, 2, 4, 4])
        let counts = try checkAgainstCopying(g, ["x": x], fetches: ["c1", "c2", "c3", "c4", "d"])
        // c1: a in place, b (read by c2 too) and d (fetched) copied; c4: e in place, the view r
        // copied; c2 and c3 have nothing to place and copy as before (not counted).
        XCTAssertEqual(counts.placed, 2, "a in c1, e in c4")
        XCTAssertEqual(counts.copied, 3, "b and d in c1, r in c4")

        let s = try session(g)
        for _ in 0..<2 { _ = try s.run(["x": .tensor(x)], fetches: ["c1", "c2", "c3", "c4", "d"]) }
        let out = try s.run(["x": .tensor(x)], fetches: ["c1", "c2", "c3", "c4", "d"])
        let c1 = try XCTUnwrap(out["c1"]?.tensor), d = try XCTUnwrap(out["d"]?.tensor)
        let inside = d.storage.bytes >= c1.storage.bytes && d.storage.bytes < c1.storage.bytes + c1.byteCount
        XCTAssertFalse(inside, "a fetched value is not a view into another output")
    }

    /// A value inside a Concat that a later in-place op reads last: the op must not write over the
    /// Concat's bytes (a slice is never donated).
    func testPlacedValueIsNotOverwrittenInPlace() throws {
        let nodes = [node("Neg", ["x"], "a"), node("Abs", ["x"], "b"),
                     node("Concat", ["a", "b"], "c", axis: 1),
                     node("Sigmoid", ["c"], "s"), node("Slice", ["s", "st", "en", "ax"], "s2"),
                     node("Relu", ["a"], "ra"), node("Add", ["ra", "s2"], "y")]
        var g = graph(nodes, outputs: ["c", "y"])
        g.setInitializer("st", Tensor(shape: [1], scalars: [Int64(0)]))
        g.setInitializer("en", Tensor(shape: [1], scalars: [Int64(3)]))
        g.setInitializer("ax", Tensor(shape: [1], scalars: [Int64(1)]))
        let x = input([1, 3, 6, 6])
        let counts = try checkAgainstCopying(g, ["x": x])
        XCTAssertEqual(counts.placed, 2)
        let out = try session(g).run(["x": .tensor(x)])
        let c = try XCTUnwrap(out["c"]?.tensor).scalars(as: Float.self)
        XCTAssertEqual(Array(c[..<108]), x.scalars(as: Float.self).map { -$0 }, "c's first half is still -x")
    }

    /// Shapes that change between runs: the Concats copy for the sizes they were not placed for,
    /// and place again when the first sizes come back.
    func testShapeChangesFallBackToCopies() throws {
        let nodes = [node("Neg", ["x"], "a"), node("Abs", ["a"], "b"), node("Concat", ["a", "b"], "c1", axis: 1),
                     node("Sigmoid", ["c1"], "d"), node("Concat", ["c1", "d"], "c2", axis: 1)]
        let g = graph(nodes, outputs: ["c2"])
        let plain = try session(g, placing: false), s = try session(g)
        let shapes = [[1, 2, 3, 3], [1, 2, 3, 3], [1, 2, 5, 3], [1, 3, 3, 3], [2, 2, 3, 3], [1, 2, 3, 3], [1, 2, 3, 3]]
        for (run, shape) in shapes.enumerated() {
            let x = input(shape, seed: Float(run))
            let expected = try plain.run(["x": .tensor(x)])["c2"]
            let (outputs, placed, copied) = try counted(s, ["x": x])
            XCTAssertEqual(bits(outputs["c2"]), bits(expected), "run \(run), shape \(shape)")
            if run == 0 || run == 2 || run == 3 || run == 4 {
                XCTAssertEqual(placed, 0, "run \(run), shape \(shape): copied")
            } else {
                XCTAssertEqual(placed, 4, "run \(run): placed")
                XCTAssertEqual(copied, 0, "run \(run)")
            }
        }
    }

    /// A kernel that takes its slice for a tensor it keeps (not its output): the Concat copies
    /// its output elsewhere and the kept tensor keeps its 7s.
    func testSliceTakenForAnotherTensorLeavesTheGroup() throws {
        let nodes = [node("Neg", ["x"], "a"),
                     Node(opType: "KeepScratch", domain: "test.concat", name: "k", inputs: ["x"], outputs: ["b"]),
                     node("Abs", ["x"], "e"),
                     node("Concat", ["a", "b", "e"], "c", axis: 1)]
        let g = graph(nodes, outputs: ["c"])
        let x = input([1, 2, 4, 4])
        Self.kept.withLock { $0 = [] }
        let counts = try checkAgainstCopying(g, ["x": x])
        XCTAssertEqual(counts.placed, 0, "the Concat wrote into its own buffer once the scratch took b's slice")
        XCTAssertEqual(counts.copied, 0)
        for t in Self.kept.withLock({ $0 }) {
            XCTAssertEqual(t.scalars(as: Float.self), [Float](repeating: 7, count: 32), "a kept tensor is not overwritten")
        }
        Self.kept.withLock { $0 = [] }
    }

    /// Batch 2: the inputs are not contiguous blocks of the output, so nothing is placed.
    func testBatchedConcatCopies() throws {
        let nodes = [node("Neg", ["x"], "a"), node("Abs", ["x"], "b"), node("Concat", ["a", "b"], "c", axis: 1)]
        let counts = try checkAgainstCopying(graph(nodes, outputs: ["c"]), ["x": input([2, 3, 4, 4])])
        XCTAssertEqual(counts.placed, 0)
    }

    /// Two threads running one session (one shared placement, a buffer per run) give each its own results.
    func testTwoThreadsShareThePlacement() throws {
        var nodes = [node("Neg", ["x"], "c0")]
        for k in 1...6 {
            nodes.append(node("Sigmoid", ["c\(k - 1)"], "n\(k)"))
            nodes.append(node("Concat", ["c\(k - 1)", "n\(k)"], "c\(k)", axis: 1))
        }
        let g = graph(nodes, outputs: ["c6"])
        let plain = try session(g, placing: false), s = try session(g)
        // (Tensor is not Sendable; the threads only read the feeds.)
        nonisolated(unsafe) let feeds = (0..<2).map { input([1, 2, 8, 8], seed: Float($0)) }
        let expected = try feeds.map { try XCTUnwrap(plain.run(["x": .tensor($0)])["c6"]?.tensor).scalars(as: Float.self).map(\.bitPattern) }
        let failures = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 2) { t in
            for _ in 0..<50 {
                let got = (try? s.run(["x": .tensor(feeds[t])])["c6"]?.tensor)?.scalars(as: Float.self).map(\.bitPattern)
                if got != expected[t] { failures.add(1, ordering: .relaxed) }
            }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
    }
}
