import Foundation
import XCTest
@testable import OnnxTrain

/// Byte-level damage to every kind of data file onnx-train reads: the reader returns a tensor or
/// throws an `OnnxTrainError` naming the file; it never traps.
final class MutatedDataFileTests: XCTestCase {
    /// Decodes `mutants` with `decode`; returns how many decoded and how many threw.
    private func survive(_ original: Data, seed: UInt64, count: Int, _ decode: (Data) throws -> Void,
                         file: StaticString = #filePath, line: UInt = #line) -> (ok: Int, failed: Int) {
        var rng = SplitMix(seed: seed)
        var ok = 0, failed = 0
        for i in 0..<count {
            var bytes = original
            switch i % 4 {
            case 0: bytes[Int(rng.next() % UInt64(bytes.count))] ^= 1 << UInt8(rng.next() % 8)
            case 1: bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
            case 2: bytes = bytes.prefix(Int(rng.next() % UInt64(bytes.count)))
            default:
                for _ in 0..<3 { bytes[Int(rng.next() % UInt64(bytes.count))] = [0x00, 0x7F, 0x80, 0xFF, 0x39, 0x28][Int(rng.next() % 6)] }
            }
            do {
                try decode(bytes)
                ok += 1
            } catch let error as OnnxTrainError {
                XCTAssertTrue(error.message.contains("mutant"), "error does not name the file: \(error.message)", file: file, line: line)
                failed += 1
            } catch {
                XCTFail("mutant \(i): \(type(of: error)) is not an OnnxTrainError: \(error)", file: file, line: line)
            }
        }
        return (ok, failed)
    }

    private func bytes(_ name: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: DataFixtures.data(name))) }

    func testNpy() throws {
        for (i, name) in ["float32.npy", "bool.npy", "version3.npy", "scalar.npy"].enumerated() {
            let r = survive(try bytes(name), seed: UInt64(10 + i), count: 300) { _ = try Npy.decode($0, name: "mutant") }
            XCTAssertGreaterThan(r.failed, 0, name)
            XCTAssertGreaterThan(r.ok, 0, "\(name): some byte changes only touch values")
        }
    }

    func testSafeTensors() throws {
        let r = survive(try bytes("tensors.safetensors"), seed: 20, count: 600) { _ = try SafeTensors.decode($0, name: "mutant") }
        XCTAssertGreaterThan(r.failed, 0)
        XCTAssertGreaterThan(r.ok, 0)
    }

    func testNpz() throws {
        let r = survive(try bytes("stored.npz"), seed: 30, count: 300) { _ = try Npz.decode($0, name: "mutant") }
        XCTAssertGreaterThan(r.failed, 0)
    }

    func testTensorProto() throws {
        let r = survive(try bytes("pb/input_0.pb"), seed: 40, count: 300) { data in
            do {
                _ = try data.withUnsafeBytes { try Tensor.named(protobuf: $0) }
            } catch let error as OnnxTrainError {
                throw error.prefixed("mutant")
            }
        }
        XCTAssertGreaterThan(r.failed, 0)
    }
}
