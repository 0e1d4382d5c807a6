import ArgumentParser
import Foundation
import OnnxTrain

/// `onnx-train conformance DIR`: runs ONNX backend test cases and checks them against a manifest.
struct ConformanceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract: "Run ONNX backend conformance cases (model.onnx + test_data_set_*) and report the results.",
        discussion: """
        DIR holds case folders (test_*). Outputs are compared in graph order: shapes exact, integers, \
        booleans and strings exact, floats within --rtol/--atol (NaN equals NaN). One line is printed \
        per failing case, then `N passed, N failed`.

        With --manifest, every case must be listed there: a listed case that fails is a regression \
        and the exit code is 1; a case that is not listed is an error too. --update-manifest rewrites \
        the manifest from this run, keeping the written reasons.
        """)

    @Argument(help: "Folder of case folders, e.g. onnx/backend/test/data/node.")
    var directory: String

    @Option(help: "Only run cases whose name matches this regular expression.")
    var filter: String?

    @Option(help: "Write a JSON report mapping each case to pass/fail/error and the reason.")
    var report: String?

    @Option(help: "Expected results: `name` passes, `!name -- reason` is a known failure.")
    var manifest: String?

    @Flag(help: "Rewrite --manifest from this run's results (keeps reasons already written).")
    var updateManifest = false

    @Option(help: "Write the per-op Markdown table (docs/CONFORMANCE.md) from this run.")
    var markdown: String?

    @Option(help: "Rewrite the conformance count between <!-- conformance --> markers in this README.")
    var readme: String?

    @Option(help: "Relative tolerance for float outputs.")
    var rtol: Double = 1e-3

    @Option(help: "Absolute tolerance for float outputs.")
    var atol: Double = 1e-5

    @Flag(help: "Print only failures that the manifest does not expect, and the summary.")
    var quiet = false

    func run() throws {
        try CLIFailure.run {
            var runner = ConformanceRunner()
            runner.tolerance = Tolerance(rtol: rtol, atol: atol)
            let expectations = try manifest.map { try ConformanceManifest(path: $0) }
            runner.manifest = expectations
            let results = try runner.runAll(root: directory, filter: filter) { r in
                guard !r.passed else { return }
                let known = expectations?.entries[r.name].map { !$0.expectPass } ?? false
                if quiet && known { return }
                print("\(r.status == .error ? "ERROR" : "FAIL ") \(r.name): \(r.reason ?? "")\(known ? "  [known]" : "")")
            }
            let passed = results.filter(\.passed).count
            let failed = results.count - passed
            if let report {
                try ConformanceReport.json(results).write(toFile: report, atomically: true, encoding: .utf8)
            }
            if let markdown {
                try ConformanceReport.markdown(results, manifest: expectations, suite: "`\(directory)`")
                    .write(toFile: markdown, atomically: true, encoding: .utf8)
            }
            if let readme {
                try updateReadme(readme, passed: passed, total: results.count)
            }
            print("\(passed) passed, \(failed) failed")
            guard let expectations, let manifestPath = manifest else {
                if failed > 0 { throw ExitCode(1) }
                return
            }
            if updateManifest {
                try expectations.updated(with: results).write(toFile: manifestPath, atomically: true, encoding: .utf8)
                print("conformance: wrote \(manifestPath)")
                return
            }
            let regressions = results.filter { !$0.passed && expectations.entries[$0.name]?.expectPass == true }
            let unlisted = results.filter { expectations.entries[$0.name] == nil }
            let newlyPassing = results.filter { $0.passed && expectations.entries[$0.name]?.expectPass == false }
            for r in regressions { print("regression: \(r.name) is expected to pass: \(r.reason ?? "")") }
            for r in unlisted { print("unlisted: \(r.name) is not in \(manifestPath) (\(r.status.rawValue))") }
            if !newlyPassing.isEmpty {
                print("conformance: \(newlyPassing.count) known failures now pass (\(newlyPassing.prefix(5).map(\.name).joined(separator: ", "))...); run `make conformance-manifest` to record them")
            }
            print("conformance: \(regressions.count) regressions, \(unlisted.count) unlisted, \(failed - regressions.count - unlisted.filter { !$0.passed }.count) known failures")
            if !regressions.isEmpty || !unlisted.isEmpty { throw ExitCode(1) }
        }
    }

    private func updateReadme(_ path: String, passed: Int, total: Int) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              let start = text.range(of: "<!-- conformance -->"),
              let end = text.range(of: "<!-- /conformance -->", range: start.upperBound..<text.endIndex) else {
            throw OnnxTrainError.io("\(path): no <!-- conformance --> ... <!-- /conformance --> markers")
        }
        let line = "**\(passed) of \(total)** ONNX node conformance cases pass (onnx 1.22.0; see [docs/CONFORMANCE.md](docs/CONFORMANCE.md))."
        let updated = text.replacingCharacters(in: start.upperBound..<end.lowerBound, with: line)
        try updated.write(toFile: path, atomically: true, encoding: .utf8)
    }
}
