import OnnxTrain

/// The text `inspect` prints, built from a loaded model (kept apart from printing for tests).
struct ModelSummary {
    let model: Model

    init(_ model: Model) { self.model = model }

    func text(path: String) -> String {
        var out = ""
        func line(_ s: String = "") { out += s + "\n" }
        let g = model.graph
        line("model: \(path)")
        line("ir_version: \(model.irVersion)")
        let producer = [model.producerName, model.producerVersion].filter { !$0.isEmpty }.joined(separator: " ")
        line("producer: \(producer.isEmpty ? "(none)" : producer)")
        if !g.name.isEmpty { line("graph: \(g.name)") }
        line("opsets:")
        for (domain, version) in model.opsetImports.sorted(by: { $0.key < $1.key }) {
            line("  \(displayDomain(domain)) \(version)")
        }
        line("inputs:")
        for info in g.feedInputs { line("  \(info.name): \(info.type?.description ?? "(no type)")") }
        line("outputs:")
        for info in g.outputs { line("  \(info.name): \(info.type?.description ?? "(no type)")") }
        let bytes = g.initializers.values.reduce(0) { $0 + ($1.dtype == .string ? $1.strings.reduce(0) { $0 + $1.utf8.count } : $1.byteCount) }
        line("initializers: \(g.initializers.count) (\(bytes) bytes\(bytes >= 1024 ? ", \(humanBytes(bytes))" : ""))")
        if !model.functions.isEmpty {
            line("functions: " + model.functions.map { "\(displayDomain($0.domain)).\($0.name)" }.joined(separator: ", "))
        }

        let usage = opUsage()
        line("ops: \(usage.reduce(0) { $0 + $1.count }) nodes")
        for domain in Set(usage.map(\.domain)).sorted() {
            line("  \(displayDomain(domain)):")
            for u in usage.filter({ $0.domain == domain }).sorted(by: { ($0.count, $1.opType) > ($1.count, $0.opType) }) {
                line("    \(u.opType) \(u.count)")
            }
        }
        let missing = usage.filter { $0.status != nil }
        if missing.isEmpty {
            line("not yet supported: none (every op has a kernel)")
        } else {
            line("not yet supported: \(missing.count) op type\(missing.count == 1 ? "" : "s")")
            for u in missing.sorted(by: { ($0.domain, $0.opType) < ($1.domain, $1.opType) }) {
                line("  \(displayDomain(u.domain)) \(u.opType) (\(u.status!))")
            }
        }
        let noRule = usage.filter { !Autodiff.hasGradient(domain: $0.domain, opType: $0.opType, registry: .standard) }
            .filter { u in !model.functions.contains { $0.domain == u.domain && $0.name == u.opType } }
        if noRule.isEmpty {
            line("without a gradient rule: none (onnx-train artifacts can differentiate every op)")
        } else {
            line("without a gradient rule: \(noRule.count) op type\(noRule.count == 1 ? "" : "s") (training through them stops with an error)")
            for u in noRule.sorted(by: { ($0.domain, $0.opType) < ($1.domain, $1.opType) }) {
                line("  \(displayDomain(u.domain)) \(u.opType)")
            }
        }
        return out
    }

    /// One op type of one domain: how many nodes use it, and why it cannot run (nil if it can):
    /// the opset it was looked up at, or that its domain is not imported.
    struct OpUsage {
        var domain: String
        var opType: String
        var count: Int
        var status: String?
    }

    /// Every op type used by the graph, its subgraphs and the model-local functions.
    func opUsage(registry: OpRegistry = .standard) -> [OpUsage] {
        var counts: [String: OpUsage] = [:]
        let functions = Set(model.functions.map { $0.domain + "::" + $0.name })
        func visit(_ nodes: [Node], opsets: [String: Int]) {
            for node in nodes {
                let key = node.domain + "::" + node.opType
                if counts[key] == nil {
                    counts[key] = OpUsage(domain: node.domain, opType: node.opType, count: 0,
                                          status: status(node, opsets: opsets, functions: functions, registry: registry))
                }
                counts[key]!.count += 1
                for attribute in node.attributes.values {
                    switch attribute {
                    case .graph(let g): visit(g.nodes, opsets: opsets)
                    case .graphs(let gs): for g in gs { visit(g.nodes, opsets: opsets) }
                    default: break
                    }
                }
            }
        }
        visit(model.graph.nodes, opsets: model.opsetImports)
        for f in model.functions {
            visit(f.nodes, opsets: model.opsetImports.merging(f.opsetImports) { _, fn in fn })
        }
        return Array(counts.values)
    }

    private func status(_ node: Node, opsets: [String: Int], functions: Set<String>, registry: OpRegistry) -> String? {
        if functions.contains(node.domain + "::" + node.opType) { return nil }
        guard let opset = opsets[node.domain] else {
            return "domain not imported by the model"
        }
        if registry.resolve(domain: node.domain, opType: node.opType, opset: opset) != nil { return nil }
        if registry.knows(domain: node.domain, opType: node.opType) {
            return "opset \(opset); kernels exist only for later opsets"
        }
        return "opset \(opset)"
    }

    private func displayDomain(_ domain: String) -> String { domain.isEmpty ? "ai.onnx" : domain }

    private func humanBytes(_ n: Int) -> String {
        let units = ["KiB", "MiB", "GiB", "TiB"]
        var value = Double(n) / 1024
        var unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return "\((value * 10).rounded() / 10) \(units[unit])"
    }
}
