import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// The pieces behind `run`'s outputs and inputs: PyTorch-style initialisation by role, the loss
/// plot, metrics.csv, CSV tables, eval splits and --drop-last.
final class RunArtifactsTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: Fixtures.root)

    func testInitialisationFollowsEachParameterRole() throws {
        let model = try Model(contentsOf: Self.fixtures.appendingPathComponent("gradient/embedding/gradient_graph.onnx").path)
        let graph = model.graph
        let shapes = ["emb.weight": [12, 6], "fc.weight": [3, 6], "fc.bias": [3]]
        XCTAssertEqual(ParameterInitialisation.role(of: "emb.weight", shape: [12, 6], graph: graph, shapes: shapes), .embedding)
        XCTAssertEqual(ParameterInitialisation.role(of: "fc.weight", shape: [3, 6], graph: graph, shapes: shapes), .weight(fanIn: 6))
        XCTAssertEqual(ParameterInitialisation.role(of: "fc.bias", shape: [3], graph: graph, shapes: shapes), .bias(fanIn: 6))

        let (state, text) = try ParameterInitialisation.pytorchDefaults(for: model, seed: 3)
        XCTAssertEqual(text, "emb.weight embedding N(0,1), fc.weight weight U(±1/sqrt(6)), fc.bias bias U(±1/sqrt(6))")
        let emb = state.parameter("emb.weight")!.data.scalars(as: Float.self)
        let mean = emb.reduce(0, +) / Float(emb.count)
        let variance = emb.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(emb.count)
        XCTAssertEqual(mean, 0, accuracy: 0.4)       // 72 draws: the standard error of the mean is 0.12
        XCTAssertEqual(variance, 1, accuracy: 0.5)
        XCTAssertTrue(emb.contains { abs($0) > Float(1 / 6.0.squareRoot()) }, "normal, not the Linear bound")
        for name in ["fc.weight", "fc.bias"] {
            let v = state.parameter(name)!.data.scalars(as: Float.self)
            XCTAssertTrue(v.allSatisfy { abs($0) <= Float(1 / 6.0.squareRoot()) }, name)
            XCTAssertTrue(Set(v).count == v.count, "\(name): distinct draws")
        }
        // Same seed, same parameters; another seed, others.
        let again = try ParameterInitialisation.pytorchDefaults(for: model, seed: 3).0
        XCTAssertEqual(again.parameter("fc.weight")!.data.scalars(as: Float.self), state.parameter("fc.weight")!.data.scalars(as: Float.self))
        let other = try ParameterInitialisation.pytorchDefaults(for: model, seed: 4).0
        XCTAssertNotEqual(other.parameter("fc.weight")!.data.scalars(as: Float.self), state.parameter("fc.weight")!.data.scalars(as: Float.self))
    }

    func testNormParametersAndGemmTransposes() throws {
        var graph = Graph()
        graph.nodes = [
            Node(opType: "Gemm", domain: "", name: "g", inputs: ["x", "w", "b"], outputs: ["y"], attributes: ["transB": .int(1)]),
            Node(opType: "LayerNormalization", domain: "", name: "ln", inputs: ["y", "ln.weight", "ln.bias"], outputs: ["z"]),
            Node(opType: "MatMul", domain: "", name: "m", inputs: ["z", "w2"], outputs: ["u"]),
            Node(opType: "Add", domain: "", name: "a", inputs: ["u", "b2"], outputs: ["v"]),
        ]
        let shapes = ["w": [4, 7], "b": [4], "ln.weight": [4], "ln.bias": [4], "w2": [4, 9], "b2": [9]]
        func role(_ n: String) -> ParameterInitialisation.Role {
            ParameterInitialisation.role(of: n, shape: shapes[n]!, graph: graph, shapes: shapes)
        }
        XCTAssertEqual(role("w"), .weight(fanIn: 7))
        XCTAssertEqual(role("b"), .bias(fanIn: 7))
        XCTAssertEqual(role("ln.weight"), .normScale)
        XCTAssertEqual(role("ln.bias"), .normBias)
        XCTAssertEqual(role("w2"), .weight(fanIn: 4))
        XCTAssertEqual(role("b2"), .bias(fanIn: 4))
    }

    func testMetricsRoundTripAndPlot() throws {
        let rows = [RunMetric(step: 0, epoch: 0, loss: nil, learningRate: nil, evalLoss: 2.5, evalAccuracy: 0.1),
                    RunMetric(step: 1, epoch: 1, loss: 2.25, learningRate: 0.001),
                    RunMetric(step: 2, epoch: 1, loss: 1.5, learningRate: 0.001, evalLoss: 1.75, evalAccuracy: 0.5)]
        let csv = RunArtifacts.metricsCSV(rows)
        XCTAssertEqual(csv, "step,epoch,loss,lr,eval_loss,eval_accuracy,grad_norm,eval_topk_accuracy,eval_mae,eval_rmse\n"
                       + "0,0,,,2.5,0.1,,,,\n1,1,2.25,0.001,,,,,,\n2,1,1.5,0.001,1.75,0.5,,,,\n")
        // A row cut short by a kill is skipped; rows of the six-column format still read.
        XCTAssertEqual(RunArtifacts.parseMetrics(csv + "3,1,1.2").map(\.step), [0, 1, 2])
        XCTAssertEqual(RunArtifacts.parseMetrics("step,epoch,loss,lr,eval_loss,eval_accuracy\n4,1,0.5,0.1,,\n").map(\.loss), [0.5])
        let back = RunArtifacts.parseMetrics(csv)
        XCTAssertEqual(back.map(\.step), [0, 1, 2])
        XCTAssertEqual(back.map(\.loss), [nil, 2.25, 1.5])
        XCTAssertEqual(back.map(\.evalAccuracy), [0.1, nil, 0.5])

        XCTAssertEqual(LossPlot.niceTicks(0.03, 2.31, count: 6), [0, 0.5, 1, 1.5, 2, 2.5])
        XCTAssertEqual(LossPlot.niceTicks(0, 450, count: 8), [0, 100, 200, 300, 400, 500])
        let svg = LossPlot.svg(train: [(1, 2.25), (2, 1.5)], eval: [(0, 2.5), (2, 1.75)], title: "a <b>")
        XCTAssertTrue(svg.contains("a &lt;b&gt;"))
        XCTAssertEqual(svg.components(separatedBy: "<circle").count - 1, 2)
        // 10,000 steps become at most one point per pixel column.
        let long = (1...10_000).map { (step: $0, loss: 1 / Double($0)) }
        XCTAssertLessThanOrEqual(LossPlot.downsample(long, to: 658).count, 658)
    }

    func testCSVTablesSplitsAndDropLast() throws {
        let table = try CSVData.parse("a,b,label\n1,2,0\n3,4.5,1\n\"5\",6,2\n", columns: DataSource.CSVColumns(), label: "t.csv")
        XCTAssertEqual(table.features.shape, [3, 2])
        XCTAssertEqual(table.features.scalars(as: Float.self), [1, 2, 3, 4.5, 5, 6])
        XCTAssertEqual(table.labels?.dtype, .int64)
        XCTAssertEqual(table.labels?.scalars(as: Int64.self), [0, 1, 2])
        let regression = try CSVData.parse("x,y\n1,0.5\n2,1.5\n", columns: DataSource.CSVColumns(label: "y"), label: "r.csv")
        XCTAssertEqual(regression.labels?.dtype, .float32)
        XCTAssertThrowsError(try CSVData.parse("a,b\n1,x\n", columns: DataSource.CSVColumns(label: "b"), label: "bad.csv")) { error in
            XCTAssertTrue("\(error)".contains("row 2, label column 'b': 'x' is not a number"), "\(error)")
        }

        // Token labels: 2 label rows per example travel with their example.
        let arrays: [String: Tensor] = ["input": Tensor(shape: [10, 1], scalars: (0..<10).map(Float.init)),
                                        "labels": Tensor(shape: [20], scalars: (0..<20).map(Int64.init))]
        let (train, eval) = try DataSource.split(arrays, names: ["input", "labels"], evalFraction: 0.2, label: "d")
        XCTAssertEqual(train["input"]?.shape, [8, 1])
        XCTAssertEqual(eval["input"]?.scalars(as: Float.self), [8, 9])
        XCTAssertEqual(eval["labels"]?.scalars(as: Int64.self), [16, 17, 18, 19])
        let trimmed = try DataSource.dropLast(arrays, names: ["input", "labels"], batchSize: 4, label: "d")
        XCTAssertEqual(trimmed["input"]?.shape, [8, 1])
        XCTAssertEqual(trimmed["labels"]?.shape, [16])
        XCTAssertEqual(DataSource.evalBatchSize(examples: 352, preferred: 256), 176)
        XCTAssertEqual(DataSource.evalBatchSize(examples: 13, preferred: 32), 13)
    }
}
