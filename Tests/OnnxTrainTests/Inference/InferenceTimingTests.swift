import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// `onnx-train bench MODEL.onnx --infer` and the library pieces under it: synthetic feeds shaped as
/// the model declares, and the latency statistics.
final class InferenceTimingTests: XCTestCase {
    func testSyntheticFeedsFollowTheDeclaredInputs() throws {
        let inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.symbol("batch"), .value(3)])),
                      ValueInfo(name: "ids", type: .tensor(.int64, shape: [.symbol("batch"), .symbol("seq")])),
                      ValueInfo(name: "mask", type: .tensor(.bool, shape: [.unknown]))]
        let feeds = try SyntheticFeeds.make(for: inputs, dimensions: ["seq": 5], defaultDimension: 2, seed: 7)
        XCTAssertEqual(feeds["x"]?.shape, [2, 3])
        XCTAssertEqual(feeds["x"]?.dtype, .float32)
        let x = try XCTUnwrap(feeds["x"]).scalars(as: Float.self)
        XCTAssertTrue(x.allSatisfy { $0 >= -1 && $0 < 1 } && Set(x).count == 6, "\(x)")
        XCTAssertEqual(feeds["ids"]?.shape, [2, 5])
        XCTAssertEqual(feeds["ids"]?.scalars(as: Int64.self), [Int64](repeating: 1, count: 10))
        XCTAssertEqual(feeds["mask"]?.scalars(as: Bool.self), [true, true])
        XCTAssertEqual(try SyntheticFeeds.make(for: inputs, dimensions: ["seq": 5], defaultDimension: 2, seed: 7)["x"]?.scalars(as: Float.self), x,
                       "the same seed gives the same feeds")
        XCTAssertThrowsError(try SyntheticFeeds.make(for: [ValueInfo(name: "s", type: .tensor(.string, shape: [.value(1)]))])) {
            XCTAssertTrue("\($0)".contains("input 's' is a string tensor"), "\($0)")
        }
        XCTAssertThrowsError(try SyntheticFeeds.make(for: [ValueInfo(name: "u", type: nil)])) {
            XCTAssertTrue("\($0)".contains("input 'u' has no declared tensor type"), "\($0)")
        }
        XCTAssertThrowsError(try SyntheticFeeds.make(for: [inputs[0]], dimensions: ["batch": 1 << 40])) {
            XCTAssertTrue("\($0)".contains("too large") && "\($0)".contains("--dim"), "\($0)")
        }
    }

    func testLatencyStatistics() {
        let t = InferenceTiming(latencies: [5, 1, 4, 2, 3, 10, 6, 7, 9, 8].map { Double($0) })
        XCTAssertEqual(t.median, 6)
        XCTAssertEqual(t.minimum, 1)
        XCTAssertEqual(t.p90, 9, "nearest rank: the 9th of 10")
    }

    func testSessionTimeRunsTheModel() throws {
        let session = try InferenceSession(path: Fixtures.example("digits/model.onnx"))
        let feeds = try SyntheticFeeds.make(for: session.inputs, defaultDimension: 4)
        let timing = try session.time(feeds, warmup: 1, warmupSeconds: 0, runs: 3)
        XCTAssertEqual(timing.latencies.count, 3)
        XCTAssertTrue(timing.latencies.allSatisfy { $0 > 0 })
        XCTAssertThrowsError(try session.time(feeds, runs: 0))
    }

    func testBenchCommandOnAModel() throws {
        let model = Fixtures.example("digits/model.onnx")
        let r = try CLI.run(["bench", model, "--infer", "--steps", "3", "--warmup", "1", "--warmup-seconds", "0", "--batch-size", "8", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual(json["runs"] as? Int, 3)
        XCTAssertEqual(json["inputs"] as? [String], ["input [8, 64]"])
        for key in ["median_ms", "min_ms", "p90_ms", "peak_rss_mb", "baseline_rss_mb"] {
            XCTAssertGreaterThan(try XCTUnwrap(json[key] as? Double, key), 0, key)
        }
        let text = try CLI.run(["bench", model, "--infer", "--steps", "2", "--warmup-seconds", "0"])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.hasPrefix("\(model): 2 runs on input [1, 64], "), text.stdout)
        XCTAssertTrue(text.stdout.contains("  latency: median ") && text.stdout.contains("  peak memory: "), text.stdout)

        try CLI.assertFails(["bench", model], mentioning: ["\(model): a model is timed with --infer"])
        try CLI.assertFails(["bench", model, "--infer", "--dim", "batch"], mentioning: ["--dim expects NAME=SIZE", "'batch'"])
        try CLI.assertFails(["bench", "/nonexistent/model.onnx", "--infer"], mentioning: ["/nonexistent/model.onnx"])
    }

    /// The per-op-type table of a profile: totals are the sums of their nodes' times, shares of
    /// the time in all nodes, counts the nodes; slowest first; the slowest nodes in order.
    func testProfileTotalsPerOpType() {
        func node(_ name: String, _ op: String, _ ms: Double, domain: String = "") -> NodeProfile {
            NodeProfile(name: name, opType: op, domain: domain, outputShape: [1], output: name + "_out", seconds: ms / 1000)
        }
        let p = InferenceProfile(runs: 4, nodes: [node("a", "MatMul", 3), node("b", "Relu", 0.5), node("c", "MatMul", 1),
                                                  node("", "Add", 0.5), node("e", "FusedConv", 5, domain: "com.microsoft")],
                                 runSeconds: 0.0125)
        XCTAssertEqual(p.nodeSeconds, 0.010, accuracy: 1e-15)
        let types = p.byOpType
        XCTAssertEqual(types.map(\.opType), ["com.microsoft.FusedConv", "MatMul", "Add", "Relu"], "slowest first, equal times by name")
        XCTAssertEqual(types.map(\.count), [1, 2, 1, 1])
        XCTAssertEqual(types.map(\.seconds), [0.005, 0.004, 0.0005, 0.0005])
        for (share, expected) in zip(types.map(\.share), [0.5, 0.4, 0.05, 0.05]) { XCTAssertEqual(share, expected, accuracy: 1e-15) }
        XCTAssertEqual(p.slowest(3).map(\.displayName), ["e", "a", "c"])
        XCTAssertEqual(p.slowest(9).map(\.displayName), ["e", "a", "c", "b", "[_out]"], "equal times in execution order; no name: the output")
        XCTAssertEqual(p.slowest(0).count, 0)
    }

    /// A profile of a session lists every node the runs execute once, in execution order, with its
    /// op type and output shape; a subgraph's nodes count in the If that runs them; a node no
    /// output needs is not run and not listed. The time goes to the node that spends it.
    func testProfileTimesEveryNodeOnce() throws {
        var then = Graph(), other = Graph()
        then.nodes = [Node(opType: "Mul", name: "scale", inputs: ["r", "r"], outputs: ["t"])]
        then.outputs = [ValueInfo(name: "t", type: nil)]
        other.nodes = [Node(opType: "Neg", name: "negate", inputs: ["r"], outputs: ["e"])]
        other.outputs = [ValueInfo(name: "e", type: nil)]
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(256), .value(256)])),
                    ValueInfo(name: "c", type: .tensor(.bool, shape: []))]
        g.nodes = [Node(opType: "MatMul", name: "product", inputs: ["x", "x"], outputs: ["p"]),
                   Node(opType: "ReduceSum", name: "sum", inputs: ["p"], outputs: ["s"], attributes: ["keepdims": .int(0)]),
                   Node(opType: "Relu", name: "relu1", inputs: ["s"], outputs: ["r"]),
                   Node(opType: "If", name: "if", inputs: ["c"], outputs: ["y"], attributes: ["then_branch": .graph(then), "else_branch": .graph(other)]),
                   Node(opType: "Relu", name: "", inputs: ["y"], outputs: ["z"]),
                   Node(opType: "Exp", name: "unused", inputs: ["x"], outputs: ["dead"])]
        g.outputs = [ValueInfo(name: "z", type: nil)]
        var model = Model(graph: g)
        model.opsetImports = ["": 17]
        var options = SessionOptions()
        options.optimize = false
        let session = try InferenceSession(model: model, options: options)
        var random = RandomGenerator(seed: 3)
        let x = Tensor(shape: [256, 256], scalars: (0..<65536).map { _ in random.nextFloat() - 0.5 })
        let feeds = ["x": x, "c": Tensor(shape: [], scalars: [true])]
        let before = try session.run(tensors: feeds)["z"]!.scalars(as: Float.self)

        let p = try session.profile(feeds, runs: 5)
        XCTAssertEqual(p.runs, 5)
        XCTAssertEqual(p.nodes.map(\.displayName), ["product", "sum", "relu1", "if", "[z]"])
        XCTAssertEqual(p.nodes.map(\.opType), ["MatMul", "ReduceSum", "Relu", "If", "Relu"])
        XCTAssertEqual(p.nodes.map { $0.outputShape ?? [-1] }, [[256, 256], [], [], [], []], "ReduceSum of every axis: a scalar")
        XCTAssertTrue(p.nodes.allSatisfy { $0.seconds > 0 }, "\(p.nodes.map(\.seconds))")
        XCTAssertEqual(p.nodes.reduce(0) { $0 + $1.seconds }, p.nodeSeconds)
        XCTAssertLessThanOrEqual(p.nodeSeconds, p.runSeconds)
        XCTAssertEqual(p.slowest(1).first?.name, "product", "a 256x256x256 product against 256-element ops: \(p.nodes.map(\.seconds))")
        let types = p.byOpType
        XCTAssertEqual(Set(types.map(\.opType)), ["MatMul", "ReduceSum", "Relu", "If"])
        XCTAssertEqual(types.first { $0.opType == "Relu" }?.count, 2)
        XCTAssertEqual(types.first { $0.opType == "Relu" }!.seconds, p.nodes[2].seconds + p.nodes[4].seconds, accuracy: 1e-15)
        XCTAssertEqual(types.reduce(0) { $0 + $1.seconds }, p.nodeSeconds, accuracy: 1e-12 * p.nodeSeconds)
        XCTAssertEqual(types.reduce(0) { $0 + $1.share }, 1, accuracy: 1e-12)
        XCTAssertEqual(try session.run(tensors: feeds)["z"]!.scalars(as: Float.self), before, "profiling leaves the results alone")
        XCTAssertThrowsError(try session.profile(feeds, runs: 0))
    }

    func testBenchProfileOnAModel() throws {
        let model = Fixtures.example("digits/model.onnx")
        let session = try InferenceSession(path: model)
        let ops = Set(session.executor.steps.map(\.node.opType))
        let r = try CLI.run(["bench", model, "--infer", "--steps", "3", "--warmup", "1", "--warmup-seconds", "0", "--batch-size", "8",
                             "--profile", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        let profile = try XCTUnwrap(json["profile"] as? [String: Any], r.stdout)
        XCTAssertEqual(profile["runs"] as? Int, 3)
        let nodes = try XCTUnwrap(profile["nodes"] as? [[String: Any]])
        let types = try XCTUnwrap(profile["op_types"] as? [[String: Any]])
        XCTAssertEqual(nodes.count, session.executor.steps.count, "every node once")
        XCTAssertEqual(Set(nodes.compactMap { $0["op_type"] as? String }), ops)
        XCTAssertEqual(Set(types.compactMap { $0["op_type"] as? String }), ops)
        XCTAssertEqual(types.reduce(0) { $0 + ($1["count"] as? Int ?? 0) }, nodes.count)
        let nodeMs = try XCTUnwrap(profile["node_ms"] as? Double)
        XCTAssertEqual(nodes.reduce(0) { $0 + ($1["ms"] as? Double ?? .nan) }, nodeMs, accuracy: 1e-9 * nodeMs)
        XCTAssertEqual(types.reduce(0) { $0 + ($1["ms"] as? Double ?? .nan) }, nodeMs, accuracy: 1e-9 * nodeMs)
        XCTAssertEqual(nodes.last?["shape"] as? [Int], [8, 10], "the logits")
        XCTAssertNil(try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try CLI.run(["bench", model, "--infer", "--steps", "2",
            "--warmup-seconds", "0", "--json"]).stdout.utf8)) as? [String: Any])["profile"], "no profile without --profile")

        let text = try CLI.run(["bench", model, "--infer", "--steps", "2", "--warmup-seconds", "0", "--profile", "--profile-top", "2"])
        XCTAssertEqual(text.status, 0, text.stderr)
        let lines = text.stdout.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.contains { $0.hasPrefix("  profile: 2 runs with every node timed: ") && $0.contains(" in its \(nodes.count) nodes") },
                      text.stdout)
        let header = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("    op type") && $0.hasSuffix("total   share  nodes") }, text.stdout)
        XCTAssertEqual(Set(lines[(header + 1)..<(header + 1 + ops.count)].map { $0.split(separator: " ")[0] }.map(String.init)), ops, text.stdout)
        let slowest = try XCTUnwrap(lines.firstIndex(of: "  slowest nodes:"), text.stdout)
        XCTAssertEqual(lines.count, slowest + 4, "the header and --profile-top 2 nodes: \(text.stdout)")
        try CLI.assertFails(["bench", model, "--profile"], mentioning: ["\(model): a model is timed with --infer"])
    }

    /// The digits artifacts as a benchmark folder (what Benchmarks/export_models.py writes): two
    /// batches of 8 rows.
    static func digitsBenchFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("bench-profile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (from, to) in [("training_model.onnx", "training_model.onnx"), ("optimizer_model.onnx", "optimizer_model.onnx"),
                           ("checkpoint", "checkpoint"), ("train.npz", "data.npz")] {
            try FileManager.default.copyItem(atPath: Fixtures.example("digits/" + from), toPath: folder.appendingPathComponent(to).path)
        }
        try Data(#"{"rows_per_step": {"input": 8, "labels": 8}, "lr": 0.01, "batches": 2}"#.utf8)
            .write(to: folder.appendingPathComponent("meta.json"))
        return folder
    }

    /// A profile of train steps times the training graph's nodes, each once in execution order, and
    /// leaves the gradients of a train step: after a reset every profiled step overwrites them.
    func testProfileTrainStepTimesTheTrainingGraph() throws {
        let digits = Fixtures.example("digits")
        func open() throws -> TrainingModule {
            try TrainingModule(trainingModelPath: digits + "/training_model.onnx", state: try CheckpointState.load(from: digits + "/checkpoint"))
        }
        let arrays = try Npz.readDictionary(contentsOf: digits + "/train.npz")
        let batch = ["input": Batches.rows(of: try XCTUnwrap(arrays["input"]), from: 0, count: 8),
                     "labels": Batches.rows(of: try XCTUnwrap(arrays["labels"]), from: 0, count: 8)]
        let stepped = try open()
        _ = try stepped.trainStep(named: batch)
        let profiled = try open()
        let p = try profiled.profileTrainStep(named: batch, runs: 3)
        XCTAssertEqual(p.runs, 3)
        XCTAssertEqual(p.nodes.count, try profiled.trainSession().executor.steps.count, "every node of the training graph once")
        XCTAssertTrue(p.nodes.contains { $0.domain == "com.microsoft" }, "the gradient nodes too: \(p.nodes.map(\.opType))")
        XCTAssertTrue(p.nodes.allSatisfy { $0.seconds > 0 }, "\(p.nodes.map(\.seconds))")
        XCTAssertLessThanOrEqual(p.nodeSeconds, p.runSeconds)
        for (a, b) in zip(stepped.trainableParameters, profiled.trainableParameters) {
            XCTAssertEqual(try XCTUnwrap(a.grad).scalars(as: Float.self), try XCTUnwrap(b.grad).scalars(as: Float.self), a.name)
        }
        XCTAssertTrue(profiled.accumulatesGradients, "the next train step adds to the profiled gradients, as after a train step")
        XCTAssertThrowsError(try profiled.profileTrainStep(named: batch, runs: 0))
    }

    /// `onnx-train bench FOLDER --profile`: the training graph's nodes and the optimizer step, in the
    /// JSON line (which stays the last line) and, without --json, as a table before it.
    func testBenchProfileOnATrainingFolder() throws {
        let folder = try Self.digitsBenchFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let digits = Fixtures.example("digits")
        let module = try TrainingModule(trainingModelPath: digits + "/training_model.onnx", state: try CheckpointState.load(from: digits + "/checkpoint"))
        let nodeCount = try module.trainSession().executor.steps.count
        let r = try CLI.run(["bench", folder.path, "--steps", "2", "--warmup", "1", "--warmup-seconds", "0", "--profile", "--profile-top", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try XCTUnwrap(lines.last).utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual((json["times"] as? [Double])?.count, 2)
        let profile = try XCTUnwrap(json["profile"] as? [String: Any], r.stdout)
        XCTAssertEqual(profile["runs"] as? Int, 2)
        XCTAssertEqual((profile["nodes"] as? [[String: Any]])?.count, nodeCount)
        XCTAssertGreaterThan(try XCTUnwrap(json["optimizer_ms"] as? Double), 0)
        XCTAssertTrue(lines.contains { $0.hasPrefix("  profile: 2 runs with every node timed: ") && $0.contains(" in its \(nodeCount) nodes") }, r.stdout)
        XCTAssertTrue(lines.contains { $0.hasPrefix("  optimizer step: ") && $0.hasSuffix(" ms") }, r.stdout)
        let slowest = try XCTUnwrap(lines.firstIndex(of: "  slowest nodes:"), r.stdout)
        XCTAssertEqual(lines[slowest + 5], lines.first { $0.hasPrefix("  optimizer step: ") }, "the header, --profile-top 3 nodes, then the optimizer: \(r.stdout)")

        let quiet = try CLI.run(["bench", folder.path, "--steps", "1", "--warmup", "0", "--warmup-seconds", "0", "--profile", "--json"])
        XCTAssertEqual(quiet.status, 0, quiet.stderr)
        XCTAssertEqual(quiet.stdout.split(separator: "\n").count, 1, "--json: the JSON line alone: \(quiet.stdout)")
        let plain = try CLI.run(["bench", folder.path, "--steps", "1", "--warmup", "0", "--warmup-seconds", "0"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertNil(try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(plain.stdout.utf8)) as? [String: Any])["profile"], plain.stdout)
    }
}
