import Foundation
import Synchronization
import XCTest
@testable import OnnxTrain
#if canImport(Glibc)
import Glibc
#endif

/// Where the threads' signals are held so that no handler runs inside oneDNN (`SignalHold`): around
/// a call (nested holds keep the outer one), on pool workers for life, and never left held on the
/// caller's thread after a graph run (Ctrl-C would never be handled).
final class SignalHoldTests: XCTestCase {
    private static func blocked(_ signal: Int32) -> Bool {
        var mask = sigset_t()
        pthread_sigmask(SIG_BLOCK, nil, &mask)
        return sigismember(&mask, signal) == 1
    }

    func testHoldsNestAndRestoreTheMask() {
        XCTAssertFalse(Self.blocked(SIGINT))
        SignalHold.around {
            XCTAssertTrue(Self.blocked(SIGINT))
            XCTAssertTrue(Self.blocked(SIGWINCH))
            XCTAssertTrue(Self.blocked(SIGALRM))
            XCTAssertFalse(Self.blocked(SIGSEGV), "faults stay deliverable")
            XCTAssertFalse(Self.blocked(SIGBUS), "faults stay deliverable")
            SignalHold.around { XCTAssertTrue(Self.blocked(SIGINT)) }
            XCTAssertTrue(Self.blocked(SIGINT), "an inner hold released the outer one")
            XCTAssertTrue(SignalHold.isHeld)
        }
        XCTAssertFalse(Self.blocked(SIGINT))
        XCTAssertFalse(SignalHold.isHeld)
    }

    func testPoolWorkersHoldTheirSignals() {
        let original = Parallel.threadCount
        defer { Parallel.threadCount = original }
        Parallel.threadCount = 2
        let caller = pthread_self()
        let workerStarted = Atomic<Bool>(false)
        let seen = Mutex<[(onWorker: Bool, blocked: Bool)]>([])
        Parallel.forRange(2) { range in
            if range.lowerBound == 0 {
                // Chunk 0 is the caller's: wait (up to 5 s) until a worker has taken chunk 1.
                let deadline = Date().addingTimeInterval(5)
                while !workerStarted.load(ordering: .acquiring) && Date() < deadline { sched_yield() }
            } else {
                workerStarted.store(true, ordering: .releasing)
            }
            let record = (onWorker: pthread_equal(pthread_self(), caller) == 0, blocked: Self.blocked(SIGINT) && Self.blocked(SIGWINCH))
            seen.withLock { $0.append(record) }
        }
        let records = seen.withLock { $0 }
        XCTAssertTrue(workerStarted.load(ordering: .acquiring), "no worker took chunk 1")
        XCTAssertEqual(records.filter(\.onWorker).count, 1)
        XCTAssertTrue(records.filter(\.onWorker).allSatisfy(\.blocked), "a pool worker takes signals")
        XCTAssertFalse(Self.blocked(SIGINT), "the caller's signals stay deliverable outside a hold")
    }

    func testGraphRunLeavesTheCallersSignalsDeliverable() throws {
        var graph = Graph()
        graph.nodes = [Node(opType: "Relu", inputs: ["x"], outputs: ["y"])]
        graph.inputs = [ValueInfo(name: "x", type: nil)]
        graph.outputs = [ValueInfo(name: "y", type: nil)]
        var model = Model(graph: graph)
        model.opsetImports = ["": 17]
        let session = try InferenceSession(model: model)
        let y = try XCTUnwrap(session.run(["x": .tensor(Tensor(shape: [3], scalars: [Float(-1), 0, 2]))])["y"]?.tensor)
        XCTAssertEqual(y.scalars(as: Float.self), [0, 0, 2])
        XCTAssertFalse(Self.blocked(SIGINT))
        XCTAssertFalse(Self.blocked(SIGWINCH))
        XCTAssertFalse(SignalHold.isHeld)
    }
}
