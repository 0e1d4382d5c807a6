import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// The 2-D pooling row kernels (Pooling.swift: MaxPool without indices and AveragePool by kernel
/// taps, and at column strides 1 and 2 in float32 by register blocks over a padded copy of each
/// channel) against the per-window loops, which the same ops run on a 3-D input with a unit first
/// spatial dim: every case bit for bit, NaNs included, with pads, strides, dilations, ceil mode,
/// windows partly and wholly in the padding; and one case against plain float64 loops.
final class PoolingRowsTests: XCTestCase {
    struct Case {
        let label: String
        let x: [Int], kernel: [Int], strides: [Int], pads: [Int], dilations: [Int], ceil: Bool
        func attributes(unitDim: Bool) -> [String: Attribute] {
            let lift = { (v: [Int], one: Int) in unitDim ? [one] + v : v }
            let pads = unitDim ? [0, self.pads[0], self.pads[1], 0, self.pads[2], self.pads[3]] : self.pads
            return ["kernel_shape": .ints(lift(kernel, 1)), "strides": .ints(lift(strides, 1)), "pads": .ints(pads),
                    "dilations": .ints(lift(dilations, 1)), "ceil_mode": .int(ceil ? 1 : 0)]
        }
    }

    static let cases: [Case] = [
        Case(label: "3x3 stride 2 pad 1 (ResNet)", x: [1, 3, 12, 13], kernel: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], ceil: false),
        Case(label: "3x3 stride 2 ceil (SqueezeNet)", x: [2, 2, 13, 15], kernel: [3, 3], strides: [2, 2], pads: [0, 0, 0, 0], dilations: [1, 1], ceil: true),
        Case(label: "3x3 stride 1 pad 1 (Inception)", x: [1, 4, 7, 30], kernel: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], ceil: false),
        Case(label: "2x3 asymmetric pads dilation 2x1 stride 1x3", x: [1, 2, 9, 17], kernel: [2, 3], strides: [1, 3], pads: [2, 0, 1, 2], dilations: [2, 1], ceil: true),
        Case(label: "5x5 pads as large as the input (windows wholly in padding)", x: [1, 1, 2, 3], kernel: [5, 5], strides: [1, 1], pads: [4, 4, 4, 4], dilations: [1, 1], ceil: false),
        Case(label: "3x3 stride 2 pad 1 wide rows (eight-lane runs)", x: [1, 2, 6, 41], kernel: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], ceil: false),
        Case(label: "2x2 stride 2 pad 1", x: [1, 2, 6, 6], kernel: [2, 2], strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], ceil: false),
        Case(label: "3x3 stride 1 dilation 2 pad 1 wide rows", x: [1, 2, 5, 37], kernel: [3, 3], strides: [1, 1], pads: [1, 2, 1, 0], dilations: [2, 2], ceil: false),
        Case(label: "3x3 stride 2 dilation 2 pad 2 ceil wide odd rows", x: [2, 1, 9, 45], kernel: [3, 3], strides: [2, 2], pads: [2, 2, 1, 2], dilations: [2, 2], ceil: true),
        Case(label: "3x3 stride 3 wide rows", x: [1, 2, 7, 50], kernel: [3, 3], strides: [3, 3], pads: [1, 1, 1, 1], dilations: [1, 1], ceil: true),
        Case(label: "3x3 stride 2 ceil, 55 wide", x: [1, 3, 9, 55], kernel: [3, 3], strides: [2, 2], pads: [0, 0, 0, 0], dilations: [1, 1], ceil: true),
        Case(label: "3x3 stride 1 pad 1, 14 wide (register blocks of eight and four)", x: [1, 3, 14, 14], kernel: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], ceil: false),
        Case(label: "3x3 stride 2, 13 wide (a register block of four at stride 2)", x: [1, 2, 5, 13], kernel: [3, 3], strides: [2, 2], pads: [0, 0, 0, 0], dilations: [1, 1], ceil: false),
        Case(label: "2x4 stride 1x2 pads past the row ends", x: [1, 2, 4, 26], kernel: [2, 4], strides: [1, 2], pads: [1, 3, 0, 4], dilations: [1, 1], ceil: true),
        // Wide rows with and without padding at column strides 1 and 2.
        Case(label: "3x3 stride 2, 111 wide (SqueezeNet's first pool)", x: [2, 2, 7, 111], kernel: [3, 3], strides: [2, 2], pads: [0, 0, 0, 0], dilations: [1, 1], ceil: false),
        Case(label: "3x3 stride 1 pad 1, 70 wide", x: [1, 2, 5, 70], kernel: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], ceil: false),
        Case(label: "2x3 stride 2 dilation 1x3 pads 0x5 / 1x6, 90 wide", x: [1, 2, 4, 90], kernel: [2, 3], strides: [1, 2], pads: [0, 5, 1, 6], dilations: [1, 3], ceil: true),
        // Eight channels or more on planes under 16 wide: float32 MaxPool with a channel per lane.
        Case(label: "3x3 stride 1 pad 1, 6x6, 19 channels (channel lanes, a partial last group)", x: [1, 19, 6, 6], kernel: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], ceil: false),
        Case(label: "3x3 stride 2, 13x13, 2x9 channels (channel lanes)", x: [2, 9, 13, 13], kernel: [3, 3], strides: [2, 2], pads: [0, 0, 0, 0], dilations: [1, 1], ceil: false),
        Case(label: "5x5 pads as large as the input, 10 channels (channel lanes)", x: [1, 10, 2, 3], kernel: [5, 5], strides: [1, 1], pads: [4, 4, 4, 4], dilations: [1, 1], ceil: false),
        Case(label: "3x3 stride 2 dilation 2 pads 2x2 / 1x2 ceil, 16 channels (channel lanes)", x: [1, 16, 7, 9], kernel: [3, 3], strides: [2, 2], pads: [2, 2, 1, 2], dilations: [2, 2], ceil: true),
        // 3 column taps at stride 2: MaxPool's rows straight from the input (edge blocks through a
        // padded row), AveragePool's plane rows split into even and odd columns.
        Case(label: "3x3 stride 2 pad 1, 112 wide (ShuffleNet's and ResNet's first pool)", x: [1, 2, 7, 112], kernel: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], ceil: false),
        Case(label: "3x3 stride 2 pads 0x2 / 1x3, 40 wide", x: [1, 2, 6, 40], kernel: [3, 3], strides: [2, 2], pads: [0, 2, 1, 3], dilations: [1, 1], ceil: true),
        Case(label: "4x5 stride 2 pads 1x3, 53 wide (split rows, odd column taps past 2)", x: [1, 2, 8, 53], kernel: [4, 5], strides: [2, 2], pads: [1, 3, 1, 3], dilations: [1, 1], ceil: false),
        Case(label: "3x3 stride 2 pad 1, 28x28, 12 channels (channel lanes by 8x8 transposes, a partial last group)", x: [1, 12, 28, 28], kernel: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], ceil: false),
    ]

    /// x with some NaNs, -infs, -0s and ties (values rounded to halves), in float32.
    private func input(_ shape: [Int], seed: UInt64) -> Tensor {
        var values = randomDoubles(shape, seed: seed).scalars(as: Double.self).map { Float(($0 * 2).rounded() / 2) }
        for i in stride(from: 3, to: values.count, by: 7) { values[i] = -0.0 }
        for i in stride(from: 8, to: values.count, by: 17) { values[i] = -.infinity }
        for i in stride(from: 5, to: values.count, by: 11) { values[i] = .nan }
        return Tensor(shape: shape, scalars: values)
    }

    private func bits(_ t: Tensor) -> [UInt32] { t.scalars(as: Float.self).map(\.bitPattern) }

    /// `input` without its NaNs (-0s, -infs and ties kept) but in the channels listed in `nanChannels`,
    /// and a +0 second (so that even the smallest case holds both zeros).
    private func mostlyClean(_ shape: [Int], seed: UInt64, nanChannels: Set<Int>) -> Tensor {
        let plane = shape[2] * shape[3]
        let values = input(shape, seed: seed).scalars(as: Float.self).enumerated().map { i, v in
            i == 1 ? 0 : v.isNaN && !nanChannels.contains(i / plane) ? Float(i % 5) - 2 : v
        }
        return Tensor(shape: shape, scalars: values)
    }

    /// Float32 MaxPool without indices on channels without NaNs (the two-pass column-then-row fold)
    /// and with NaNs (the register blocks), mixed in one tensor: bit for bit the per-window loops,
    /// ties of -0 and +0 included (which of them comes out depends on the order of the taps).
    func testSeparableMaxPoolMatchesWindowLoopsBitForBit() throws {
        for (i, c) in Self.cases.enumerated() {
            let channels = c.x[0] * c.x[1]
            for nanChannels in [Set<Int>(), Set([channels - 1]), Set(stride(from: 0, to: channels, by: 2))] {
                let x = mostlyClean(c.x, seed: UInt64(100 + i), nanChannels: nanChannels)
                let zeros = x.scalars(as: Float.self).filter { $0 == 0 }.map { $0.sign }
                XCTAssertTrue(zeros.contains(.minus) && zeros.contains(.plus), "\(c.label): the input must hold both zeros")
                let x3 = x.reshaped([c.x[0], c.x[1], 1, c.x[2], c.x[3]])
                let rows = try runNode("MaxPool", opset: 19, [x], attributes: c.attributes(unitDim: false))[0]
                let windows = try runNode("MaxPool", opset: 19, [x3], attributes: c.attributes(unitDim: true))[0]
                XCTAssertEqual(bits(rows), bits(windows), "\(c.label), NaNs in channels \(nanChannels.sorted()): MaxPool differs from the per-window loops")
            }
        }
    }

    /// Float32 MaxPool and AveragePool (count_include_pad 0 and 1) against plain float64 loops over
    /// the windows, for every case: the maxima exactly, the averages within the float32 rounding
    /// bound of their sum and division.
    func testFloat32RowKernelsMatchFloat64Loops() throws {
        for (n, c) in Self.cases.enumerated() {
            let xd = randomDoubles(c.x, seed: UInt64(200 + n)).scalars(as: Double.self).map { Double(Float($0)) }
            let x = Tensor(shape: c.x, scalars: xd.map { Float($0) })
            let (h, w) = (c.x[2], c.x[3])
            for (op, includePad) in [("MaxPool", 0), ("AveragePool", 0), ("AveragePool", 1)] {
                let extra: [String: Attribute] = op == "MaxPool" ? [:] : ["count_include_pad": .int(includePad)]
                let y = try runNode(op, opset: 19, [x], attributes: c.attributes(unitDim: false).merging(extra) { $1 })[0]
                let (oh, ow) = (y.shape[2], y.shape[3])
                let ys = y.scalars(as: Float.self)
                for ch in 0..<(c.x[0] * c.x[1]) {
                    for i in 0..<oh {
                        for j in 0..<ow {
                            var best = -Double.infinity, sum = 0.0, magnitude = 0.0, count = 0, padded = 0
                            for a in 0..<c.kernel[0] {
                                for b in 0..<c.kernel[1] {
                                    let r = i * c.strides[0] - c.pads[0] + a * c.dilations[0]
                                    let q = j * c.strides[1] - c.pads[1] + b * c.dilations[1]
                                    if r < h + c.pads[2] && q < w + c.pads[3] { padded += 1 }
                                    guard r >= 0, r < h, q >= 0, q < w else { continue }
                                    let v = xd[(ch * h + r) * w + q]
                                    best = max(best, v); sum += v; magnitude += abs(v); count += 1
                                }
                            }
                            let got = Double(ys[(ch * oh + i) * ow + j])
                            let divisor = includePad == 1 ? padded : count
                            let want = count == 0 ? 0 : op == "MaxPool" ? best : sum / Double(divisor)
                            // A float32 sum of `count` terms is within (count - 1)·(1 + O(u)) units u of rounding of
                            // the sum of magnitudes; the division adds one more of the result.
                            let tolerance = op == "MaxPool" || count == 0 ? 0
                                : Double(Float.ulpOfOne) / 2 * (Double(count) * magnitude / Double(divisor) + abs(want))
                            XCTAssertLessThanOrEqual(abs(got - want), tolerance, "\(c.label) \(op) \(extra) channel \(ch) output (\(i), \(j))")
                        }
                    }
                }
            }
        }
    }

    func testRowKernelsMatchWindowLoopsBitForBit() throws {
        for (i, c) in Self.cases.enumerated() {
            let x = input(c.x, seed: UInt64(1 + i))
            let x3 = x.reshaped([c.x[0], c.x[1], 1, c.x[2], c.x[3]])
            var ops: [(String, [String: Attribute])] = [("MaxPool", [:])]
            for includePad in [0, 1] { ops.append(("AveragePool", ["count_include_pad": .int(includePad)])) }
            for (op, extra) in ops {
                let rows = try runNode(op, opset: 19, [x], attributes: c.attributes(unitDim: false).merging(extra) { $1 })[0]
                let windows = try runNode(op, opset: 19, [x3], attributes: c.attributes(unitDim: true).merging(extra) { $1 })[0]
                XCTAssertEqual(rows.shape, [windows.shape[0], windows.shape[1]] + windows.shape.dropFirst(3), "\(c.label) \(op)")
                XCTAssertEqual(bits(rows), bits(windows), "\(c.label): \(op) \(extra) differs from the per-window loops")
            }
        }
    }

    /// MaxPool without indices in the other element types (float16 runs the float32 kernels on
    /// widened values, float64 and int8 the scalar loops): the row kernels against the per-window
    /// loops, bit for bit, for the wide stride-1 and stride-2 cases.
    func testMaxPoolOtherTypesMatchWindowLoops() throws {
        for c in [Self.cases[2], Self.cases[5], Self.cases[8]] {
            let x = input(c.x, seed: 77)
            let finite = Tensor(shape: c.x, scalars: x.scalars(as: Float.self).map { $0.isFinite ? $0 * 4 : -7 })
            for t in [try x.cast(to: .float16), try x.cast(to: .float64), try finite.cast(to: .int8)] {
                let x3 = t.reshaped([c.x[0], c.x[1], 1, c.x[2], c.x[3]])
                let rows = try runNode("MaxPool", opset: 19, [t], attributes: c.attributes(unitDim: false))[0]
                let windows = try runNode("MaxPool", opset: 19, [x3], attributes: c.attributes(unitDim: true))[0]
                XCTAssertEqual(rows.dtype, t.dtype)
                XCTAssertEqual(rows.rawBytes.map { $0 }, windows.rawBytes.map { $0 }, "\(c.label) \(t.dtype): MaxPool differs from the per-window loops")
            }
        }
    }

    /// MaxPool with its Indices output (training's MaxPool) by rows: values bit for bit and the
    /// same indices as the per-window loops (a unit first spatial dim leaves every flat index
    /// unchanged), NaNs, ties and windows wholly in the padding included.
    func testMaxPoolIndicesMatchWindowLoops() throws {
        for (i, c) in Self.cases.enumerated() {
            let x = input(c.x, seed: UInt64(50 + i))
            let x3 = x.reshaped([c.x[0], c.x[1], 1, c.x[2], c.x[3]])
            let rows = try runNode("MaxPool", opset: 19, [x], attributes: c.attributes(unitDim: false), outputs: 2)
            let windows = try runNode("MaxPool", opset: 19, [x3], attributes: c.attributes(unitDim: true), outputs: 2)
            XCTAssertEqual(bits(rows[0]), bits(windows[0]), "\(c.label): MaxPool values differ from the per-window loops")
            XCTAssertEqual(rows[1].scalars(as: Int64.self), windows[1].scalars(as: Int64.self), "\(c.label): MaxPool indices differ from the per-window loops")
        }
    }

    /// MaxPool and AveragePool (count_include_pad 0 and 1) of the ResNet case against float64 loops.
    func testRowKernelsMatchPlainLoops() throws {
        let c = Self.cases[0]
        let x = randomDoubles(c.x, seed: 42)
        let xs = x.scalars(as: Double.self)
        let (h, w) = (c.x[2], c.x[3]), oh = (h + 2 - 3) / 2 + 1, ow = (w + 2 - 3) / 2 + 1
        var worst = 0.0
        for (op, includePad) in [("MaxPool", 0), ("AveragePool", 0), ("AveragePool", 1)] {
            let extra: [String: Attribute] = op == "MaxPool" ? [:] : ["count_include_pad": .int(includePad)]
            let y = try runNode(op, opset: 19, [x], attributes: c.attributes(unitDim: false).merging(extra) { $1 })[0]
            XCTAssertEqual(y.shape, [1, 3, oh, ow])
            let ys = y.scalars(as: Double.self)
            for ch in 0..<3 {
                for i in 0..<oh {
                    for j in 0..<ow {
                        var best = -Double.infinity, sum = 0.0, count = 0
                        for a in 0..<3 {
                            for b in 0..<3 {
                                let (r, q) = (2 * i - 1 + a, 2 * j - 1 + b)
                                guard r >= 0, r < h, q >= 0, q < w else { continue }
                                best = max(best, xs[(ch * h + r) * w + q]); sum += xs[(ch * h + r) * w + q]; count += 1
                            }
                        }
                        let want = op == "MaxPool" ? best : sum / Double(includePad == 1 ? 9 : count)
                        worst = max(worst, abs(ys[(ch * oh + i) * ow + j] - want))
                    }
                }
            }
        }
        print("PoolingRowsTests: largest difference from float64 loops \(worst)")
        XCTAssertEqual(worst, 0)   // the same additions in the same order, and the same division
    }
}
