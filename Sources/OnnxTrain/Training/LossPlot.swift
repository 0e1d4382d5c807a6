import Foundation

/// A loss curve as a standalone SVG: train loss per step (a line), eval loss at the steps where
/// it was measured (a line with markers), labelled axes with round tick values, and a legend.
public enum LossPlot {
    /// - Parameters:
    ///   - train: (step, loss) per optimizer step.
    ///   - eval: (step, loss) per evaluation (step 0 = before training).
    ///   - title: shown above the plot.
    public static func svg(train: [(step: Int, loss: Double)], eval: [(step: Int, loss: Double)], title: String) -> String {
        let width = 760.0, height = 440.0
        let left = 78.0, right = 24.0, top = 44.0, bottom = 62.0
        let plotW = width - left - right, plotH = height - top - bottom
        // Long runs: one point per pixel column (the mean of its steps) keeps the file small.
        let trainPoints = downsample(train.filter { $0.loss.isFinite }, to: Int(plotW))
        let evalPoints = eval.filter { $0.loss.isFinite }
        let all = trainPoints + evalPoints
        let maxStep = max(all.map(\.step).max() ?? 1, 1)
        var lo = all.map(\.loss).min() ?? 0, hi = all.map(\.loss).max() ?? 1
        if hi - lo < 1e-12 { lo -= 0.5; hi += 0.5 }
        let yTicks = niceTicks(lo, hi, count: 6)
        lo = min(lo, yTicks.first ?? lo); hi = max(hi, yTicks.last ?? hi)
        let xTicks = niceTicks(0, Double(maxStep), count: 8).filter { $0 >= 0 && $0 <= Double(maxStep) }
        func x(_ step: Int) -> Double { left + Double(step) / Double(maxStep) * plotW }
        func y(_ loss: Double) -> Double { top + (hi - loss) / (hi - lo) * plotH }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }

        var s = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(f(width / 2))" y="24" text-anchor="middle" font-size="15">\(escape(title))</text>

            """
        // Grid, ticks and tick labels.
        for t in yTicks {
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y(t)))\" x2=\"\(f(left + plotW))\" y2=\"\(f(y(t)))\" stroke=\"#e4e4e4\"/>\n"
            s += "<text x=\"\(f(left - 8))\" y=\"\(f(y(t) + 4))\" text-anchor=\"end\">\(label(t))</text>\n"
        }
        for t in xTicks {
            s += "<line x1=\"\(f(x(Int(t))))\" y1=\"\(f(top))\" x2=\"\(f(x(Int(t))))\" y2=\"\(f(top + plotH))\" stroke=\"#f0f0f0\"/>\n"
            s += "<text x=\"\(f(x(Int(t))))\" y=\"\(f(top + plotH + 18))\" text-anchor=\"middle\">\(label(t))</text>\n"
        }
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotW))\" height=\"\(f(plotH))\" fill=\"none\" stroke=\"#444\"/>\n"
        s += "<text x=\"\(f(left + plotW / 2))\" y=\"\(f(height - 16))\" text-anchor=\"middle\" font-size=\"13\">step</text>\n"
        s += "<text x=\"18\" y=\"\(f(top + plotH / 2))\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 18 \(f(top + plotH / 2)))\">loss</text>\n"
        // Curves.
        if !trainPoints.isEmpty {
            let points = trainPoints.map { "\(f(x($0.step))),\(f(y($0.loss)))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"\(points)\"/>\n"
        }
        if !evalPoints.isEmpty {
            let points = evalPoints.map { "\(f(x($0.step))),\(f(y($0.loss)))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"2\" points=\"\(points)\"/>\n"
            for p in evalPoints { s += "<circle cx=\"\(f(x(p.step)))\" cy=\"\(f(y(p.loss)))\" r=\"3.5\" fill=\"#ff7f0e\"/>\n" }
        }
        // Legend.
        var ly = top + 16
        for (name, color, shown) in [("train loss", "#1f77b4", !trainPoints.isEmpty), ("eval loss", "#ff7f0e", !evalPoints.isEmpty)] where shown {
            s += "<line x1=\"\(f(left + plotW - 120))\" y1=\"\(f(ly - 4))\" x2=\"\(f(left + plotW - 96))\" y2=\"\(f(ly - 4))\" stroke=\"\(color)\" stroke-width=\"2.5\"/>\n"
            s += "<text x=\"\(f(left + plotW - 90))\" y=\"\(f(ly))\">\(name)</text>\n"
            ly += 18
        }
        return s + "</svg>\n"
    }

    /// At most `limit` points: consecutive steps averaged in equal groups.
    static func downsample(_ points: [(step: Int, loss: Double)], to limit: Int) -> [(step: Int, loss: Double)] {
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
