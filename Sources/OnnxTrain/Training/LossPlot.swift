import Foundation

/// A run's curves as a standalone SVG: the train loss per step (a line) and the eval loss where it
/// was measured (a line with markers) in the top panel, with a log axis when asked or when the
/// loss spans more than two decades; below it, when the evaluations measured one, a second panel
/// with the eval metric (accuracy in %, else MAE/RMSE).
public enum LossPlot {
    /// A series: (step, value) points.
    public typealias Points = [(step: Int, loss: Double)]

    static let width = 760.0, left = 78.0, right = 24.0

    /// The plot of a run's metrics rows.
    /// - Parameter logScale: true/false forces the loss axis; nil picks log when the positive
    ///   losses span more than two decades (max/min > 100).
    public static func svg(_ rows: [RunMetric], title: String, logScale: Bool? = nil) -> String {
        let train = rows.compactMap { r in r.loss.map { (step: r.step, loss: $0) } }
        let eval = rows.compactMap { r in r.evalLoss.map { (step: r.step, loss: $0) } }
        var metric: (name: String, points: Points)?
        if rows.contains(where: { $0.evalAccuracy != nil }) {
            metric = ("eval accuracy (%)", rows.compactMap { r in r.evalAccuracy.map { (step: r.step, loss: $0 * 100) } })
        } else if rows.contains(where: { $0.evalMAE != nil }) {
            metric = ("eval MAE", rows.compactMap { r in r.evalMAE.map { (step: r.step, loss: $0) } })
        }
        return svg(train: train, eval: eval, title: title, logScale: logScale, metric: metric)
    }

