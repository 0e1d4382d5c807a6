import ArgumentParser
import Foundation
import OnnxTrain
import Synchronization

/// `onnx-train bench MODEL.onnx --infer`: steady-state inference latency of any model, on
/// synthetic feeds. `onnx-train bench FOLDER`: training steps on a benchmark folder written by
/// Benchmarks/export_models.py, for Benchmarks/bench.py (`make bench`; one JSON line).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time inference of any model (MODEL.onnx --infer), or training steps on a benchmark folder.",
        discussion: """
        With MODEL.onnx and --infer: runs the model on synthetic feeds until it is warm (at least \
        --warmup runs and --warmup-seconds), then --steps timed runs, and prints the median, \
        minimum and 90th-percentile latency and the peak memory (RSS). Every input is shaped as \
        the model declares it; a symbolic or unknown dimension is --dim NAME=SIZE when given, \
        else --batch-size. Floating-point inputs are uniform in [-1, 1), integer and bool inputs \
        ones. --json prints one JSON line instead. Threads: every core, or OMP_NUM_THREADS / \
        OPENBLAS_NUM_THREADS. With --profile, another --steps runs follow with every node's \
        kernel call timed (like onnxruntime's enable_profiling): printed are the time per run \
        of each op type (total, share of the time in nodes, node count), the --profile-top \
        slowest nodes (name, op type, output shape, time) and the run time outside the nodes; \
        with --json the line holds them under "profile", every node in execution order. The \
        timed runs before are not profiled (a node costs one more branch there, no clock read). \
        With a FOLDER, --profile times the training graph's nodes the same way over another \
        --steps train steps on the first batch, then --steps optimizer steps as a whole; the \
        table comes before the JSON line, which holds them under "profile" and "optimizer_ms".

        FOLDER holds onnxruntime training artifacts (training_model.onnx, optimizer_model.onnx, \
        checkpoint), data.npz (input, labels), meta.json (rows_per_step, lr) and, for --infer, \
        inference.onnx. A step is `module(input, labels); optimizer.step(); lazy_reset_grad()`, \
        like onnxruntime's Module/Optimizer loop; step k uses batch k mod batches of data.npz. \
        Prints one JSON line: step times (seconds, after the warm-up), losses, peak RSS \
        (getrusage ru_maxrss, MiB) after training, the RSS before the model was loaded, and with \
        --infer the median latency of inference.onnx on the first batch. Under mpirun the \
        processes train data-parallel (each its own batch, the gradients averaged) and rank 0 \
        prints, adding the allreduce times and the gradient bytes. With --gemm-peak N \
        (no FOLDER needed) it times an N×N×N cblas_sgemm instead and prints the best GFLOP/s (and the kernel set OpenBLAS runs). \
        With --handoff-probe N it bounces one cache line between two threads N times, five \
        times over, and prints the round trip in nanoseconds (median and minimum of the five): \
        how much it costs the machine right now to pass data from one core to the other. \
        With --core-probe MS one thread per core runs 120×120×120 sgemms for MS milliseconds, \
        all at once, and prints each thread's GFLOP/s per second of wall time and per second of \
        its own CPU time: a core slower than the others right now, or one taken away for a while, \
        shows. OpenBLAS's thread count comes from OPENBLAS_NUM_THREADS.

        \(CLIFailure.exitCodeHelp)
        """
    )

    @Argument(help: "A .onnx model (with --infer), or a benchmark folder (Benchmarks/models/<name>).")
    var folder: String?

    @Option(name: .customLong("dim"), help: "A symbolic dimension's size for MODEL.onnx, NAME=SIZE (repeatable).")
    var dims: [String] = []

    @Option(name: .customLong("batch-size"), help: "The size of every symbolic dimension --dim does not set (MODEL.onnx).")
    var batchSize = 1

    @Flag(help: "Print one JSON line (MODEL.onnx; a benchmark folder always does).")
    var json = false

    @Option(help: "Timed steps.")
    var steps = 50

    @Option(help: "Untimed warm-up steps first (at least).")
    var warmup = 5

    @Option(name: .customLong("warmup-seconds"), help: "Warm up for at least this long too (threads and cores settle in the first ~0.1 s).")
    var warmupSeconds = 0.5

    @Flag(help: "Time inference: of MODEL.onnx, or of FOLDER/inference.onnx after the training steps.")
    var infer = false

    @Flag(help: "After the timed runs (steps), time every node over another --steps runs (train steps with a FOLDER) and print the time per op type and the slowest nodes.")
    var profile = false

    @Option(name: .customLong("profile-top"), help: "The slowest nodes --profile lists.")
    var profileTop = 15

    @Option(name: .customLong("gemm-peak"), help: "Time an N×N×N single-precision GEMM instead (best of --steps runs).")
    var gemmPeak: Int?

    @Option(name: .customLong("handoff-probe"), help: "Time N round trips of one cache line between two threads instead (five runs).")
    var handoffProbe: Int?

    @Option(name: .customLong("core-probe"), help: "Run small sgemms on every core at once for MS milliseconds and print each core's GFLOP/s instead.")
    var coreProbe: Int?

    func run() throws {
        let group = gemmPeak == nil && handoffProbe == nil && coreProbe == nil ? try ParallelJob.join() : nil
        try ParallelJob.run(group) {
            if let ms = coreProbe {
                print(try Self.json(try Self.cores(milliseconds: ms)))
                return
            }
            if let n = handoffProbe {
                print(try Self.json(try Self.handoff(rounds: n)))
                return
            }
            if let n = gemmPeak {
                print(try Self.json(try Self.gemm(n: n, runs: max(steps, 1))))
                return
            }
            guard let folder else { throw OnnxTrainError.invalidInput("bench needs MODEL.onnx --infer, a FOLDER, --gemm-peak N, --handoff-probe N or --core-probe MS") }
            if folder.hasSuffix(".onnx") {
                guard infer else { throw OnnxTrainError.invalidInput("\(folder): a model is timed with --infer (training is timed on artifact folders)") }
                try inferModel(folder)
                return
            }
            let result = try train(folder: folder, group: group)
            if group?.isMainProcess ?? true { print(try Self.json(result)) }
        }
    }

    func validate() throws {
        for item in dims {
            let parts = item.split(separator: "=", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, let n = Int(parts[1]), n >= 0 else {
                throw ValidationError("--dim expects NAME=SIZE with SIZE a whole number, got '\(item)'")
            }
        }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1, got \(batchSize)") }
        guard warmup >= 0, warmupSeconds >= 0, warmupSeconds.isFinite else { throw ValidationError("--warmup and --warmup-seconds must not be negative") }
        guard profileTop >= 0 else { throw ValidationError("--profile-top must not be negative, got \(profileTop)") }
    }

    /// Times inference of any model on synthetic feeds; prints a summary (or --json).
    func inferModel(_ path: String) throws {
        let baseline = Self.peakRSS()
        let session = try InferenceSession(path: path)
        var sizes: [String: Int] = [:]
        for item in dims {
            let parts = item.split(separator: "=", omittingEmptySubsequences: false)
            sizes[String(parts[0])] = Int(parts[1])
        }
        let feeds = try SyntheticFeeds.make(for: session.inputs, dimensions: sizes, defaultDimension: batchSize)
        let timing: InferenceTiming
        do { timing = try session.time(feeds, warmup: warmup, warmupSeconds: warmupSeconds, runs: steps) } catch let error as OnnxTrainError {
            throw error.prefixed(path)
        }
        let peak = Self.peakRSS()
        var nodeProfile: InferenceProfile?
        if profile {
            do { nodeProfile = try session.profile(feeds, runs: steps) } catch let error as OnnxTrainError { throw error.prefixed(path) }
        }
        let shapes = session.inputs.compactMap { info in feeds[info.name].map { "\(info.name) \($0.shape)" } }
        if json {
            var result: [String: Any] = ["model": path, "runs": steps, "median_ms": 1000 * timing.median, "min_ms": 1000 * timing.minimum,
                                         "p90_ms": 1000 * timing.p90, "peak_rss_mb": peak, "baseline_rss_mb": baseline,
                                         "inputs": shapes, "threads": BLAS.threadCount]
            if let nodeProfile { result["profile"] = Self.json(nodeProfile) }
            print(try Self.json(result))
            return
        }
        func ms(_ s: Double) -> String { String(format: s < 0.01 ? "%.3f ms" : "%.2f ms", 1000 * s) }
        print("\(path): \(steps) runs on \(shapes.joined(separator: ", ")), \(BLAS.threadCount) thread\(BLAS.threadCount == 1 ? "" : "s")")
        print("  latency: median \(ms(timing.median)), min \(ms(timing.minimum)), p90 \(ms(timing.p90)) (\(String(format: "%.1f", 1 / timing.median)) runs/s)")
        print("  peak memory: \(String(format: "%.1f", peak)) MiB (\(String(format: "%.1f", baseline)) MiB before loading the model)")
        if let nodeProfile { print(Self.table(nodeProfile, top: profileTop), terminator: "") }
    }

    /// `--profile --json`: per run, in milliseconds; every node in execution order.
    static func json(_ p: InferenceProfile) -> [String: Any] {
        ["runs": p.runs, "run_ms": 1000 * p.runSeconds, "node_ms": 1000 * p.nodeSeconds,
         "op_types": p.byOpType.map { ["op_type": $0.opType, "ms": 1000 * $0.seconds, "share": $0.share, "count": $0.count] as [String: Any] },
         "nodes": p.nodes.map { n -> [String: Any] in
             ["name": n.displayName, "op_type": n.opType, "domain": n.domain, "shape": n.outputShape.map { $0 as Any } ?? NSNull(),
              "ms": 1000 * n.seconds]
         }]
    }

    /// `--profile`'s text: the time per op type and the slowest nodes, per run.
    static func table(_ p: InferenceProfile, top: Int) -> String {
        func ms(_ s: Double) -> String { String(format: "%.3f ms", 1000 * s) }
        func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, width - s.count))
            return left ? s + fill : fill + s
        }
        var out = "  profile: \(p.runs) runs with every node timed: \(ms(p.runSeconds)) a run, \(ms(p.nodeSeconds)) in its \(p.nodes.count) nodes, "
            + "\(ms(max(0, p.runSeconds - p.nodeSeconds))) outside them\n"
        let types = p.byOpType
        let typeWidth = max(7, types.map(\.opType.count).max() ?? 0)
        out += "    \(pad("op type", typeWidth, left: true))  \(pad("total", 11))  \(pad("share", 6))  \(pad("nodes", 5))\n"
        for t in types {
            out += "    \(pad(t.opType, typeWidth, left: true))  \(pad(ms(t.seconds), 11))  \(pad(String(format: "%.1f%%", 100 * t.share), 6))  \(pad(String(t.count), 5))\n"
        }
        let slow = p.slowest(top)
        guard !slow.isEmpty else { return out }
        let names = slow.map { $0.displayName.count > 48 ? String($0.displayName.prefix(45)) + "..." : $0.displayName }
        let nameWidth = max(4, names.map(\.count).max() ?? 0)
        let opWidth = max(2, slow.map(\.opType.count).max() ?? 0)
        let shapes = slow.map { $0.outputShape.map { "\($0)" } ?? "-" }
        let shapeWidth = max(12, shapes.map(\.count).max() ?? 0)
        out += "  slowest nodes:\n"
        out += "    \(pad("node", nameWidth, left: true))  \(pad("op", opWidth, left: true))  \(pad("output shape", shapeWidth, left: true))  \(pad("time", 11))  \(pad("share", 6))\n"
        for (i, n) in slow.enumerated() {
            let share = p.nodeSeconds > 0 ? n.seconds / p.nodeSeconds : 0
            out += "    \(pad(names[i], nameWidth, left: true))  \(pad(n.opType, opWidth, left: true))  \(pad(shapes[i], shapeWidth, left: true))  "
                + "\(pad(ms(n.seconds), 11))  \(pad(String(format: "%.1f%%", 100 * share), 6))\n"
        }
        return out
    }

    /// Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB).
    static func peakRSS() -> Double {
        var usage = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_maxrss) / 1024
    }

    static func json(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    func train(folder: String, group: DataParallel?) throws -> [String: Any] {
        let baseline = Self.peakRSS()
        let dir = URL(fileURLWithPath: folder)
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        guard let metaData = FileManager.default.contents(atPath: path("meta.json")),
              let meta = try? JSONSerialization.jsonObject(with: metaData) as? [String: Any],
              let rows = meta["rows_per_step"] as? [String: Int], let lr = meta["lr"] as? Double else {
            throw OnnxTrainError.io("\(path("meta.json")): missing, or without rows_per_step and lr")
        }
        let arrays = try Npz.readDictionary(contentsOf: path("data.npz"))
        let state = try CheckpointState.load(from: path("checkpoint"))
        let module = try TrainingModule(trainingModel: try Model(contentsOf: path("training_model.onnx")), state: state)
        let optimizer = try Optimizer(path: path("optimizer_model.onnx"), module: module)

        // The first `batches` batches of data.npz, in order: step k trains batch k mod batches.
        let count = meta["batches"] as? Int ?? 1
        var data: [String: Tensor] = [:]
        for name in module.trainInputNames {
            guard let t = arrays[name], let r = rows[name], t.rank > 0, count * r <= t.shape[0] else {
                throw OnnxTrainError.invalidInput("\(path("data.npz")): '\(name)' has no \(count) batches of rows_per_step rows")
            }
            data[name] = Batches.rows(of: t, from: 0, count: count * r)
        }
        guard let first = module.trainInputNames.first, let batchSize = rows[first] else {
            throw OnnxTrainError.invalidInput("\(path("meta.json")): no rows_per_step for the first input")
        }
        // The library's Trainer runs the steps (no shuffling, no files); the timed part of a step
        // is the train step and the optimizer step, as onnxruntime's loop in bench.py.
        var configuration = Trainer.Configuration(batchSize: batchSize, steps: Int.max, learningRate: Float(lr))
        configuration.shuffle = false
        configuration.checkpointAtEpochEnd = false
        // Data-parallel: each process trains a batch of rows_per_step, so a step takes N of them.
        let processes = group?.size ?? 1
        guard count % processes == 0 else {
            throw OnnxTrainError.invalidInput("\(path("data.npz")): \(count) batches do not split into steps of \(processes) processes")
        }
        let trainer = try Trainer(module: module, optimizer: optimizer, train: data, configuration: configuration, dataParallel: group)
        guard trainer.batches.count == count / processes else {
            throw OnnxTrainError.invalidInput("\(path("data.npz")): rows_per_step gives \(trainer.batches.count) batches, meta.json says \(count)")
        }
        let clock = ContinuousClock()
        var times: [Double] = []
        var allreduceTimes: [Double] = []
        var losses: [Double] = []
        // Warm-up: at least `warmup` steps and `warmupSeconds`; then `steps` timed steps.
        let warmupStart = clock.now
        var warmed = false
        let wanted = steps
        trainer.onEvent = { [unowned trainer, warmup, warmupSeconds] event in
            guard case .step(let s) = event else { return }
            losses.append(s.loss)
            if warmed {
                times.append(s.seconds)
                if let t = s.allreduceSeconds { allreduceTimes.append(t) }
            } else if s.step >= warmup && Self.seconds(clock.now - warmupStart) >= warmupSeconds {
                warmed = true
            }
            if times.count >= wanted { trainer.requestStop() }
        }
        if wanted > 0 { try trainer.run() }
        var result: [String: Any] = ["times": times, "losses": losses, "peak_rss_mb": Self.peakRSS(),
                                     "baseline_rss_mb": baseline, "version": "onnx-train"]
        if group != nil {
            result["processes"] = processes
            result["allreduce_times"] = allreduceTimes
            result["gradient_bytes"] = module.trainableParameters.reduce(0) { $0 + ($1.grad?.byteCount ?? 0) }
        }
        if profile {
            // After the timed steps: the training graph's nodes, then the optimizer step as a whole.
            let runs = max(steps, 1)
            let nodes = try module.profileTrainStep(named: trainer.batches.batch(0), runs: runs)
            let start = clock.now
            for _ in 0..<runs { try optimizer.step() }
            let optimizerSeconds = Self.seconds(clock.now - start) / Double(runs)
            result["profile"] = Self.json(nodes)
            result["optimizer_ms"] = 1000 * optimizerSeconds
            if !json && (group?.isMainProcess ?? true) {
                print(Self.table(nodes, top: profileTop), terminator: "")
                print(String(format: "  optimizer step: %.3f ms", 1000 * optimizerSeconds))
            }
        }
        if infer {
            let session = try InferenceSession(path: path("inference.onnx"))
            guard let x = trainer.batches.batch(0)[first] else { throw OnnxTrainError.invalidInput("\(folder): no data") }
            var latencies: [Double] = []
            for step in 0..<(warmup + steps) {
                let start = clock.now
                _ = try session.run(tensors: ["input": x])
                if step >= warmup { latencies.append(Self.seconds(clock.now - start)) }
            }
            latencies.sort()
            result["infer_median_ms"] = 1000 * latencies[latencies.count / 2]
        }
        return result
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    /// The best of `runs` N×N×N sgemms, in GFLOP/s (2·N³ flops each), taken both ways a product can
    /// run: split across onnx-train's pool (what kernels get) and OpenBLAS's own threading. The peak
    /// is the better of the two, so it measures the machine rather than our split.
    static func gemm(n: Int, runs: Int) throws -> [String: Any] {
        guard n > 0 && n <= 16384 else { throw OnnxTrainError.invalidInput("--gemm-peak must be in 1...16384") }
        var a = [Float](repeating: 0, count: n * n), b = a, c = a
        for i in 0..<(n * n) { a[i] = Float(i % 7) * 0.25 - 0.5; b[i] = Float(i % 5) * 0.125 - 0.25 }
        let clock = ContinuousClock()
        var bestSplit = Double.infinity, bestOpenBLAS = Double.infinity
        a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
            for _ in 0...runs {  // the first run of each warms up threads and buffers
                var start = clock.now
                BLAS.gemm(transA: false, transB: false, m: n, n: n, k: n, alpha: 1, a: pa.baseAddress!, lda: n,
                           b: pb.baseAddress!, ldb: n, beta: 0, c: pc.baseAddress!, ldc: n)
                bestSplit = min(bestSplit, seconds(clock.now - start))
                start = clock.now
                BLAS.openBLASsgemm(threads: BLAS.threadCount, n: n, a: pa.baseAddress!, b: pb.baseAddress!, c: pc.baseAddress!)
                bestOpenBLAS = min(bestOpenBLAS, seconds(clock.now - start))
            }
        } } }
        let flops = 2 * Double(n) * Double(n) * Double(n)
        let best = min(bestSplit, bestOpenBLAS)
        return ["n": n, "best_s": best, "gflops": flops / best / 1e9, "threads": BLAS.threadCount,
                "split_gflops": flops / bestSplit / 1e9, "openblas_gflops": flops / bestOpenBLAS / 1e9,
                "openblas_core": BLAS.openBLASCore]
    }

    /// Each core's speed right now: one thread per core, all started together, each running
    /// 120×120×120 sgemms (below the pool's split threshold, so each stays on its thread) for
    /// `milliseconds`. Per thread: GFLOP/s over the wall time (what a kernel split evenly across the
    /// threads gets from it) and over the thread's own CPU time (the core's speed while it ran the
    /// thread). A thread slow on both runs on a slower core (a busy neighbour on the host); one slow
    /// only on the wall clock lost its core for a while.
    static func cores(milliseconds: Int) throws -> [String: Any] {
        guard milliseconds > 0 && milliseconds <= 60_000 else { throw OnnxTrainError.invalidInput("--core-probe must be in 1...60000 (milliseconds)") }
        let threads = max(1, ProcessInfo.processInfo.activeProcessorCount), n = 120
        let started = Atomic<Int>(0)
        let results = Mutex<[(wall: Double, cpu: Double)]>([])
        let done = DispatchSemaphore(value: 0)
        for _ in 0..<threads {
            Thread.detachNewThread {
                var a = [Float](repeating: 0, count: n * n), b = a, c = a
                for i in 0..<(n * n) { a[i] = Float(i % 7) * 0.25 - 0.5; b[i] = Float(i % 5) * 0.125 - 0.25 }
                // Start together: every thread waits until all are running.
                started.add(1, ordering: .acquiringAndReleasing)
                while started.load(ordering: .acquiring) < threads { sched_yield() }
                let clock = ContinuousClock(), start = clock.now, cpuStart = threadCPUSeconds()
                var products = 0
                a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                    repeat {
                        BLAS.gemm(transA: false, transB: false, m: n, n: n, k: n, alpha: 1, a: pa.baseAddress!, lda: n,
                                  b: pb.baseAddress!, ldb: n, beta: 0, c: pc.baseAddress!, ldc: n)
                        products += 1
                    } while seconds(clock.now - start) * 1000 < Double(milliseconds)
                } } }
                let flops = 2 * Double(n * n * n * products) / 1e9
                let wall = seconds(clock.now - start), cpu = threadCPUSeconds() - cpuStart
                results.withLock { $0.append((flops / wall, flops / max(cpu, 1e-9))) }
                done.signal()
            }
        }
        for _ in 0..<threads { done.wait() }
        let rates = results.withLock { $0 }.sorted { $0.wall > $1.wall }
        return ["milliseconds": milliseconds, "threads": threads,
                "gflops_wall": rates.map(\.wall), "gflops_cpu": rates.map(\.cpu),
                "slowest_to_fastest_wall": rates.last!.wall / rates.first!.wall,
                "slowest_to_fastest_cpu": rates.map(\.cpu).min()! / rates.map(\.cpu).max()!]
    }

    private static func threadCPUSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    /// One cache line two threads hand back and forth: the ping thread writes odd values, the pong
    /// thread even ones, each waiting for the other's.
    private final class CacheLine: Sendable {
        let turn = Atomic<Int>(0)

        /// Spins until `turn` is `value`; yields the core after a while, so that a busy machine (the
        /// partner thread not running) makes the probe slow, never hung.
        func wait(for value: Int) {
            var spins = 0
            while turn.load(ordering: .acquiring) != value {
                spins += 1
                if spins > 4096 { sched_yield(); spins = 0 }
            }
        }
    }

    /// The round trip of one cache line between two threads, in nanoseconds: five runs of `rounds`
    /// round trips each. On this benchmark machine it is ~50-200 ns normally, and 320-450 ns for
    /// seconds at a time in a state of the virtual machine in which kernels that hand data between
    /// the cores (the MLP's small products) slow down while a large GEMM does not (Benchmarks/README.md).
    static func handoff(rounds: Int) throws -> [String: Any] {
        guard rounds > 0 && rounds <= 100_000_000 else { throw OnnxTrainError.invalidInput("--handoff-probe must be in 1...100000000") }
        let clock = ContinuousClock()
        var perRun: [Double] = []
        for _ in 0..<5 {
            let line = CacheLine()
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                for i in 0..<rounds {
                    line.wait(for: 2 * i + 1)
                    line.turn.store(2 * i + 2, ordering: .releasing)
                }
                done.signal()
            }
            let start = clock.now
            for i in 0..<rounds {
                line.turn.store(2 * i + 1, ordering: .releasing)
                line.wait(for: 2 * i + 2)
            }
            perRun.append(seconds(clock.now - start) / Double(rounds) * 1e9)
            done.wait()
        }
        let sorted = perRun.sorted()
        return ["rounds": rounds, "round_trip_ns": sorted[2], "min_round_trip_ns": sorted[0], "runs_ns": perRun]
    }
}
