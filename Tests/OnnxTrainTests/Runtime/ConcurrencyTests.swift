import Foundation
import Synchronization
import XCTest
@testable import OnnxTrain

/// One session used from several threads, and the thread count changed while kernels run.
final class ConcurrencyTests: XCTestCase {
    func testRandomDrawsFromSeveralThreadsAreNeitherLostNorRepeated() throws {
        var graph = Graph()
        graph.nodes = [Node(opType: "RandomUniform", outputs: ["y"], attributes: ["shape": .ints([4])])]
        graph.outputs = [ValueInfo(name: "y", type: nil)]
        var model = Model(graph: graph)
        model.opsetImports = ["": 17]
        var options = SessionOptions()
        options.seed = 7
        let session = try InferenceSession(model: model, options: options)
        let threads = 4, runs = 300
        let results = Mutex<[Float]>([])
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            var mine: [Float] = []
            for _ in 0..<runs {
                if let y = try? session.run([:])["y"]?.tensor { mine += y.scalars(as: Float.self) }
            }
            results.withLock { $0 += mine }
        }
        // Every draw of the shared generator handed out exactly once: the same multiset as one
        // thread drawing threads * runs * 4 numbers (a copy written back late repeats numbers).
        var reference = RandomGenerator(seed: 7)
        let expected = (0..<(threads * runs * 4)).map { _ in Float(reference.nextDouble()) }
        XCTAssertEqual(results.withLock { $0 }.sorted(), expected.sorted())
    }

    func testChangingThreadCountWhileKernelsRunDoesNotHang() {
        let original = Parallel.threadCount
        defer { Parallel.threadCount = original }
        let running = Atomic<Bool>(true)
        let done = DispatchSemaphore(value: 0)
        let sums = Mutex<Int>(0)
        Thread.detachNewThread {
            var total = 0
            while running.load(ordering: .relaxed) {
                let partial = Atomic<Int>(0)
                Parallel.forRange(1 << 12, minimumChunk: 1) { range in
                    var s = 0
                    for i in range { s &+= i }
                    partial.wrappingAdd(s, ordering: .relaxed)
                }
                XCTAssertEqual(partial.load(ordering: .relaxed), (1 << 12) * ((1 << 12) - 1) / 2)
                total += 1
            }
            sums.withLock { $0 = total }
            done.signal()
        }
        for i in 0..<300 { Parallel.threadCount = 1 + i % 3 }
        running.store(false, ordering: .relaxed)
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success, "a parallel kernel hung while the pool was replaced")
        XCTAssertGreaterThan(sums.withLock { $0 }, 0)
    }
}
