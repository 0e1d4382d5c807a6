import Foundation

/// The committed list of conformance expectations.
///
/// One case per line: `test_name` is expected to pass; `!test_name -- reason` is a known failure
/// and must carry its reason; `test_name rtol=1e-2 atol=1e-4 -- reason` passes with a looser (or
/// tighter) tolerance, again with a written reason. `#` starts a comment line.
public struct ConformanceManifest {
    public struct Entry: Equatable {
        public var expectPass: Bool
        public var reason: String?
        public var tolerance: Tolerance?
    }

    public var entries: [String: Entry] = [:]

    public init() {}

    public init(path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw OnnxTrainError.io("\(path): cannot read the conformance manifest")
        }
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            var head = line
            var reason: String?
            if let range = line.range(of: " -- ") {
                head = String(line[..<range.lowerBound]).trimmingCharacters(in: .whitespaces)
                reason = String(line[range.upperBound...]).trimmingCharacters(in: .whitespaces)
            }
            var words = head.split(separator: " ").map(String.init)
            guard !words.isEmpty else { continue }
            var name = words.removeFirst()
            let expectPass = !name.hasPrefix("!")
            if !expectPass { name.removeFirst() }
            var tolerance: Tolerance?
            for word in words {
                let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, let value = Double(parts[1]), parts[0] == "rtol" || parts[0] == "atol" else {
                    throw OnnxTrainError.invalidInput("\(path):\(number + 1): cannot read '\(word)' (expected rtol=X or atol=X)")
                }
                var t = tolerance ?? Tolerance()
                if parts[0] == "rtol" { t.rtol = value } else { t.atol = value }
                tolerance = t
            }
            if (!expectPass || tolerance != nil) && (reason ?? "").isEmpty {
                throw OnnxTrainError.invalidInput("\(path):\(number + 1): '\(name)' needs a reason after ' -- '")
            }
            entries[name] = Entry(expectPass: expectPass, reason: reason, tolerance: tolerance)
        }
    }

    /// The manifest text for `results`, keeping existing reasons and tolerances; new failures get
    /// the runner's reason.
    public func updated(with results: [ConformanceResult]) -> String {
        var lines = ["# ONNX node conformance expectations (onnx 1.22.0). Regenerate with `make conformance-manifest`.",
                     "# `name` must pass; `!name -- reason` is a known failure; `name rtol=.. atol=.. -- reason` passes with its own tolerance."]
        for r in results.sorted(by: { $0.name < $1.name }) {
            let old = entries[r.name]
            var line = r.passed ? r.name : "!" + r.name
            if r.passed, let t = old?.tolerance {
                line += " rtol=\(t.rtol) atol=\(t.atol)"
            }
            if !r.passed || old?.tolerance != nil {
                let reason = (!r.passed && old?.expectPass == false ? old?.reason : nil) ?? (r.passed ? old?.reason : r.reason) ?? "fails"
                line += " -- " + reason.replacingOccurrences(of: "\n", with: " ")
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
