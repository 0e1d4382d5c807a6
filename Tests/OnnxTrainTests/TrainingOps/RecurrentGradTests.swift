import OnnxTrain
import XCTest

/// LSTMGrad and GRUGrad against central differences of LSTMTraining/GRUTraining in float64, over
/// what onnxruntime does not run (reverse and bidirectional directions, sequence_lens including 0,
/// layout 1, peepholes, input_forget, GRU without linear_before_reset).
///
/// L = Σ dY ⊙ Y + Σ dY_h ⊙ Y_h (+ Σ dY_c ⊙ Y_c); every input's gradient (X, W, R, B, the initial
/// states, P) must match (L(x + h) − L(x − h)) / 2h, h = 1e-5, within 1e-6 relative.
final class RecurrentGradTests: XCTestCase {
    struct Config {
        var lstm: Bool
        var direction = "forward"
        var layout = 0
        var lens: [Int32]?
        var linearBeforeReset = 1
        var inputForget = 0
        var peephole = false
        let S = 4, B = 2, I = 3, H = 2
    }

    func testLSTMForward() throws { try check(Config(lstm: true)) }
    func testLSTMReverseWithSequenceLengths() throws { try check(Config(lstm: true, direction: "reverse", lens: [3, 1])) }
    func testLSTMBidirectionalLayout1PeepholesSequenceLengths() throws {
        try check(Config(lstm: true, direction: "bidirectional", layout: 1, lens: [4, 2], peephole: true))
    }
    func testLSTMBidirectionalInputForgetPeepholes() throws {
        try check(Config(lstm: true, direction: "bidirectional", inputForget: 1, peephole: true))
    }
    func testLSTMEmptySequence() throws { try check(Config(lstm: true, direction: "bidirectional", lens: [0, 3])) }
    func testGRUBidirectionalLayout1SequenceLengths() throws {
        try check(Config(lstm: false, direction: "bidirectional", layout: 1, lens: [2, 4]))
    }
    func testGRUReverseWithoutLinearBeforeReset() throws { try check(Config(lstm: false, direction: "reverse", linearBeforeReset: 0)) }
    func testGRUBidirectionalWithoutLinearBeforeResetSequenceLengths() throws {
        try check(Config(lstm: false, direction: "bidirectional", lens: [4, 1], linearBeforeReset: 0))
    }

    func testNonDefaultActivationsAndClipAreRefused() throws {
        let x = randomDoubles([2, 1, 2], seed: 1), w = randomDoubles([1, 8, 2], seed: 2), r = randomDoubles([1, 8, 2], seed: 3)
        let y = try runTrainingOp("LSTMTraining", "com.microsoft", [x, w, r], attributes: ["hidden_size": .int(2)], outputs: 5)
        for (attrs, words) in [(["clip": Attribute.float(1)], "clip"), (["activations": .strings(["Sigmoid", "Relu", "Tanh"])], "activations")] {
            XCTAssertThrowsError(try runTrainingOp("LSTMGrad", "com.microsoft", [x, w, r, nil, nil, nil, y[0], y[3], y[4], y[0]],
                                                   attributes: attrs.merging(["hidden_size": .int(2)]) { a, _ in a }, outputs: 4)) { error in
                XCTAssertTrue("\(error)".contains(words), "\(error)")
            }
        }
    }

    func check(_ c: Config, file: StaticString = #filePath, line: UInt = #line) throws {
        let D = c.direction == "bidirectional" ? 2 : 1, G = c.lstm ? 4 : 3, (S, B, I, H) = (c.S, c.B, c.I, c.H)
        let state = c.layout == 0 ? [D, B, H] : [B, D, H]
        var attrs: [String: Attribute] = ["hidden_size": .int(H), "direction": .string(c.direction), "layout": .int(c.layout)]
        if c.lstm { attrs["input_forget"] = .int(c.inputForget) } else { attrs["linear_before_reset"] = .int(c.linearBeforeReset) }
        var inputs = [randomDoubles(c.layout == 0 ? [S, B, I] : [B, S, I], seed: 1, low: -1, high: 1),
                      randomDoubles([D, G * H, I], seed: 2, low: -0.7, high: 0.7), randomDoubles([D, G * H, H], seed: 3, low: -0.7, high: 0.7),
                      randomDoubles([D, 2 * G * H], seed: 4, low: -0.5, high: 0.5), randomDoubles(state, seed: 5, low: -1, high: 1)]
        if c.lstm { inputs.append(randomDoubles(state, seed: 6, low: -1, high: 1)) }
        if c.peephole { inputs.append(randomDoubles([D, 3 * H], seed: 7, low: -0.5, high: 0.5)) }
        let lens = c.lens.map { Tensor(shape: [B], scalars: $0) }
        let ms = "com.microsoft"
        func forward(_ v: [Tensor]) throws -> [Tensor] {
            c.lstm ? try runTrainingOp("LSTMTraining", ms, [v[0], v[1], v[2], v[3], lens, v[4], v[5], c.peephole ? v[6] : nil], attributes: attrs, outputs: 5)
                   : try runTrainingOp("GRUTraining", ms, [v[0], v[1], v[2], v[3], lens, v[4]], attributes: attrs, outputs: 3)
        }
        let returned = c.lstm ? 3 : 2   // Y, Y_h (, Y_c): concatenated, so one dY weighs all of them
        func concatenated(_ ts: [Tensor]) -> Tensor {
            let all = ts.prefix(returned).flatMap { $0.scalars(as: Double.self) }
            return Tensor(shape: [all.count], scalars: all)
        }
        let outputs = try forward(inputs)
        let dAll = randomDoubles([concatenated(outputs).count], seed: 8)
        var pieces: [Tensor] = [], offset = 0
        for t in outputs.prefix(returned) {
            pieces.append(Tensor(shape: t.shape, scalars: Array(dAll.scalars(as: Double.self)[offset..<(offset + t.count)])))
            offset += t.count
        }
        let grads: [Tensor]
        if c.lstm {
            grads = try runTrainingOp("LSTMGrad", ms, [inputs[0], inputs[1], inputs[2], lens, inputs[4], inputs[5], outputs[0], outputs[3], outputs[4],
                                                     pieces[0], pieces[1], pieces[2], c.peephole ? inputs[6] : nil], attributes: attrs, outputs: 7)
        } else {
            grads = try runTrainingOp("GRUGrad", ms, [inputs[0], inputs[1], inputs[2], inputs[3], lens, inputs[4], outputs[0], outputs[2],
                                                    pieces[0], pieces[1]], attributes: attrs, outputs: 5)
        }
        try checkTrainingGradient(of: { try concatenated(forward($0)) }, at: inputs, dY: dAll, wrt: Array(inputs.indices),
                                  analytic: Array(grads.prefix(inputs.count)), label: "\(c)", file: file, line: line)
    }
}
