import XCTest
@testable import OnnxTrain

/// The executor's plan (only the nodes a fetch needs, values freed after their last use, values
/// captured by subgraphs kept alive), the registry's version resolution and the buffer cache.
/// (Cycles, duplicate producers and inlining: GraphLayerTests.)
final class ExecutorTests: XCTestCase {
    func executor(_ g: Graph, opset: Int = 17) throws -> GraphExecutor {
        try GraphExecutor(graph: g, opsets: ["": opset], registry: .standard)
    }

    /// x -> Relu -> a -> Neg -> b -> Abs -> y, and a -> Exp -> side (another output).
    func chain() -> Graph {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: nil)]
        g.nodes = [Node(opType: "Relu", name: "relu", inputs: ["x"], outputs: ["a"]),
                   Node(opType: "Neg", name: "neg", inputs: ["a"], outputs: ["b"]),
                   Node(opType: "Abs", name: "abs", inputs: ["b"], outputs: ["y"]),
                   Node(opType: "Exp", name: "exp", inputs: ["a"], outputs: ["side"])]
        g.outputs = [ValueInfo(name: "y", type: nil), ValueInfo(name: "side", type: nil)]
        return g
    }

    func testPlanRunsOnlyWhatTheFetchNeedsAndFreesAfterLastUse() throws {
        let e = try executor(chain())
        let slot = { (name: String) in e.slotOf[name]! }
        let names = { (plan: GraphExecutor.Plan) in plan.steps.map { e.steps[$0].node.name } }

        let y = e.plan(for: [slot("y")])
        XCTAssertEqual(names(y), ["relu", "neg", "abs"], "Exp feeds only 'side', which is not fetched")
        // x is freed after Relu; a after Neg (its last reader in this plan); b after Abs; y is fetched and kept.
        XCTAssertEqual(y.freeAfter.map { Set($0) }, [[slot("x")], [slot("a")], [slot("b")]])

        let both = e.plan(for: [slot("y"), slot("side")])
        XCTAssertEqual(Set(names(both)), ["relu", "neg", "abs", "exp"])
        let freed = both.freeAfter.flatMap { $0 }
        XCTAssertFalse(freed.contains(slot("y")) || freed.contains(slot("side")), "fetched values are never freed")
        let aFreedAt = try XCTUnwrap(both.freeAfter.firstIndex { $0.contains(slot("a")) })
        XCTAssertEqual(aFreedAt, both.steps.lastIndex { ["neg", "exp"].contains(e.steps[$0].node.name) }, "a lives until its last reader")
        XCTAssertTrue(e.plan(for: [slot("y")]).steps == y.steps, "plans are cached per fetch list")

        let out = try InferenceSession(model: { var m = Model(graph: chain()); m.opsetImports = ["": 17]; return m }())
            .run(["x": .tensor(Tensor(shape: [3], scalars: [Float(-1), 0.5, 2]))])
        XCTAssertEqual(out["y"]?.tensor?.scalars(as: Float.self), [0, 0.5, 2])
        XCTAssertEqual(out["side"]?.tensor?.scalars(as: Float.self), [1, Float(exp(0.5)), Float(exp(2.0))])
    }

    /// An If whose branches read 'k' and 'x' from the enclosing graph: the plan keeps 'k''s
    /// producer and frees 'k' only after the If, and the branch sees the outer values.
    func testSubgraphsCaptureOuterValues() throws {
        var then = Graph(), other = Graph()
        then.name = "then"
        then.nodes = [Node(opType: "Mul", name: "scale", inputs: ["x", "k"], outputs: ["t"])]
        then.outputs = [ValueInfo(name: "t", type: nil)]
        other.name = "else"
        other.nodes = [Node(opType: "Sub", name: "shift", inputs: ["x", "k"], outputs: ["e"])]
        other.outputs = [ValueInfo(name: "e", type: nil)]
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: nil), ValueInfo(name: "c", type: nil)]
        g.nodes = [Node(opType: "Abs", name: "abs", inputs: ["x"], outputs: ["k"]),
                   Node(opType: "If", name: "if", inputs: ["c"], outputs: ["y"], attributes: ["then_branch": .graph(then), "else_branch": .graph(other)])]
        g.outputs = [ValueInfo(name: "y", type: nil)]

        let e = try executor(g)
        let step = try XCTUnwrap(e.steps.first { $0.node.name == "if" })
        XCTAssertEqual(Set(step.captured), [e.slotOf["x"]!, e.slotOf["k"]!])
        let plan = e.plan(for: [e.slotOf["y"]!])
        XCTAssertEqual(plan.steps.map { e.steps[$0].node.name }, ["abs", "if"], "'k' is read only inside the branches, yet computed")
        XCTAssertEqual(plan.freeAfter[0], [], "x and k stay alive for the If")
        XCTAssertEqual(Set(plan.freeAfter[1]), [e.slotOf["x"]!, e.slotOf["k"]!, e.slotOf["c"]!])

        var model = Model(graph: g)
        model.opsetImports = ["": 17]
        let session = try InferenceSession(model: model)
        let x = Tensor(shape: [2], scalars: [Float(-3), 2])
        for (condition, expected) in [(true, [Float(-9), 4]), (false, [Float(-6), 0])] {
            let out = try session.run(["x": .tensor(x), "c": .tensor(Tensor(shape: [], scalars: [condition]))])
            XCTAssertEqual(out["y"]?.tensor?.scalars(as: Float.self), expected, "condition \(condition)")
        }
    }

    func testAValueReadFromNowhereIsNamed() {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: nil)]
        g.nodes = [Node(opType: "Add", name: "add", inputs: ["x", "ghost"], outputs: ["y"])]
        g.outputs = [ValueInfo(name: "y", type: nil), ValueInfo(name: "z", type: nil)]
        XCTAssertThrowsError(try executor(g)) { error in
            let message = (error as? OnnxTrainError)?.message ?? "\(error)"
            XCTAssertTrue(message.contains("reads 'ghost', which no node, graph input or initializer produces"), message)
            XCTAssertTrue(message.contains("graph output 'z' is not produced by any node"), message)
        }
    }

    /// A kernel is chosen by the newest since-version at or below the model's opset.
    func testRegistryResolvesTheNewestVersionAtOrBelowTheOpset() throws {
        let registry = OpRegistry()
        for since in [1, 7, 13] {
            registry.register("Probe", domain: "com.example", since: since) { _ in throw KernelError("since \(since)") }
        }
        XCTAssertNil(registry.resolve(domain: "com.example", opType: "Probe", opset: 0))
        for (opset, since) in [(1, 1), (6, 1), (7, 7), (12, 7), (13, 13), (99, 13)] {
            XCTAssertEqual(registry.resolve(domain: "com.example", opType: "Probe", opset: opset)?.since, since, "opset \(opset)")
        }
        XCTAssertNil(registry.resolve(domain: "", opType: "Probe", opset: 13), "domains are separate")
        // The default domain's two spellings are one.
        XCTAssertEqual(OpRegistry.standard.resolve(domain: "ai.onnx", opType: "Relu", opset: 17)?.since,
                       OpRegistry.standard.resolve(domain: "", opType: "Relu", opset: 17)?.since)
        // Registering a since-version again replaces it.
        registry.register("Probe", domain: "com.example", since: 7) { _ in throw KernelError("replaced") }
        let factory = try XCTUnwrap(registry.resolve(domain: "com.example", opType: "Probe", opset: 8)?.factory)
        let context = NodeContext(node: Node(opType: "Probe", domain: "com.example", inputs: [], outputs: []), opset: 8, sinceVersion: 7) { _ in
            throw KernelError("no subgraphs")
        }
        XCTAssertThrowsError(try factory(context)) { XCTAssertEqual(($0 as? KernelError)?.message, "replaced") }
    }

    func testBufferCacheReusesLargeBlocksBySizeClass() throws {
        BufferCache.trim()
        XCTAssertEqual(BufferCache.idleBytes, 0)
        let size = 100_000  // a page multiple after rounding: 102400
        let a = try XCTUnwrap(BufferCache.allocate(size))
        XCTAssertEqual(Int(bitPattern: a) % 64, 0, "64-byte aligned")
        BufferCache.recycle(a, size)
        XCTAssertEqual(BufferCache.idleBytes, 102_400)
        let b = try XCTUnwrap(BufferCache.allocate(size - 1000), "same size class")
        XCTAssertEqual(b, a, "a freed block goes to the next request of its size class")
        XCTAssertEqual(BufferCache.idleBytes, 0)
        let c = try XCTUnwrap(BufferCache.allocate(size + 5000), "another size class: a new block")
        XCTAssertNotEqual(c, a)
        BufferCache.recycle(b, size)
        BufferCache.recycle(c, size + 5000)
        XCTAssertEqual(BufferCache.idleBytes, 102_400 + 106_496)
        // Small blocks go back to malloc and are never held.
        let small = try XCTUnwrap(BufferCache.allocate(1000))
        BufferCache.recycle(small, 1000)
        XCTAssertEqual(BufferCache.idleBytes, 102_400 + 106_496)
        BufferCache.trim()
        XCTAssertEqual(BufferCache.idleBytes, 0)
        XCTAssertNil(BufferCache.allocate(-1))
        XCTAssertNil(BufferCache.allocate(Int.max))
    }

    /// A working set larger than 512 MiB stays cached whole (in use + idle within the high-water
    /// mark + 512 MiB), and a new size past that limit frees idle blocks first. The blocks are never
    /// touched, so the test costs address space, not memory.
    func testBufferCacheKeepsTheWorkingSetUpToTheHighWaterMark() throws {
        BufferCache.trim()
        defer { BufferCache.trim() }
        let block = 160 << 20, live = BufferCache.liveBytes
        // Enough blocks at once to set a new mark above the floor and above any earlier test's.
        let count = max(BufferCache.capacity, BufferCache.highWaterBytes - live) / block + 2
        let blocks = try (0..<count).map { _ in try XCTUnwrap(BufferCache.allocate(block)) }
        XCTAssertEqual(BufferCache.liveBytes, live + count * block)
        XCTAssertEqual(BufferCache.highWaterBytes, live + count * block)
        for p in blocks { BufferCache.recycle(p, block) }
        XCTAssertEqual(BufferCache.idleBytes, count * block, "the whole working set is kept, past the floor")
        XCTAssertEqual(BufferCache.liveBytes, live)
        // The same working set again is served from the cache.
        let again = try (0..<count).map { _ in try XCTUnwrap(BufferCache.allocate(block)) }
        XCTAssertEqual(Set(again), Set(blocks))
        XCTAssertEqual(BufferCache.idleBytes, 0)
        for p in again { BufferCache.recycle(p, block) }
        // Another size on top of the idle set, within the 512 MiB over the mark: nothing is freed.
        let small = 64 << 20
        let kept = try XCTUnwrap(BufferCache.allocate(small))
        XCTAssertEqual(BufferCache.idleBytes, count * block)
        BufferCache.recycle(kept, small)
        XCTAssertEqual(BufferCache.idleBytes, count * block + small)
        // One that passes the mark + 512 MiB (64 MiB over it): one idle 160 MiB block is freed first.
        let other = BufferCache.capacity  // with the idle 64 MiB block, 64 MiB past the limit
        let extra = try XCTUnwrap(BufferCache.allocate(other))
        XCTAssertEqual(BufferCache.idleBytes, count * block + small - block)
        XCTAssertLessThanOrEqual(BufferCache.idleBytes + BufferCache.liveBytes, BufferCache.highWaterBytes + BufferCache.capacity)
        BufferCache.recycle(extra, other)
        XCTAssertLessThanOrEqual(BufferCache.idleBytes + BufferCache.liveBytes, BufferCache.highWaterBytes + BufferCache.capacity)
        // A request malloc cannot serve leaves neither bytes in use nor a mark behind.
        let mark = BufferCache.highWaterBytes
        XCTAssertNil(BufferCache.allocate((1 << 48) - (1 << 20)), "more than the address space")
        XCTAssertEqual(BufferCache.liveBytes, live)
        XCTAssertEqual(BufferCache.highWaterBytes, mark)
    }
}
