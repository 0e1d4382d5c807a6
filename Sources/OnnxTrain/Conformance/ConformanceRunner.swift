import Foundation

/// The outcome of one conformance case.
public struct ConformanceResult {
    public enum Status: String { case pass, fail, error }
    public var name: String
    public var status: Status
    /// Why it failed or errored (nil on pass).
    public var reason: String?
    public var seconds: Double
    /// The ops (domain-qualified for non-default domains) the case's model uses, for the per-op table.
    public var ops: [String]
    public var passed: Bool { status == .pass }
}

/// Runs ONNX backend test cases through `runModel`, the path `onnx-train infer` uses.
public struct ConformanceRunner {
    public var tolerance = Tolerance()
    public var manifest: ConformanceManifest?
    /// A case taking longer than this stops the whole run (a hang must never stall CI).
    public var timeoutSeconds: Double = 120

    public init() {}

    /// Runs the case in `directory` with the manifest's tolerance for it, if any.
    public func run(directory: String) -> ConformanceResult {
        let name = (directory as NSString).lastPathComponent
        let start = Date()
        var ops: [String] = []
        func result(_ status: ConformanceResult.Status, _ reason: String?) -> ConformanceResult {
            ConformanceResult(name: name, status: status, reason: reason, seconds: Date().timeIntervalSince(start), ops: ops)
        }
        let testCase: BackendTestCase
        do {
            testCase = try BackendTestCase(directory: directory)
        } catch {
            return result(.error, "\(error)")
        }
        ops = Array(Set(testCase.model.graph.nodes.map { $0.domain.isEmpty ? $0.opType : "\($0.domain).\($0.opType)" })).sorted()
        let tol = manifest?.entries[name]?.tolerance ?? tolerance
        do {
            let session = try InferenceSession(model: testCase.model)
            let feedNames = testCase.model.graph.feedInputs.map(\.name)
            for set in testCase.dataSets {
                var feeds: [String: Value] = [:]
                for (i, v) in set.inputs.enumerated() where i < feedNames.count { feeds[feedNames[i]] = v }
                let outputs = try session.run(feeds, fetches: testCase.model.graph.outputs.map(\.name))
                for (i, expected) in set.outputs.enumerated() {
                    let outName = testCase.model.graph.outputs[i].name
                    guard let actual = outputs[outName] else { return result(.fail, "\(set.name): no output '\(outName)'") }
                    if let reason = compareValues(actual, expected, tolerance: tol, label: outName) {
                        return result(.fail, "\(set.name): \(reason)")
                    }
                }
            }
        } catch {
            return result(.error, "\(error)")
        }
        return result(.pass, nil)
    }

    /// Runs every case under `root` whose name matches `filter`, calling `progress` after each.
    /// A case that exceeds `timeoutSeconds` ends the process with exit code 124 after saying so.
    public func runAll(root: String, filter: String? = nil, progress: (ConformanceResult) -> Void) throws -> [ConformanceResult] {
        var regex: NSRegularExpression?
        if let filter {
            do { regex = try NSRegularExpression(pattern: filter) } catch {
                throw OnnxTrainError.invalidInput("--filter '\(filter)' is not a valid regular expression")
            }
        }
        var results: [ConformanceResult] = []
        for dir in try BackendTestCase.discover(in: root) {
            let name = (dir as NSString).lastPathComponent
            if let regex, regex.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) == nil { continue }
            let watchdog = Watchdog(seconds: timeoutSeconds, name: name)
            let r = run(directory: dir)
            watchdog.cancel()
            results.append(r)
            progress(r)
        }
        return results
    }
}

/// Ends the process if a case runs too long: a hung kernel must fail CI, not stall it.
final class Watchdog {
    private let timer: DispatchSourceTimer
    init(seconds: Double, name: String) {
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
        timer.schedule(deadline: .now() + seconds)
        timer.setEventHandler {
            FileHandle.standardError.write("conformance: \(name) did not finish within \(Int(seconds)) s; stopping\n".data(using: .utf8)!)
            exit(124)
        }
        timer.resume()
    }
    func cancel() { timer.cancel() }
}

/// Summaries of a run: the JSON report, the per-op Markdown table and the manifest check.
public enum ConformanceReport {
    public static func json(_ results: [ConformanceResult]) -> String {
        var object: [String: Any] = [:]
        for r in results {
            var entry: [String: Any] = ["status": r.status.rawValue]
            if let reason = r.reason { entry["reason"] = reason }
            object[r.name] = entry
        }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// A base op name for a case: its model's ops, or the case name's stem for multi-op models.
    public static func markdown(_ results: [ConformanceResult], manifest: ConformanceManifest?, suite: String) -> String {
        let passed = results.filter(\.passed).count
        var perOp: [String: (cases: Int, passed: Int, reasons: [String: Int])] = [:]
        var frequency: [String: Int] = [:]
        for r in results { for op in r.ops { frequency[op, default: 0] += 1 } }
        for r in results {
            // Attribute a case to the op it tests: the op its name starts with (test_max_pool_2d ->
            // MaxPool), else the rarest op in its model (plumbing such as Constant is common).
            let stem = r.name.dropFirst(5).replacingOccurrences(of: "_", with: "").lowercased()
            let named = r.ops.filter { stem.hasPrefix($0.split(separator: ".").last!.lowercased()) }
                .max { $0.count < $1.count }
            let op = named ?? r.ops.min { (frequency[$0] ?? 0, $0) < (frequency[$1] ?? 0, $1) } ?? "?"
            var row = perOp[op] ?? (0, 0, [:])
            row.cases += 1
            if r.passed { row.passed += 1 } else {
                let reason = manifest?.entries[r.name]?.reason ?? r.reason ?? r.status.rawValue
                row.reasons[String(reason.prefix(120)), default: 0] += 1
            }
            perOp[op] = row
        }
        var lines = [
            "# ONNX conformance",
            "",
            "Generated by `make conformance-docs` from one run of `onnx-train conformance` over \(suite). Do not edit by hand.",
            "",
            "**\(passed) of \(results.count) cases pass.**",
            "",
            "| op | cases | passed | why the rest fail |",
            "|---|---:|---:|---|",
        ]
        for (op, row) in perOp.sorted(by: { $0.key < $1.key }) {
            let why = row.reasons.sorted { $0.value > $1.value }.map { "\($0.key.replacingOccurrences(of: "|", with: "\\|"))\($0.value > 1 ? " (×\($0.value))" : "")" }.joined(separator: "; ")
            lines.append("| \(op) | \(row.cases) | \(row.passed) | \(why) |")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
