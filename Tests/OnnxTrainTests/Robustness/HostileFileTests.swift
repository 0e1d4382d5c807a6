import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// Files built to crash, hang or escape (issue 13): deep nesting, symbolic links out of the model
/// folder, named pipes and devices, numbers at the edge of Int64.
final class HostileFileTests: XCTestCase {
    private func load(_ bytes: [UInt8], directory: String? = nil) throws -> Model {
        try bytes.withUnsafeBytes { try Model(bytes: $0, directory: directory) }
    }

    // MARK: Nesting

    func testThousandsOfNestedSubgraphsAreRefusedNotAStackOverflow() throws {
        // 3000 levels crashed protobuf-c's recursive unpack (SIGSEGV) before the depth limit.
        for levels in [3000, 6000] {
            let bytes = ProtoBytes.model(graph: ProtoBytes.nestedIfGraph(levels: levels))
            assertOnnxTrainError(.invalidModel, containing: ["nests messages more than 100 deep"]) { try load(bytes) }
        }
    }

    func testModestNestingStillLoads() throws {
        // 30 nested If levels: 2 + 3·30 = 92 messages deep, inside protobuf's limit of 100.
        let model = try load(ProtoBytes.model(graph: ProtoBytes.nestedIfGraph(levels: 30)))
        var depth = 0
        var graph: Graph? = model.graph
        while let g = graph, let node = g.nodes.first, node.opType == "If" {
            depth += 1
            if case .graph(let inner)? = node.attributes["then_branch"] { graph = inner } else { graph = nil }
        }
        XCTAssertEqual(depth, 30)
    }

    func testNestingDepthCountsOnlyRecursivePaths() {
        let bytes = ProtoBytes.model(graph: ProtoBytes.nestedIfGraph(levels: 4))
        // ModelProto, then per level GraphProto > NodeProto > AttributeProto, then the innermost graph and its node.
        let depth = bytes.withUnsafeBytes { ProtobufNesting.depth(of: $0, as: .model) }
        XCTAssertEqual(depth, 1 + 3 * 4 + 2)
        // Nested types: TypeProto > Sequence > TypeProto > ... inside a graph input.
        var type = ProtoBytes.field(1, ProtoBytes.int(1, 1))  // tensor_type { elem_type: FLOAT }
        for _ in 0..<200 { type = ProtoBytes.field(4, ProtoBytes.field(1, type)) }
        let graph = ProtoBytes.field(11, ProtoBytes.field(1, "x") + ProtoBytes.field(2, type))
        let model = ProtoBytes.model(graph: graph)
        assertOnnxTrainError(.invalidModel, containing: ["nests messages"]) { try load(model) }
        // Garbage after a valid prefix ends the scan without an error; protobuf-c then rejects it.
        assertOnnxTrainError(.invalidModel, containing: ["protobuf parse failed"]) { try load(ProtoBytes.model(graph: []) + [0xFF, 0xFF]) }
    }

    func testDeeplyNestedSequenceValueIsRefused() throws {
        var sequence: [UInt8] = ProtoBytes.int(2, 1)
        for _ in 0..<5000 { sequence = ProtoBytes.field(5, sequence) }
        assertOnnxTrainError(.invalidModel, containing: ["SequenceProto nests messages"]) {
            try sequence.withUnsafeBytes { try Value(protobuf: $0, kind: .sequence) }
        }
    }

    func testIRVersionAndOpsetFromTheFutureAreRefused() throws {
        let graph = ProtoBytes.field(1, ProtoBytes.field(1, "x") + ProtoBytes.field(2, "y") + ProtoBytes.field(4, "Identity"))
        let future = ProtoBytes.int(1, 99) + ProtoBytes.field(8, ProtoBytes.int(2, 17)) + ProtoBytes.field(7, graph)
        assertOnnxTrainError(.unsupported, containing: ["IR version 99"]) { try load(future) }
        let opset = ProtoBytes.int(1, 8) + ProtoBytes.field(8, ProtoBytes.int(2, 999)) + ProtoBytes.field(7, graph)
        assertOnnxTrainError(.unsupported, containing: ["opset 999"]) { try load(opset) }
        // Another domain's versions are its own business.
        let custom = ProtoBytes.int(1, 8) + ProtoBytes.field(8, ProtoBytes.field(1, "com.example") + ProtoBytes.int(2, 999))
            + ProtoBytes.field(8, ProtoBytes.int(2, 17)) + ProtoBytes.field(7, graph)
        XCTAssertEqual(try load(custom).opsetImports["com.example"], 999)
    }

