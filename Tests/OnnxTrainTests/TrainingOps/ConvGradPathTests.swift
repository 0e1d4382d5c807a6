import Foundation
@testable import OnnxTrain
import XCTest

/// ConvGrad's paths (and the training forward's) for ResNet-18's deep 3×3 layers at batch 8 (Ops/Microsoft/ConvGrad.swift): the
/// one the kernel picks by shape against im2col + GEMM (`winogradOverride` 0) and Winograd F(4×4)
/// (4) on the same float32 inputs, dX and dW each. They are three sums of the same products, so
/// they agree to Winograd's rounding: F(4×4) against im2col within 1.4e-5 of the largest value
/// here (sums of 4608 products; WinogradTests' small cases 4.3e-6), bound 2e-5. dX at 7×7 (32
/// tiles, under `winogradUnkeptWeightsTiles`) is im2col's, bit for bit. Each path's median time of
/// five runs is printed, the figures the kernel's choice of path rests on.
final class ConvGradPathTests: XCTestCase {
    private func random(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) % 2001 - 1000) / 1000
        }
    }

    private func run(_ x: Tensor, _ w: Tensor, _ dy: Tensor, _ g: ConvGeometry, wantX: Bool, wantW: Bool, override: Int?) throws -> ([Float], Double) {
        let saved = winogradOverride
        defer { winogradOverride = saved }
        winogradOverride = override
        var times: [Double] = []
        var result: [Float] = []
        for _ in 0..<5 {
            let start = DispatchTime.now().uptimeNanoseconds
            let outs = try ConvGradKernel.Compute(dy: dy, x: x, w: w, geometry: g, group: 1, wantX: wantX, wantW: wantW, wantB: false).float(Float.self)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            result = (wantX ? outs[0] : outs[1])?.scalars(as: Float.self) ?? []
        }
        return (result, times.sorted()[2])
    }

    func testResNetDeepLayersPathsAgree() throws {
        for (channels, size) in [(512, 7), (256, 14)] {
            let n = 8
            let x = Tensor(shape: [n, channels, size, size], scalars: random(n * channels * size * size, seed: 1))
            let w = Tensor(shape: [channels, channels, 3, 3], scalars: random(channels * channels * 9, seed: 2).map { $0 * 0.05 })
            let dy = Tensor(shape: [n, channels, size, size], scalars: random(n * channels * size * size, seed: 3))
            let g = try ConvGeometry(input: [size, size], kernel: [3, 3], pads: [1, 1, 1, 1])
            for (label, wantX) in [("dX", true), ("dW", false)] {
                let (picked, tPicked) = try run(x, w, dy, g, wantX: wantX, wantW: !wantX, override: nil)
                let (im2col, tIm2col) = try run(x, w, dy, g, wantX: wantX, wantW: !wantX, override: 0)
                let (winograd, tWinograd) = try run(x, w, dy, g, wantX: wantX, wantW: !wantX, override: 4)
                let scale = im2col.reduce(0) { max($0, abs($1)) }
                XCTAssertGreaterThan(scale, 0)
                var worstPicked: Float = 0, worstWinograd: Float = 0
                for i in im2col.indices {
                    worstPicked = max(worstPicked, abs(picked[i] - im2col[i]) / scale)
                    worstWinograd = max(worstWinograd, abs(winograd[i] - im2col[i]) / scale)
                }
                print("ConvGrad \(label) " + String(format: "%d@%dx%d b8: picked %.2f ms, im2col %.2f ms, Winograd F4 %.2f ms; differences %.1e, %.1e",
                             channels, size, size, tPicked, tIm2col, tWinograd, worstPicked, worstWinograd))
                XCTAssertEqual(picked.count, im2col.count)
                XCTAssertLessThan(worstPicked, 2e-5, "\(label) \(channels)@\(size): picked path against im2col")
                XCTAssertLessThan(worstWinograd, 2e-5, "\(label) \(channels)@\(size): Winograd against im2col")
                if wantX && size == 7 { XCTAssertEqual(worstPicked, 0, "dX at 7x7 (32 tiles) takes im2col") }
            }
        }
    }

    /// Training's forward Conv (weights not kept, `convolution` without a weight cache) on the same
    /// shapes: the picked path against im2col and Winograd F(4×4) (measured 1.1e-5 of the largest
    /// value, bound 2e-5); at 7×7 (32 tiles, under `winogradUnkeptWeightsTiles`) it is im2col's,
    /// bit for bit. Times printed as above.
    func testResNetDeepLayersForwardPathsAgree() throws {
        for (channels, size) in [(512, 7), (256, 14)] {
            let n = 8
            let x = Tensor(shape: [n, channels, size, size], scalars: random(n * channels * size * size, seed: 4))
            let w = Tensor(shape: [channels, channels, 3, 3], scalars: random(channels * channels * 9, seed: 5).map { $0 * 0.05 })
            let g = try ConvGeometry(input: [size, size], kernel: [3, 3], pads: [1, 1, 1, 1])
            func forward(_ override: Int?) throws -> ([Float], Double) {
                let saved = winogradOverride
                defer { winogradOverride = saved }
                winogradOverride = override
                var times: [Double] = [], y: [Float] = []
                for _ in 0..<5 {
                    let start = DispatchTime.now().uptimeNanoseconds
                    y = try convolution(x, w, bias: nil, group: 1, geometry: g, Float.self).scalars(as: Float.self)
                    times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
                }
                return (y, times.sorted()[2])
            }
            let (picked, tPicked) = try forward(nil), (im2col, tIm2col) = try forward(0), (winograd, tWinograd) = try forward(4)
            let scale = im2col.reduce(0) { max($0, abs($1)) }
            XCTAssertGreaterThan(scale, 0)
            var worstPicked: Float = 0, worstWinograd: Float = 0
            for i in im2col.indices {
                worstPicked = max(worstPicked, abs(picked[i] - im2col[i]) / scale)
                worstWinograd = max(worstWinograd, abs(winograd[i] - im2col[i]) / scale)
            }
            print("Conv forward " + String(format: "%d@%dx%d b8: picked %.2f ms, im2col %.2f ms, Winograd F4 %.2f ms; differences %.1e, %.1e",
                                           channels, size, size, tPicked, tIm2col, tWinograd, worstPicked, worstWinograd))
            XCTAssertEqual(picked.count, im2col.count)
            XCTAssertLessThan(worstPicked, 2e-5, "forward \(channels)@\(size): picked path against im2col")
            XCTAssertLessThan(worstWinograd, 2e-5, "forward \(channels)@\(size): Winograd against im2col")
            if size == 7 { XCTAssertEqual(worstPicked, 0, "the forward at 7x7 (32 tiles) takes im2col") }
        }
    }
}
