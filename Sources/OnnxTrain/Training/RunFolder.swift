import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The output folder of a run, held for its duration: created, checked, locked against a second
/// run writing it, and cleared of temporary files a killed run left.
public final class RunFolder {
    public let path: String
    private let lockDescriptor: Int32

    /// What to do with a folder that already holds files.
    public enum Existing: Sendable {
        /// Refuse a non-empty folder (a new run).
        case refuse
        /// Write over an earlier run's files (`--overwrite`).
        case overwrite
        /// Continue the run in it (`--resume`).
        case resume
    }

    /// Files a run writes; `--overwrite` removes these (and `best/`) and nothing else.
    static let runFiles = [RunArtifacts.checkpointName, RunArtifacts.metricsName, RunArtifacts.plotName, RunArtifacts.modelName,
                           RunArtifacts.paramsName, RunArtifacts.reportName, RunArtifacts.bestName]

    /// Files that make a folder an onnxruntime artifact folder (a run must not write into one).
    static let artifactFiles = ["training_model.onnx", "optimizer_model.onnx", "eval_model.onnx"]

    /// Creates (or checks) `path` and locks it.
    public init(_ path: String, existing: Existing) throws {
        self.path = path
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw OnnxTrainError.io("--out \(path) is a file, not a folder") }
            let entries = ((try? fm.contentsOfDirectory(atPath: path)) ?? []).filter { $0 != RunArtifacts.lockName }
            if let artifact = RunFolder.artifactFiles.first(where: entries.contains) {
                throw OnnxTrainError.invalidInput("--out \(path) holds \(artifact): it is a model's artifact folder, and a run would overwrite its checkpoint; choose another --out")
            }
            if existing == .refuse, !entries.isEmpty {
                throw OnnxTrainError.invalidInput("--out \(path) already holds files (\(entries.sorted().prefix(3).joined(separator: ", "))\(entries.count > 3 ? ", ..." : "")); give --overwrite to replace that run, --resume \(path) to continue it, or another --out")
            }
        } else {
            do {
                try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw OnnxTrainError.io("cannot create the output folder \(path): \(RunArtifacts.reason(error))")
            }
        }
        let lockPath = URL(fileURLWithPath: path).appendingPathComponent(RunArtifacts.lockName).path
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw OnnxTrainError.io("cannot write into the output folder \(path) (\(String(cString: strerror(errno)))); choose another with --out")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            var buffer = [UInt8](repeating: 0, count: 32)
            let n = read(fd, &buffer, 31)
            close(fd)
            let owner = n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            throw OnnxTrainError.io("--out \(path) is being written by another onnx-train run (pid \(owner)); wait for it or choose another --out")
        }
        lockDescriptor = fd
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, pid, pid.utf8.count, 0)
        // Temporary files of saves a killed run never finished (`checkpoint.tmp-<pid>`, ...).
        for entry in (try? fm.contentsOfDirectory(atPath: path)) ?? [] where entry.contains(".tmp-") {
            try? fm.removeItem(atPath: URL(fileURLWithPath: path).appendingPathComponent(entry).path)
        }
        if existing == .overwrite {
            for name in RunFolder.runFiles { try? fm.removeItem(atPath: file(name)) }
        }
    }

    deinit {
        flock(lockDescriptor, LOCK_UN)
        close(lockDescriptor)
    }

    /// The path of `name` inside the folder.
    public func file(_ name: String) -> String { URL(fileURLWithPath: path).appendingPathComponent(name).path }
}

/// `metrics.csv`, appended one row at a time: each row goes to the file as it is made (a killed
/// run keeps every row it wrote), and `sync()` flushes them to disk before a checkpoint names them.
public final class MetricsLog {
    public let path: String
    public private(set) var rows: [RunMetric]
    private let handle: FileHandle

    /// The rows of the `metrics.csv` at `path` (none when it is missing).
    public static func read(_ path: String) -> [RunMetric] {
        (try? String(contentsOfFile: path, encoding: .utf8)).map(RunArtifacts.parseMetrics) ?? []
    }

    /// Writes `path` afresh with `rows` (atomically), then opens it for appending.
    public init(path: String, rows: [RunMetric] = []) throws {
        self.path = path
        self.rows = rows
        try DataFile.write(Data(RunArtifacts.metricsCSV(rows).utf8), to: path)
        guard let handle = FileHandle(forWritingAtPath: path) else { throw OnnxTrainError.io("\(path): cannot open for writing") }
        self.handle = handle
        do { try handle.seekToEnd() } catch { throw OnnxTrainError.io("\(path): cannot write (\(error.localizedDescription))") }
    }

    deinit { try? handle.close() }

    public func append(_ row: RunMetric) throws {
        rows.append(row)
        do {
            try handle.write(contentsOf: Data(RunArtifacts.metricsLine(row).utf8))
        } catch {
            throw OnnxTrainError.io("\(path): cannot write (\(error.localizedDescription))")
        }
    }

    /// Flushes the rows to disk.
    public func sync() throws {
        do { try handle.synchronize() } catch { throw OnnxTrainError.io("\(path): cannot write (\(error.localizedDescription))") }
    }
}
