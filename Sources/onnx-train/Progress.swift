import Foundation
import OnnxTrain
import Synchronization

/// What `run` shows while it trains, from the `Trainer`'s events. On a terminal: a progress bar
/// redrawn in place (epoch, batch, step, smoothed loss, lr, steps/s, time left) that fits the
/// terminal's width and is redrawn when the terminal is resized. Elsewhere (pipes, CI): one plain
/// line every `every` steps and one per epoch, no carriage returns. Quiet: only the final summary.
final class RunReporter {
    enum Mode { case terminal, plain, quiet }

    let mode: Mode
    private let requestedEvery: Int?
    private var every = 1
    private var startStep = 0
    private var totalSteps = 0
    private let clock = ContinuousClock()
    private var start: ContinuousClock.Instant
    private var lastDraw: ContinuousClock.Instant
    private var stepsTimed = 0
    private var smoothed: Double?
    /// Characters of the bar line on screen (0: none).
    private var barLength = 0
    private var columns: Int
    private var lastImproved = false

    init(mode: Mode, every: Int?) {
        self.mode = mode
        requestedEvery = every
        start = clock.now
        lastDraw = clock.now
        columns = TerminalSize.columns()
        if mode == .terminal { TerminalSize.watchResize() }
    }

    /// Terminal when stdout is one (and TERM is not "dumb"), else plain.
    static func mode(quiet: Bool) -> Mode {
        if quiet { return .quiet }
        if isatty(STDOUT_FILENO) != 0 && ProcessInfo.processInfo.environment["TERM"] != "dumb" { return .terminal }
        return .plain
    }

    /// An informational line (hidden with --quiet).
    func say(_ line: String) {
        guard mode != .quiet else { return }
        clearBar()
        emit(line + "\n")
    }

    /// The final summary: shown in every mode.
    func summary(_ line: String) {
        clearBar()
        emit(line + "\n")
    }

    /// Seconds since the run started.
    var elapsed: Double { seconds(clock.now - start) }

    /// Steps per second over this run's steps.
    var rate: Double { stepsTimed > 0 ? Double(stepsTimed) / max(elapsed, 1e-9) : 0 }

    func handle(_ event: TrainerEvent) {
        switch event {
        case .started(let s):
            startStep = s.startStep
            totalSteps = s.totalSteps
            every = max(1, requestedEvery ?? max(1, (s.totalSteps - s.startStep) / 20))
            start = clock.now
            lastDraw = clock.now
            stepsTimed = 0
        case .step(let s):
            step(s)
        case .evaluated(let e):
            lastImproved = e.improved
            if e.initial {
                say(e.result.line(prefix: startStep > 0 ? "resumed at step \(startStep):" : "epoch 0 (initial):"))
            } else if !e.atEpochEnd {
                say("step \(e.step): " + e.result.summary + (e.improved ? " (best so far)" : ""))
            }
        case .epochEnded(let e):
            say(e.summary + (e.evaluation != nil && lastImproved ? " (best so far)" : "") + String(format: " (%.1f s)", e.seconds))
        case .checkpointSaved:
            break
        case .earlyStopped(let step, let metric, let best, let patience):
            say("early stop at step \(step): \(metric.rawValue) has not improved for \(patience) evaluations (best \(String(format: "%.4f", best.value)) at step \(best.step))")
        }
    }

    /// After an optimizer step.
    private func step(_ s: TrainerEvent.Step) {
        stepsTimed += 1
        smoothed = smoothed.map { 0.9 * $0 + 0.1 * s.loss } ?? s.loss
        let left = Double(s.totalSteps - s.step) / max(rate, 1e-9)
        let norm = s.gradNorm.map { String(format: " grad norm %.3g", $0) } ?? ""
        switch mode {
        case .quiet: return
        case .plain:
            guard s.step % every == 0 || s.step == s.totalSteps else { return }
            emit(String(format: "step %d/%d epoch %d loss %.4f (smoothed %.4f) lr %.3g", s.step, s.totalSteps, s.epoch, s.loss, smoothed!, s.learningRate)
                 + norm + String(format: " %.1f steps/s ", rate) + RunReporter.duration(left) + " left\n")
        case .terminal:
            let now = clock.now
            let resized = TerminalSize.takeResize()
            guard resized || seconds(now - lastDraw) >= 0.1 || s.batch == s.batchesPerEpoch || s.step == s.totalSteps else { return }
            lastDraw = now
            if resized {
                // The old line may wrap at the new width: clear every row it now covers.
                let old = columns
                columns = TerminalSize.columns()
                if barLength > 0 && barLength >= columns && old != columns {
                    let rows = (barLength - 1) / max(columns, 1)
                    emit("\r\u{1B}[K" + String(repeating: "\u{1B}[1A\u{1B}[K", count: rows))
                }
            }
            let line = RunReporter.barLine(width: columns - 1, epoch: s.epoch, epochs: s.epochs, position: s.batch, perEpoch: s.batchesPerEpoch,
                                           step: s.step, totalSteps: s.totalSteps, loss: smoothed!, lr: s.learningRate, gradNorm: s.gradNorm,
                                           rate: rate, left: left)
            emit("\r" + line + "\u{1B}[K")
            barLength = line.count
        }
    }

