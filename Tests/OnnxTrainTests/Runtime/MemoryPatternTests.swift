import Foundation
import XCTest
@testable import OnnxTrain

/// The memory pattern: a session's first run records its large blocks, the runs after with the
/// same feed shapes place them in one arena. Blocks alive at the same time never share bytes,
/// blocks that do not die in the run (outputs) stay out of the arena, results are bit-identical
/// to runs without it, and a run that allocates otherwise than the recording leaves the pattern.
final class MemoryPatternTests: XCTestCase {
    func testPlacementSharesBytesOnlyBetweenBlocksThatAreNeverAliveTogether() {
        let page = 4096
        // Block 0 lives over allocations 0..<2, block 1 over 1..<3, block 2 over 2..<4; block 3
        // is never freed (an output).
        let sizes = [8 * page, 8 * page, 8 * page, 4 * page]
        let (offsets, total) = MemoryPattern.place(sizes: sizes, freedAt: [2, 3, 4, Int.max])
        XCTAssertEqual(offsets, [0, 8 * page, 0, nil], "block 2 reuses block 0's bytes; block 1 overlaps both in time")
        XCTAssertEqual(total, 16 * page, "the most bytes alive at once")
        // A small block alive with two large ones goes after them; a later one fits a dead gap.
        let (o2, t2) = MemoryPattern.place(sizes: [4 * page, 2 * page, 4 * page, page], freedAt: [3, 3, 4, 4])
        XCTAssertEqual(o2, [0, 8 * page, 4 * page, 0])
        XCTAssertEqual(t2, 10 * page)
    }

