import Foundation
import XCTest

/// The one way tests run the built `onnx-train` binary. A missing binary fails the test that
/// needs it (it never skips): `swift build --build-tests` and `make test-build` build it beside
/// the test bundle.
public enum CLI {
    public struct Result {
        public var status: Int32
        public var stdout: String
        public var stderr: String

        public init(status: Int32, stdout: String, stderr: String) {
            self.status = status
            self.stdout = stdout
            self.stderr = stderr
        }
    }

    /// `onnx-train` beside the test bundle (SwiftPM builds products and tests into one folder),
    /// else in `.build/debug` of this checkout; nil when neither exists.
    public static let located: String? = {
        var candidates: [URL] = []
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            candidates.append(bundle.bundleURL.deletingLastPathComponent())
        }
        candidates.append(Bundle.main.bundleURL)
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        candidates.append(URL(fileURLWithPath: Fixtures.repository).appendingPathComponent(".build/debug"))
        return candidates.map { $0.appendingPathComponent("onnx-train").path }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// The binary's path, or a test failure saying how to build it.
    public static func binary(file: StaticString = #filePath, line: UInt = #line) throws -> String {
        try XCTUnwrap(located, "onnx-train is not built beside the tests: run `swift build --build-tests` or `make test-build`",
                      file: file, line: line)
    }

    /// A process for the binary with `arguments`, working in `directory`, not yet started (for
    /// tests that talk to the running process: signals, partial output). A `launcher` (a command
    /// that execs its arguments, e.g. a shell setting limits) runs the binary through it.
    public static func process(_ arguments: [String], in directory: URL? = nil, launcher: [String] = [],
                               file: StaticString = #filePath, line: UInt = #line) throws -> Process {
        let command = launcher + [try binary(file: file, line: line)] + arguments
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        if let directory { process.currentDirectoryURL = directory }
        return process
    }

    /// Runs the binary to its end with stdout and stderr on pipes; a death by signal fails the test.
    public static func run(_ arguments: [String], in directory: URL? = nil, environment: [String: String]? = nil,
                           launcher: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws -> Result {
        let process = try process(arguments, in: directory, launcher: launcher, file: file, line: line)
        if let environment { process.environment = environment }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Drain stderr on another thread while stdout is read, so neither full pipe blocks the child.
        nonisolated(unsafe) var errData = Data()
        let drained = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            drained.signal()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        drained.wait()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .exit, "onnx-train \(arguments) was killed by signal \(process.terminationStatus)",
                       file: file, line: line)
        return Result(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Asserts a failure as users see it: exit `code` (any of 1...127 when nil) and exactly one `onnx-train: error:` line on stderr that mentions every fragment.
    @discardableResult
    public static func assertFails(_ arguments: [String], code: Int32? = nil, mentioning fragments: [String], in directory: URL? = nil,
                                   file: StaticString = #filePath, line: UInt = #line) throws -> Result {
        let r = try run(arguments, in: directory, file: file, line: line)
        if let code { XCTAssertEqual(r.status, code, "stderr: \(r.stderr)", file: file, line: line) }
        XCTAssertTrue((1...127).contains(r.status), "exit \(r.status): \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stderr.split(separator: "\n", omittingEmptySubsequences: false).count, 2,
                       "one line and its newline: \(r.stderr.debugDescription)", file: file, line: line)
        XCTAssertTrue(r.stderr.hasPrefix("onnx-train: error: "), r.stderr, file: file, line: line)
        for f in fragments { XCTAssertTrue(r.stderr.contains(f), "'\(r.stderr)' does not mention '\(f)'", file: file, line: line) }
        return r
    }
}