    /// - Parameters:
    ///   - train: (step, loss) per optimizer step.
    ///   - eval: (step, loss) per evaluation (step 0 = before training).
    ///   - title: shown above the plot.
    ///   - metric: a second panel (its name and points), if any.
    public static func svg(train: Points, eval: Points, title: String, logScale: Bool? = nil, metric: (name: String, points: Points)? = nil) -> String {
        let lossHeight = 380.0, metricHeight = 220.0, top = 44.0
        let metricPoints = metric?.points.filter { $0.loss.isFinite } ?? []
        let hasMetric = !metricPoints.isEmpty
        let height = top + lossHeight + (hasMetric ? metricHeight : 0) + 18
        let trainPoints = downsample(train.filter { $0.loss.isFinite }, to: Int(width - left - right))
        let evalPoints = eval.filter { $0.loss.isFinite }
        let all = trainPoints + evalPoints + metricPoints
        let maxStep = max(all.map(\.step).max() ?? 1, 1)
        let positive = (trainPoints + evalPoints).map(\.loss).filter { $0 > 0 }
        let spansDecades = (positive.min().map { lo in (positive.max() ?? lo) / lo > 100 }) ?? false
        let log = (logScale ?? spansDecades) && positive.count == trainPoints.count + evalPoints.count && !positive.isEmpty

        var s = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(f(width / 2))" y="24" text-anchor="middle" font-size="15">\(escape(title))</text>

            """
        s += panel(series: [("train loss", "#1f77b4", trainPoints, false), ("eval loss", "#ff7f0e", evalPoints, true)],
                   yLabel: log ? "loss (log)" : "loss", top: top, height: lossHeight - 62, maxStep: maxStep, log: log, xLabel: !hasMetric)
        if hasMetric, let metric {
            s += panel(series: [(metric.name, "#2ca02c", metricPoints, true)], yLabel: metric.name.replacingOccurrences(of: "eval ", with: ""),
                       top: top + lossHeight, height: metricHeight - 62, maxStep: maxStep, log: false, xLabel: true)
        }
        return s + "</svg>\n"
    }

    /// One panel: axes, grid, ticks, the series and a legend.
    static func panel(series: [(name: String, color: String, points: Points, markers: Bool)], yLabel: String, top: Double, height plotH: Double,
                      maxStep: Int, log: Bool, xLabel: Bool) -> String {
        let plotW = width - left - right
        let values = series.flatMap { $0.points.map(\.loss) }
        func t(_ v: Double) -> Double { log ? log10(v) : v }
        var lo = values.map(t).min() ?? 0, hi = values.map(t).max() ?? 1
        if hi - lo < 1e-12 { lo -= 0.5; hi += 0.5 }
        let yTicks: [Double] = log ? (Int(floor(lo))...Int(ceil(hi))).map(Double.init) : niceTicks(lo, hi, count: 6)
        lo = min(lo, yTicks.first ?? lo); hi = max(hi, yTicks.last ?? hi)
        let xTicks = niceTicks(0, Double(maxStep), count: 8).filter { $0 >= 0 && $0 <= Double(maxStep) }
        func x(_ step: Int) -> Double { left + Double(step) / Double(maxStep) * plotW }
        func y(_ value: Double) -> Double { top + (hi - t(value)) / (hi - lo) * plotH }
        func yTick(_ tick: Double) -> Double { top + (hi - tick) / (hi - lo) * plotH }
        var s = ""
        for tick in yTicks {
            s += "<line x1=\"\(f(left))\" y1=\"\(f(yTick(tick)))\" x2=\"\(f(left + plotW))\" y2=\"\(f(yTick(tick)))\" stroke=\"#e4e4e4\"/>\n"
            s += "<text x=\"\(f(left - 8))\" y=\"\(f(yTick(tick) + 4))\" text-anchor=\"end\">\(log ? label(pow(10, tick)) : label(tick))</text>\n"
        }
        for tick in xTicks {
            s += "<line x1=\"\(f(x(Int(tick))))\" y1=\"\(f(top))\" x2=\"\(f(x(Int(tick))))\" y2=\"\(f(top + plotH))\" stroke=\"#f0f0f0\"/>\n"
            s += "<text x=\"\(f(x(Int(tick))))\" y=\"\(f(top + plotH + 18))\" text-anchor=\"middle\">\(label(tick))</text>\n"
        }
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotW))\" height=\"\(f(plotH))\" fill=\"none\" stroke=\"#444\"/>\n"
        if xLabel { s += "<text x=\"\(f(left + plotW / 2))\" y=\"\(f(top + plotH + 40))\" text-anchor=\"middle\" font-size=\"13\">step</text>\n" }
        let mid = top + plotH / 2
        s += "<text x=\"18\" y=\"\(f(mid))\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 18 \(f(mid)))\">\(escape(yLabel))</text>\n"
        for item in series where !item.points.isEmpty {
            let points = item.points.map { "\(f(x($0.step))),\(f(y($0.loss)))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(item.color)\" stroke-width=\"\(item.markers ? 2 : 1.5)\" points=\"\(points)\"/>\n"
            if item.markers { for p in item.points { s += "<circle cx=\"\(f(x(p.step)))\" cy=\"\(f(y(p.loss)))\" r=\"3.5\" fill=\"\(item.color)\"/>\n" } }
        }
        var ly = top + 16
        for item in series where !item.points.isEmpty {
            s += "<line x1=\"\(f(left + plotW - 150))\" y1=\"\(f(ly - 4))\" x2=\"\(f(left + plotW - 126))\" y2=\"\(f(ly - 4))\" stroke=\"\(item.color)\" stroke-width=\"2.5\"/>\n"
            s += "<text x=\"\(f(left + plotW - 120))\" y=\"\(f(ly))\">\(escape(item.name))</text>\n"
            ly += 18
        }
        return s
    }

    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    /// At most `limit` points: consecutive steps averaged in equal groups.
    static func downsample(_ points: Points, to limit: Int) -> Points {
        guard points.count > limit, limit > 0 else { return points }
        let group = (points.count + limit - 1) / limit
        return stride(from: 0, to: points.count, by: group).map { start in
            let slice = points[start..<min(start + group, points.count)]
            return (slice.last!.step, slice.map(\.loss).reduce(0, +) / Double(slice.count))
        }
    }

    /// Round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi].
    static func niceTicks(_ lo: Double, _ hi: Double, count: Int) -> [Double] {
        let span = max(hi - lo, 1e-12)
        let raw = span / Double(max(count - 1, 1))
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        let first = floor(lo / step) * step, last = ceil(hi / step) * step
        var ticks: [Double] = []
        var t = first
        while t <= last + step * 0.5 && ticks.count < 50 {
            ticks.append(abs(t) < step * 1e-9 ? 0 : t)
            t += step
        }
        return ticks
    }

    static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e7 { return String(Int(v)) }
        return String(format: "%g", v)
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
