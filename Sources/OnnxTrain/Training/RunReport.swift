import Foundation

/// One line of a run's settings, as shown in report.html.
public struct ReportSetting: Sendable {
    public let name: String
    public let value: String
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// `report.html`: a standalone page (no script, no external file) with the run's plot, its
/// settings and its final metrics (confusion matrix and per-class accuracy for classification).
public enum RunReport {
    public static func html(_ outcome: Trainer.Outcome, configuration c: Trainer.Configuration, plan: Trainer) -> String {
        func e(_ s: String) -> String { LossPlot.escape(s) }
        func row(_ name: String, _ value: String) -> String { "<tr><th>\(e(name))</th><td>\(e(value))</td></tr>\n" }
        var page = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>\(e(c.title))</title>
            <style>
            body { font-family: sans-serif; margin: 2em auto; max-width: 800px; color: #222; }
            table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
            th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-weight: normal; }
            th { background: #f4f4f4; }
            td.n { text-align: right; font-variant-numeric: tabular-nums; }
            td.d { background: #e3f0e3; }
            </style></head><body>
            <h1>\(e(c.title))</h1>

            """
        let what: String
        switch outcome.stop {
        case .finished: what = "trained"
        case .requested: what = "stopped on request after"
        case .stopAfter: what = "stopped (--stop-after) after"
        case .earlyStopped: what = "stopped early after"
        }
        page += "<p>\(what) step \(outcome.step) of \(outcome.totalSteps)"
            + (outcome.startStep > 0 ? " (resumed at step \(outcome.startStep))" : "") + String(format: ", %.1f s in this session.</p>\n", outcome.seconds)
        page += LossPlot.svg(outcome.metrics, title: c.title, logScale: c.logScale)

        page += "<h2>Final metrics</h2>\n<table>\n"
        if let last = outcome.metrics.last(where: { $0.loss != nil }), let loss = last.loss {
            page += row("last train loss", String(format: "%.6g (step %d)", loss, last.step))
        }
        if let r = outcome.lastEvaluation {
            page += row("eval loss", String(format: "%.6g over %d examples", r.loss, r.examples))
            if let a = r.accuracy { page += row("eval accuracy", String(format: "%.2f%%", a * 100)) }
            if let k = r.topK, let a = r.topKAccuracy { page += row("eval top-\(k) accuracy", String(format: "%.2f%%", a * 100)) }
            if let m = r.mae { page += row("eval MAE", String(format: "%.6g", m)) }
            if let m = r.rmse { page += row("eval RMSE", String(format: "%.6g", m)) }
        }
        if let best = outcome.best, let metric = outcome.monitored {
            page += row("best \(metric.rawValue)", String(format: "%.6g at step %d", best.value, best.step))
        }
        page += "</table>\n"
        if let confusion = outcome.lastEvaluation?.confusion, confusion.classes <= 64 {
            page += "<h2>Confusion matrix (rows: true class, columns: predicted)</h2>\n<table>\n<tr><th></th>"
            page += (0..<confusion.classes).map { "<th>\($0)</th>" }.joined() + "<th>accuracy</th></tr>\n"
            let perClass = confusion.perClassAccuracy
            for t in 0..<confusion.classes {
                page += "<tr><th>\(t)</th>" + (0..<confusion.classes).map { p in "<td class=\"n\(p == t ? " d" : "")\">\(confusion[t, p])</td>" }.joined()
                page += "<td class=\"n\">" + (perClass[t].map { String(format: "%.1f%%", $0 * 100) } ?? "-") + "</td></tr>\n"
            }
            page += "</table>\n"
        }
        page += "<h2>Settings</h2>\n<table>\n"
        for s in c.reportSettings { page += row(s.name, s.value) }
        page += row("batches per epoch", "\(plan.batches.count) (\(plan.batches.exampleCount) examples, batch size \(c.batchSize)\(c.dropLast ? ", last partial batch dropped" : ""))")
        page += row("optimizer steps", "\(outcome.totalSteps) over \(plan.epochs) epochs, \(c.accumulate) batch(es) per step")
        page += row("learning rate", plan.schedule.description)
        page += row("trainable parameters", "\(plan.module.parameterCount()) in \(plan.module.trainableParameters.count) tensors")
        page += "</table>\n</body></html>\n"
        return page
    }

    /// Writes the report atomically.
    public static func write(_ outcome: Trainer.Outcome, configuration: Trainer.Configuration, plan: Trainer, to path: String) throws {
        try DataFile.write(Data(html(outcome, configuration: configuration, plan: plan).utf8), to: path)
    }
}
