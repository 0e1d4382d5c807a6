import Foundation
import XCTest
@testable import OnnxTrain

final class SafeTensorsTests: XCTestCase {
    func testReadsTheSafetensorsLibraryOutput() throws {
        let file = try SafeTensors.read(contentsOf: DataFixtures.data("tensors.safetensors"))
        XCTAssertEqual(file.metadata, ["format": "pt", "note": "onnx-train fixture"])
        let t = file.dictionary
        XCTAssertEqual(t.count, 13)
        XCTAssertEqual(t["a_f32"]?.shape, [2, 3])
        XCTAssertEqual(t["a_f32"]?.scalars(as: Float.self).map { Double($0) }, DataFixtures.floatRamp(6))
        XCTAssertEqual(t["b_f64"]?.scalars(as: Double.self), DataFixtures.floatRamp(3))
        XCTAssertEqual(t["c_f16"]?.scalars(as: Float16.self).map { Double($0) }, DataFixtures.floatRamp(4))
        XCTAssertEqual(t["d_i8"]?.scalars(as: Int8.self), [-3, -2, -1, 0])
        XCTAssertEqual(t["e_i16"]?.scalars(as: Int16.self), [-3, -2, -1, 0])
        XCTAssertEqual(t["f_i32"]?.scalars(as: Int32.self), [-3, -2, -1, 0])
        XCTAssertEqual(t["g_i64"]?.scalars(as: Int64.self), [-3, -2, -1, 0])
        XCTAssertEqual(t["h_u8"]?.scalars(as: UInt8.self), [0, 1, 2, 3])
        XCTAssertEqual(t["i_u16"]?.scalars(as: UInt16.self), [0, 1, 2, 3])
        XCTAssertEqual(t["j_u32"]?.scalars(as: UInt32.self), [0, 1, 2, 3])
        XCTAssertEqual(t["k_u64"]?.scalars(as: UInt64.self), [0, 1, 2, 3])
        XCTAssertEqual(t["l_bool"]?.scalars(as: Bool.self), [true, false, false, true, false])
        XCTAssertEqual(t["m_scalar"]?.shape, [])
        XCTAssertEqual(t["m_scalar"]?.scalars(as: Float.self), [7])
    }

    func testBFloat16() throws {
        let w = try SafeTensors.read(contentsOf: DataFixtures.data("bf16.safetensors")).dictionary["w"]
        XCTAssertEqual(w?.dtype, .bfloat16)
        XCTAssertEqual(w?.shape, [2, 2])
        XCTAssertEqual(w?.scalars(as: BFloat16.self).map(\.floatValue), [1.5, -2, 0.25, 3])
    }

    func testRoundTripKeepsMetadataOrderAndValues() throws {
        let file = SafeTensorsFile(tensors: [
            ("z", Tensor(shape: [2], scalars: [BFloat16(1.5), BFloat16(-4)])),
            ("a", Tensor(shape: [1, 3], scalars: [UInt64(1), 2, UInt64.max])),
            ("e", Tensor(zeros: .float32, shape: [0])),
        ], metadata: ["step": "12"])
        let dir = try DataFixtures.temporaryDirectory(self)
        try SafeTensors.write(file, to: dir + "/w.safetensors")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/w.safetensors"))
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual(headerLength % 8, 0, "data must start 8-byte aligned")
        let back = try SafeTensors.read(contentsOf: dir + "/w.safetensors")
        XCTAssertEqual(back.metadata, ["step": "12"])
        XCTAssertEqual(back.tensors.map(\.name), ["z", "a", "e"], "data order is the write order")
        XCTAssertEqual(back.dictionary["z"]?.scalars(as: BFloat16.self).map(\.floatValue), [1.5, -4])
        XCTAssertEqual(back.dictionary["a"]?.scalars(as: UInt64.self), [1, 2, UInt64.max])
        XCTAssertEqual(back.dictionary["a"]?.shape, [1, 3])
        XCTAssertEqual(back.dictionary["e"]?.shape, [0])
    }

    func testMalformedFilesNameTheFileAndTensor() throws {
        assertOnnxTrainError(.invalidModel, containing: ["overrun.safetensors", "tensor 'w'", "data_offsets"]) {
            try SafeTensors.read(contentsOf: DataFixtures.data("overrun.safetensors"))
        }
        assertOnnxTrainError(.invalidModel, containing: ["short", "8-byte"]) { try SafeTensors.decode(Data([1, 2, 3]), name: "short") }
        var huge = Data([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])
        huge.append(Data("{}".utf8))
        assertOnnxTrainError(.invalidModel, containing: ["huge", "header length"]) { try SafeTensors.decode(huge, name: "huge") }
        func file(_ json: String, data: Int) -> Data {
            var d = Data()
            for i in 0..<8 { d.append(UInt8(truncatingIfNeeded: json.utf8.count >> (8 * i))) }
            d.append(Data(json.utf8))
            d.append(Data(count: data))
            return d
        }
        assertOnnxTrainError(.invalidModel, containing: ["j", "JSON"]) { try SafeTensors.decode(file("{not json", data: 0), name: "j") }
        assertOnnxTrainError(.invalidModel, containing: ["tensor 'x'", "unsupported dtype 'C64'"]) {
            try SafeTensors.decode(file(#"{"x":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#, data: 8), name: "c")
        }
        assertOnnxTrainError(.invalidModel, containing: ["tensor 'x'", "12 expected"]) {
            try SafeTensors.decode(file(#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: 8), name: "n")
        }
        assertOnnxTrainError(.invalidModel, containing: ["tensor 'x'", "negative"]) {
            try SafeTensors.decode(file(#"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#, data: 0), name: "n")
        }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: DataFixtures.data("tensors.safetensors")))
        for n in 0..<bytes.count {
            XCTAssertThrowsError(try SafeTensors.decode(bytes.prefix(n), name: "prefix")) { XCTAssertTrue($0 is OnnxTrainError) }
        }
    }
}