    /// The progress line in at most `width` characters: lr, the gradient norm, steps/s, the epoch
    /// and the batch count give way in that order until a bar of at least 10 cells fits (up to
    /// 30); step, loss and time left stay, cut to the width if even they do not fit.
    static func barLine(width: Int, epoch: Int, epochs: Int, position: Int, perEpoch: Int, step: Int, totalSteps: Int, loss: Double,
                        lr: Float, gradNorm: Double?, rate: Double, left: Double) -> String {
        let epochText = "epoch \(epoch)/\(epochs)"
        var parts: [(text: String, priority: Int)] = [
            (epochText, 4), ("\(position)/\(perEpoch)", 5), ("step \(step)/\(totalSteps)", 9),
            (String(format: "loss %.4f", loss), 9), (String(format: "lr %.3g", lr), 1),
        ]
        if let gradNorm { parts.append((String(format: "norm %.3g", gradNorm), 2)) }
        parts += [(String(format: "%.1f steps/s", rate), 3), (duration(left) + " left", 9)]
        func render(_ kept: [(text: String, priority: Int)], bar: Int) -> String {
            var head: [String] = kept.first?.text == epochText ? [epochText] : []
            if bar > 0 {
                let filled = perEpoch > 0 ? min(bar, position * bar / perEpoch) : bar
                head.append("[" + String(repeating: "=", count: filled) + (filled < bar ? ">" + String(repeating: " ", count: bar - filled - 1) : "") + "]")
            }
            let rest = kept.filter { $0.text != epochText }.map(\.text)
            return head.joined(separator: " ") + (head.isEmpty ? "" : " ") + rest.joined(separator: "  ")
        }
        var kept = parts
        while true {
            let room = width - render(kept, bar: 0).count - 3
            if room >= 10 { return render(kept, bar: min(room, 30)) }
            guard let drop = kept.indices.filter({ kept[$0].priority < 9 }).min(by: { kept[$0].priority < kept[$1].priority }) else { break }
            kept.remove(at: drop)
        }
        return String(render(kept, bar: 0).prefix(max(width, 0)))
    }

    /// The summary lines after a run.
    func finish(_ outcome: Trainer.Outcome, folder: String) {
        let interrupted = outcome.stop != .finished
        var summary = (interrupted ? "stopped after " : "trained ")
            + String(format: "%d steps in %.1f s (%.1f steps/s)", outcome.step - outcome.startStep, elapsed, rate)
        if let last = outcome.metrics.last(where: { $0.loss != nil })?.loss { summary += ", last train loss " + format(last) }
        if let r = outcome.lastEvaluation { summary += ", " + r.summary }
        self.summary(summary)
        if mode != .quiet, let confusion = outcome.lastEvaluation?.confusion, confusion.classes <= 20 {
            say(RunReporter.confusionTable(confusion))
        }
        if let best = outcome.best, let metric = outcome.monitored, mode != .quiet {
            say("best \(metric.rawValue) " + String(format: "%.4f", best.value) + " at step \(best.step)"
                + (outcome.files.contains(RunArtifacts.bestName + "/") ? " (kept in \(folder)/\(RunArtifacts.bestName)/)" : ""))
        }
        self.summary("saved to \(folder)/: " + outcome.files.joined(separator: ", "))
    }

    /// Per-class accuracy and the confusion matrix as text (rows: true class).
    static func confusionTable(_ m: ConfusionMatrix) -> String {
        let width = max(String(m.counts.max() ?? 0).count, String(m.classes - 1).count) + 1
        func pad(_ s: String) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
        var lines = ["confusion matrix (rows: true class, columns: predicted; last column: per-class accuracy):"]
        lines.append("     " + (0..<m.classes).map { pad("\($0)") }.joined() + "   accuracy")
        let perClass = m.perClassAccuracy
        for t in 0..<m.classes {
            lines.append(pad("\(t)").padding(toLength: 5, withPad: " ", startingAt: 0) + (0..<m.classes).map { pad("\(m[t, $0])") }.joined()
                         + "   " + (perClass[t].map { String(format: "%5.1f%%", $0 * 100) } ?? "    -"))
        }
        return lines.joined(separator: "\n")
    }

    private func clearBar() {
        if barLength > 0 { emit("\r\u{1B}[K"); barLength = 0 }
    }

    private func emit(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    private func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    static func duration(_ s: Double) -> String {
        guard s.isFinite, s < 1e9 else { return "?" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }
}

/// The terminal's width (TIOCGWINSZ on stdout; else $COLUMNS; else 80) and SIGWINCH, which marks
/// it for re-reading.
enum TerminalSize {
    private static let resized = Atomic<Bool>(false)

    static func columns() -> Int {
        var size = winsize()
        if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        if let text = ProcessInfo.processInfo.environment["COLUMNS"], let n = Int(text), n > 0 { return n }
        return 80
    }

    static func watchResize() {
        _ = resized.load(ordering: .relaxed)
        signal(SIGWINCH) { _ in TerminalSize.resized.store(true, ordering: .relaxed) }
    }

    /// Whether the terminal was resized since the last call.
    static func takeResize() -> Bool { resized.exchange(false, ordering: .relaxed) }
}

/// Ctrl-C and SIGTERM during training: the first one asks the loop to stop after the current step
/// (it then saves and says how to resume); a second Ctrl-C ends the process at once.
enum StopRequest {
    private static let received = Atomic<Int32>(0)

    static func install() {
        _ = received.load(ordering: .relaxed)  // initialise the global before a handler can run
        signal(SIGINT) { sig in
            StopRequest.received.store(sig, ordering: .relaxed)
            signal(SIGINT, SIG_DFL)
        }
        signal(SIGTERM) { sig in
            StopRequest.received.store(sig, ordering: .relaxed)
        }
    }

    static var requested: Bool { received.load(ordering: .relaxed) != 0 }
    /// The signal that asked for the stop (SIGINT or SIGTERM), 0 if none.
    static var signalNumber: Int32 { received.load(ordering: .relaxed) }
}
