import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// End-to-end tests of `onnx-train run`, `eval` and `export` on the bundled examples: the files a
/// run leaves, what it prints on a terminal (under `script`, a pseudo-terminal) and through a
/// pipe, resuming, and one clear line for each user mistake.
final class RunEndToEndTests: XCTestCase {
    static func example(_ path: String) -> String { Fixtures.example(path) }

    var work: URL!

    override func setUpWithError() throws {
        _ = try CLI.binary()
        work = FileManager.default.temporaryDirectory.appendingPathComponent("run-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        addTeardownBlock { [work] in try? FileManager.default.removeItem(at: work!) }
    }

    typealias Output = CLI.Result

    /// Runs the binary in `work` with stdout and stderr on pipes (plain mode).
    func run(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> Output {
        try CLI.run(arguments, in: work, file: file, line: line)
    }

    func path(_ name: String) -> String { work.appendingPathComponent(name).path }

    func metrics(_ folder: String) throws -> [RunMetric] {
        RunArtifacts.parseMetrics(try String(contentsOfFile: path(folder + "/metrics.csv"), encoding: .utf8))
    }

    /// Asserts one `onnx-train: error:` line naming `fragments`, exit 1...127.
    func assertFails(_ arguments: [String], mentioning fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        try CLI.assertFails(arguments, mentioning: fragments, in: work, file: file, line: line)
    }

    var digits: [String] {
        ["run", Self.example("digits"), "--data", Self.example("digits/train.npz"), "--eval-data", Self.example("digits/test.npz"),
         "--batch-size", "32", "--lr", "0.002"]
    }

    var seed: [String] {
        ["run", Self.example("seed-gradient-graph/gradient_graph.onnx"), "--params", Self.example("seed-gradient-graph/params.npz"),
         "--data", Self.example("seed-gradient-graph/data.npz"), "--batch-size", "16"]
    }

    // MARK: What a run leaves and prints

    func testDigitsRunLeavesEveryFileAndPrintsPlainLines() throws {
        let r = try run(digits + ["--steps", "50", "--out", "d", "--print-every", "10"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr, "")
        XCTAssertFalse(r.stdout.contains("\r"), "no carriage returns without a terminal")
        for expected in ["optimizer (from optimizer_model.onnx): AdamWOptimizer (adam_mode 1, alpha 0.9, beta 0.999",
                         "epoch 0 (initial): eval loss", "step 10/50 epoch 1 loss", "step 50/50 epoch 2", "steps/s",
                         "epoch 1/2 (step 45): train loss", ", eval loss", "accuracy", "trained 50 steps",
                         "saved to d/: checkpoint, metrics.csv, loss.svg, report.html, model.onnx, params.safetensors"] {
            XCTAssertTrue(r.stdout.contains(expected), "missing '\(expected)' in:\n\(r.stdout)")
        }
        XCTAssertEqual(r.stdout.split(separator: "\n").filter { $0.hasPrefix("step ") }.count, 5)

        // metrics.csv: the initial evaluation, then one row per step, eval columns at epoch ends.
        let rows = try metrics("d")
        XCTAssertEqual(rows.map(\.step), Array(0...50))
        XCTAssertNotNil(rows[0].evalLoss)
        XCTAssertNil(rows[0].loss)
        XCTAssertEqual(rows.filter { $0.evalLoss != nil }.map(\.step), [0, 45, 50])
        XCTAssertTrue(rows.dropFirst().allSatisfy { $0.loss != nil && $0.learningRate == 0.002 })
        XCTAssertEqual(rows.last?.epoch, 2)
        XCTAssertLessThan(rows.last!.evalLoss!, rows[0].evalLoss!)

        let svg = try String(contentsOfFile: path("d/loss.svg"), encoding: .utf8)
        for fragment in ["<svg", "train loss", "eval loss", ">step</text>", ">loss</text>", "<polyline", "</svg>"] {
            XCTAssertTrue(svg.contains(fragment), "loss.svg lacks \(fragment)")
        }

        // The checkpoint, params.safetensors and model.onnx hold the same trained parameters.
        let state = try CheckpointState.load(from: path("d/checkpoint"))
        XCTAssertEqual(state.optimizerGroups["group0"]?.step, 50)
        XCTAssertEqual(state.properties[RunArtifacts.Resume.step], .int(50))
        let saved = try SafeTensors.read(contentsOf: path("d/params.safetensors")).dictionary
        XCTAssertEqual(saved.keys.sorted(), state.parameterNames.sorted())
        for p in state.parameters { XCTAssertEqual(saved[p.name]?.scalars(as: Float.self), p.data.scalars(as: Float.self), p.name) }
        let model = try Model(contentsOf: path("d/model.onnx"))
        XCTAssertEqual(model.graph.inputs.map(\.name), ["input"])
        XCTAssertEqual(model.graph.outputs.map(\.name), ["output"])
        // Its predictions are the eval graph's with the checkpoint's parameters.
        let test = try Npz.readDictionary(contentsOf: Self.example("digits/test.npz"))
        let inputs = Batches.rows(of: test["input"]!, from: 0, count: 32), labels = Batches.rows(of: test["labels"]!, from: 0, count: 32)
        let exported = try InferenceSession(model: model).run(["input": .tensor(inputs)], fetches: ["output"])["output"]!.tensor!
        let module = try TrainingModule(trainingModel: Model(contentsOf: Self.example("digits/training_model.onnx")), state: state,
                                        evalModel: Model(contentsOf: Self.example("digits/eval_model.onnx")))
        let reference = try module.evalStep(named: ["input": inputs, "labels": labels])["output"]!
        XCTAssertEqual(exported.shape, [32, 10])
        // The exported model's constant weights run packed on oneDNN (PackedWeights), the eval
        // graph's parameters on OpenBLAS: equal to float32 rounding (bit for bit where OpenBLAS runs
        // its AVX-512 kernels; its Haswell ones, OPENBLAS_CORETYPE=Haswell, sum in another order).
        for (a, b) in zip(exported.scalars(as: Float.self), reference.scalars(as: Float.self)) {
            XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, abs(b)))
        }

        // eval and export do the same alone.
        let e = try run(["eval", Self.example("digits"), "--params", "d/checkpoint", "--data", Self.example("digits/test.npz")])
        XCTAssertEqual(e.status, 0, e.stderr)
        let lastEval = String(format: "eval loss %.4f", rows.last!.evalLoss!)
        XCTAssertTrue(e.stdout.hasPrefix("352 examples: " + lastEval), "\(e.stdout) vs \(lastEval)")
        let x = try run(["export", Self.example("digits"), "--params", "d/checkpoint", "--output", "exported/m.onnx"])
        XCTAssertEqual(x.status, 0, x.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("exported/m.onnx"))), try Data(contentsOf: URL(fileURLWithPath: path("d/model.onnx"))))
    }

    func testTerminalShowsAProgressBarRedrawnInPlace() throws {
        let r = try runOnTerminal(digits + ["--steps", "50", "--out", "t"])
        XCTAssertEqual(r.status, 0, r.stdout)
        XCTAssertTrue(r.stdout.contains("\repoch 1/2 ["), r.stdout.debugDescription)
        XCTAssertTrue(r.stdout.contains("] 45/45  step 45/50  loss "), r.stdout.debugDescription)
        for fragment in ["steps/s", " left\u{1B}[K", "epoch 1/2 (step 45): train loss", "accuracy", "saved to t/"] {
            XCTAssertTrue(r.stdout.contains(fragment), "missing \(fragment.debugDescription) in \(r.stdout.debugDescription)")
        }
        XCTAssertFalse(r.stdout.contains("\nstep "), "no plain step lines on a terminal")
    }

    func testQuietPrintsOnlyTheSummary() throws {
        let r = try run(seed + ["--steps", "20", "--lr", "0.1", "--out", "q", "--quiet", "--eval-data", Self.example("seed-gradient-graph/test.npz")])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n")
        guard lines.count == 2 else { return XCTFail("two lines expected: \(r.stdout)") }
        XCTAssertTrue(lines[0].hasPrefix("trained 20 steps in "), r.stdout)
        XCTAssertTrue(lines[0].contains("eval loss") && lines[0].contains("accuracy"), r.stdout)
        XCTAssertEqual(lines[1], "saved to q/: checkpoint, metrics.csv, loss.svg, report.html, model.onnx, params.safetensors")
    }

    func testGradientGraphWithoutParamsIsInitialisedAsPyTorchAndSaysSo() throws {
        let r = try run(["run", Self.example("seed-gradient-graph/gradient_graph.onnx"), "--data", Self.example("seed-gradient-graph/data.npz"),
                         "--batch-size", "16", "--epochs", "4", "--lr", "0.1", "--out", "init"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("no --params: initialised 4 parameters as PyTorch does (seed 0): fc1.weight weight U(±1/sqrt(10)), fc1.bias bias U(±1/sqrt(10)), fc2.weight weight U(±1/sqrt(5)), fc2.bias bias U(±1/sqrt(5))"), r.stdout)
        let rows = try metrics("init")
        XCTAssertLessThan(rows.last!.loss!, rows.first!.loss!)
        // The model.onnx of a gradient graph is its forward part: no labels, no gradients.
        let model = try Model(contentsOf: path("init/model.onnx"))
        XCTAssertEqual(model.graph.inputs.map(\.name), ["input"])
        XCTAssertEqual(model.graph.outputs.map(\.name), ["output"])
        XCTAssertFalse(model.graph.nodes.contains { $0.domain == "com.microsoft" })
    }

    func testDefaultOutputFolderIsNamedAfterTheModelAndTime() throws {
        let r = try run(seed + ["--steps", "2", "--lr", "0.1", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let runs = try FileManager.default.contentsOfDirectory(atPath: path("runs"))
        XCTAssertEqual(runs.count, 1)
        let name = try XCTUnwrap(runs.first)
        XCTAssertNotNil(name.range(of: #"^seed-gradient-graph-\d{8}-\d{6}$"#, options: .regularExpression), name)
        XCTAssertTrue(r.stdout.contains("saved to runs/\(name)/: checkpoint"), r.stdout)
    }

    /// Ctrl-C (SIGINT) stops after the current step, saves, prints how to resume, exits 130.
    func testInterruptSavesAndSaysHowToResume() throws {
        let process = try CLI.process(digits + ["--epochs", "50", "--out", "int", "--print-every", "1"], in: work)
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        var text = ""
        while !text.contains("step 3/") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        process.interrupt()
        text += String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 130, text)
        let stopped = try XCTUnwrap(text.range(of: #"interrupted at step (\d+) of 2250; resume with: onnx-train run .* --out int --print-every 1 --resume int\n"#, options: .regularExpression), text)
        let step = Int(text[stopped].split(separator: " ")[3])!
        XCTAssertEqual(try CheckpointState.load(from: path("int/checkpoint")).optimizerGroups["group0"]?.step, Int64(step))
        XCTAssertEqual(try metrics("int").last?.step, step)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path("int/model.onnx")))
    }

    // MARK: Resume

    /// N steps straight and N/2 + resume N/2 give the same losses and parameters, bit for bit:
    /// shuffled data crossing epochs, AdamW state, a cosine schedule and gradient accumulation.
    func testResumedRunContinuesTheSameTrajectory() throws {
        let common = seed + ["--optimizer", "adamw", "--lr", "0.05", "--schedule", "cosine", "--warmup", "3",
                             "--steps", "24", "--accumulate", "2", "--seed", "7"]
        var r = try run(common + ["--out", "straight"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(common + ["--out", "halves", "--stop-after", "12"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("stopped (--stop-after) at step 12 of 24; resume with: onnx-train run "), r.stdout)
        XCTAssertTrue(r.stdout.contains("--resume halves"), r.stdout)
        XCTAssertEqual(try metrics("halves").count, 12)
        // The printed command line, as a user would paste it: without --params and --stop-after.
        r = try run(Array(common.prefix(2)) + Array(common.dropFirst(4)) + ["--out", "halves", "--resume", "halves"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("trained 12 steps"), r.stdout)

        let a = try metrics("straight"), b = try metrics("halves")
        XCTAssertEqual(a.count, 24)
        XCTAssertEqual(a.map(\.step), b.map(\.step))
        XCTAssertEqual(a.map(\.loss), b.map(\.loss))
        XCTAssertEqual(a.map(\.learningRate), b.map(\.learningRate))
        let pa = try SafeTensors.read(contentsOf: path("straight/params.safetensors")).dictionary
        let pb = try SafeTensors.read(contentsOf: path("halves/params.safetensors")).dictionary
        XCTAssertEqual(pa.keys.sorted(), pb.keys.sorted())
        for (name, t) in pa { XCTAssertEqual(t.scalars(as: Float.self), pb[name]?.scalars(as: Float.self), name) }
        let sa = try CheckpointState.load(from: path("straight/checkpoint")), sb = try CheckpointState.load(from: path("halves/checkpoint"))
        XCTAssertEqual(sa.optimizerGroups["group0"]?.step, 24)
        XCTAssertEqual(sb.optimizerGroups["group0"]?.step, 24)
        for (name, moments) in sa.optimizerGroups["group0"]!.parameterStates {
            for (key, t) in moments {
                XCTAssertEqual(t.scalars(as: Float.self), sb.optimizerGroups["group0"]?.parameterStates[name]?[key]?.scalars(as: Float.self), "\(name) \(key)")
            }
        }
    }

    // MARK: Other inputs

    func testMapCSVAndTensorProtoFolders() throws {
        let data = try Npz.readDictionary(contentsOf: Self.example("seed-gradient-graph/data.npz"))
        let input = data["input"]!, labels = data["labels"]!
        try Npz.write(["x": input, "y": labels], to: path("renamed.npz"))
        // CSV: ten feature columns and a label column; the same numbers as data.npz.
        let xs = input.scalars(as: Float.self), ys = labels.scalars(as: Int64.self)
        var csv = (0..<10).map { "f\($0)" }.joined(separator: ",") + ",target\n"
        for r in 0..<ys.count { csv += (0..<10).map { "\(xs[r * 10 + $0])" }.joined(separator: ",") + ",\(ys[r])\n" }
        try csv.write(toFile: path("data.csv"), atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: path("pb"), withIntermediateDirectories: true)
        try TensorProtoFiles.write(input, name: "input", to: path("pb/input_0.pb"))
        try TensorProtoFiles.write(labels, name: "labels", to: path("pb/input_1.pb"))

        let common = ["run", Self.example("seed-gradient-graph/gradient_graph.onnx"), "--params", Self.example("seed-gradient-graph/params.npz"),
                      "--batch-size", "16", "--steps", "10", "--lr", "0.1", "--no-shuffle"]
        var losses: [[Double?]] = []
        for (i, extra) in [["--data", Self.example("seed-gradient-graph/data.npz")], ["--data", "renamed.npz", "--map", "input=x,labels=y"],
                           ["--data", "data.csv", "--label", "target"], ["--data", "data.csv"], ["--data", "pb"]].enumerated() {
            let r = try run(common + extra + ["--out", "o\(i)"])
            XCTAssertEqual(r.status, 0, "\(extra): \(r.stderr)")
            losses.append(try metrics("o\(i)").map(\.loss))
        }
        for l in losses.dropFirst() { XCTAssertEqual(l, losses[0]) }

        // --eval-split holds out the last examples; --drop-last trims the rest to whole batches.
        let r = try run(common + ["--data", Self.example("seed-gradient-graph/data.npz"), "--eval-split", "0.1", "--drop-last", "--out", "split"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("eval split: the last 10% of "), r.stdout)
        XCTAssertTrue(r.stdout.contains("epoch 0 (initial): eval loss"), r.stdout)
    }

    // MARK: Mistakes

    func testEveryMistakeGetsOneClearLine() throws {
        let graph = Self.example("seed-gradient-graph/gradient_graph.onnx")
        let common = ["run", graph, "--params", Self.example("seed-gradient-graph/params.npz"), "--batch-size", "16", "--steps", "4", "--lr", "0.1"]
        let data = Self.example("seed-gradient-graph/data.npz")
        try "a,b\n1,2\n".write(toFile: path("small.csv"), atomically: true, encoding: .utf8)
        try "blocker".write(toFile: path("file"), atomically: true, encoding: .utf8)
        try assertFails(common + ["--data", data, "--map", "input=nope"], mentioning: ["--map input=nope", "no array 'nope'", "input, labels"])
        try assertFails(common + ["--data", data, "--map", "input"], mentioning: ["--map takes graph_input=array pairs"])
        try assertFails(common + ["--data", "small.csv", "--label", "target"], mentioning: ["no label column 'target'", "the header has: a, b"])
        try assertFails(common + ["--data", "small.csv", "--features", "a,zz"], mentioning: ["no feature column 'zz'"])
        try assertFails(common + ["--data", data, "--eval-split", "0.001"], mentioning: ["--eval-split 0.001 of 256 examples leaves no eval examples"])
        try assertFails(common + ["--data", data, "--eval-split", "0.999"], mentioning: ["leaves no training examples"])
        try assertFails(common + ["--data", data, "--out", "file/sub"], mentioning: ["cannot create the output folder file/sub"])
        try assertFails(common + ["--data", data, "--batch-size", "300", "--drop-last"], mentioning: ["'input' has 256 rows, fewer than one batch of 300"])
        // --resume from a run of another model.
        let d = try run(digits + ["--steps", "2", "--out", "digits-run", "--quiet"])
        XCTAssertEqual(d.status, 0, d.stderr)
        try assertFails(["run", graph, "--data", data, "--batch-size", "16", "--steps", "4", "--lr", "0.1", "--resume", "digits-run"],
                        mentioning: ["--resume digits-run: its checkpoint does not fit", "resume from a run of the same model"])
        let s = try run(common + ["--data", data, "--out", "seed-run", "--stop-after", "2", "--quiet"])
        XCTAssertEqual(s.status, 0, s.stderr)
        try assertFails(["run", graph, "--data", data, "--batch-size", "8", "--steps", "4", "--lr", "0.1", "--resume", "seed-run"],
                        mentioning: ["--resume seed-run: that run used --batch-size 16 --accumulate 1; give the same"])
        try assertFails(["run", graph, "--data", data, "--batch-size", "16", "--steps", "4", "--lr", "0.1", "--resume", "nowhere"],
                        mentioning: ["--resume nowhere: no checkpoint there"])
        try assertFails(["eval", graph, "--data", data], mentioning: ["give its trained parameters with --params"])
    }

    /// A save that fails (here: params.safetensors's name is taken by a folder) reports one line;
    /// the checkpoint, written first and atomically, stays whole.
    func testAFailedSaveReportsOneLineAndKeepsTheCheckpoint() throws {
        var r = try run(seed + ["--steps", "4", "--lr", "0.1", "--out", "keep", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        try FileManager.default.removeItem(atPath: path("keep/params.safetensors"))
        try FileManager.default.createDirectory(atPath: path("keep/params.safetensors/blocked"), withIntermediateDirectories: true)
        r = try run(["run", Self.example("seed-gradient-graph/gradient_graph.onnx"), "--data", Self.example("seed-gradient-graph/data.npz"),
                     "--batch-size", "16", "--steps", "8", "--lr", "0.1", "--resume", "keep", "--quiet"])
        XCTAssertTrue((1...127).contains(r.status), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("params.safetensors"), r.stderr)
        XCTAssertEqual(try CheckpointState.load(from: path("keep/checkpoint")).optimizerGroups["group0"]?.step, 8)
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: path("keep")).contains { $0.contains(".tmp") }, "no temporary files left")
    }

    /// A write that fails while saving (here: the file-size limit, RLIMIT_FSIZE, which any user
    /// can lower and which fails write(2) as a full disk does): one line, exit 3, the previous
    /// checkpoint byte for byte as it was (every file goes to a temporary name first) and no
    /// temporary file left behind.
    func testAFailedSaveKeepsThePreviousCheckpoint() throws {
        let common = ["run", Self.example("digits"), "--data", Self.example("digits/train.npz"), "--batch-size", "32", "--lr", "0.002", "--quiet"]
        var r = try run(common + ["--steps", "5", "--out", "r"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let before = try Data(contentsOf: URL(fileURLWithPath: path("r/checkpoint")))
        XCTAssertGreaterThan(before.count, 400 * 1024, "the checkpoint must exceed the limit below")
        // Resuming with files capped at 300 KiB (ulimit -f counts 1024-byte blocks in bash; SIGXFSZ
        // ignored so write(2) fails with EFBIG instead of the signal killing the process).
        let limit = ["/bin/bash", "-c", "trap '' XFSZ; ulimit -f 300; exec \"$0\" \"$@\""]
        r = try CLI.run(common + ["--steps", "10", "--resume", "r"], in: work, launcher: limit)
        XCTAssertEqual(r.status, 3, r.stderr)
        XCTAssertTrue(r.stderr.hasPrefix("onnx-train: error: ") && r.stderr.contains("r/checkpoint: File too large")
                      && r.stderr.split(separator: "\n").count == 1, r.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("r/checkpoint"))), before)
        XCTAssertEqual(try CheckpointState.load(from: path("r/checkpoint")).optimizerGroups["group0"]?.step, 5)
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: path("r")).contains { $0.contains("tmp") })
    }
}