    /// x [64, 1024] -> Relu -> a; Neg(a) -> b; Mul(a, b) -> c; Exp(c) -> d; Add(d, a) -> y;
    /// every value 256 KiB, each a cached block.
    func graph() -> Graph {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.symbol("n"), .value(1024)]))]
        g.nodes = [Node(opType: "Relu", name: "relu", inputs: ["x"], outputs: ["a"]),
                   Node(opType: "Neg", name: "neg", inputs: ["a"], outputs: ["b"]),
                   Node(opType: "Mul", name: "mul", inputs: ["a", "b"], outputs: ["c"]),
                   Node(opType: "Exp", name: "exp", inputs: ["c"], outputs: ["d"]),
                   Node(opType: "Add", name: "add", inputs: ["d", "a"], outputs: ["y"])]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        return g
    }

    func session(memoryPlan: Bool) throws -> InferenceSession {
        var m = Model(graph: graph())
        m.opsetImports = ["": 17]
        var options = SessionOptions()
        options.optimize = false
        options.memoryPlan = memoryPlan
        return try InferenceSession(model: m, options: options)
    }

    func feed(_ rows: Int, seed: Float) -> [String: Value] {
        let values = (0..<rows * 1024).map { Float(($0 * 7919) % 2003) / 1000 - 1 + seed }
        return ["x": .tensor(Tensor(shape: [rows, 1024], scalars: values))]
    }

    func bits(_ result: [String: Value], _ name: String = "y") -> [UInt32] {
        result[name]?.tensor?.scalars(as: Float.self).map(\.bitPattern) ?? []
    }

    func testReplayedRunsMatchRunsWithoutThePatternAndKeepOutputsOutOfTheArena() throws {
        let plain = try session(memoryPlan: false)
        let patterned = try session(memoryPlan: true)
        XCTAssertNil(plain.memoryPatterns)
        let expected = try (0..<3).map { try bits(plain.run(feed(64, seed: Float($0)))) }

        let placedBefore = MemoryPattern.arenaBlocks.load(ordering: .relaxed)
        let first = try patterned.run(feed(64, seed: 0))  // records
        XCTAssertEqual(patterned.memoryPatterns?.arenaBytes, 0, "one run only records")
        let second = try patterned.run(feed(64, seed: 1))  // builds the pattern and replays it
        let arena = try XCTUnwrap(patterned.memoryPatterns?.arenaBytes)
        XCTAssertGreaterThan(arena, 0)
        // Every value is 256 KiB. The in-place plan writes c, d and y over b's block, which the
        // run returns (y): only a's block dies in the run; never more than three are alive.
        XCTAssertLessThanOrEqual(arena, 3 * 262_144)
        let placed = MemoryPattern.arenaBlocks.load(ordering: .relaxed) - placedBefore
        XCTAssertGreaterThanOrEqual(placed, 1, "the replayed run took its intermediate block from the arena")
        let third = try patterned.run(feed(64, seed: 2))
        XCTAssertEqual(bits(first), expected[0])
        XCTAssertEqual(bits(second), expected[1], "the second run's output is not overwritten by the third run")
        XCTAssertEqual(bits(third), expected[2])

        // Another batch size records again, and its second run replays its own pattern.
        let small = try plain.run(feed(32, seed: 3))
        XCTAssertEqual(bits(try patterned.run(feed(32, seed: 3))), bits(small))
        XCTAssertEqual(bits(try patterned.run(feed(32, seed: 3))), bits(small))
        XCTAssertLessThanOrEqual(try XCTUnwrap(patterned.memoryPatterns?.arenaBytes), 3 * 131_072)
        // A fetch of an intermediate value is another key: its value stays out of the arena.
        let fetched = try plain.run(feed(32, seed: 4), fetches: ["c", "y"])
        for _ in 0..<3 {
            let r = try patterned.run(feed(32, seed: 4), fetches: ["c", "y"])
            XCTAssertEqual(bits(r, "c"), bits(fetched, "c"))
            XCTAssertEqual(bits(r, "y"), bits(fetched, "y"))
        }
    }

    /// A session run alternately with two fetch sets and two batch sizes (a training step and an
    /// evaluation through one session) keeps a pattern per key: every key's runs after its first
    /// two replay, bit-identical to runs without the pattern; past `maxKeys` keys the least
    /// recently run is dropped.
    func testAlternatingKeysEachReplayTheirOwnPatternAndTheKeysKeptAreBounded() throws {
        let plain = try session(memoryPlan: false)
        let patterned = try session(memoryPlan: true)
        let patterns = try XCTUnwrap(patterned.memoryPatterns)
        let keys: [(rows: Int, fetches: [String])] = [(64, ["y"]), (64, ["c", "y"]), (32, ["y"])]
        for round in 0..<4 {
            for (i, key) in keys.enumerated() {
                let f = feed(key.rows, seed: Float(round * 3 + i))
                let expected = try plain.run(f, fetches: key.fetches)
                let before = MemoryPattern.arenaBlocks.load(ordering: .relaxed)
                let result = try patterned.run(f, fetches: key.fetches)
                let placed = MemoryPattern.arenaBlocks.load(ordering: .relaxed) - before
                for name in key.fetches {
                    XCTAssertEqual(bits(result, name), bits(expected, name), "round \(round), key \(i), \(name)")
                }
                if round == 0 {
                    XCTAssertEqual(placed, 0, "key \(i)'s first run records")
                } else {
                    XCTAssertGreaterThanOrEqual(placed, 1, "round \(round): key \(i) replays its pattern")
                    XCTAssertGreaterThan(patterns.arenaBytes, 0)
                }
            }
        }
        XCTAssertEqual(patterns.keyCount, 3)
        // Two more keys, each run twice: five keys seen, four kept; the first key (run least
        // recently) records again.
        for rows in [16, 8] {
            for _ in 0..<2 { _ = try patterned.run(feed(rows, seed: 0)) }
        }
        XCTAssertEqual(patterns.keyCount, MemoryPatternCache.maxKeys)
        let before = MemoryPattern.arenaBlocks.load(ordering: .relaxed)
        let again = try patterned.run(feed(64, seed: 9))
        XCTAssertEqual(MemoryPattern.arenaBlocks.load(ordering: .relaxed) - before, 0, "the dropped key records again")
        XCTAssertEqual(bits(again), bits(try plain.run(feed(64, seed: 9))))
        XCTAssertEqual(patterns.keyCount, MemoryPatternCache.maxKeys)
    }

    /// The blocks whose bytes a block shares, found by the sweep over offsets, are those a pairwise
    /// comparison finds: every earlier block with an overlapping byte range.
    func testOverlapsAreTheEarlierBlocksSharingBytes() throws {
        let page = 4096
        var sizes: [Int] = [], freedAt: [Int] = []
        for k in 0..<60 {
            sizes.append((1 + (k * 37) % 9) * page)
            // Each block dies 1 to 6 allocations later; every eleventh is never freed.
            freedAt.append(k % 11 == 10 ? Int.max : k + 1 + (k * 13) % 6)
        }
        let recording = AllocationRecording()
        recording.sizes = sizes
        recording.freedAt = freedAt
        recording.closed = true
        let pattern = try XCTUnwrap(MemoryPattern(recording))
        var pairs = 0
        for k in sizes.indices {
            var expected: [Int] = []
            if let a = pattern.offsets[k] {
                for j in 0..<k {
                    guard let b = pattern.offsets[j] else { continue }
                    if b < a + sizes[k] && a < b + sizes[j] {
                        expected.append(j)
                        XCTAssertLessThanOrEqual(freedAt[j], k, "blocks \(j) and \(k) share bytes while both alive")
                    }
                }
            }
            XCTAssertEqual(pattern.overlaps[k], expected, "block \(k)")
            pairs += expected.count
        }
        XCTAssertGreaterThan(pairs, 20, "the recording reuses bytes")
    }

    func testARunThatAllocatesOtherwiseLeavesThePattern() throws {
        let sizes = [65_536, 65_536]
        let recording = AllocationRecording()
        recording.sizes = sizes
        recording.freedAt = [1, 2]
        recording.closed = true
        let pattern = try XCTUnwrap(MemoryPattern(recording))
        XCTAssertEqual(pattern.arenaBytes, 65_536, "the two blocks are never alive together")
        // A replay that keeps block 0 alive when block 1 comes: block 1 gets a block of its own.
        XCTAssertTrue(BufferCache.beginReplay(pattern))
        let run = MemoryPatternRun(pattern: pattern)
        let (a, b) = run.with { (BufferCache.allocate(65_536)!, BufferCache.allocate(65_536)!) }
        XCTAssertEqual(a, pattern.arena)
        XCTAssertNotEqual(b, pattern.arena, "block 0's bytes are still in use")
        XCTAssertTrue(run.diverged)
        BufferCache.end(run)
        XCTAssertTrue(pattern.failed)
        XCTAssertFalse(BufferCache.beginReplay(pattern), "a pattern a run left is not replayed")
        BufferCache.recycle(a, 65_536)
        BufferCache.recycle(b, 65_536)
        XCTAssertEqual(pattern.liveCount, 0)
        // A request of another size than recorded also leaves the pattern.
        let other = try XCTUnwrap(MemoryPattern(recording))
        XCTAssertTrue(BufferCache.beginReplay(other))
        let run2 = MemoryPatternRun(pattern: other)
        let c = run2.with { BufferCache.allocate(3 * 65_536)! }
        XCTAssertNotEqual(c, other.arena)
        XCTAssertTrue(run2.diverged)
        BufferCache.end(run2)
        BufferCache.recycle(c, 3 * 65_536)
    }

    /// An Inception-like block: x [8, 3, 32, 32] -> Conv 3x3 (16) -> Relu -> MaxPool 2x2 -> three
    /// branches (Conv 1x1, Conv 3x3, MaxPool 3x3) -> Concat -> Relu -> GlobalAveragePool, with the
    /// default optimisations; every activation a cached block.
    func inceptionLike() throws -> Model {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.symbol("n"), .value(3), .value(32), .value(32)]))]
        func weights(_ name: String, _ shape: [Int]) {
            let count = shape.reduce(1, *)
            let values = (0..<count).map { Float(($0 * 7919 + name.count * 104_729) % 2003) / 2003 - 0.5 }
            g.initializers[name] = Tensor(shape: shape, scalars: values)
            g.initializerNames.append(name)
        }
        weights("w1", [16, 3, 3, 3]); weights("b1", [16])
        weights("wa", [8, 16, 1, 1]); weights("wb", [8, 16, 3, 3]); weights("bb", [8])
        let pad1: [String: Attribute] = ["pads": .ints([1, 1, 1, 1])]
        g.nodes = [Node(opType: "Conv", name: "conv1", inputs: ["x", "w1", "b1"], outputs: ["c1"], attributes: pad1),
                   Node(opType: "Relu", name: "relu1", inputs: ["c1"], outputs: ["r1"]),
                   Node(opType: "MaxPool", name: "pool1", inputs: ["r1"], outputs: ["p1"],
                        attributes: ["kernel_shape": .ints([2, 2]), "strides": .ints([2, 2])]),
                   Node(opType: "Conv", name: "a", inputs: ["p1", "wa"], outputs: ["ya"]),
                   Node(opType: "Conv", name: "b", inputs: ["p1", "wb", "bb"], outputs: ["yb"], attributes: pad1),
                   Node(opType: "MaxPool", name: "c", inputs: ["p1"], outputs: ["yc"],
                        attributes: ["kernel_shape": .ints([3, 3]), "pads": .ints([1, 1, 1, 1])]),
                   Node(opType: "Concat", name: "concat", inputs: ["ya", "yb", "yc"], outputs: ["cat"], attributes: ["axis": .int(1)]),
                   Node(opType: "Relu", name: "relu2", inputs: ["cat"], outputs: ["r2"]),
                   Node(opType: "GlobalAveragePool", name: "gap", inputs: ["r2"], outputs: ["y"])]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return m
    }

    func testAConvolutionBlockReplayedMatchesItsRunsWithoutThePattern() throws {
        var off = SessionOptions()
        off.memoryPlan = false
        let plain = try InferenceSession(model: try inceptionLike(), options: off)
        let patterned = try InferenceSession(model: try inceptionLike())
        func images(_ seed: Int) -> [String: Value] {
            let values = (0..<8 * 3 * 32 * 32).map { Float(($0 * 31 + seed * 977) % 1009) / 1009 - 0.5 }
            return ["x": .tensor(Tensor(shape: [8, 3, 32, 32], scalars: values))]
        }
        let placedBefore = MemoryPattern.arenaBlocks.load(ordering: .relaxed)
        var kept: [[UInt32]] = []
        for seed in 0..<4 {
            let expected = try bits(plain.run(images(seed)))
            kept.append(try bits(patterned.run(images(seed))))
            XCTAssertEqual(kept[seed], expected, "run \(seed)")
        }
        for seed in 0..<4 { XCTAssertEqual(kept[seed], try bits(plain.run(images(seed))), "run \(seed)'s output, after the runs that followed") }
        XCTAssertGreaterThan(MemoryPattern.arenaBlocks.load(ordering: .relaxed) - placedBefore, 6, "the replayed runs took their activations from the arena")
        // The arena holds the most bytes alive at once: less than the activations' sum (c1 alone is 512 KiB).
        let arena = try XCTUnwrap(patterned.memoryPatterns?.arenaBytes)
        XCTAssertGreaterThanOrEqual(arena, 8 * 16 * 32 * 32 * 4)
        XCTAssertLessThan(arena, 3 * 8 * 16 * 32 * 32 * 4)
    }
}
