import Foundation
import XCTest
@testable import OnnxTrain

final class NpzTests: XCTestCase {
    private func checkFixtureArrays(_ arrays: [String: Tensor], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Set(arrays.keys), ["x", "ids", "mask"], file: file, line: line)
        XCTAssertEqual(arrays["x"]?.shape, [2, 3], file: file, line: line)
        XCTAssertEqual(arrays["x"]?.scalars(as: Float.self).map { Double($0) }, DataFixtures.floatRamp(6), file: file, line: line)
        XCTAssertEqual(arrays["ids"]?.scalars(as: Int64.self), [-3, -2, -1, 0], file: file, line: line)
        XCTAssertEqual(arrays["mask"]?.scalars(as: Bool.self), [true, false, false], file: file, line: line)
    }

    func testReadsStoredAndDeflatedArchivesFromNumpy() throws {
        checkFixtureArrays(try Npz.readDictionary(contentsOf: DataFixtures.data("stored.npz")))
        checkFixtureArrays(try Npz.readDictionary(contentsOf: DataFixtures.data("deflated.npz")))
        // numpy's order is kept.
        XCTAssertEqual(try Npz.read(contentsOf: DataFixtures.data("stored.npz")).map(\.name), ["x", "ids", "mask"])
    }

    func testRoundTripStoredAndDeflatedInMemoryAndOnDisk() throws {
        let arrays: [(name: String, tensor: Tensor)] = [
            ("w", Tensor(shape: [3], scalars: [Double(1), -2, 3.5])),
            ("h", Tensor(shape: [2], scalars: [Float16(0.5), Float16(-1)])),
            ("big", Tensor(shape: [1000], scalars: (0..<1000).map { Int32($0 % 7) })),
        ]
        for compressed in [false, true] {
            let bytes = try Npz.encode(arrays, compressed: compressed)
            let back = try Npz.decode(bytes, name: "memory")
            XCTAssertEqual(back.map(\.name), ["w", "h", "big"])
            XCTAssertEqual(back[0].tensor.scalars(as: Double.self), [1, -2, 3.5])
            XCTAssertEqual(back[1].tensor.scalars(as: Float16.self), [0.5, -1])
            XCTAssertEqual(back[2].tensor.scalars(as: Int32.self), (0..<1000).map { Int32($0 % 7) })
            if compressed { XCTAssertLessThan(bytes.count, 1500, "deflate should shrink 4000 bytes of a repeating pattern") }
        }
        let dir = try DataFixtures.temporaryDirectory(self)
        try Npz.write(["b": Tensor(scalar: Int64(5)), "a": Tensor(scalar: true)], to: dir + "/d.npz", compressed: true)
        let back = try Npz.read(contentsOf: dir + "/d.npz")
        XCTAssertEqual(back.map(\.name), ["a", "b"])
        XCTAssertEqual(back[1].tensor.scalars(as: Int64.self), [5])
        XCTAssertEqual(back[1].tensor.shape, [])
    }

    func testBadArchivesNameTheFileAndArray() throws {
        assertOnnxTrainError(.invalidModel, containing: ["bad_member.npz", "array 'broken'", "data bytes"]) {
            try Npz.read(contentsOf: DataFixtures.data("bad_member.npz"))
        }
        assertOnnxTrainError(.invalidModel, containing: ["float32.npy", "zip"]) { try Npz.read(contentsOf: DataFixtures.data("float32.npy")) }
        assertOnnxTrainError(.invalidModel, containing: ["empty bytes"]) { try Npz.decode(Data(), name: "empty bytes") }
        assertOnnxTrainError(.invalidInput, containing: ["'a' given twice"]) {
            try Npz.encode([("a", Tensor(scalar: Float(1))), ("a", Tensor(scalar: Float(2)))])
        }
    }

    func testTruncatedAndCorruptedArchivesThrow() throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: DataFixtures.data("deflated.npz")))
        var rng = SplitMix(seed: 7)
        for n in stride(from: 0, to: bytes.count, by: 7) {
            XCTAssertThrowsError(try Npz.decode(bytes.prefix(n), name: "prefix")) { XCTAssertTrue($0 is OnnxTrainError, "\($0)") }
        }
        // Byte changes: either still a valid archive (e.g. a date field) or an OnnxTrainError.
        for _ in 0..<200 {
            var mutated = bytes
            mutated[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
            do { _ = try Npz.decode(mutated, name: "mutated") } catch { XCTAssertTrue(error is OnnxTrainError, "\(error)") }
        }
    }
}

/// A small seeded generator for reproducible mutations.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
