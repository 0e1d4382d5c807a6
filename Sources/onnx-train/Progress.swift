import Foundation
import Synchronization

/// What `run` shows while it trains. On a terminal: a progress bar per epoch, redrawn in place
/// with a carriage return (step, smoothed loss, lr, steps/s, time left). Elsewhere (pipes, CI):
/// one plain line every `every` steps and one per epoch, no carriage returns. Quiet: nothing but
/// the final summary.
final class RunReporter {
    enum Mode { case terminal, plain, quiet }

    let mode: Mode
    private(set) var totalSteps: Int
    private(set) var lastStep: Int
    private(set) var every: Int
    private let requestedEvery: Int?
    private let clock = ContinuousClock()
    private var start: ContinuousClock.Instant
    private var lastDraw: ContinuousClock.Instant
    private var stepsTimed = 0
    private var smoothed: Double?
    private var barShown = false

    init(mode: Mode, totalSteps: Int, every: Int?) {
        self.mode = mode
        self.totalSteps = totalSteps
        self.lastStep = totalSteps
        requestedEvery = every
        self.every = max(1, every ?? max(1, totalSteps / 20))
        start = clock.now
        lastDraw = clock.now
    }

    /// Starts the clock for `totalSteps` steps ending at step `lastStep` (a resumed run starts later).
    func begin(totalSteps: Int, lastStep: Int) {
        self.totalSteps = totalSteps
        self.lastStep = lastStep
        every = max(1, requestedEvery ?? max(1, totalSteps / 20))
        start = clock.now
        lastDraw = clock.now
        stepsTimed = 0
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

    /// Seconds since the run started (or since `restartClock`).
    var elapsed: Double { seconds(clock.now - start) }

    /// Steps per second over this run's steps.
    var rate: Double { stepsTimed > 0 ? Double(stepsTimed) / max(elapsed, 1e-9) : 0 }

    /// After an optimizer step: `step` of `totalSteps`, `position` of `perEpoch` within `epoch`.
    func step(_ step: Int, epoch: Int, epochs: Int?, position: Int, perEpoch: Int, loss: Double, lr: Double) {
        stepsTimed += 1
        smoothed = smoothed.map { 0.9 * $0 + 0.1 * loss } ?? loss
        let left = Double(lastStep - step) / max(rate, 1e-9)
        switch mode {
        case .quiet: return
        case .plain:
            guard step % every == 0 || step == lastStep else { return }
            emit(String(format: "step %d/%d epoch %d loss %.4f (smoothed %.4f) lr %.3g %.1f steps/s ", step, lastStep, epoch, loss, smoothed!, lr, rate)
                 + RunReporter.duration(left) + " left\n")
        case .terminal:
            let now = clock.now
            guard seconds(now - lastDraw) >= 0.1 || position == perEpoch || step == lastStep else { return }
            lastDraw = now
            let width = 24
            let filled = perEpoch > 0 ? min(width, position * width / perEpoch) : width
            let bar = String(repeating: "=", count: filled) + (filled < width ? ">" + String(repeating: " ", count: width - filled - 1) : "")
            let epochText = epochs.map { "epoch \(epoch)/\($0)" } ?? "epoch \(epoch)"
            let line = "\(epochText) [\(bar)] " + String(format: "%d/%d  step %d/%d  loss %.4f  lr %.3g  %.1f steps/s  ", position, perEpoch, step, lastStep, smoothed!, lr, rate)
                + RunReporter.duration(left) + " left"
            emit("\r" + line + "\u{1B}[K")
            barShown = true
        }
    }

    /// The line at the end of an epoch (replaces the bar on a terminal).
    func epochEnd(_ line: String) { say(line) }

    private func clearBar() {
        if barShown { emit("\r\u{1B}[K"); barShown = false }
    }

    private func emit(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    private func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    static func duration(_ s: Double) -> String {
        guard s.isFinite else { return "?" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }
}

/// Ctrl-C during training: the first SIGINT asks the loop to stop after the current step (it then
/// saves and says how to resume); a second one ends the process at once.
enum StopRequest {
    private static let flag = Atomic<Bool>(false)

    static func install() {
        _ = flag.load(ordering: .relaxed)  // initialise the global before the handler can run
        signal(SIGINT) { _ in
            StopRequest.flag.store(true, ordering: .relaxed)
            signal(SIGINT, SIG_DFL)
        }
    }

    static var requested: Bool { flag.load(ordering: .relaxed) }
}
