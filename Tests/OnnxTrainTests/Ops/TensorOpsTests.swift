import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// Tricky semantics of the shape/movement, indexing and control flow ops; expected values come
/// from numpy (slicing, np.pad, np.unique, np.multiply.at) as noted beside each case.
final class TensorOpsTests: XCTestCase {
    private func ints(_ shape: [Int], _ values: [Int64]) -> Tensor { Tensor(shape: shape, scalars: values) }
    private func i64(_ v: [Int64]) -> Tensor { Tensor(shape: [v.count], scalars: v) }

    func testSliceNegativeStepsClampLikeNumpy() throws {
        let x = ints([3, 4], (0..<12).map { Int64($0) })
        // x[::-2, 3:0:-2]
        var y = try runNode("Slice", opset: 13, [x, i64([-1, 3]), i64([Int64.min, 0]), i64([0, 1]), i64([-2, -2])])[0]
        XCTAssertEqual(y.shape, [2, 2])
        XCTAssertEqual(y.scalars(as: Int64.self), [11, 9, 3, 1])
        // x[-100:100:1, 10:-10:-3]: out-of-range bounds clamp.
        y = try runNode("Slice", opset: 13, [x, i64([-100, 10]), i64([100, -10]), nil, i64([1, -3])])[0]
        XCTAssertEqual(y.shape, [3, 2])
        XCTAssertEqual(y.scalars(as: Int64.self), [3, 0, 7, 4, 11, 8])
    }

    func testPadModesMatchNumpy() throws {
        let a = ints([4], [1, 2, 3, 4])
        let reflect = try runNode("Pad", opset: 19, [a, i64([3, 2])], attributes: ["mode": .string("reflect")])[0]
        XCTAssertEqual(reflect.scalars(as: Int64.self), [4, 3, 2, 1, 2, 3, 4, 3, 2])
        let edge = try runNode("Pad", opset: 19, [a, i64([2, 3])], attributes: ["mode": .string("edge")])[0]
        XCTAssertEqual(edge.scalars(as: Int64.self), [1, 1, 1, 2, 3, 4, 4, 4, 4])
        let wrap = try runNode("Pad", opset: 19, [a, i64([5, 1])], attributes: ["mode": .string("wrap")])[0]
        XCTAssertEqual(wrap.scalars(as: Int64.self), [4, 1, 2, 3, 4, 1, 2, 3, 4, 1])
        // Negative pads crop; the constant value fills the other side.
        let crop = try runNode("Pad", opset: 19, [a, i64([-1, 2]), ints([], [9])])[0]
        XCTAssertEqual(crop.scalars(as: Int64.self), [2, 3, 4, 9, 9])
    }

    func testStringsMoveThroughTheSameKernels() throws {
        let s = Tensor(shape: [2, 3], strings: ["a", "b", "c", "d", "e", "f"])
        let t = try runNode("Transpose", opset: 13, [s])[0]
        XCTAssertEqual(t.shape, [3, 2])
        XCTAssertEqual(t.strings, ["a", "d", "b", "e", "c", "f"])
        let g = try runNode("Gather", opset: 13, [s, i64([-1, 0])], attributes: ["axis": .int(1)])[0]
        XCTAssertEqual(g.strings, ["c", "a", "f", "d"])
        let c = try runNode("Concat", opset: 13, [s, s], attributes: ["axis": .int(1)])[0]
        XCTAssertEqual(c.strings, ["a", "b", "c", "a", "b", "c", "d", "e", "f", "d", "e", "f"])
    }

    func testSixteenByteElementsMoveWhole() throws {
        // complex128: each element is 16 bytes; Transpose must keep the halves together.
        var x = Tensor(zeros: .complex128, shape: [2, 2])
        try x.withUnsafeMutableBufferPointer(as: Bytes16.self) { p in for i in 0..<4 { p[i] = Bytes16(lo: UInt64(i), hi: UInt64(10 + i)) } }
        let y = try runNode("Transpose", opset: 13, [x])[0]
        let v = try y.withUnsafeBufferPointer(as: Bytes16.self) { Array($0) }
        XCTAssertEqual(v.map(\.lo), [0, 2, 1, 3])
        XCTAssertEqual(v.map(\.hi), [10, 12, 11, 13])
    }

