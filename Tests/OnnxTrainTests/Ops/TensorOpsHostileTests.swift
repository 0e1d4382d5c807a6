import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// Every shape/movement, indexing and sampling op with extreme integers in its attributes and in
/// its integer inputs: each run must return or throw, never trap.
final class TensorOpsHostileTests: XCTestCase {
    static let extremes: [Int] = [-1, 0, 7, -100, 1 << 40, Int.max, Int.min]

    struct Case {
        let op: String, opset: Int
        let inputs: [Tensor?]
        let attributes: [String: Attribute]
        var outputs = 1
    }

    func testExtremeIntegersNeverTrap() {
        let f = Tensor(shape: [2, 3, 4], scalars: (0..<24).map { Float($0) })
        let img = Tensor(shape: [1, 4, 2, 2], scalars: (0..<16).map { Float($0) })
        func i64(_ v: [Int64]) -> Tensor { Tensor(shape: [v.count], scalars: v) }
        let cases: [Case] = [
            Case(op: "Reshape", opset: 19, inputs: [f, i64([2, -1])], attributes: ["allowzero": .int(0)]),
            Case(op: "Flatten", opset: 13, inputs: [f], attributes: ["axis": .int(1)]),
            Case(op: "Squeeze", opset: 13, inputs: [f, i64([0])], attributes: [:]),
            Case(op: "Unsqueeze", opset: 13, inputs: [f, i64([0])], attributes: [:]),
            Case(op: "Transpose", opset: 13, inputs: [f], attributes: ["perm": .ints([2, 0, 1])]),
            Case(op: "Concat", opset: 13, inputs: [f, f], attributes: ["axis": .int(1)]),
            Case(op: "Split", opset: 18, inputs: [f, i64([1, 1])], attributes: ["axis": .int(0)], outputs: 2),
            Case(op: "Slice", opset: 13, inputs: [f, i64([0]), i64([2]), i64([1]), i64([1])], attributes: [:]),
            Case(op: "Expand", opset: 13, inputs: [f, i64([2, 1, 1])], attributes: [:]),
            Case(op: "Tile", opset: 13, inputs: [f, i64([1, 2, 1])], attributes: [:]),
            Case(op: "Pad", opset: 19, inputs: [f, i64([0, 1, 0, 0, 1, 0])], attributes: ["mode": .string("reflect")]),
            Case(op: "CenterCropPad", opset: 18, inputs: [f, i64([3, 3])], attributes: ["axes": .ints([1, 2])]),
            Case(op: "Shape", opset: 21, inputs: [f], attributes: ["start": .int(0), "end": .int(2)]),
            Case(op: "ConstantOfShape", opset: 20, inputs: [i64([2, 2])], attributes: [:]),
            Case(op: "EyeLike", opset: 9, inputs: [Tensor(zeros: .float32, shape: [3, 3])], attributes: ["k": .int(1)]),
            Case(op: "Range", opset: 11, inputs: [Tensor(scalar: Int64(0)), Tensor(scalar: Int64(10)), Tensor(scalar: Int64(3))], attributes: [:]),
            Case(op: "OneHot", opset: 11, inputs: [i64([1, 2]), Tensor(scalar: Int64(4)), Tensor(shape: [2], scalars: [Float(0), 1])], attributes: ["axis": .int(-1)]),
            Case(op: "Trilu", opset: 14, inputs: [f, Tensor(scalar: Int64(1))], attributes: ["upper": .int(1)]),
            Case(op: "DepthToSpace", opset: 13, inputs: [img], attributes: ["blocksize": .int(2)]),
            Case(op: "SpaceToDepth", opset: 13, inputs: [img], attributes: ["blocksize": .int(2)]),
            Case(op: "ReverseSequence", opset: 10, inputs: [f, i64([1, 2, 3])], attributes: ["batch_axis": .int(1), "time_axis": .int(0)]),
            Case(op: "Compress", opset: 11, inputs: [f, Tensor(shape: [2], scalars: [true, false])], attributes: ["axis": .int(0)]),
            Case(op: "Gather", opset: 13, inputs: [f, i64([1])], attributes: ["axis": .int(1)]),
            Case(op: "GatherElements", opset: 13, inputs: [f, Tensor(zeros: .int64, shape: [2, 3, 4])], attributes: ["axis": .int(2)]),
            Case(op: "GatherND", opset: 13, inputs: [f, Tensor(shape: [1, 2], scalars: [Int64(1), 2])], attributes: ["batch_dims": .int(0)]),
            Case(op: "ScatterElements", opset: 18, inputs: [f, Tensor(zeros: .int64, shape: [2, 3, 4]), f], attributes: ["axis": .int(1)]),
            Case(op: "ScatterND", opset: 18, inputs: [f, Tensor(shape: [1, 1], scalars: [Int64(1)]), Tensor(zeros: .float32, shape: [1, 3, 4])], attributes: [:]),
            Case(op: "TensorScatter", opset: 24, inputs: [f, Tensor(zeros: .float32, shape: [2, 1, 4]), i64([1, 2])], attributes: ["axis": .int(1)]),
            Case(op: "Unique", opset: 11, inputs: [f], attributes: ["axis": .int(1)], outputs: 4),
            Case(op: "Resize", opset: 19, inputs: [img, nil, nil, i64([1, 4, 3, 3])], attributes: ["mode": .string("cubic")]),
            Case(op: "GridSample", opset: 20, inputs: [img, Tensor(zeros: .float32, shape: [1, 2, 2, 2])], attributes: ["align_corners": .int(0)]),
            Case(op: "AffineGrid", opset: 20, inputs: [Tensor(zeros: .float32, shape: [1, 2, 3]), i64([1, 1, 2, 2])], attributes: ["align_corners": .int(0)]),
            Case(op: "RoiAlign", opset: 16, inputs: [img, Tensor(shape: [1, 4], scalars: [Float(0), 0, 1, 1]), i64([0])],
                 attributes: ["output_height": .int(2), "output_width": .int(2), "sampling_ratio": .int(1)]),
            Case(op: "Col2Im", opset: 18, inputs: [Tensor(zeros: .float32, shape: [1, 4, 1]), i64([2, 2]), i64([2, 2])],
                 attributes: ["strides": .ints([1, 1]), "dilations": .ints([1, 1]), "pads": .ints([0, 0, 0, 0])]),
            Case(op: "DFT", opset: 20, inputs: [Tensor(zeros: .float32, shape: [1, 4, 1]), Tensor(scalar: Int64(4)), Tensor(scalar: Int64(1))], attributes: ["onesided": .int(0)]),
            Case(op: "HannWindow", opset: 17, inputs: [Tensor(scalar: Int64(4))], attributes: ["periodic": .int(1)]),
            Case(op: "Multinomial", opset: 7, inputs: [Tensor(zeros: .float32, shape: [1, 3])], attributes: ["sample_size": .int(2)]),
            Case(op: "RandomUniform", opset: 1, inputs: [], attributes: ["shape": .ints([2, 2])]),
        ]
        var runs = 0
        for c in cases {
            // Each int attribute, each element of each integer input, in turn set to each extreme.
            var variants: [([Tensor?], [String: Attribute])] = []
            for (key, value) in c.attributes {
                for v in Self.extremes {
                    var a = c.attributes
                    switch value {
                    case .int: a[key] = .int(v)
                    case .ints(let list): a[key] = .ints(list.isEmpty ? [v] : [v] + list.dropFirst())
                    default: continue
                    }
                    variants.append((c.inputs, a))
                }
            }
            for (k, input) in c.inputs.enumerated() {
                guard let input, input.dtype == .int64, input.count > 0 else { continue }
                for position in [0, input.count - 1] {
                    for v in Self.extremes {
                        var values = input.scalars(as: Int64.self)
                        values[position] = Int64(v)
                        var inputs = c.inputs
                        inputs[k] = Tensor(shape: input.shape, scalars: values)
                        variants.append((inputs, c.attributes))
                    }
                }
            }
            for (inputs, attributes) in variants {
                runs += 1
                _ = try? runNode(c.op, opset: c.opset, inputs, attributes: attributes, outputs: c.outputs)
            }
        }
        XCTAssertGreaterThan(runs, 400)
    }
}
