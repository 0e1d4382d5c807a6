import Foundation
import ZIPFoundation

/// NumPy `.npz` archives: a zip of `.npy` files, stored (`np.savez`) or deflated
/// (`np.savez_compressed`). Array names are the entry names without the `.npy` suffix.
public enum Npz {
    /// Reads every array of an `.npz` file, in archive order.
    public static func read(contentsOf path: String) throws -> [(name: String, tensor: Tensor)] {
        try RegularFile.check(path)  // the same "no such file" / "is a folder" errors as the other readers
        let archive: Archive
        do {
            archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read)
        } catch {
            throw OnnxTrainError.invalidModel("\(path): not a valid .npz (zip) archive")
        }
        return try arrays(in: archive, name: path)
    }

    /// Reads every array of an `.npz` file into a dictionary.
    public static func readDictionary(contentsOf path: String) throws -> [String: Tensor] {
        dictionary(try read(contentsOf: path))
    }

    /// Writes `arrays` in the given order; `compressed` deflates like `np.savez_compressed`.
    public static func write(_ arrays: [(name: String, tensor: Tensor)], to path: String, compressed: Bool = false) throws {
        try DataFile.write(try encode(arrays, compressed: compressed, name: path), to: path)
    }

    /// Writes a dictionary of arrays, sorted by name so the file is reproducible.
    public static func write(_ arrays: [String: Tensor], to path: String, compressed: Bool = false) throws {
        try write(arrays.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: path, compressed: compressed)
    }

    /// Parses `.npz` bytes; `name` goes into every error.
    ///
    /// The bytes go through a temporary file: ZIPFoundation 0.9.20's in-memory reader traps when a
    /// corrupt offset points past the end of the data, its file reader reports an error instead.
    public static func decode(_ data: Data, name: String) throws -> [(name: String, tensor: Tensor)] {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("onnx-train-\(UUID().uuidString).npz").path
        do {
            try data.write(to: URL(fileURLWithPath: path))
        } catch {
            throw OnnxTrainError.io("\(name): cannot write a temporary file to read the archive (\(error.localizedDescription))")
        }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let archive: Archive
        do {
            archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read)
        } catch {
            throw OnnxTrainError.invalidModel("\(name): not a valid .npz (zip) archive")
        }
        return try arrays(in: archive, name: name)
    }

    private static func arrays(in archive: Archive, name: String) throws -> [(name: String, tensor: Tensor)] {
        var arrays: [(name: String, tensor: Tensor)] = []
        var seen = Set<String>()
        for entry in archive where entry.type == .file {
            let arrayName = entry.path.hasSuffix(".npy") ? String(entry.path.dropLast(4)) : entry.path
            let label = "\(name): array '\(arrayName)'"
            var bytes = Data()
            do {
                _ = try archive.extract(entry, skipCRC32: false) { bytes.append($0) }
            } catch {
                throw OnnxTrainError.invalidModel("\(label): cannot extract from the archive (\(error))")
            }
            guard seen.insert(arrayName).inserted else { throw OnnxTrainError.invalidModel("\(label) appears twice") }
            arrays.append((arrayName, try Npy.decode(bytes, name: label)))
        }
        return arrays
    }

    /// Serialises arrays as `.npz` bytes.
    public static func encode(_ arrays: [(name: String, tensor: Tensor)], compressed: Bool = false, name: String = "archive") throws -> Data {
        let archive: Archive
        do {
            archive = try Archive(data: Data(), accessMode: .create)
        } catch {
            throw OnnxTrainError.io("\(name): cannot create a zip archive in memory (\(error))")
        }
        var seen = Set<String>()
        for (arrayName, tensor) in arrays {
            guard !arrayName.isEmpty else { throw OnnxTrainError.invalidInput("\(name): an array has an empty name") }
            guard seen.insert(arrayName).inserted else { throw OnnxTrainError.invalidInput("\(name): array '\(arrayName)' given twice") }
            let bytes = try Npy.encode(tensor, name: "\(name): array '\(arrayName)'")
            do {
                // A fixed date keeps archives byte-for-byte reproducible.
                try archive.addEntry(with: arrayName + ".npy", type: .file, uncompressedSize: Int64(bytes.count),
                                     modificationDate: Date(timeIntervalSince1970: 1_577_836_800),
                                     compressionMethod: compressed ? .deflate : .none) { position, size in
                    bytes.subdata(in: Int(position)..<(Int(position) + size))
                }
            } catch {
                throw OnnxTrainError.io("\(name): cannot add array '\(arrayName)' to the archive (\(error))")
            }
        }
        guard let data = archive.data else { throw OnnxTrainError.io("\(name): the in-memory archive has no data") }
        return data
    }

    /// The arrays by name (a repeated name keeps its last array).
    static func dictionary(_ arrays: [(name: String, tensor: Tensor)]) -> [String: Tensor] {
        Dictionary(arrays.map { ($0.name, $0.tensor) }, uniquingKeysWith: { _, last in last })
    }
}