    func testTiledTransposeMatchesTheIndexMap() throws {
        // Every permutation of a shape with ragged tile edges: the tiled path against plain gathering.
        let shape = [3, 17, 33, 2]
        let x = Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { Int32($0) })
        func permutations(_ a: [Int]) -> [[Int]] {
            a.count <= 1 ? [a] : a.indices.flatMap { i in permutations(Array(a[..<i] + a[(i + 1)...])).map { [a[i]] + $0 } }
        }
        let strides = contiguousStrides(shape)
        for perm in permutations([0, 1, 2, 3]) {
            let outShape = perm.map { shape[$0] }
            let expected = stridedIndices(shape: outShape, strides: perm.map { strides[$0] }).map { Int32($0) }
            let y = try runNode("Transpose", opset: 13, [x], attributes: ["perm": .ints(perm)])[0]
            XCTAssertEqual(y.shape, outShape)
            XCTAssertEqual(y.scalars(as: Int32.self), expected, "perm \(perm)")
        }
    }

    func testOutOfRangeIndicesThrowInsteadOfCrashing() {
        let x = Tensor(shape: [3], scalars: [Float(1), 2, 3])
        XCTAssertThrowsError(try runNode("Gather", opset: 13, [x, i64([3])]))
        XCTAssertThrowsError(try runNode("GatherElements", opset: 13, [x, i64([-4])]))
        XCTAssertThrowsError(try runNode("ScatterND", opset: 18, [x, ints([1, 1], [7]), Tensor(shape: [1], scalars: [Float(0)])]))
        XCTAssertThrowsError(try runNode("Reshape", opset: 14, [x, i64([2, -1])]))
    }

    func testScatterNDMultipliesDuplicates() throws {
        // np.multiply.at(ones(5), [1, 3, 1], [2, 3, 5])
        let y = try runNode("ScatterND", opset: 18, [Tensor(shape: [5], scalars: [Float](repeating: 1, count: 5)), ints([3, 1], [1, 3, 1]),
                                                     Tensor(shape: [3], scalars: [Float(2), 3, 5])], attributes: ["reduction": .string("mul")])[0]
        XCTAssertEqual(y.scalars(as: Float.self), [1, 10, 1, 3, 1])
    }

    func testUniqueAlongAxisReturnsAllFourOutputs() throws {
        // np.unique(y, axis=0, return_index, return_inverse, return_counts)
        let x = ints([4, 2], [1, 2, 3, 4, 1, 2, 0, 9])
        let r = try runNode("Unique", opset: 11, [x], attributes: ["axis": .int(0)], outputs: 4)
        XCTAssertEqual(r[0].scalars(as: Int64.self), [0, 9, 1, 2, 3, 4])
        XCTAssertEqual(r[1].scalars(as: Int64.self), [3, 0, 1])
        XCTAssertEqual(r[2].scalars(as: Int64.self), [1, 2, 1, 0])
        XCTAssertEqual(r[3].scalars(as: Int64.self), [1, 2, 1])
        // Unsorted keeps first-occurrence order.
        let u = try runNode("Unique", opset: 11, [x], attributes: ["axis": .int(0), "sorted": .int(0)], outputs: 4)
        XCTAssertEqual(u[0].scalars(as: Int64.self), [1, 2, 3, 4, 0, 9])
        XCTAssertEqual(u[2].scalars(as: Int64.self), [0, 1, 0, 2])
    }

    func testSplitNumOutputsUnevenAndReshapeAllowZero() throws {
        let x = Tensor(shape: [7], scalars: (0..<7).map { Float($0) })
        let parts = try runNode("Split", opset: 18, [x], attributes: ["num_outputs": .int(3)], outputs: 3)
        XCTAssertEqual(parts.map(\.shape), [[3], [3], [1]])
        let empty = Tensor(zeros: .float32, shape: [0, 3])
        XCTAssertEqual(try runNode("Reshape", opset: 14, [empty, i64([3, 0])], attributes: ["allowzero": .int(1)])[0].shape, [3, 0])
        // Without allowzero a 0 copies the input dimension.
        XCTAssertEqual(try runNode("Reshape", opset: 14, [Tensor(zeros: .float32, shape: [2, 3]), i64([0, -1, 1])])[0].shape, [2, 3, 1])
        // numpy refuses -1 next to a zero-sized dimension (any size would do); so do we.
        XCTAssertThrowsError(try runNode("Reshape", opset: 14, [empty, i64([0, -1])], attributes: ["allowzero": .int(1)]))
    }

    /// Concat and Split of more than `BlockCopies.threadedBytes` cut their copies into pieces
    /// spread over the threads: every element against its index map (int32 values that name
    /// their position), along an inner and an outer axis, with parts of uneven sizes and one empty.
    func testLargeConcatAndSplitMatchTheIndexMap() throws {
        let threads = Parallel.threadCount
        Parallel.threadCount = 2
        defer { Parallel.threadCount = threads }
        let widths = [3, 0, 70, 1]
        let parts = widths.enumerated().map { k, w in
            Tensor(shape: [5, w, 71, 37], scalars: (0..<(5 * w * 71 * 37)).map { Int32(k << 24 + $0) })
        }
        XCTAssertGreaterThan(5 * widths.reduce(0, +) * 71 * 37 * 4, BlockCopies.threadedBytes)
        let c = try runNode("Concat", opset: 13, parts, attributes: ["axis": .int(1)])[0]
        XCTAssertEqual(c.shape, [5, 74, 71, 37])
        var expected: [Int32] = []
        for n in 0..<5 { for (k, w) in widths.enumerated() { for i in 0..<(w * 71 * 37) { expected.append(Int32(k << 24 + n * w * 71 * 37 + i)) } } }
        XCTAssertEqual(c.scalars(as: Int32.self), expected)
        // Along the outer axis: the parts one after the other.
        let flat = parts.filter { $0.count > 0 }.map { $0.reshaped([$0.count]) }
        let outer = try runNode("Concat", opset: 13, flat, attributes: ["axis": .int(0)])[0]
        XCTAssertEqual(outer.scalars(as: Int32.self), flat.flatMap { $0.scalars(as: Int32.self) })
        // Split undoes the Concat.
        let split = try runNode("Split", opset: 18, [c, i64(widths.map { Int64($0) })], attributes: ["axis": .int(1)], outputs: 4)
        for (k, part) in split.enumerated() {
            XCTAssertEqual(part.shape, parts[k].shape)
            XCTAssertEqual(part.scalars(as: Int32.self), parts[k].scalars(as: Int32.self), "part \(k)")
        }
    }

    /// Strided copies of more than `BlockCopies.threadedBytes` spread their rows over the threads
    /// (each thread starting its own walk over the outer axes): a channel shuffle's Transpose
    /// (runs of unit stride) and a Slice with step 2 on the last axis, against their index maps.
    func testLargeStridedCopiesMatchTheIndexMap() throws {
        let threads = Parallel.threadCount
        Parallel.threadCount = 2
        defer { Parallel.threadCount = threads }
        let shape = [3, 4, 50, 25, 41]
        let x = Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { Int32($0) })
        XCTAssertGreaterThan(x.count * 4, BlockCopies.threadedBytes)
        let t = try runNode("Transpose", opset: 13, [x], attributes: ["perm": .ints([0, 2, 1, 3, 4])])[0]
        XCTAssertEqual(t.shape, [3, 50, 4, 25, 41])
        var expected: [Int32] = []
        for a in 0..<3 { for b in 0..<50 { for c in 0..<4 { for r in 0..<(25 * 41) { expected.append(Int32(((a * 4 + c) * 50 + b) * 1025 + r)) } } } }
        XCTAssertEqual(t.scalars(as: Int32.self), expected)
        let flat = x.reshaped([1500, 410])
        let sliced = try runNode("Slice", opset: 13, [flat, i64([1]), i64([410]), i64([1]), i64([2])])[0]
        XCTAssertEqual(sliced.shape, [1500, 205])
        XCTAssertGreaterThan(sliced.count * 4, BlockCopies.threadedBytes)
        var every2: [Int32] = []
        for r in 0..<1500 { for c in stride(from: 1, to: 410, by: 2) { every2.append(Int32(r * 410 + c)) } }
        XCTAssertEqual(sliced.scalars(as: Int32.self), every2)
    }

    func testLoopWithZeroTripsGivesEmptyScanOutput() throws {
        // body(i, cond, s) -> (cond, s + 1, s): a carried count and a scan output of its history.
        var body = Graph()
        body.name = "body"
        body.inputs = [ValueInfo(name: "i", type: .tensor(.int64, shape: [])), ValueInfo(name: "c", type: .tensor(.bool, shape: [])),
                       ValueInfo(name: "s", type: .tensor(.float32, shape: [.value(2)]))]
        body.outputs = [ValueInfo(name: "c_out", type: nil), ValueInfo(name: "s_out", type: nil),
                        ValueInfo(name: "scan", type: .tensor(.float32, shape: [.value(2)]))]
        body.setInitializer("one", Tensor(shape: [2], scalars: [Float(1), 1]))
        body.nodes = [Node(opType: "Identity", inputs: ["c"], outputs: ["c_out"]), Node(opType: "Add", inputs: ["s", "one"], outputs: ["s_out"]),
                      Node(opType: "Identity", inputs: ["s"], outputs: ["scan"])]
        let s0 = Tensor(shape: [2], scalars: [Float(0), 5])
        let three = try runNode("Loop", opset: 16, [Tensor(scalar: Int64(3)), Tensor(scalar: true), s0], attributes: ["body": .graph(body)], outputs: 2)
        XCTAssertEqual(three[0].scalars(as: Float.self), [3, 8])
        XCTAssertEqual(three[1].shape, [3, 2])
        XCTAssertEqual(three[1].scalars(as: Float.self), [0, 5, 1, 6, 2, 7])
        let none = try runNode("Loop", opset: 16, [Tensor(scalar: Int64(0)), Tensor(scalar: true), s0], attributes: ["body": .graph(body)], outputs: 2)
        XCTAssertEqual(none[0].scalars(as: Float.self), [0, 5])
        XCTAssertEqual(none[1].shape, [0, 2])
    }

    func testHostileNumbersThrowOrDegradeInsteadOfTrapping() throws {
        let nan = Float.nan
        let x = Tensor(shape: [1, 1, 2, 2], scalars: [Float(1), 2, 3, 4])
        // NaN crop box: every output takes the extrapolation value.
        let r = try runNode("Resize", opset: 19, [x, Tensor(shape: [8], scalars: [Float](repeating: nan, count: 8)), nil, i64([1, 1, 2, 2])],
                            attributes: ["coordinate_transformation_mode": .string("tf_crop_and_resize"), "mode": .string("linear")])[0]
        XCTAssertEqual(r.scalars(as: Float.self), [0, 0, 0, 0])
        // NaN grid coordinates sample zeros.
        let g = try runNode("GridSample", opset: 20, [x, Tensor(shape: [1, 1, 1, 2], scalars: [nan, nan])])[0]
        XCTAssertEqual(g.scalars(as: Float.self), [0])
        XCTAssertThrowsError(try runNode("OneHot", opset: 11, [i64([0]), Tensor(scalar: nan), Tensor(shape: [2], scalars: [Float(0), 1])]))
        // A step longer than the axis takes the start element alone (numpy: x[0:1:-2**63] is empty, x[3::-2**63] one).
        XCTAssertEqual(try runNode("Slice", opset: 13, [x, i64([0]), i64([1]), i64([3]), i64([Int64.min])])[0].shape, [1, 1, 2, 0])
        XCTAssertEqual(try runNode("Slice", opset: 13, [x, i64([1]), i64([Int64.min]), i64([3]), i64([Int64.min])])[0].scalars(as: Float.self), [2, 4])
        XCTAssertThrowsError(try runNode("Resize", opset: 19, [x, nil, Tensor(shape: [4], scalars: [Float(1), 1, 1e30, 1])]))
        XCTAssertThrowsError(try runNode("RoiAlign", opset: 16, [x, Tensor(shape: [1, 4], scalars: [Float(0), 0, 1e30, 1e30]), i64([0])]))
        // Sizes from data that would need terabytes (or overflow Int) are refused before allocating.
        let one = Tensor(shape: [1], scalars: [Float(1)])
        XCTAssertThrowsError(try runNode("Pad", opset: 19, [one, i64([1 << 39, 0])]))
        XCTAssertThrowsError(try runNode("Pad", opset: 19, [Tensor(zeros: .float32, shape: [0, 1]), i64([0, 1 << 39, 0, 0])]))
        XCTAssertThrowsError(try runNode("Tile", opset: 13, [Tensor(zeros: .float32, shape: [2, 2]), i64([Int64.max, 3])]))
        XCTAssertThrowsError(try runNode("ConstantOfShape", opset: 20, [i64([1 << 20, 1 << 20, 1 << 20])]))
        XCTAssertThrowsError(try runNode("CenterCropPad", opset: 18, [one, i64([1 << 40])]))
    }
}

