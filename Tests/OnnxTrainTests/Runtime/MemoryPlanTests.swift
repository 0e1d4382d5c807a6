import Foundation
import Synchronization
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// The executor's memory plan: values die after their last reader, and an op that declares an
/// input in place writes its output over that input's block when the input dies there. The plan
/// must never hand one block to two live values: not to a value a later node or a subgraph
/// reads, not to a graph output, feed or initializer, not to a block a view (Reshape) shares;
/// and results must be bit-identical with the plan on and off.
final class MemoryPlanTests: XCTestCase {
    /// Which outputs of the test op `Inc` were written over their input, by output name.
    static let overwritten = Mutex<[String: Bool]>([:])

    /// The standard ops plus `test.plan` `Inc` (y = x + 1, float32, declared in place on input 0),
    /// which records whether its output took its input's block.
    static let registry: OpRegistry = {
        let registry = OpRegistry()
        registerAllOps(registry)
        registry.register("Inc", domain: "test.plan", since: [1], inPlace: [0]) { ctx in
            let name = ctx.node.outputs[0]
            return AnyKernel { inputs, _ in
                let x = try inputs.tensor(0)
                var out = Tensor(uninitialized: .float32, shape: x.shape)
                try x.withUnsafeBufferPointer(as: Float.self) { px in
                    out.uncheckedMutableBufferPointer(as: Float.self) { po in
                        for i in po.indices { po[i] = px[i] + 1 }
                    }
                }
                let inPlace = out.storage.bytes == x.storage.bytes
                MemoryPlanTests.overwritten.withLock { $0[name] = inPlace }
                return [.tensor(out)]
            }
        }
        return registry
    }()

    func model(_ g: Graph) -> Model {
        var m = Model(graph: g)
        m.opsetImports = ["": 17, "test.plan": 1]
        return m
    }

    func session(_ g: Graph, memoryPlan: Bool = true) throws -> InferenceSession {
        var options = SessionOptions()
        options.registry = Self.registry
        options.optimize = false
        options.memoryPlan = memoryPlan
        return try InferenceSession(model: model(g), options: options)
    }

    func inc(_ input: String, _ output: String) -> Node {
        Node(opType: "Inc", domain: "test.plan", name: output, inputs: [input], outputs: [output])
    }

    func floats(_ values: [Float]) -> Value { .tensor(Tensor(shape: [values.count], scalars: values)) }

    /// Runs `g` with the plan on and off; the outputs must be bit-identical and the feeds untouched.
    /// Returns which `Inc` outputs were written in place with the plan on.
    @discardableResult
    func runBoth(_ g: Graph, _ feeds: [String: Value], file: StaticString = #filePath, line: UInt = #line) throws -> [String: Bool] {
        func contents(_ v: Value?) -> [Float]? { v?.tensor.flatMap { $0.dtype == .float32 ? $0.scalars(as: Float.self) : nil } }
        let before = feeds.mapValues(contents)
        Self.overwritten.withLock { $0 = [:] }
        let off = try session(g, memoryPlan: false).run(feeds)
        XCTAssertFalse(Self.overwritten.withLock { $0.values.contains(true) }, "no block is handed over with the plan off", file: file, line: line)
        Self.overwritten.withLock { $0 = [:] }
        let on = try session(g).run(feeds)
        let record = Self.overwritten.withLock { $0 }
        for (name, value) in off {
            let a = value.tensor?.scalars(as: Float.self), b = on[name]?.tensor?.scalars(as: Float.self)
            XCTAssertEqual(a.map { $0.map(\.bitPattern) }, b.map { $0.map(\.bitPattern) }, "output \(name)", file: file, line: line)
        }
        for (name, values) in before {
            XCTAssertEqual(contents(feeds[name]), values, "feed \(name) unchanged", file: file, line: line)
        }
        return record
    }

