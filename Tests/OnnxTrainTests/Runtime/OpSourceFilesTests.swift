import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// Finding an op by name: for every op the registry holds, the file that registers it, the one
/// file that holds its kernel and the one that holds its gradient rule, as docs/OPS.md lists them.
///
/// The registry records the registering file (`OpRegistry.sourceFiles`); the kernel's file is
/// the one declaring the builder that registration line names (`padKernel`, `BatchNormKernel`,
/// `AbsFunction`), or the registering file itself when the kernel is written there.
/// `ONNX_TRAIN_UPDATE_DOCS=1 swift test --filter OpSourceFilesTests` rewrites the table.
final class OpSourceFilesTests: XCTestCase {
    struct Row: Equatable {
        let domain: String, opType: String, versions: [Int]
        let registeredIn: String, kernel: String, gradient: String?
    }

    /// Sources/ of this checkout.
    static let sources = Fixtures.repository + "/Sources/"

    /// The text of every Swift file of the library, by path below Sources/.
    static let library: [String: String] = {
        let root = sources + "OnnxTrain"
        var texts: [String: String] = [:]
        let walker = FileManager.default.enumerator(atPath: root)
        while let relative = walker?.nextObject() as? String {
            guard relative.hasSuffix(".swift"),
                  let text = try? String(contentsOfFile: root + "/" + relative, encoding: .utf8) else { continue }
            texts["OnnxTrain/" + relative] = text
        }
        return texts
    }()

    /// The files declaring each top-level function, struct, class or enum name.
    static let declarations: [String: [String]] = {
        var files: [String: [String]] = [:]
        let keywords: Set<Substring> = ["func", "struct", "class", "enum"], modifiers: Set<Substring> = ["private", "fileprivate", "public", "final"]
        for (path, text) in library {
            for line in text.split(separator: "\n") where !line.hasPrefix(" ") {
                let words = line.split(separator: " ").drop { modifiers.contains($0) }
                guard let keyword = words.first, keywords.contains(keyword), words.count > 1 else { continue }
                let name = words[words.index(after: words.startIndex)].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
                files[String(name), default: []].append(path)
            }
        }
        return files
    }()

    /// The one file declaring `name` at top level, if exactly one does.
    static func declaringFile(_ name: String) -> String? {
        guard let files = declarations[name], files.count == 1 else { return nil }
        return files[0]
    }