    // MARK: External data

    func testExternalDataThroughASymlinkOutOfTheFolderIsRefused() throws {
        let root = try DataFixtures.temporaryDirectory(self)
        let modelDir = root + "/model", outside = root + "/outside"
        try FileManager.default.createDirectory(atPath: modelDir + "/sub", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let secret: [Float] = [13, 17]
        try Data(secret.withUnsafeBytes { Array($0) }).write(to: URL(fileURLWithPath: outside + "/secret.bin"))
        // A file link and a folder link, both pointing out of the model's folder.
        try FileManager.default.createSymbolicLink(atPath: modelDir + "/weights.bin", withDestinationPath: outside + "/secret.bin")
        try FileManager.default.createSymbolicLink(atPath: modelDir + "/linked", withDestinationPath: outside)
        for location in ["weights.bin", "linked/secret.bin"] {
            let path = modelDir + "/model.onnx"
            try Data(ProtoBytes.externalDataModel(location: location)).write(to: URL(fileURLWithPath: path))
            assertOnnxTrainError(.invalidModel, containing: ["'\(location)' must stay inside the model's folder", "symbolic link"]) {
                try Model(contentsOf: path)
            }
        }
        // A link that stays inside the folder is fine.
        try FileManager.default.copyItem(atPath: outside + "/secret.bin", toPath: modelDir + "/sub/real.bin")
        try FileManager.default.createSymbolicLink(atPath: modelDir + "/inside.bin", withDestinationPath: "sub/real.bin")
        try Data(ProtoBytes.externalDataModel(location: "inside.bin")).write(to: URL(fileURLWithPath: modelDir + "/model.onnx"))
        let model = try Model(contentsOf: modelDir + "/model.onnx")
        XCTAssertEqual(model.graph.initializers["w"]?.scalars(as: Float.self), secret)
    }

    func testExternalDataOffsetNearInt64MaxIsAnErrorNotATrap() throws {
        let dir = try DataFixtures.temporaryDirectory(self)
        try Data(count: 8).write(to: URL(fileURLWithPath: dir + "/w.bin"))
        for (offset, length) in [("9223372036854775807", "8"), ("9223372036854775800", nil), ("4", "8")] {
            let bytes = ProtoBytes.externalDataModel(location: "w.bin", offset: offset, length: length)
            assertOnnxTrainError(.invalidModel, containing: ["offset \(offset)", "lies outside 'w.bin' (8 bytes)"]) {
                try load(bytes, directory: dir)
            }
        }
    }

    func testStringTensorInExternalDataIsRefused() throws {
        // Found by the `external` fuzz target: a string tensor's raw form trapped in Tensor(uninitialized:).
        let dir = try DataFixtures.temporaryDirectory(self)
        try Data(count: 64).write(to: URL(fileURLWithPath: dir + "/w.bin"))
        assertOnnxTrainError(.invalidModel, containing: ["tensor 'w'", "string tensor in external data"]) {
            try load(ProtoBytes.externalDataModel(location: "w.bin", dataType: 8), directory: dir)
        }
    }

    // MARK: Special files

    func testNamedPipesAndDevicesAreRefusedWithoutBlocking() throws {
        let dir = try DataFixtures.temporaryDirectory(self)
        let fifo = dir + "/pipe"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        // Each of these blocked forever in open() before the file type was checked.
        assertOnnxTrainError(.io, containing: [fifo, "named pipe"]) { try Model(contentsOf: fifo) }
        assertOnnxTrainError(.io, containing: [fifo, "named pipe"]) { try Npy.read(contentsOf: fifo) }
        assertOnnxTrainError(.io, containing: [fifo, "named pipe"]) { try Npz.read(contentsOf: fifo) }
        assertOnnxTrainError(.io, containing: [fifo, "named pipe"]) { try SafeTensors.read(contentsOf: fifo) }
        assertOnnxTrainError(.io, containing: [fifo, "named pipe"]) { try TensorProtoFiles.read(contentsOf: fifo) }
        assertOnnxTrainError(.io, containing: [fifo, "named pipe"]) { try CheckpointState.load(from: fifo) }
        for data in [fifo, dir + "/table.csv"] {
            if data.hasSuffix(".csv") { XCTAssertEqual(mkfifo(data, 0o600), 0) }
            assertOnnxTrainError(.io, containing: [data, "named pipe"]) { try DataSource.load(data, names: ["x", "y"]) }
        }
        // External data that is a pipe.
        XCTAssertEqual(mkfifo(dir + "/weights.bin", 0o600), 0)
        assertOnnxTrainError(.io, containing: ["weights.bin", "named pipe"]) {
            try load(ProtoBytes.externalDataModel(location: "weights.bin"), directory: dir)
        }
        // /dev/null says what it is, not "permission".
        assertOnnxTrainError(.io, containing: ["/dev/null: is a character device, not a regular file"]) {
            try DataSource.load("/dev/null", names: ["x"])
        }
        assertOnnxTrainError(.io, containing: [dir, "is a folder"]) { try Npy.read(contentsOf: dir) }
    }

    // MARK: Numbers at the edge

    func testBLASStridesBeyondInt32FallBackInsteadOfTrapping() {
        // A [1, k] row with a row stride past Int32.max (as a [1, 2^31+1] operand has): the CBLAS
        // interface takes 32-bit sizes, Int32(lda) trapped.
        let a: [Float] = [1, 2, 3], b: [Float] = [4, 5, 6]
        var c: [Float] = [100]
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    BLAS.gemm(transA: false, transB: false, m: 1, n: 1, k: 3, alpha: 2, a: pa.baseAddress!, lda: Int(Int32.max) + 2,
                               b: pb.baseAddress!, ldb: 1, beta: 0.5, c: pc.baseAddress!, ldc: 1)
                }
            }
        }
        XCTAssertEqual(c, [2 * 32 + 50])
        var d: [Double] = [0]
        [1.0, 2].withUnsafeBufferPointer { pa in
            [3.0, 4].withUnsafeBufferPointer { pb in
                d.withUnsafeMutableBufferPointer { pd in
                    BLAS.gemm(transA: true, transB: true, m: 1, n: 1, k: 2, alpha: 1, a: pa.baseAddress!, lda: 1,
                               b: pb.baseAddress!, ldb: 1 << 33, beta: 0, c: pd.baseAddress!, ldc: 1 << 40)
                }
            }
        }
        XCTAssertEqual(d, [11])
    }

    func testHugeHiddenSizeIsRefused() {
        let x = Tensor(shape: [1, 1, 1], scalars: [Float(1)])
        let w = Tensor(shape: [1, 4, 1], scalars: [Float](repeating: 1, count: 4))
        XCTAssertThrowsError(try runNode("LSTM", opset: 14, [x, w, w], attributes: ["hidden_size": .int(Int.max)], outputs: 2)) { error in
            XCTAssertTrue("\(error)".contains("hidden_size"), "\(error)")
        }
    }

    func testResumeProgressIsRangeChecked() throws {
        func state(step: Int64, batches: Int64, batching: String? = "--batch-size 4 --accumulate 2") throws -> CheckpointState {
            let s = try CheckpointState(trainable: [("w", Tensor(shape: [1], scalars: [Float(0)]))])
            s.properties[RunArtifacts.Resume.step] = .int(step)
            s.properties[RunArtifacts.Resume.batches] = .int(batches)
            s.properties[RunArtifacts.Resume.seed] = .int(-1)
            if let batching { s.properties[RunArtifacts.Resume.batching] = .string(batching) }
            return s
        }
        let good = try XCTUnwrap(try state(step: 3, batches: 7).runProgress())
        XCTAssertEqual(good.step, 3)
        XCTAssertEqual(good.batches, 7)
        XCTAssertEqual(good.seed, UInt64.max)
        XCTAssertNil(try CheckpointState(trainable: []).runProgress())
        for (step, batches) in [(Int64.min, 0), (-1, 0), (0, Int64.min), (3, Int64.max), (Int64.max, Int64.max), (5, 7)] as [(Int64, Int64)] {
            assertOnnxTrainError(.invalidModel, containing: ["onnx_train."]) { try state(step: step, batches: batches).runProgress() }
        }
        // Without the batching record, steps may not exceed batches.
        assertOnnxTrainError(.invalidModel, containing: ["onnx_train.step"]) { try state(step: 9, batches: 2, batching: nil).runProgress() }
    }
}
