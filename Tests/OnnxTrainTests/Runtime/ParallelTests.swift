import XCTest
@testable import OnnxTrain

final class ParallelTests: XCTestCase {
    /// Every index is visited exactly once, by contiguous chunks, whatever the split.
    func testChunksCoverTheRangeOnce() {
        for count in [0, 1, 2, 3, 7, 1000, 100_003] {
            for minimumChunk in [1, 16, 4096] {
                let visits = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(count, 1))
                defer { visits.deallocate() }
                visits.initialize(repeating: 0)
                Parallel.forRange(count, minimumChunk: minimumChunk) { range in
                    for i in range { visits[i] += 1 }
                }
                XCTAssertTrue(visits.prefix(count).allSatisfy { $0 == 1 }, "count \(count), minimumChunk \(minimumChunk)")
            }
        }
    }

    /// A parallel job inside a chunk runs inline instead of deadlocking on the busy pool, and a
    /// BLAS product inside a chunk gives the same result as outside.
    func testNestedCallsAndBLASInsideChunks() {
        let n = 64
        let a = (0..<(n * n)).map { Float($0 % 13) / 13 }
        var expected = [Float](repeating: 0, count: n * n)
        BLAS.gemm(transA: false, transB: false, m: n, n: n, k: n, alpha: 1, a: a, lda: n, b: a, ldb: n, beta: 0, c: &expected, ldc: n)
        let results = UnsafeMutableBufferPointer<Float>.allocate(capacity: 4 * n * n)
        defer { results.deallocate() }
        var innerSum = [Int](repeating: 0, count: 4)
        innerSum.withUnsafeMutableBufferPointer { sums in
            Parallel.forRange(4) { range in
                for job in range {
                    BLAS.gemm(transA: false, transB: false, m: n, n: n, k: n, alpha: 1, a: a, lda: n, b: a, ldb: n,
                               beta: 0, c: results.baseAddress! + job * n * n, ldc: n)
                    var total = 0
                    Parallel.forRange(100) { inner in total += inner.reduce(0, +) }
                    sums[job] = total
                }
            }
        }
        XCTAssertEqual(innerSum, [4950, 4950, 4950, 4950])
        for job in 0..<4 { XCTAssertEqual(Array(results[(job * n * n)..<((job + 1) * n * n)]), expected, "job \(job)") }
    }

    /// Many small jobs in a row (a training step's pattern) all complete with correct sums.
    func testManyJobsInARow() {
        let values = (0..<10_000).map { Double($0) }
        for _ in 0..<2_000 {
            // Each chunk writes its sum at its first index, which only it owns.
            var partial = [Double](repeating: 0, count: values.count)
            partial.withUnsafeMutableBufferPointer { out in
                Parallel.forRange(values.count, minimumChunk: 1000) { range in
                    out[range.lowerBound] = values[range].reduce(0, +)
                }
            }
            XCTAssertEqual(partial.reduce(0, +), 49_995_000)
        }
    }

    /// A worker that does not get the core (held here) leaves its chunks to the caller, which
    /// runs them once its own chunk is done and returns without waiting for that worker; once
    /// free, the worker takes chunks again, and every chunk of every job runs exactly once.
    func testCallerRunsChunksNoWorkerClaimed() throws {
        let pool = WorkerPool(threadCount: 2)
        defer { pool.shutdown() }
        let caller = pthread_self()
        for held in [true, false, true] {
            pool.workersHeld.store(held, ordering: .releasing)
            for _ in 0..<200 {
                let runs = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 8)
                defer { runs.deallocate() }
                runs.initialize(repeating: 0)
                let onCaller = UnsafeMutableBufferPointer<Bool>.allocate(capacity: 8)
                defer { onCaller.deallocate() }
                onCaller.initialize(repeating: false)
                pool.run(chunks: 8) { i, n in
                    runs[i] += n == 8 ? 1 : 100
                    onCaller[i] = pthread_equal(pthread_self(), caller) != 0
                }
                XCTAssertEqual(Array(runs), [Int32](repeating: 1, count: 8), "held \(held)")
                XCTAssertTrue(onCaller[0], "chunk 0 is the caller's")
                if held { XCTAssertEqual(Array(onCaller), [Bool](repeating: true, count: 8), "a held worker claims nothing") }
            }
        }
    }

    /// The thread count reads back as set (1 means no pool: everything inline, still complete).
    func testThreadCountReadsBackAsSet() {
        let original = Parallel.threadCount
        defer { Parallel.threadCount = original }
        Parallel.threadCount = 1
        XCTAssertEqual(Parallel.threadCount, 1)
        var seen = [Int](repeating: 0, count: 5000)
        seen.withUnsafeMutableBufferPointer { out in
            Parallel.forRange(out.count) { range in for i in range { out[i] += 1 } }
        }
        XCTAssertEqual(seen, [Int](repeating: 1, count: 5000))
        Parallel.threadCount = 2
        XCTAssertEqual(Parallel.threadCount, 2)
    }
}
