import Foundation

/// Protobuf wire bytes written by hand, for models the model writer cannot express (10 000
/// nested subgraphs, external data with hostile offsets).
enum ProtoBytes {
    static func varint(_ value: UInt64) -> [UInt8] {
        var v = value, out: [UInt8] = []
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
        return out
    }

    /// A length-delimited field (message, string or bytes).
    static func field(_ number: Int, _ payload: [UInt8]) -> [UInt8] {
        varint(UInt64(number) << 3 | 2) + varint(UInt64(payload.count)) + payload
    }

    static func field(_ number: Int, _ text: String) -> [UInt8] { field(number, Array(text.utf8)) }

    /// A varint field.
    static func int(_ number: Int, _ value: Int64) -> [UInt8] {
        varint(UInt64(number) << 3) + varint(UInt64(bitPattern: value))
    }

    /// ModelProto { ir_version 8, opset_import { "" 17 }, graph }.
    static func model(graph: [UInt8]) -> [UInt8] {
        int(1, 8) + field(8, int(2, 17)) + field(7, graph)
    }

    /// A GraphProto whose only node is an `If` on `cond` whose then/else branch is `inner`, `levels` deep.
    static func nestedIfGraph(levels: Int) -> [UInt8] {
        // Innermost: a graph with one output and an Identity of the outer `x`.
        var graph = field(1, field(1, "x") + field(2, "y") + field(4, "Identity")) + field(12, field(1, "y"))
        for _ in 0..<levels {
            let attribute = field(1, "then_branch") + int(20, 5) + field(6, graph)
            let elseAttribute = field(1, "else_branch") + int(20, 5) + field(6, field(12, field(1, "y")))
            let node = field(1, "cond") + field(2, "y") + field(4, "If") + field(5, attribute) + field(5, elseAttribute)
            graph = field(1, node) + field(12, field(1, "y"))
        }
        return graph
    }

    /// A graph `y = Identity(w)` whose float initializer `w` [2] lives in external data.
    static func externalDataModel(location: String, offset: String? = nil, length: String? = nil, dataType: Int64 = 1) -> [UInt8] {
        var entries = field(13, field(1, "location") + field(2, location))
        if let offset { entries += field(13, field(1, "offset") + field(2, offset)) }
        if let length { entries += field(13, field(1, "length") + field(2, length)) }
        let tensor = int(1, 2) + int(2, dataType) + field(8, "w") + entries + int(14, 1)
        let node = field(1, "w") + field(2, "y") + field(4, "Identity")
        return model(graph: field(1, node) + field(5, tensor) + field(12, field(1, "y")))
    }
}
