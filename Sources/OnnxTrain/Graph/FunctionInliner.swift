/// Expands calls to model-local functions (FunctionProto) into their bodies, renaming the body's
/// intermediate values so that two calls never collide and substituting attribute references.
func inlineFunctions(_ nodes: [Node], functions: [Function], depth: Int = 0) throws -> [Node] {
    guard depth < 32 else { throw OnnxTrainError.invalidGraph("model-local functions call each other more than 32 levels deep") }
    var byKey: [String: Function] = [:]
    for f in functions { byKey[f.domain + "::" + f.name] = f }
    var result: [Node] = []
    var counter = 0
    for node in nodes {
        guard let fn = byKey[canonicalDomain(node.domain) + "::" + node.opType] else {
            result.append(node)
            continue
        }
        counter += 1
        let prefix = "\(node.name.isEmpty ? fn.name : node.name)/\(counter)/"
        var rename: [String: String] = [:]
        for (i, formal) in fn.inputs.enumerated() { rename[formal] = i < node.inputs.count ? node.inputs[i] : "" }
        for (i, formal) in fn.outputs.enumerated() { rename[formal] = i < node.outputs.count ? node.outputs[i] : "" }
        func mapped(_ name: String) -> String {
            if name.isEmpty { return "" }
            if let r = rename[name] { return r }
            let fresh = prefix + name
            rename[name] = fresh
            return fresh
        }
        var body: [Node] = []
        for var inner in fn.nodes {
            inner.inputs = inner.inputs.map(mapped)
            inner.outputs = inner.outputs.map(mapped)
            for (attr, ref) in inner.attributeRefs {
                if let value = node.attributes[ref] ?? fn.attributeDefaults[ref] { inner.attributes[attr] = value }
            }
            inner.attributeRefs = [:]
            inner.name = prefix + inner.name
            body.append(inner)
        }
        result.append(contentsOf: try inlineFunctions(body, functions: functions, depth: depth + 1))
    }
    return result
}