final class BitCastTests: XCTestCase {
    func testBitCastKeepsBitsAndRenormalisesNarrowTargets() throws {
        let f = try runNode("BitCast", opset: 26, [Tensor(shape: [2], scalars: [Float(1), -2])], attributes: ["to": .int(Int(DType.int32.rawValue))])[0]
        XCTAssertEqual(f.scalars(as: Int32.self), [0x3F80_0000, Int32(bitPattern: 0xC000_0000)])
        let b = try runNode("BitCast", opset: 26, [Tensor(shape: [3], scalars: [UInt8(0), 1, 7])], attributes: ["to": .int(Int(DType.bool.rawValue))])[0]
        XCTAssertEqual(b.scalars(as: Bool.self), [false, true, true])
        // uint4 0xF read as int4 is -1 (stored sign-extended, one element per byte).
        var u4 = Tensor(zeros: .uint4, shape: [2])
        try u4.withUnsafeMutableBufferPointer(as: UInt8.self) { $0[0] = 0xF; $0[1] = 0x7 }
        let i4 = try runNode("BitCast", opset: 26, [u4], attributes: ["to": .int(Int(DType.int4.rawValue))])[0]
        XCTAssertEqual(try i4.withUnsafeBufferPointer(as: Int8.self) { Array($0) }, [-1, 7])
        XCTAssertThrowsError(try runNode("BitCast", opset: 26, [Tensor(shape: [1], scalars: [Float(1)])], attributes: ["to": .int(Int(DType.int64.rawValue))]))
    }
}
