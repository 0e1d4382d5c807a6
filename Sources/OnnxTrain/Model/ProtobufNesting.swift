/// A pre-scan of protobuf wire data that measures how deeply messages nest, so a hostile file
/// cannot overflow the stack in protobuf-c's recursive unpacker (3000 nested `If` subgraphs did).
///
/// Only the fields through which ONNX messages can recurse are followed (graph -> node ->
/// attribute -> graph, type -> sequence/map/optional -> type, sequence/optional values); every
/// other field is skipped by its length. The scan is iterative, so it needs no stack itself.
/// Malformed data ends the scan of its message without an error: protobuf-c then rejects the
/// message before it recurses into anything past that point.
enum ProtobufNesting {
    /// The deepest nesting accepted: protobuf's own default recursion limit (C++, Python and so
    /// onnxruntime refuse deeper messages), about 33 levels of nested subgraphs.
    static let maximumDepth = 100

    /// The ONNX messages on a recursive path, and the fields that lead from one to another.
    enum Kind {
        case model, graph, node, attribute, function, valueInfo, trainingInfo
        case type, typeSequence, typeMap, typeOptional
        case sequence, map, optional

        /// The kind of the message in field `field`, or nil for a field the scan skips.
        func child(_ field: UInt64) -> Kind? {
            switch (self, field) {
            case (.model, 7): return .graph
            case (.model, 20): return .trainingInfo
            case (.model, 25): return .function
            case (.trainingInfo, 1), (.trainingInfo, 2): return .graph
            case (.graph, 1): return .node
            case (.graph, 11), (.graph, 12), (.graph, 13): return .valueInfo
            case (.node, 5): return .attribute
            case (.attribute, 6), (.attribute, 11): return .graph
            case (.attribute, 14), (.attribute, 15): return .type
            case (.function, 7): return .node
            case (.function, 11): return .attribute
            case (.function, 12): return .valueInfo
            case (.valueInfo, 2): return .type
            case (.type, 4): return .typeSequence
            case (.type, 5): return .typeMap
            case (.type, 9): return .typeOptional
            case (.typeSequence, 1), (.typeOptional, 1): return .type
            case (.typeMap, 2): return .type
            case (.sequence, 5): return .sequence
            case (.sequence, 6): return .map
            case (.sequence, 7): return .optional
            case (.map, 5): return .sequence
            case (.optional, 5): return .sequence
            case (.optional, 6): return .map
            case (.optional, 7): return .optional
            default: return nil
            }
        }
    }

    /// The deepest message nesting in `bytes` (the top message counts 1), stopping early once it
    /// exceeds `limit`.
    static func depth(of bytes: UnsafeRawBufferPointer, as kind: Kind, limit: Int = maximumDepth) -> Int {
        // One entry per open message: where it ends and what it is.
        var stack: [(end: Int, kind: Kind)] = [(bytes.count, kind)]
        var deepest = 1
        var p = 0
        while let top = stack.last {
            if p >= top.end {
                stack.removeLast()
                p = top.end
                continue
            }
            guard let tag = varint(bytes, &p, end: top.end) else {
                // Malformed: skip the rest of this message.
                p = top.end
                continue
            }
            let field = tag >> 3
            switch tag & 7 {
            case 0:
                if varint(bytes, &p, end: top.end) == nil { p = top.end }
            case 1: p = p + 8 <= top.end ? p + 8 : top.end
            case 5: p = p + 4 <= top.end ? p + 4 : top.end
            case 2:
                guard let length = varint(bytes, &p, end: top.end), length <= UInt64(top.end - p) else {
                    p = top.end
                    continue
                }
                let end = p + Int(length)
                if let child = top.kind.child(field) {
                    stack.append((end, child))
                    deepest = max(deepest, stack.count)
                    if deepest > limit { return deepest }
                } else {
                    p = end
                }
            default:
                // Groups (3, 4) and invalid wire types: protobuf-c rejects them.
                p = top.end
            }
        }
        return deepest
    }

    /// Throws when messages in `bytes` nest deeper than `maximumDepth`.
    static func check(_ bytes: UnsafeRawBufferPointer, as kind: Kind, what: String) throws {
        let depth = depth(of: bytes, as: kind)
        guard depth <= maximumDepth else {
            throw OnnxTrainError.invalidModel("\(what) nests messages more than \(maximumDepth) deep (subgraphs or types inside one another); refusing it, as onnxruntime and protobuf do")
        }
    }

    @inline(__always)
    private static func varint(_ bytes: UnsafeRawBufferPointer, _ p: inout Int, end: Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while p < end && shift < 64 {
            let byte = bytes[p]
            p += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }
}
