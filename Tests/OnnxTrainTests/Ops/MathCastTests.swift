import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// Cast semantics; float8 expectations follow the ONNX 1.22 suite (ml_dtypes rounding).
final class MathCastTests: XCTestCase {
    func testFloatToIntegerTruncatesAndIntegersWrap() throws {
        XCTAssertEqual(try Tensor(shape: [3], scalars: [Float(-1.7), 2.9, -0.5]).cast(to: .int32).scalars(as: Int32.self), [-1, 2, 0])
        // numpy: np.array([300, -129, 70000]).astype(np.int8) == [44, 127, 112]
        XCTAssertEqual(try Tensor(shape: [3], scalars: [Int64(300), -129, 70000]).cast(to: .int8).scalars(as: Int8.self), [44, 127, 112])
        XCTAssertEqual(try Tensor(shape: [2], scalars: [Float(0), .nan]).cast(to: .bool).scalars(as: Bool.self), [false, true])
    }

    func testFloat8RoundingAndSaturation() throws {
        let x = Tensor(shape: [9], scalars: [Float(448), 464, 470, 1e-3, -0.0, -1e-9, 0.3, .infinity, -.infinity])
        // 464 is a tie between 448 and (virtual) 480 and goes to even 448; 470 rounds past the top.
        XCTAssertEqual(try x.cast(to: .float8e4m3fn).scalars(as: UInt8.self), [126, 126, 126, 1, 128, 128, 42, 126, 254])
        XCTAssertEqual(try x.cast(to: .float8e4m3fn, saturate: false).scalars(as: UInt8.self), [126, 126, 127, 1, 128, 128, 42, 127, 255])
        // fnuz: no negative zero (small negatives become +0), a single NaN 0x80.
        XCTAssertEqual(try x.cast(to: .float8e4m3fnuz, saturate: false).scalars(as: UInt8.self), [128, 128, 128, 1, 0, 0, 50, 128, 128])
        XCTAssertEqual(try x.cast(to: .float8e5m2).scalars(as: UInt8.self), [95, 95, 95, 20, 128, 128, 53, 123, 251])
        XCTAssertEqual(try x.cast(to: .float8e5m2, saturate: false).scalars(as: UInt8.self), [95, 95, 95, 20, 128, 128, 53, 124, 252])
        // And back: 0x7E is 448, 0x2A is 0.3125, e5m2 0x7C is inf.
        let codes = Tensor(dtype: .float8e5m2, shape: [2], storage: Tensor(shape: [2], scalars: [UInt8(0x7C), 0x35]).storage)
        XCTAssertEqual(try codes.cast(to: .float32).scalars(as: Float.self), [.infinity, 0.3125])
    }

    func testFourBitTypes() throws {
        let x = Tensor(shape: [5], scalars: [Float(-9), -8, 7, 8, 15])
        XCTAssertEqual(try x.cast(to: .int4).scalars(as: Int8.self), [7, -8, 7, -8, -1])
        XCTAssertEqual(try x.cast(to: .uint4).scalars(as: UInt8.self), [7, 8, 7, 8, 15])
        // float4e2m1 rounds to nearest even on {0, .5, 1, 1.5, 2, 3, 4, 6} and saturates.
        let f = Tensor(shape: [5], scalars: [Float(0.25), -3.5, 9, 1.25, -0.0])
        XCTAssertEqual(try f.cast(to: .float4e2m1).scalars(as: UInt8.self), [0, 0xE, 7, 2, 8])
    }

    func testStringsFollowOnnxruntime() throws {
        // onnxruntime 1.19.2: strtod parsing (INF, NaN, hex, leading blanks) and "%.8g" formatting.
        let s = Tensor(shape: [5], strings: ["1.5", "-INF", "NaN", "  42", "0x10"])
        let f = try s.cast(to: .float32).scalars(as: Float.self)
        XCTAssertEqual(f[0], 1.5)
        XCTAssertEqual(f[1], -.infinity)
        XCTAssertTrue(f[2].isNaN)
        XCTAssertEqual(Array(f[3...]), [42, 16])
        XCTAssertThrowsError(try Tensor(shape: [1], strings: ["abc"]).cast(to: .float32))
        XCTAssertEqual(try Tensor(shape: [2], strings: ["9007199254740993", "3000000000"]).cast(to: .int64).scalars(as: Int64.self),
                       [9_007_199_254_740_993, 3_000_000_000])
        XCTAssertEqual(try Tensor(shape: [1], strings: ["3000000000"]).cast(to: .int32).scalars(as: Int32.self), [-1_294_967_296])
        let floats = Tensor(shape: [8], scalars: [Float(0.1), -2, 1e-5, 123456789, .infinity, -.infinity, .nan, 1.0 / 3])
        XCTAssertEqual(try floats.cast(to: .string).strings,
                       ["0.1", "-2", "9.9999997e-06", "1.2345679e+08", "INF", "-INF", "NaN", "0.33333334"])
        XCTAssertEqual(try Tensor(shape: [2], scalars: [1.0 / 3, 1e-5]).cast(to: .string).strings, ["0.33333333", "1e-05"])
        XCTAssertEqual(try Tensor(shape: [3], scalars: [true, false, true]).cast(to: .string).strings, ["1", "0", "1"])
    }

    func testCastLikeTakesTheTargetType() throws {
        let y = try runNode("CastLike", opset: 21, [Tensor(shape: [2], scalars: [Float(1.25), -2]), Tensor(scalar: Float16(0))])[0]
        XCTAssertEqual(y.dtype, .float16)
        XCTAssertEqual(y.scalars(as: Float16.self), [1.25, -2])
    }

    func testOutOfRangeFloatToIntegerMatchesOnnxruntime() throws {
        // onnxruntime 1.19.2 on x86-64 for [nan, inf, -inf, 3e9, -3e9, -1.5, 300.7, -129.2].
        let f = Tensor(shape: [8], scalars: [Float.nan, .infinity, -.infinity, 3e9, -3e9, -1.5, 300.7, -129.2])
        let m = Int32.min
        XCTAssertEqual(try f.cast(to: .int32).scalars(as: Int32.self), [m, m, m, m, m, -1, 300, -129])
        XCTAssertEqual(try f.cast(to: .int64).scalars(as: Int64.self), [.min, .min, .min, 3_000_000_000, -3_000_000_000, -1, 300, -129])
        XCTAssertEqual(try f.cast(to: .uint8).scalars(as: UInt8.self), [0, 0, 0, 0, 0, 255, 44, 127])
        XCTAssertEqual(try f.cast(to: .int16).scalars(as: Int16.self), [0, 0, 0, 0, 0, -1, 300, -129])
        XCTAssertEqual(try f.cast(to: .uint32).scalars(as: UInt32.self),
                       [2_147_483_648, 0, 2_147_483_648, 3_000_000_000, 2_147_483_648, 4_294_967_295, 300, 4_294_967_167])
        XCTAssertEqual(try f.cast(to: .uint64).scalars(as: UInt64.self),
                       [9_223_372_036_854_775_808, 0, 9_223_372_036_854_775_808, 3_000_000_000, 18_446_744_070_709_551_616,
                        18_446_744_073_709_551_615, 300, 18_446_744_073_709_551_487])
    }
}
