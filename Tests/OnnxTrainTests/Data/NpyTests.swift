import Foundation
import XCTest
@testable import OnnxTrain

/// `.npy` reading against numpy-written fixtures, and writing read back by our reader
/// (the numpy side of writing is checked by `make_data_fixtures.py`'s format, byte for byte below).
final class NpyTests: XCTestCase {
    func testReadsEveryDTypeNumpyWrites() throws {
        let ramp = DataFixtures.floatRamp(6)
        let f16 = try Npy.read(contentsOf: DataFixtures.data("float16.npy"))
        XCTAssertEqual(f16.dtype, .float16)
        XCTAssertEqual(f16.shape, [2, 3])
        XCTAssertEqual(f16.scalars(as: Float16.self).map { Double($0) }, ramp)
        XCTAssertEqual(try Npy.read(contentsOf: DataFixtures.data("float32.npy")).scalars(as: Float.self).map { Double($0) }, ramp)
        XCTAssertEqual(try Npy.read(contentsOf: DataFixtures.data("float64.npy")).scalars(as: Double.self), ramp)
        XCTAssertEqual(try Npy.read(contentsOf: DataFixtures.data("int8.npy")).scalars(as: Int8.self), [-3, -2, -1, 0, 1, 2])
        XCTAssertEqual(try Npy.read(contentsOf: DataFixtures.data("int16.npy")).scalars(as: Int16.self), [-3, -2, -1, 0, 1, 2])
        XCTAssertEqual(try Npy.read(contentsOf: DataFixtures.data("int32.npy")).scalars(as: Int32.self), [-3, -2, -1, 0, 1, 2])
        XCTAssertEqual(try Npy.read(contentsOf: DataFixtures.data("int64.npy")).scalars(as: Int64.self), [-3, -2, -1, 0, 1, 2])
        XCTAssertEqual(try Npy.read(contentsOf: DataFixtures.data("uint8.npy")).scalars(as: UInt8.self), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(try Npy.read(contentsOf: DataFixtures.data("uint16.npy")).scalars(as: UInt16.self), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(try Npy.read(contentsOf: DataFixtures.data("uint32.npy")).scalars(as: UInt32.self), [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(try Npy.read(contentsOf: DataFixtures.data("uint64.npy")).scalars(as: UInt64.self), [0, 1, 2, 3, 4, 5])
        let b = try Npy.read(contentsOf: DataFixtures.data("bool.npy"))
        XCTAssertEqual(b.dtype, .bool)
        XCTAssertEqual(b.scalars(as: Bool.self), [true, false, false, true, false, false])
    }

    func testShapesAndHeaderVersions() throws {
        let scalar = try Npy.read(contentsOf: DataFixtures.data("scalar.npy"))
        XCTAssertEqual(scalar.shape, [])
        XCTAssertEqual(scalar.scalars(as: Float.self), [2.5])
        let empty = try Npy.read(contentsOf: DataFixtures.data("empty.npy"))
        XCTAssertEqual(empty.shape, [0, 3])
        XCTAssertEqual(empty.count, 0)
        let rank4 = try Npy.read(contentsOf: DataFixtures.data("rank4.npy"))
        XCTAssertEqual(rank4.shape, [2, 1, 3, 2])
        XCTAssertEqual(rank4.scalars(as: Float.self).map { Double($0) }, DataFixtures.floatRamp(12))
        for version in ["version2.npy", "version3.npy"] {
            let t = try Npy.read(contentsOf: DataFixtures.data(version))
            XCTAssertEqual(t.shape, [3, 2], version)
            XCTAssertEqual(t.scalars(as: Float.self).map { Double($0) }, DataFixtures.floatRamp(6), version)
        }
    }

    func testWriterMatchesNumpyByteForByte() throws {
        // numpy 1.26's np.save of the same arrays: header layout, padding and data identical.
        for name in ["float32.npy", "int64.npy", "bool.npy", "scalar.npy", "empty.npy", "rank4.npy", "float16.npy"] {
            let path = DataFixtures.data(name)
            let numpyBytes = try Data(contentsOf: URL(fileURLWithPath: path))
            XCTAssertEqual(try Npy.encode(try Npy.read(contentsOf: path)), numpyBytes, name)
        }
    }

    func testRoundTripThroughAFile() throws {
        let dir = try DataFixtures.temporaryDirectory(self)
        let t = Tensor(shape: [2, 2], scalars: [UInt16(1), 65535, 7, 0])
        try Npy.write(t, to: dir + "/u16.npy")
        let back = try Npy.read(contentsOf: dir + "/u16.npy")
        XCTAssertEqual(back.dtype, .uint16)
        XCTAssertEqual(back.shape, [2, 2])
        XCTAssertEqual(back.scalars(as: UInt16.self), [1, 65535, 7, 0])
        // A header longer than 64 KiB needs version 2.0.
        let manyDims = Tensor(zeros: .float32, shape: Array(repeating: 1, count: 30_000))
        let bytes = try Npy.encode(manyDims)
        XCTAssertEqual(bytes[6], 2)
        XCTAssertEqual(try Npy.decode(bytes, name: "long").shape.count, 30_000)
    }

    func testRefusalsNameTheFileAndTheReason() throws {
        assertOnnxTrainError(.invalidModel, containing: ["fortran.npy", "Fortran"]) { try Npy.read(contentsOf: DataFixtures.data("fortran.npy")) }
        assertOnnxTrainError(.invalidModel, containing: ["bigendian.npy", "big-endian", ">f4"]) { try Npy.read(contentsOf: DataFixtures.data("bigendian.npy")) }
        assertOnnxTrainError(.invalidModel, containing: ["complex.npy", "<c8"]) { try Npy.read(contentsOf: DataFixtures.data("complex.npy")) }
        assertOnnxTrainError(.invalidModel, containing: ["truncated.npy", "data bytes"]) { try Npy.read(contentsOf: DataFixtures.data("truncated.npy")) }
        assertOnnxTrainError(.invalidModel, containing: ["tiny.onnx", "magic"]) { try Npy.read(contentsOf: DataFixtures.data("tiny.onnx")) }
        assertOnnxTrainError(.io, containing: ["missing.npy"]) { try Npy.read(contentsOf: DataFixtures.data("missing.npy")) }
        assertOnnxTrainError(.unsupported, containing: ["bfloat16"]) { try Npy.encode(Tensor(zeros: .bfloat16, shape: [1])) }
    }

    func testEveryTruncationOfAValidFileIsAnError() throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: DataFixtures.data("float32.npy")))
        for n in 0..<bytes.count {
            XCTAssertThrowsError(try Npy.decode(bytes.prefix(n), name: "prefix \(n)")) { error in
                XCTAssertTrue(error is OnnxTrainError, "prefix \(n): \(error)")
            }
        }
    }
}
