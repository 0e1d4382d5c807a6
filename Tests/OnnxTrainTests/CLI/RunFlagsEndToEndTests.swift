import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// End-to-end tests of `run`'s training flags on the bundled examples (digits, cnn,
/// tiny-transformer), through a pipe (plain) and on a pseudo-terminal (`script`): evaluation
/// cadence, keep-best, early stopping, gradient clipping, partial batches, the plot and report,
/// dry runs, output folders, signals, locking, and a killed run resumed bit for bit.
extension RunEndToEndTests {
    static let dropoutFixture = Fixtures.path("training/mlp_dropout")

    /// Runs the binary on a pseudo-terminal (`script -qec CMD /dev/null`) `columns` wide; returns
    /// what the terminal got. With `resizeTo`, the terminal is made that wide (and the process sent
    /// SIGWINCH) `after` seconds into the run; with `resizeStorm`, it is made that wide and `columns`
    /// wide in turn every 20 ms for the whole run (each resize a SIGWINCH).
    func runOnTerminal(_ arguments: [String], columns: Int = 80, resizeTo: Int? = nil, after: Double = 0.5, resizeStorm: Int? = nil,
                       file: StaticString = #filePath, line: UInt = #line) throws -> Output {
        // `script` is util-linux's (Debian's bsdutils, which make deps installs).
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: "/usr/bin/script"), "/usr/bin/script is missing: install bsdutils",
                      file: file, line: line)
        let command = ([try CLI.binary(file: file, line: line)] + arguments).map { "'" + $0 + "'" }.joined(separator: " ")
        var shell = "stty cols \(columns) rows 40; "
        if let resizeTo {
            shell += "\(command) & p=$!; sleep \(after); stty cols \(resizeTo); kill -WINCH $p; wait $p"
        } else if let resizeStorm {
            shell += "\(command) & p=$!; c=\(resizeStorm); while kill -0 $p 2>/dev/null; do sleep 0.02; stty cols $c; "
                + "c=$((\(columns + resizeStorm) - c)); kill -WINCH $p 2>/dev/null; done; wait $p"
        } else {
            shell += "exec \(command)"
        }
        var environment = ProcessInfo.processInfo.environment
        environment["TERM"] = "xterm"
        environment["COLUMNS"] = nil
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        process.arguments = ["-qec", shell, "/dev/null"]
        process.environment = environment
        process.currentDirectoryURL = work
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(status: process.terminationStatus, stdout: String(decoding: data, as: UTF8.self), stderr: "")
    }

    /// What a terminal shows of each redraw: the text between carriage returns and newlines,
    /// without escape sequences.
    func screenSegments(_ text: String) -> [String] {
        let plain = text.replacingOccurrences(of: "\u{1B}\\[[0-9;]*[A-Za-z]", with: "", options: .regularExpression)
        return plain.components(separatedBy: CharacterSet(charactersIn: "\r\n")).filter { !$0.isEmpty }
    }

    /// Starts the binary with stdout on a pipe; returns the process and a reader that waits for a
    /// fragment of its output.
    func start(_ arguments: [String]) throws -> (Process, (String) -> String) {
        let process = try CLI.process(arguments, in: work)
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        var text = ""
        let reader: (String) -> String = { fragment in
            while !text.contains(fragment) {
                let chunk = out.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                text += String(decoding: chunk, as: UTF8.self)
            }
            if fragment.isEmpty { text += String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }
            return text
        }
        return (process, reader)
    }

    // MARK: Evaluation, keep-best, clipping (digits)

    /// --eval-every, --keep-best, --clip-grad-norm, --checkpoint-every and --top-k on digits,
    /// plain: the lines, metrics.csv's columns, best/ (which `eval` confirms) and report.html.
    func testEvalEveryKeepBestAndClippingOnDigits() throws {
        let r = try run(digits + ["--steps", "50", "--out", "d", "--print-every", "10", "--eval-every", "20", "--keep-best", "eval_accuracy",
                                  "--clip-grad-norm", "1.5", "--checkpoint-every", "10", "--top-k", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for fragment in ["step 20: eval loss", "top-3", "grad norm", "epoch 1/2 (step 45): train loss", "confusion matrix (rows: true class",
                         "best eval_accuracy ", "(kept in d/best/)", "saved to d/: checkpoint, metrics.csv, loss.svg, report.html, model.onnx, params.safetensors, best/"] {
            XCTAssertTrue(r.stdout.contains(fragment), "missing '\(fragment)' in:\n\(r.stdout)")
        }
        let rows = try metrics("d")
        XCTAssertEqual(rows.filter { $0.evalLoss != nil }.map(\.step), [0, 20, 40, 45, 50])
        XCTAssertTrue(rows.dropFirst().allSatisfy { $0.gradNorm != nil && $0.gradNorm! > 0 })
        XCTAssertTrue(rows.contains { ($0.gradNorm ?? 0) > 1.5 }, "some step was clipped")
        XCTAssertTrue(rows.filter { $0.evalLoss != nil }.allSatisfy { $0.evalTopK != nil && $0.evalTopK! >= $0.evalAccuracy! })
        // best/ holds the parameters of the best accuracy; `eval` measures the same.
        let best = try XCTUnwrap(rows.filter { $0.step > 0 }.compactMap(\.evalAccuracy).max())
        let e = try run(["eval", Self.example("digits"), "--params", "d/best/checkpoint", "--data", Self.example("digits/test.npz")])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertTrue(e.stdout.contains(String(format: "accuracy %.1f%%", best * 100)), "\(e.stdout) vs \(best)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: path("d/best/model.onnx")))
        let report = try String(contentsOfFile: path("d/report.html"), encoding: .utf8)
        for fragment in ["<!DOCTYPE html>", "<svg", "Confusion matrix", "eval top-3 accuracy", "best eval_accuracy", "--clip-grad-norm 1.5",
                         "AdamWOptimizer", "batches per epoch</th><td>45 (1440 examples, batch size 32)"] {
            XCTAssertTrue(report.contains(fragment), "report.html lacks \(fragment)")
        }
        let svg = try String(contentsOfFile: path("d/loss.svg"), encoding: .utf8)
        XCTAssertTrue(svg.contains("eval accuracy (%)"), "second panel")
    }

    /// The progress bar at 80 and 60 columns: every redraw fits the width (no wrapped, stale
    /// lines); resized from 100 to 50 columns mid-run, the bar shrinks to the new width.
    func testProgressBarFitsTheTerminalAndFollowsResizes() throws {
        for columns in [80, 60] {
            let r = try runOnTerminal(digits + ["--steps", "50", "--out", "w\(columns)", "--clip-grad-norm", "1"], columns: columns)
            XCTAssertEqual(r.status, 0, r.stdout)
            let bars = screenSegments(r.stdout).filter { $0.contains("step ") && $0.contains(" left") }
            XCTAssertGreaterThan(bars.count, 1, r.stdout.debugDescription)
            for bar in bars { XCTAssertLessThan(bar.count, columns, "\(columns) columns: \(bar.debugDescription)") }
            XCTAssertTrue(bars.contains { $0.contains("] 45/45 ") && $0.contains("step 45/50") }, bars.joined(separator: "\n"))
        }
        // Long enough that the resize lands mid-run: 60 epochs (2700 steps) ended within the 0.8 s
        // once the digits MLP trained at ~4000 steps/s.
        let r = try runOnTerminal(digits + ["--epochs", "240", "--out", "resize"], columns: 100, resizeTo: 50, after: 0.8)
        XCTAssertEqual(r.status, 0, r.stdout)
        let bars = screenSegments(r.stdout).filter { $0.contains(" left") }
        XCTAssertTrue(bars.contains { $0.count >= 50 }, "wide before the resize")
        let last = try XCTUnwrap(bars.last)
        XCTAssertLessThan(last.count, 50, last)
        XCTAssertTrue(last.contains("step 10800/10800"), last)
    }

    /// Signals in the middle of oneDNN's products: a terminal resized every 20 ms (hundreds of
    /// SIGWINCHs) through a run whose batch of 256 sends its products to oneDNN's sgemm. oneDNN 2's
    /// gemm kernels point rsp into the heap, and such runs aborted with glibc heap corruption before
    /// every oneDNN call held the thread's signals. The run ends normally, and its losses and
    /// evaluations equal a run through a pipe bit for bit.
    func testTrainingThroughResizeStormMatchesQuietRun() throws {
        var args = digits
        args[args.firstIndex(of: "--batch-size")! + 1] = "256"
        args += ["--epochs", "240"]
        let quiet = try run(args + ["--out", "quiet"])
        XCTAssertEqual(quiet.status, 0, quiet.stderr)
        let storm = try runOnTerminal(args + ["--out", "storm"], columns: 100, resizeStorm: 50)
        XCTAssertEqual(storm.status, 0, String(storm.stdout.suffix(2000)))
        let resized = screenSegments(storm.stdout).filter { $0.contains(" left") }
        XCTAssertTrue(resized.contains { $0.count >= 50 } && resized.contains { $0.count < 50 }, "the bar followed no resize")
        let expected = try metrics("quiet")
        XCTAssertEqual(expected.last?.step, 1440)
        XCTAssertEqual(try metrics("storm"), expected)
    }

    // MARK: Early stopping (tiny-transformer)

    /// A learning rate far too high makes the transformer's eval loss stop improving: --early-stop
    /// ends the run, on a terminal and through a pipe alike, and best/ keeps the best step.
    func testEarlyStopOnTinyTransformer() throws {
        let args = ["run", Self.example("tiny-transformer"), "--data", Self.example("tiny-transformer/train.npz"), "--eval-split", "0.1",
                    "--batch-size", "64", "--lr", "0.05", "--steps", "400", "--eval-every", "3", "--early-stop", "2", "--keep-best", "eval_loss"]
        let plain = try run(args + ["--out", "plain"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let stopped = try XCTUnwrap(plain.stdout.range(of: #"early stop at step (\d+): eval_loss has not improved for 2 evaluations \(best [0-9.]+ at step (\d+)\)"#, options: .regularExpression), plain.stdout)
        let rows = try metrics("plain")
        let step = try XCTUnwrap(rows.last?.step)
        XCTAssertLessThan(step, 400)
        XCTAssertTrue(plain.stdout[stopped].hasPrefix("early stop at step \(step):"))
        XCTAssertTrue(plain.stdout.contains("stopped after \(step) steps"), plain.stdout)
        let evals = rows.filter { $0.step > 0 && $0.evalLoss != nil }
        let best = try XCTUnwrap(evals.min { $0.evalLoss! < $1.evalLoss! })
        XCTAssertTrue(evals.suffix(2).allSatisfy { $0.evalLoss! >= best.evalLoss! && $0.step > best.step })
        XCTAssertEqual(try CheckpointState.load(from: path("plain/best/checkpoint")).optimizerGroups["group0"]?.step, Int64(best.step))

        let terminal = try runOnTerminal(args + ["--out", "term"], columns: 90)
        XCTAssertEqual(terminal.status, 0, terminal.stdout)
        XCTAssertTrue(terminal.stdout.contains("early stop at step \(step): eval_loss"), terminal.stdout.debugDescription)
        XCTAssertEqual(try metrics("term"), rows, "the same run on a terminal")
    }

    // MARK: Batches, plot, dry run (cnn)

    /// cnn with --eval-split 0.1: 922 training examples make 28 full batches of 32 and one of 26,
    /// used by default and dropped with --drop-last; --log-scale draws a log loss axis; --dry-run
    /// prints the plan and writes nothing.
    func testPartialBatchesDropLastLogScaleAndDryRunOnCNN() throws {
        let args = ["run", Self.example("cnn"), "--data", Self.example("cnn/train.npz"), "--eval-split", "0.1", "--batch-size", "32",
                    "--lr", "0.005", "--epochs", "1"]
        let dry = try run(args + ["--dry-run", "--out", "never"])
        XCTAssertEqual(dry.status, 0, dry.stderr)
        for fragment in ["dry run of ", "parameters: ", "convs.0.weight float [", "input: tensor(float) [batch, 1, 12, 12]; float [922, 1, 12, 12]; [32, 1, 12, 12]",
                         "optimizer: AdamWOptimizer", "learning rate: constant 0.005", "batches: 29 per epoch of 32 examples (the last one 26)",
                         "steps: 29 optimizer steps over 1 epochs", "eval: 102 examples"] {
            XCTAssertTrue(dry.stdout.contains(fragment), "missing '\(fragment)' in:\n\(dry.stdout)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("never")), "--dry-run writes nothing")

        var r = try run(args + ["--out", "partial"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("epoch 1/1 (step 29): train loss"), r.stdout)
        r = try runOnTerminal(args + ["--out", "dropped", "--drop-last", "--log-scale"], columns: 80)
        XCTAssertEqual(r.status, 0, r.stdout)
        XCTAssertTrue(r.stdout.contains("epoch 1/1 (step 28): train loss"), r.stdout.debugDescription)
        XCTAssertTrue(try String(contentsOfFile: path("dropped/loss.svg"), encoding: .utf8).contains(">loss (log)</text>"))
        XCTAssertFalse(try String(contentsOfFile: path("partial/loss.svg"), encoding: .utf8).contains("(log)"))
    }

    // MARK: Output folders, version, overflow

    func testOutFoldersVersionAndStepOverflow() throws {
        let v = try run(["--version"])
        XCTAssertEqual(v.status, 0)
        XCTAssertEqual(v.stdout, "onnx-train \(OnnxTrainVersion.current) (onnxruntime-training 1.19.2 semantics)\n")
        let quick = seed + ["--steps", "2", "--lr", "0.1", "--quiet"]
        XCTAssertEqual(try run(quick + ["--out", "o"]).status, 0)
        try assertFails(quick + ["--out", "o"], mentioning: ["--out o already holds files", "give --overwrite to replace that run, --resume o to continue it"])
        let again = try run(quick + ["--out", "o", "--overwrite"])
        XCTAssertEqual(again.status, 0, again.stderr)
        try FileManager.default.copyItem(atPath: Self.example("digits"), toPath: path("artifacts"))
        try assertFails(digits + ["--steps", "2", "--out", "artifacts", "--overwrite"], mentioning: ["--out artifacts holds training_model.onnx", "artifact folder"])
        try assertFails(digits + ["--epochs", "9223372036854775807", "--out", "big"], mentioning: ["9223372036854775807 epochs of 45 batches are more steps than a run can count"])
        try assertFails(digits + ["--steps", "9223372036854775807", "--accumulate", "2", "--out", "big"], mentioning: ["more batches than a run can count"])
        let far = try run(digits + ["--steps", "9223372036854775807", "--stop-after", "2", "--out", "far", "--quiet"])
        XCTAssertEqual(far.status, 0, far.stderr)
        XCTAssertTrue(far.stdout.contains("stopped (--stop-after) at step 2 of 9223372036854775807"), far.stdout)
        // Argument mistakes come from the argument parser (exit 64).
        var bad = try run(digits + ["--steps", "5", "--keep-best", "f1", "--out", "x"])
        XCTAssertEqual(bad.status, 64)
        XCTAssertTrue(bad.stderr.contains("--keep-best takes eval_loss, eval_accuracy, eval_topk_accuracy, eval_mae, eval_rmse; got 'f1'"), bad.stderr)
        bad = try run(["run", Self.example("digits"), "--data", Self.example("digits/train.npz"), "--batch-size", "32", "--lr", "0.1", "--steps", "5", "--early-stop", "2"])
        XCTAssertEqual(bad.status, 64)
        XCTAssertTrue(bad.stderr.contains("--keep-best, --early-stop and --eval-every need eval data"), bad.stderr)
    }

    /// Each flag in both modes: the same run through a pipe and on a terminal shows the same
    /// outcome (here the quick ones; the longer runs above alternate between the modes).
    func testEachFlagThroughAPipeAndOnATerminal() throws {
        let quick = ["run", Self.example("cnn"), "--data", Self.example("cnn/train.npz"), "--eval-data", Self.example("cnn/test.npz"),
                     "--batch-size", "100", "--lr", "0.005", "--steps", "12"]
        let cases: [(arguments: [String], status: Int32, fragments: [String])] = [
            (["--version"], 0, ["onnx-train \(OnnxTrainVersion.current)"]),
            (quick + ["--dry-run", "--drop-last"], 0, ["batches: 10 per epoch of 100 examples, 24 examples dropped (--drop-last)", "steps: 12 optimizer steps over 2 epochs"]),
            (quick + ["--dry-run"], 0, ["batches: 11 per epoch of 100 examples (the last one 24)", "eval: 256 examples"]),
            (quick + ["--eval-every", "5", "--keep-best", "eval_loss", "--early-stop", "9", "--clip-grad-norm", "2", "--log-scale",
                      "--checkpoint-every", "4", "--top-k", "2", "--out", "all"], 0,
             ["step 5: eval loss", "top-2", "epoch 1/2 (step 11): train loss", "best eval_loss ", "saved to all/: checkpoint, metrics.csv, loss.svg, report.html, model.onnx, params.safetensors, best/"]),
            (quick + ["--out", "all"], 5, ["onnx-train: error: --out all already holds files"]),
            (quick + ["--out", "all", "--overwrite", "--drop-last", "--quiet"], 0, ["trained 12 steps", "saved to all/"]),
        ]
        for (mode, runner) in [("pipe", { (a: [String]) in try self.run(a) }), ("terminal", { (a: [String]) in try self.runOnTerminal(a, columns: 100) })] {
            try? FileManager.default.removeItem(atPath: path("all"))
            for c in cases {
                let r = try runner(c.arguments)
                XCTAssertEqual(r.status, c.status, "\(mode) \(c.arguments.suffix(6)): \(r.stdout) \(r.stderr)")
                for f in c.fragments { XCTAssertTrue((r.stdout + r.stderr).contains(f), "\(mode): missing '\(f)' in \((r.stdout + r.stderr).debugDescription)") }
            }
            XCTAssertTrue(try String(contentsOfFile: path("all/loss.svg"), encoding: .utf8).contains("svg"))
        }
    }

    /// A broken eval_model.onnx in an artifact folder, run without eval data: the run goes on,
    /// says in one line why there will be no model.onnx, and does not list one (it used to drop
    /// the eval model without a word).
    func testABrokenEvalModelIsReportedNotSwallowed() throws {
        try FileManager.default.copyItem(atPath: Self.example("digits"), toPath: path("digits"))
        try Data("not a model".utf8).write(to: URL(fileURLWithPath: path("digits/eval_model.onnx")))
        let r = try run(["run", "digits", "--data", Self.example("digits/train.npz"), "--batch-size", "32", "--lr", "0.002", "--steps", "3", "--out", "o"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("eval_model.onnx is left out, so no model.onnx will be written: "), r.stdout)
        XCTAssertTrue(r.stdout.contains("saved to o/: checkpoint, metrics.csv, loss.svg, report.html, params.safetensors\n"), r.stdout)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("o/model.onnx")))
    }

    // MARK: Signals, locking, kill and resume

    /// SIGTERM (what schedulers and `docker stop` send) stops after the step, saves and exits 143;
    /// while a run writes its folder, a second run is refused.
    func testSigtermSavesAndTheFolderIsLocked() throws {
        let (process, read) = try start(digits + ["--epochs", "200", "--out", "term", "--print-every", "1"])
        _ = read("step 3/")
        try assertFails(digits + ["--steps", "5", "--out", "term", "--overwrite"], mentioning: ["--out term is being written by another onnx-train run (pid \(process.processIdentifier))"])
        process.terminate()
        let text = read("")
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 143, text)
        let stopped = try XCTUnwrap(text.range(of: #"stopped \(SIGTERM\) at step (\d+) of 9000; resume with: onnx-train run .* --resume term\n"#, options: .regularExpression), text)
        let step = Int(text[stopped].split(separator: " ")[4])!
        XCTAssertEqual(try CheckpointState.load(from: path("term/checkpoint")).optimizerGroups["group0"]?.step, Int64(step))
        XCTAssertEqual(try metrics("term").last?.step, step)
    }

    /// A run with Dropout killed with SIGKILL at an arbitrary moment (checkpoints every 7 steps),
    /// then resumed, leaves the same metrics.csv, parameters and checkpoint as a run never
    /// interrupted, byte for byte; the temporary file of a save the kill cut short is removed.
    func testKilledDropoutRunResumesBitForBit() throws {
        let common = ["run", Self.dropoutFixture, "--data", Self.dropoutFixture + "/data.npz", "--eval-data", Self.dropoutFixture + "/data.npz",
                      "--batch-size", "8", "--accumulate", "2", "--lr", "0.01", "--schedule", "cosine", "--warmup", "10", "--clip-grad-norm", "1",
                      "--steps", "3000", "--stop-after", "400", "--checkpoint-every", "7", "--eval-every", "25", "--seed", "3", "--quiet"]
        var r = try run(common + ["--out", "straight"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let (process, _) = try start(common + ["--out", "killed"])
        // Kill once 150 rows are in metrics.csv (the run writes them as it goes).
        while (try? metrics("killed").count) ?? 0 < 150 && process.isRunning { usleep(2000) }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .uncaughtSignal, "killed before it finished")
        let saved = try CheckpointState.load(from: path("killed/checkpoint"))
        guard case .int(let savedStep)? = saved.properties[RunArtifacts.Resume.step] else { return XCTFail("no step in the checkpoint") }
        XCTAssertGreaterThan(savedStep, 0)
        XCTAssertLessThan(savedStep, 400)
        try Data("half a checkpoint".utf8).write(to: URL(fileURLWithPath: path("killed/checkpoint.tmp-999999")))
        r = try run(common + ["--out", "killed", "--resume", "killed"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("killed/checkpoint.tmp-999999")))
        for name in ["metrics.csv", "params.safetensors", "checkpoint", "model.onnx", "loss.svg"] {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("killed/" + name))), try Data(contentsOf: URL(fileURLWithPath: path("straight/" + name))), name)
        }
        XCTAssertEqual(try metrics("straight").map(\.step), Array(0...400))
    }
}
