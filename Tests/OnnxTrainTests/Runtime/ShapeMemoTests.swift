import Foundation
import Synchronization
import XCTest
@testable import OnnxTrain

/// The executor's memo of steps that compute from shapes and initializers only (a causal mask
/// from Shape, Range and LessOrEqual; a ConstantOfShape of an input's shape): kept from one run
/// to the next while the shapes are the same, recomputed when they change, never for random ops.
final class ShapeMemoTests: XCTestCase {
    /// x [B, T, T] -> out = (j <= i ? x : -1e9) · ConstantOfShape(shape(x), 2), and the mask.
    func maskGraph() -> Graph {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: nil))]
        g.outputs = [ValueInfo(name: "out", type: nil)]
        g.setInitializer("axis2", Tensor(scalar: Int64(2)))
        g.setInitializer("zero", Tensor(scalar: Int64(0)))
        g.setInitializer("one", Tensor(scalar: Int64(1)))
        g.setInitializer("axes0", Tensor(shape: [1], scalars: [Int64(0)]))
        g.setInitializer("axes1", Tensor(shape: [1], scalars: [Int64(1)]))
        g.setInitializer("neg", Tensor(scalar: Float(-1e9)))
        g.nodes = [
            Node(opType: "Shape", name: "shape", inputs: ["x"], outputs: ["s"]),
            Node(opType: "Gather", name: "gather", inputs: ["s", "axis2"], outputs: ["t"]),
            Node(opType: "Range", name: "range", inputs: ["zero", "t", "one"], outputs: ["r"]),
            Node(opType: "Unsqueeze", name: "row", inputs: ["r", "axes0"], outputs: ["rr"]),
            Node(opType: "Unsqueeze", name: "col", inputs: ["r", "axes1"], outputs: ["rc"]),
            Node(opType: "LessOrEqual", name: "mask", inputs: ["rr", "rc"], outputs: ["mask"]),
            Node(opType: "Where", name: "where", inputs: ["mask", "x", "neg"], outputs: ["masked"]),
            Node(opType: "ConstantOfShape", name: "twos", inputs: ["s"], outputs: ["twos"],
                 attributes: ["value": .tensor(Tensor(shape: [1], scalars: [Float(2)]))]),
            Node(opType: "Mul", name: "mul", inputs: ["masked", "twos"], outputs: ["out"]),
        ]
        return g
    }

    func session(_ g: Graph) throws -> InferenceSession {
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        var options = SessionOptions()
        options.optimize = false
        return try InferenceSession(model: m, options: options)
    }

    func testMaskIsKeptWhileTheShapeStays() throws {
        let session = try session(maskGraph())
        let kinds = Dictionary(uniqueKeysWithValues: zip(session.executor.steps.map(\.node.name), session.executor.memoKind))
        XCTAssertEqual(kinds, ["shape": 1, "gather": 2, "range": 2, "row": 2, "col": 2, "mask": 2, "twos": 2, "where": 0, "mul": 0])
        var previous: (mask: Tensor, shape: [Int])?
        for (run, (b, t)) in [(2, 4), (2, 4), (3, 5), (3, 5), (2, 4), (1, 4)].enumerated() {
            let values = (0..<(b * t * t)).map { Float(($0 * 7 + run * 13) % 31) - 15 }
            let x = Tensor(shape: [b, t, t], scalars: values)
            let result = try session.run(["x": .tensor(x)], fetches: ["out", "mask"])
            let out = try XCTUnwrap(result["out"]?.tensor), mask = try XCTUnwrap(result["mask"]?.tensor)
            var want: [Float] = []
            for k in 0..<b { for i in 0..<t { for j in 0..<t { want.append((j <= i ? values[(k * t + i) * t + j] : -1e9) * 2) } } }
            XCTAssertEqual(out.shape, [b, t, t])
            XCTAssertEqual(out.scalars(as: Float.self), want, "run \(run) shape \([b, t, t])")
            XCTAssertEqual(mask.shape, [t, t])
            XCTAssertEqual(mask.scalars(as: Bool.self), (0..<(t * t)).map { $0 % t <= $0 / t })
            // x shaped as in the run before: the mask is the tensor that run computed (a new batch
            // size is a new Shape value, and everything computed from it is computed again).
            if let previous {
                XCTAssertEqual(mask.sharesStorage(with: previous.mask), previous.shape == [b, t, t], "run \(run)")
            }
            previous = (mask, [b, t, t])
        }
    }

    func testRandomOpsAreNotKept() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: nil))]
        g.outputs = [ValueInfo(name: "out", type: nil)]
        g.nodes = [
            Node(opType: "Shape", name: "shape", inputs: ["x"], outputs: ["s"]),
            Node(opType: "ConstantOfShape", name: "zeros", inputs: ["s"], outputs: ["z"],
                 attributes: ["value": .tensor(Tensor(shape: [1], scalars: [Float(0)]))]),
            Node(opType: "RandomUniformLike", name: "random", inputs: ["z"], outputs: ["u"]),
            Node(opType: "Add", name: "add", inputs: ["u", "x"], outputs: ["out"]),
        ]
        let session = try session(g)
        let kinds = Dictionary(uniqueKeysWithValues: zip(session.executor.steps.map(\.node.name), session.executor.memoKind))
        XCTAssertEqual(kinds, ["shape": 1, "zeros": 2, "random": 0, "add": 0])
        let x = Tensor(zeros: .float32, shape: [64])
        let a = try XCTUnwrap(session.run(["x": .tensor(x)])["out"]?.tensor).scalars(as: Float.self)
        let b = try XCTUnwrap(session.run(["x": .tensor(x)])["out"]?.tensor).scalars(as: Float.self)
        XCTAssertNotEqual(a, b, "a new draw on every run")
        XCTAssertTrue(a.allSatisfy { $0 >= 0 && $0 < 1 })
    }
    /// A step whose input is computed on every run (an output past `GraphExecutor.memoBytes`:
    /// ConstantOfShape [1, 600, 4096], 9.8 MB) keeps nothing: kept, it would hold that input
    /// from one run to the next.
    func testAStepAfterAValueComputedOnEveryRunKeepsNothing() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: nil))]
        g.outputs = [ValueInfo(name: "out", type: nil)]
        g.setInitializer("width", Tensor(shape: [1], scalars: [Int64(4096)]))
        g.setInitializer("axes", Tensor(shape: [1], scalars: [Int64(2)]))
        g.nodes = [
            Node(opType: "Shape", name: "shape", inputs: ["x"], outputs: ["s"]),
            Node(opType: "Concat", name: "wide", inputs: ["s", "width"], outputs: ["w"], attributes: ["axis": .int(0)]),
            Node(opType: "ConstantOfShape", name: "halves", inputs: ["w"], outputs: ["z"],
                 attributes: ["value": .tensor(Tensor(shape: [1], scalars: [Float(0.5)]))]),
            Node(opType: "ReduceSum", name: "sum", inputs: ["z", "axes"], outputs: ["r"], attributes: ["keepdims": .int(0)]),
            Node(opType: "Add", name: "add", inputs: ["x", "r"], outputs: ["out"]),
        ]
        let session = try session(g)
        let names = session.executor.steps.map(\.node.name)
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: zip(names, session.executor.memoKind)),
                       ["shape": 1, "wide": 2, "halves": 2, "sum": 2, "add": 0])
        for run in 0..<3 {
            let values = (0..<600).map { Float(($0 * 5 + run) % 17) - 8 }
            let out = try XCTUnwrap(session.run(["x": .tensor(Tensor(shape: [1, 600], scalars: values))])["out"]?.tensor)
            XCTAssertEqual(out.scalars(as: Float.self), values.map { $0 + 2048 }, "run \(run): 4096 halves sum to 2048")
            XCTAssertEqual(session.executor.keptSteps.map { names[$0] }, ["shape", "wide"], "run \(run)")
        }
    }

    /// What the memo keeps is computed outside the memory pattern: the second run, which reuses
    /// it and so allocates none of it, replays the pattern the first recorded (kept values
    /// allocated in the recorded run would shift its blocks, the replay would leave the pattern,
    /// and a third run record again: a run served by the cache besides the arena, about twice
    /// the memory at the peak, as gpt2_small at batch 32 showed: 1801 MiB against 979).
    func testTheRunAfterTheFirstReplaysItsPattern() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: nil))]
        g.outputs = [ValueInfo(name: "out", type: nil)]
        g.setInitializer("three", Tensor(shape: [1], scalars: [Int64(3)]))
        g.setInitializer("axes", Tensor(shape: [1], scalars: [Int64(3)]))
        g.setInitializer("axes2", Tensor(shape: [1], scalars: [Int64(2)]))
        g.nodes = [
            Node(opType: "Shape", name: "shape", inputs: ["x"], outputs: ["s"]),
            Node(opType: "Concat", name: "wide", inputs: ["s", "three"], outputs: ["w"], attributes: ["axis": .int(0)]),
            Node(opType: "ConstantOfShape", name: "ones", inputs: ["w"], outputs: ["o"],
                 attributes: ["value": .tensor(Tensor(shape: [1], scalars: [Float(1)]))]),
            Node(opType: "ReduceSum", name: "threes", inputs: ["o", "axes"], outputs: ["t"], attributes: ["keepdims": .int(0)]),
            Node(opType: "Mul", name: "mul", inputs: ["x", "t"], outputs: ["y"]),
            Node(opType: "ReduceSum", name: "rows", inputs: ["y", "axes2"], outputs: ["out"], attributes: ["keepdims": .int(0)]),
        ]
        let session = try session(g)
        let names = session.executor.steps.map(\.node.name)
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: zip(names, session.executor.memoKind)),
                       ["shape": 1, "wide": 2, "ones": 2, "threes": 2, "mul": 0, "rows": 0])
        XCTAssertNotNil(session.memoryPatterns)
        for run in 0..<5 {
            // y [2, 128, 128] float, 128 KiB, dies in the run: the pattern places it.
            let values = (0..<(2 * 128 * 128)).map { Float(($0 * 7 + run) % 29) - 14 }
            let before = MemoryPattern.arenaBlocks.load(ordering: .relaxed)
            let out = try XCTUnwrap(session.run(["x": .tensor(Tensor(shape: [2, 128, 128], scalars: values))])["out"]?.tensor)
            let placed = MemoryPattern.arenaBlocks.load(ordering: .relaxed) - before
            // Sums of 128 small integers: exact in any order.
            let want = (0..<256).map { row in Float((0..<128).reduce(0.0) { $0 + 3 * Double(values[row * 128 + $1]) }) }
            XCTAssertEqual(out.shape, [2, 128])
            XCTAssertEqual(out.scalars(as: Float.self), want, "run \(run)")
            XCTAssertEqual(session.executor.keptSteps.map { names[$0] }, ["shape", "wide", "ones", "threes"], "run \(run)")
            if run >= 1 { XCTAssertGreaterThanOrEqual(placed, 1, "run \(run) took y's block from the arena") }
        }
    }

    /// x -> Shape(x, start 1) = s; out = x + ConstantOfShape(s, 1) (broadcast over the first axis).
    /// s is not a graph output (a graph output is never kept); the tests fetch it by name.
    func shapeTailGraph() -> Graph {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: nil))]
        g.outputs = [ValueInfo(name: "out", type: nil)]
        g.nodes = [
            Node(opType: "Shape", name: "shape", inputs: ["x"], outputs: ["s"], attributes: ["start": .int(1)]),
            Node(opType: "ConstantOfShape", name: "ones", inputs: ["s"], outputs: ["o"],
                 attributes: ["value": .tensor(Tensor(shape: [1], scalars: [Float(1)]))]),
            Node(opType: "Add", name: "add", inputs: ["x", "o"], outputs: ["out"]),
        ]
        return g
    }

    /// A Shape whose input has the shape it was computed from is not run again: its kept output
    /// is used as is. Another input shape with the same value (Shape's start leaves out the
    /// batch) keeps the same tensor too; a new value is computed and kept.
    func testShapeKeptForItsInputShape() throws {
        let session = try session(shapeTailGraph())
        let names = session.executor.steps.map(\.node.name)
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: zip(names, session.executor.memoKind)), ["shape": 1, "ones": 2, "add": 0])
        var previous: (s: Tensor, tail: [Int])?
        for (run, shape) in [[2, 4, 5], [2, 4, 5], [3, 4, 5], [2, 4, 5], [2, 3, 5], [2, 3, 5], [3, 4, 5]].enumerated() {
            let n = shape.reduce(1, *)
            let values = (0..<n).map { Float(($0 * 11 + run * 3) % 23) - 11 }
            let result = try session.run(["x": .tensor(Tensor(shape: shape, scalars: values))], fetches: ["out", "s"])
            let out = try XCTUnwrap(result["out"]?.tensor), s = try XCTUnwrap(result["s"]?.tensor)
            XCTAssertEqual(s.scalars(as: Int64.self), shape.dropFirst().map { Int64($0) }, "run \(run)")
            XCTAssertEqual(out.shape, shape)
            XCTAssertEqual(out.scalars(as: Float.self), values.map { $0 + 1 }, "run \(run)")
            let tail = Array(shape.dropFirst())
            if let previous { XCTAssertEqual(s.sharesStorage(with: previous.s), previous.tail == tail, "run \(run)") }
            previous = (s, tail)
            XCTAssertEqual(session.executor.keptSteps.map { names[$0] }, ["shape", "ones"], "run \(run)")
        }
    }

    /// Two threads run one session with different shapes at once: each gets its own shape's
    /// values (the kept Shape outputs are checked against the input shape of each run).
    func testTwoThreadsWithTwoShapes() throws {
        let session = try session(shapeTailGraph())
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { thread in
            for run in 0..<200 {
                let shape = thread == 0 ? [2, 3, 4] : [1, 5, 2 + run % 2]
                let n = shape.reduce(1, *)
                let values = (0..<n).map { Float(($0 * 5 + run + thread) % 13) }
                do {
                    let result = try session.run(["x": .tensor(Tensor(shape: shape, scalars: values))], fetches: ["out", "s"])
                    guard let out = result["out"]?.tensor, let s = result["s"]?.tensor,
                          s.scalars(as: Int64.self) == shape.dropFirst().map({ Int64($0) }), out.shape == shape,
                          out.scalars(as: Float.self) == values.map({ $0 + 1 }) else {
                        failures.withLock { $0.append("thread \(thread) run \(run) shape \(shape)") }
                        continue
                    }
                } catch {
                    failures.withLock { $0.append("thread \(thread) run \(run): \(error)") }
                }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
    }
}