    /// The builder a registration line names: a trailing function (`, padKernel)`, or one that
    /// makes the builder, `, softmaxKernel(.logSoftmax))`) or the type
    /// its closure constructs (`{ ctx in try BatchNormKernel(ctx) }`, `{ _ in AbsFunction() }`),
    /// looking at the closure's first line when it starts on the next one.
    static func builder(onLine line: Substring, next: Substring?) throws -> String? {
        func first(_ pattern: String, in text: Substring) throws -> String? {
            let regex = try NSRegularExpression(pattern: pattern)
            let s = String(text)
            guard let m = regex.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)),
                  let r = Range(m.range(at: 1), in: s) else { return nil }
            return String(s[r])
        }
        if let f = try first(",\\s*([a-z][A-Za-z0-9]*)(?:\\(.*\\))?\\)\\s*$", in: line) { return f }
        let construct = "(?:try\\s+)?(?:return\\s+)?([A-Z][A-Za-z0-9]*)\\("
        if let t = try first("\\{\\s*(?:_|ctx|c)\\s+in\\s+" + construct, in: line), t != "AnyKernel" { return t }
        if line.hasSuffix(" in"), let next, let t = try first("^\\s*" + construct, in: next), t != "AnyKernel" { return t }
        return nil
    }

    /// Where the op's kernel (or gradient rule) is: the file declaring the builder named where
    /// `registeredIn` registers `opType`'s kernel (`register...("Op"`) or gradient rule
    /// (`register...Gradient("Op"`), else `registeredIn`.
    static func holder(of opType: String, gradient: Bool, registeredIn: String) throws -> String {
        guard let text = library[registeredIn] else { return registeredIn }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        func registers(_ line: Substring) -> Bool {
            guard line.contains(".register"), line.contains("(\"\(opType)\"") else { return false }
            return line.contains("Gradient(\"\(opType)\"") == gradient
        }
        for (i, line) in lines.enumerated() where registers(line) {
            if let name = try builder(onLine: line, next: i + 1 < lines.count ? lines[i + 1] : nil),
               let file = declaringFile(name) {
                return file
            }
        }
        return registeredIn
    }

    static func rows() throws -> [Row] {
        try OpRegistry.standard.sourceFiles.map { e in
            Row(domain: e.domain, opType: e.opType, versions: e.versions, registeredIn: e.registeredIn,
                kernel: try holder(of: e.opType, gradient: false, registeredIn: e.registeredIn),
                gradient: try e.gradientFile.map { try holder(of: e.opType, gradient: true, registeredIn: $0) })
        }
    }

    /// The table docs/OPS.md holds between its markers.
    static func table(_ rows: [Row]) -> String {
        func short(_ path: String) -> String { path.replacingOccurrences(of: "OnnxTrain/", with: "", options: .anchored) }
        var out = ["| Op | Domain | Since | Kernel | Registered in | Gradient rule |", "| --- | --- | --- | --- | --- | --- |"]
        for r in rows {
            let registered = r.registeredIn == r.kernel ? "" : short(r.registeredIn)
            out.append("| \(r.opType) | \(r.domain.isEmpty ? "ai.onnx" : r.domain) | \(r.versions.map(String.init).joined(separator: ", ")) "
                       + "| \(short(r.kernel)) | \(registered) | \(r.gradient.map(short) ?? "") |")
        }
        return out.joined(separator: "\n")
    }

    func testEveryRegisteredOpIsFoundByNameInTheFileThatRegistersIt() throws {
        let rows = try Self.rows()
        XCTAssertGreaterThan(rows.count, 250, "the standard registry lists every op")
        for r in rows {
            let file = try XCTUnwrap(Self.library[r.registeredIn], "\(r.opType): registered from \(r.registeredIn), not a library file")
            XCTAssertTrue(file.contains("\"\(r.opType)\""), "\(r.registeredIn) registers \(r.opType) without naming it")
            XCTAssertNotNil(Self.library[r.kernel], "\(r.opType): kernel file \(r.kernel)")
            if let g = r.gradient { XCTAssertNotNil(Self.library[g], "\(r.opType): gradient file \(g)") }
        }
    }

    func testOpsDocumentListsEveryOpWithItsFiles() throws {
        let path = Fixtures.repository + "/docs/OPS.md"
        let begin = "<!-- ops table: written by OpSourceFilesTests (ONNX_TRAIN_UPDATE_DOCS=1) -->"
        let end = "<!-- end of ops table -->"
        let doc = try String(contentsOfFile: path, encoding: .utf8)
        guard let b = doc.range(of: begin), let e = doc.range(of: end, range: b.upperBound..<doc.endIndex) else {
            return XCTFail("\(path) lacks the table markers '\(begin)' ... '\(end)'")
        }
        let table = Self.table(try Self.rows())
        let current = doc[b.upperBound..<e.lowerBound].trimmingCharacters(in: .whitespacesAndNewlines)
        if current == table { return }
        if ProcessInfo.processInfo.environment["ONNX_TRAIN_UPDATE_DOCS"] == "1" {
            let updated = String(doc[..<b.upperBound]) + "\n" + table + "\n" + String(doc[e.lowerBound...])
            try updated.write(toFile: path, atomically: true, encoding: .utf8)
            return
        }
        let have = Set(current.split(separator: "\n")), want = table.split(separator: "\n")
        let differing = want.filter { !have.contains($0) }.prefix(5).joined(separator: "\n")
        XCTFail("docs/OPS.md's table differs from the registry (rerun with ONNX_TRAIN_UPDATE_DOCS=1); first rows that differ:\n\(differing)")
    }
}
