import Foundation
import XCTest
@testable import OnnxTrain

final class TensorProtoFilesTests: XCTestCase {
    func testReadsOnnxNumpyHelperFiles() throws {
        let entries = try TensorProtoFiles.readFolder(DataFixtures.data("pb"))
        XCTAssertEqual(entries.map(\.name), ["x", "ids"])
        XCTAssertEqual(entries[0].tensor.scalars(as: Float.self).map { Double($0) }, DataFixtures.floatRamp(6))
        XCTAssertEqual(entries[1].tensor.scalars(as: Int64.self), [-3, -2, -1, 0])
        let unnamed = try TensorProtoFiles.read(contentsOf: DataFixtures.data("pb_unnamed.pb"))
        XCTAssertEqual(unnamed.name, "")
        XCTAssertEqual(unnamed.tensor.scalars(as: Int32.self), [-3, -2, -1])
    }

    func testWriterProducesWhatOnnxWrites() throws {
        // onnx's numpy_helper.from_array writes dims, data_type, name, raw_data: the same bytes as ours.
        let path = DataFixtures.data("pb/input_0.pb")
        let onnxBytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let entry = try TensorProtoFiles.read(contentsOf: path)
        XCTAssertEqual(try entry.tensor.protobufData(name: entry.name), onnxBytes)
    }

    func testRoundTripEveryDTypeThroughAFolder() throws {
        let tensors: [(name: String, tensor: Tensor)] = [
            ("f", Tensor(shape: [2], scalars: [Float(1.5), -2])),
            ("s", Tensor(shape: [3], strings: ["a", "", "ünï"])),
            ("b", Tensor(shape: [2, 1], scalars: [true, false])),
            ("h", Tensor(shape: [1], scalars: [Float16(3)])),
            ("i4", Tensor(dtype: .int4, shape: [3], storage: {
                let s = TensorStorage(zeroedByteCount: 3)
                s.bytes.storeBytes(of: Int8(-8), toByteOffset: 0, as: Int8.self)
                s.bytes.storeBytes(of: Int8(7), toByteOffset: 1, as: Int8.self)
                s.bytes.storeBytes(of: Int8(-1), toByteOffset: 2, as: Int8.self)
                return s
            }())),
        ]
        let dir = try DataFixtures.temporaryDirectory(self)
        try TensorProtoFiles.writeFolder(tensors, to: dir + "/out", prefix: "output")
        let back = try TensorProtoFiles.readFolder(dir + "/out")
        XCTAssertEqual(back.map(\.name), ["f", "s", "b", "h", "i4"])
        XCTAssertEqual(back.map { URL(fileURLWithPath: $0.file).lastPathComponent }, (0..<5).map { "output_\($0).pb" })
        XCTAssertEqual(back[0].tensor.scalars(as: Float.self), [1.5, -2])
        XCTAssertEqual(back[1].tensor.strings, ["a", "", "ünï"])
        XCTAssertEqual(back[2].tensor.scalars(as: Bool.self), [true, false])
        XCTAssertEqual(back[2].tensor.shape, [2, 1])
        XCTAssertEqual(back[3].tensor.scalars(as: Float16.self), [3])
        XCTAssertEqual(back[4].tensor.scalars(as: Int8.self), [-8, 7, -1])
    }

    func testNaturalOrder() {
        XCTAssertEqual(["input_10.pb", "input_2.pb", "input_1.pb"].sorted(by: TensorProtoFiles.naturalOrder),
                       ["input_1.pb", "input_2.pb", "input_10.pb"])
    }

    func testErrorsNameTheFile() {
        assertOnnxTrainError(.invalidModel, containing: ["float32.npy", "TensorProto"]) {
            try TensorProtoFiles.read(contentsOf: DataFixtures.data("float32.npy"))
        }
        assertOnnxTrainError(.io, containing: ["nowhere"]) { try TensorProtoFiles.readFolder(DataFixtures.data("nowhere")) }
    }
}
