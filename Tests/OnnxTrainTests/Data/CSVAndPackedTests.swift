import Foundation
import XCTest
@testable import OnnxTrain

/// CSV label typing and sub-byte tensors in `.pb` files (issue 13, item 10).
final class CSVAndPackedTests: XCTestCase {
    func testCSVLabelsWrittenAsDecimalsAreRegressionTargets() throws {
        let regression = try CSVData.parse("a,y\n1,50.0\n2,-3.0\n", columns: .init(), label: "t.csv")
        XCTAssertEqual(regression.labels?.dtype, .float32)
        XCTAssertEqual(regression.labels?.scalars(as: Float.self), [50, -3])
        let classes = try CSVData.parse("a,y\n1,3\n2,-1\n", columns: .init(), label: "t.csv")
        XCTAssertEqual(classes.labels?.scalars(as: Int64.self), [3, -1])
        // The override, both ways.
        let forcedFloat = try CSVData.parse("a,y\n1,3\n", columns: .init(labelType: .float32), label: "t.csv")
        XCTAssertEqual(forcedFloat.labels?.scalars(as: Float.self), [3])
        let forcedInt = try CSVData.parse("a,y\n1,3.0\n", columns: .init(labelType: .int64), label: "t.csv")
        XCTAssertEqual(forcedInt.labels?.scalars(as: Int64.self), [3])
        assertOnnxTrainError(.invalidInput, containing: ["t.csv", "row 2", "not a class index"]) {
            try CSVData.parse("a,y\n1,3.5\n", columns: .init(labelType: .int64), label: "t.csv")
        }
        assertOnnxTrainError(.invalidInput, containing: ["int64 or float32"]) {
            try CSVData.parse("a,y\n1,3\n", columns: .init(labelType: .float64), label: "t.csv")
        }
    }

    func testTwoBitTensorsArePackedFourToAByte() throws {
        for dtype in [DType.int2, .uint2] {
            let values: [UInt8] = dtype == .int2 ? [0xFE, 0xFF, 0, 1, 0xFE] : [2, 3, 0, 1, 2]  // int2 kept sign-extended
            let storage = TensorStorage(zeroedByteCount: values.count)
            for (i, v) in values.enumerated() { storage.bytes.storeBytes(of: v, toByteOffset: i, as: UInt8.self) }
            let tensor = Tensor(dtype: dtype, shape: [5], storage: storage)
            let data = try tensor.protobufData(name: "t")
            // 0b01_00_11_10 then 0b10: the first element in the lowest bits, as ONNX packs int2.
            XCTAssertNotNil(data.range(of: Data([0x4E, 0x02])), "\(dtype): \(Array(data))")
            let back = try data.withUnsafeBytes { try Tensor(protobuf: $0) }
            XCTAssertEqual(back.dtype, dtype)
            XCTAssertEqual(Array(back.rawBytes), values)
        }
    }
}