    func testDyingValuesAreOverwrittenAndNothingElse() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: nil)]
        g.setInitializer("w", Tensor(shape: [4], scalars: [Float(10), 20, 30, 40]))
        g.nodes = [Node(opType: "Relu", name: "relu", inputs: ["x"], outputs: ["a"]),
                   inc("a", "b"),                 // a dies here: in place
                   inc("b", "c"),                 // b is read again by 'sum': a new block
                   inc("c", "d"),                 // c dies here: in place
                   Node(opType: "Add", name: "sum", inputs: ["b", "d"], outputs: ["e"]),
                   inc("x", "f"),                 // a feed: never overwritten
                   inc("w", "g"),                 // an initializer: never overwritten
                   inc("e", "h")]                 // e is a graph output: never overwritten
        g.outputs = ["e", "f", "g", "h"].map { ValueInfo(name: $0, type: nil) }
        let x = floats([-1, 2, -3, 4])
        let record = try runBoth(g, ["x": x])
        XCTAssertEqual(record, ["b": true, "c": false, "d": true, "f": false, "g": false, "h": false])

        // The initializer is intact: a second run computes the same.
        let s = try session(g)
        for _ in 0..<2 {
            let out = try s.run(["x": x])
            XCTAssertEqual(out["g"]?.tensor?.scalars(as: Float.self), [11, 21, 31, 41])
            XCTAssertEqual(out["e"]?.tensor?.scalars(as: Float.self), [Float(4), 8, 4, 12])
            XCTAssertEqual(out["h"]?.tensor?.scalars(as: Float.self), [5, 9, 5, 13])
        }
    }

    /// A node reading one value twice, or a value a view shares, is not overwritten.
    func testValuesReadTwiceOrSharedByAViewStay() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: nil)]
        g.setInitializer("shape", Tensor(shape: [2], scalars: [Int64(2), 2]))
        g.nodes = [Node(opType: "Relu", name: "relu", inputs: ["x"], outputs: ["a"]),
                   Node(opType: "Reshape", name: "view", inputs: ["a", "shape"], outputs: ["r"]),
                   inc("a", "b"),                 // a dies here, but r views its block
                   Node(opType: "Flatten", name: "flat", inputs: ["r"], outputs: ["r2"]),
                   Node(opType: "Reshape", name: "back", inputs: ["r2", "shape"], outputs: ["r3"]),
                   Node(opType: "Relu", name: "relu2", inputs: ["x"], outputs: ["p"]),
                   Node(opType: "Mul", name: "square", inputs: ["p", "p"], outputs: ["q"])]
        g.outputs = ["b", "r3", "q"].map { ValueInfo(name: $0, type: nil) }
        let record = try runBoth(g, ["x": floats([-1, 2, -3, 4])])
        XCTAssertEqual(record["b"], false, "the Reshape's view shares a's block")
        let s = try session(g)
        let out = try s.run(["x": floats([-1, 2, -3, 4])])
        XCTAssertEqual(out["r3"]?.tensor?.scalars(as: Float.self), [0, 2, 0, 4])
        XCTAssertEqual(out["q"]?.tensor?.scalars(as: Float.self), [0, 4, 0, 16])
        let e = s.executor
        let plan = e.plan(for: ["b", "r3", "q"].map { e.slotOf[$0]! })
        let square = try XCTUnwrap(plan.steps.firstIndex { e.steps[$0].node.name == "square" })
        XCTAssertTrue(plan.donors[square].isEmpty, "Mul(p, p) reads p twice")
        let incA = try XCTUnwrap(plan.steps.firstIndex { e.steps[$0].node.name == "b" })
        XCTAssertEqual(plan.donors[incA].map(\.slot), [e.slotOf["a"]!], "planned; refused at run time (the view)")
    }

    /// Half inputs widen to float before the output is made: a widened operand [4] has the
    /// byte size of the dying half input [2, 4] and must not take its block (only a tensor of
    /// the block's element type does), or the input is overwritten before it is read.
    func testOnlyTheOutputsElementTypeTakesABlock() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: nil)]
        g.setInitializer("s", Tensor(shape: [4], scalars: [Float16(0.5), 1.5, -2, 3]))
        g.nodes = [Node(opType: "Neg", name: "neg", inputs: ["x"], outputs: ["f"]),
                   Node(opType: "Add", name: "add", inputs: ["s", "f"], outputs: ["y"])]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        let x = Tensor(shape: [2, 4], scalars: (0..<8).map { Float16(Float($0) - 3.5) })
        let taken = BufferDonation.takenCount.load(ordering: .relaxed)
        let y = try session(g).run(["x": .tensor(x)])["y"]?.tensor
        XCTAssertEqual(BufferDonation.takenCount.load(ordering: .relaxed) - taken, 1, "the half output took f's block")
        let expected: [Float16] = [4, 4, -0.5, 3.5, 0, 0, -4.5, -0.5]
        XCTAssertEqual(y?.scalars(as: Float16.self), expected)
    }

    /// A chain reuses one block all along; results match the plan off.
    func testChainsReuseOneBlock() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: nil)]
        var nodes = [Node(opType: "Neg", name: "neg", inputs: ["x"], outputs: ["v0"])]
        for i in 1...20 { nodes.append(inc("v\(i - 1)", "v\(i)")) }
        nodes.append(Node(opType: "Abs", name: "abs", inputs: ["v20"], outputs: ["y"]))
        g.nodes = nodes
        g.outputs = [ValueInfo(name: "y", type: nil)]
        let x = Tensor(shape: [3, 5000], scalars: (0..<15000).map { Float($0) * 0.25 })
        let taken = BufferDonation.takenCount.load(ordering: .relaxed)
        let record = try runBoth(g, ["x": .tensor(x)])
        XCTAssertEqual(record.count, 20)
        XCTAssertTrue(record.values.allSatisfy { $0 }, "\(record)")
        XCTAssertGreaterThanOrEqual(BufferDonation.takenCount.load(ordering: .relaxed) - taken, 20)
        let y = try session(g).run(["x": .tensor(x)])["y"]?.tensor?.scalars(as: Float.self)
        XCTAssertEqual(y, (0..<15000).map { abs(-Float($0) * 0.25 + 20) })
    }

    /// If branches read outer values: the outer value lives until the If, so the node before
    /// it does not overwrite it; inside a branch the outer value is never overwritten, while a
    /// value local to the branch is.
    func testSubgraphsKeepTheOuterValuesTheyRead() throws {
        var then = Graph(), other = Graph()
        then.name = "then"
        then.nodes = [inc("k", "t1"),                                          // outer k: never overwritten
                      Node(opType: "Neg", name: "tneg", inputs: ["t1"], outputs: ["t2"]),
                      inc("t2", "t3")]                                         // local t2 dies: in place
        then.outputs = [ValueInfo(name: "t3", type: nil)]
        other.name = "else"
        other.nodes = [Node(opType: "Sub", name: "shift", inputs: ["x", "k"], outputs: ["o"])]
        other.outputs = [ValueInfo(name: "o", type: nil)]
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: nil), ValueInfo(name: "c", type: nil)]
        g.nodes = [Node(opType: "Abs", name: "abs", inputs: ["x"], outputs: ["k"]),
                   inc("k", "m"),                                              // k is read by the If later
                   Node(opType: "If", name: "if", inputs: ["c"], outputs: ["y"],
                        attributes: ["then_branch": .graph(then), "else_branch": .graph(other)]),
                   Node(opType: "Add", name: "join", inputs: ["y", "m"], outputs: ["z"])]
        g.outputs = [ValueInfo(name: "z", type: nil)]
        let x = floats([-3, 2])
        let record = try runBoth(g, ["x": x, "c": .tensor(Tensor(shape: [], scalars: [true]))])
        XCTAssertEqual(record, ["m": false, "t1": false, "t3": true])
        let z = try session(g).run(["x": x, "c": .tensor(Tensor(shape: [], scalars: [true]))])["z"]?.tensor?.scalars(as: Float.self)
        // k = [3, 2]; m = k + 1 = [4, 3]; then: -(k + 1) + 1 = [-3, -2]; z = y + m = [1, 1].
        XCTAssertEqual(z, [1, 1])
        try runBoth(g, ["x": x, "c": .tensor(Tensor(shape: [], scalars: [false]))])
    }

    /// A Loop body's state input (fed by the Loop) and the outer values it captures are never
    /// overwritten; values local to one iteration are.
    func testLoopBodiesKeepStateAndCapturedValues() throws {
        var body = Graph()
        body.name = "body"
        body.inputs = [ValueInfo(name: "i", type: nil), ValueInfo(name: "cond", type: nil), ValueInfo(name: "s", type: nil)]
        body.nodes = [Node(opType: "Identity", name: "keep", inputs: ["cond"], outputs: ["cond_out"]),
                      inc("s", "s1"),                                          // the state input: never overwritten
                      Node(opType: "Add", name: "plus", inputs: ["s1", "v"], outputs: ["s2"]),   // v from outside
                      inc("s2", "s_out")]                                      // local s2 dies: in place
        body.outputs = [ValueInfo(name: "cond_out", type: nil), ValueInfo(name: "s_out", type: nil)]
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: nil)]
        g.setInitializer("trips", Tensor(shape: [], scalars: [Int64(3)]))
        g.nodes = [Node(opType: "Relu", name: "relu", inputs: ["x"], outputs: ["v"]),
                   inc("v", "u"),                                              // v is captured by the Loop later
                   Node(opType: "Loop", name: "loop", inputs: ["trips", "", "u"], outputs: ["final"],
                        attributes: ["body": .graph(body)])]
        g.outputs = [ValueInfo(name: "final", type: nil)]
        let record = try runBoth(g, ["x": floats([-1, 2])])
        XCTAssertEqual(record, ["u": false, "s1": false, "s_out": true])
        // v = [0, 2]; u = [1, 3]; each trip s -> s + 1 + v + 1.
        let out = try session(g).run(["x": floats([-1, 2])])["final"]?.tensor?.scalars(as: Float.self)
        XCTAssertEqual(out, [7, 15])
    }

    /// The plan is off with `SessionOptions.memoryPlan = false` and with
    /// `ONNX_TRAIN_DISABLE_PASSES=memory-plan`.
    func testPlanSwitchesOff() throws {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: nil)]
        g.nodes = [Node(opType: "Neg", name: "neg", inputs: ["x"], outputs: ["a"]), inc("a", "y")]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        func inPlace(_ s: InferenceSession) throws -> Bool? {
            Self.overwritten.withLock { $0 = [:] }
            _ = try s.run(["x": floats([1, 2])])
            return Self.overwritten.withLock { $0["y"] }
        }
        XCTAssertEqual(try inPlace(try session(g)), true)
        XCTAssertEqual(try inPlace(try session(g, memoryPlan: false)), false)
        for value in ["memory-plan", "constant-folding,memory-plan", "all"] {
            XCTAssertEqual(try withPassesDisabled(value) { try inPlace(try session(g)) }, false, value)
        }
    }

    /// The inference fixtures (MLP, CNN, GPT) compute bit-identical outputs with the plan on and off.
    func testInferenceFixturesAreBitIdentical() throws {
        for name in try Fixtures.cases(in: "inference") {
            let testCase = try BackendTestCase(directory: Fixtures.path("inference/\(name)"))
            let set = try XCTUnwrap(testCase.dataSets.first, name)
            var feeds: [String: Value] = [:]
            for (info, value) in zip(testCase.model.graph.feedInputs, set.inputs) { feeds[info.name] = value }
            var results: [[String: Value]] = []
            for plan in [false, true] {
                var options = SessionOptions()
                options.memoryPlan = plan
                results.append(try InferenceSession(model: testCase.model, options: options).run(feeds))
            }
            XCTAssertFalse(results[0].isEmpty, name)
            for (output, value) in results[0] {
                let a = try XCTUnwrap(value.tensor, name).rawBytes, b = try XCTUnwrap(results[1][output]?.tensor, name).rawBytes
                XCTAssertTrue(a.elementsEqual(b), "\(name) output \(output)")
            }
        }
    }

    /// Training the MLP, CNN and GPT fixtures (forward, gradient graph and AdamW) gives
    /// bit-identical losses and parameters with the plan on and off, and the plan does overwrite.
    func testTrainingFixturesAreBitIdentical() throws {
        var overwrites: [String: Int] = [:]
        for name in ["mlp_ce_adamw", "cnn_ce_adamw", "gpt_ce_adamw"] {
            let folder = Fixtures.path("training/\(name)")
            let data = try Npz.readDictionary(contentsOf: folder + "/data.npz")
            let meta = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/meta.json"))) as? [String: Any]
            let batch = try XCTUnwrap(meta?["batch_size"] as? Int, name)
            var trajectories: [[Float]] = [], parameters: [[String: [UInt32]]] = []
            for plan in [false, true] {
                var options = SessionOptions()
                options.memoryPlan = plan
                let state = try CheckpointState.load(from: folder + "/checkpoint")
                let module = try TrainingModule(trainingModelPath: folder + "/training_model.onnx", state: state, options: options)
                let optimizer = try Optimizer(path: folder + "/optimizer_model.onnx", module: module, options: options)
                var configuration = Trainer.Configuration(batchSize: batch, steps: 4, learningRate: 1e-3)
                configuration.shuffle = false
                let trainer = try Trainer(module: module, optimizer: optimizer, train: data, configuration: configuration)
                var losses: [Float] = []
                trainer.onEvent = { event in if case .step(let s) = event { losses.append(Float(s.loss)) } }
                let taken = BufferDonation.takenCount.load(ordering: .relaxed)
                _ = try trainer.run()
                let handed = BufferDonation.takenCount.load(ordering: .relaxed) - taken
                if plan { overwrites[name] = handed } else { XCTAssertEqual(handed, 0, name) }
                print("[\(name)] memory plan \(plan ? "on" : "off"): \(handed) outputs written over their inputs in 4 steps")
                trajectories.append(losses)
                parameters.append(Dictionary(uniqueKeysWithValues: module.state.parameters.map { ($0.name, $0.data.scalars(as: Float.self).map(\.bitPattern)) }))
            }
            XCTAssertEqual(trajectories[0].count, 4, name)
            XCTAssertEqual(trajectories[0].map(\.bitPattern), trajectories[1].map(\.bitPattern), name)
            XCTAssertEqual(parameters[0], parameters[1], name)
        }
        // The GPT's residual Adds and their gradients' sums die where they are added (measured:
        // 5 a step); the CNN's Relu and BatchNormalization outputs are read again by their gradients.
        XCTAssertGreaterThan(overwrites["gpt_ce_adamw"] ?? 0, 0, "the plan overwrote nothing in the GPT")
    }
}
