import Foundation
import OnnxTrain
import XCTest

/// Paths to the committed test fixtures, found relative to this file so tests run from any directory.
public enum Fixtures {
    /// `Tests/Fixtures`.
    public static let root: String = {
        let here = URL(fileURLWithPath: #filePath)  // Tests/Support/Support.swift
        return here.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures").path
    }()

    /// The checkout this file belongs to (its `Package.swift` folder).
    public static let repository: String = {
        URL(fileURLWithPath: root).deletingLastPathComponent().deletingLastPathComponent().path
    }()

    /// `Examples/<relative>` of this checkout.
    public static func example(_ relative: String) -> String { repository + "/Examples/" + relative }

    /// `Tests/Fixtures/<relative>`.
    public static func path(_ relative: String) -> String { root + "/" + relative }

    /// The case folders listed in `<folder>/cases.txt` (comments and blank lines skipped).
    public static func cases(in folder: String) throws -> [String] {
        let text = try String(contentsOfFile: path(folder) + "/cases.txt", encoding: .utf8)
        return text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
            .map { String($0.split(separator: " ")[0]) }
    }
}

/// Asserts that `actual` matches `expected` within `tolerance`, reporting at the caller's line.
public func assertMatches(_ actual: Value, _ expected: Value, tolerance: Tolerance, _ label: String,
                          file: StaticString = #filePath, line: UInt = #line) {
    if let reason = compareValues(actual, expected, tolerance: tolerance, label: label) {
        XCTFail(reason, file: file, line: line)
    }
}
