import Foundation

/// TreeEnsemble (ai.onnx.ml 5): sums (or averages, min/max) leaf weights of decision trees.
///
/// X [N, F] -> Y [N, n_targets] in X's element type. Node i compares X[n, nodes_featureids[i]]
/// with nodes_splits[i] by nodes_modes[i] (LEQ, LT, GTE, GT, EQ, NEQ, MEMBER); a NaN feature
/// goes the true way when nodes_missing_value_tracks_true[i] is set. The true/false child is a
/// leaf index when nodes_trueleafs/falseleafs says so, else a node index. Set-membership nodes
/// take their sets from membership_values, NaN-separated, in the order the onnx reference
/// builds the trees (each root depth first, true branch before false). Only post_transform NONE
/// is implemented (the onnx reference applies none at all); others are rejected when built.
func registerTreeEnsemble(_ registry: OpRegistry) {
    registry.register("TreeEnsemble", domain: mlDomain, since: 5) { ctx in
        try TreeEnsembleKernel(ctx)
    }
}

struct TreeEnsembleKernel: Kernel {
    enum Mode: Int { case leq = 0, lt, gte, gt, eq, neq, member }
    enum Aggregate: Int { case average = 0, sum, min, max }

    /// A child reference: a node index or a leaf index.
    enum Child { case node(Int), leaf(Int) }

    struct TreeNode {
        var mode: Mode
        var feature: Int
        var split: Double
        var missingTracksTrue: Bool
        var whenTrue: Child
        var whenFalse: Child
    }

    var nodes: [TreeNode] = []
    var members: [Int: Set<Double>] = [:]
    var roots: [Child] = []
    var leafWeights: [Double] = []
    var leafTargets: [Int] = []
    var targets = 0
    var aggregate = Aggregate.sum
    var maxFeature = -1

    init(_ ctx: NodeContext) throws {
        func required<T>(_ v: T?, _ name: String) throws -> T {
            guard let v else { throw KernelError("attribute '\(name)' is required") }
            return v
        }
        guard let split = try ctx.tensor("nodes_splits") else { throw KernelError("attribute 'nodes_splits' is required") }
        let splits = try split.doubles()
        let featureIDs = try required(ctx.ints("nodes_featureids"), "nodes_featureids")
        let modeTensor = try required(ctx.tensor("nodes_modes"), "nodes_modes")
        guard let modes = modeTensor.intValues() else { throw KernelError("nodes_modes must be an integer tensor, got \(modeTensor)") }
        let trueIDs = try required(ctx.ints("nodes_truenodeids"), "nodes_truenodeids")
        let falseIDs = try required(ctx.ints("nodes_falsenodeids"), "nodes_falsenodeids")
        let trueLeafs = try required(ctx.ints("nodes_trueleafs"), "nodes_trueleafs")
        let falseLeafs = try required(ctx.ints("nodes_falseleafs"), "nodes_falseleafs")
        let missing = try ctx.ints("nodes_missing_value_tracks_true")
        leafTargets = try required(ctx.ints("leaf_targetids"), "leaf_targetids")
        leafWeights = try required(ctx.tensor("leaf_weights"), "leaf_weights").doubles()
        let treeRoots = try required(ctx.ints("tree_roots"), "tree_roots")
        targets = try ctx.requiredInt("n_targets")
        guard let agg = Aggregate(rawValue: try ctx.int("aggregate_function", default: 1)) else {
            throw KernelError("aggregate_function must be 0 (AVERAGE), 1 (SUM), 2 (MIN) or 3 (MAX)")
        }
        aggregate = agg
        let post = try ctx.int("post_transform", default: 0)
        guard post == 0 else { throw KernelError("post_transform \(post) is not supported (only 0, NONE)") }

        let n = splits.count
        for (name, list) in [("nodes_featureids", featureIDs), ("nodes_modes", modes), ("nodes_truenodeids", trueIDs),
                             ("nodes_falsenodeids", falseIDs), ("nodes_trueleafs", trueLeafs), ("nodes_falseleafs", falseLeafs)]
        where list.count != n {
            throw KernelError("\(name) has \(list.count) entries, nodes_splits has \(n)")
        }
        if let missing, missing.count != n { throw KernelError("nodes_missing_value_tracks_true has \(missing.count) entries, nodes_splits has \(n)") }
        guard leafTargets.count == leafWeights.count else {
            throw KernelError("leaf_targetids (\(leafTargets.count)) and leaf_weights (\(leafWeights.count)) differ in length")
        }
        guard targets >= 0, targets <= 1 << 24 else { throw KernelError("n_targets \(targets) is out of range") }
        if let bad = leafTargets.first(where: { $0 < 0 || $0 >= targets }) {
            throw KernelError("leaf_targetids holds \(bad), outside [0, n_targets = \(targets))")
        }
        let leafCount = leafWeights.count
        func child(_ id: Int, isLeaf: Int) throws -> Child {
            if isLeaf != 0 {
                guard id >= 0, id < leafCount else { throw KernelError("leaf index \(id) is outside [0, \(leafCount))") }
                return .leaf(id)
            }
            guard id >= 0, id < n else { throw KernelError("node index \(id) is outside [0, \(n))") }
            return .node(id)
        }
        for i in 0..<n {
            guard let mode = Mode(rawValue: modes[i]) else { throw KernelError("nodes_modes[\(i)] = \(modes[i]) is not a mode (0...6)") }
            guard featureIDs[i] >= 0 else { throw KernelError("nodes_featureids[\(i)] = \(featureIDs[i]) is negative") }
            nodes.append(TreeNode(mode: mode, feature: featureIDs[i], split: splits[i], missingTracksTrue: (missing?[i] ?? 0) != 0,
                                  whenTrue: try child(trueIDs[i], isLeaf: trueLeafs[i]),
                                  whenFalse: try child(falseIDs[i], isLeaf: falseLeafs[i])))
        }
        maxFeature = featureIDs.max() ?? -1
        for r in treeRoots {
            guard r >= 0, r < n else { throw KernelError("tree root \(r) is outside [0, \(n))") }
            // A root whose both children are the same leaf is itself that leaf (the reference's rule).
            if trueLeafs[r] != 0, falseLeafs[r] != 0, trueIDs[r] == falseIDs[r] { roots.append(.leaf(trueIDs[r])) } else { roots.append(.node(r)) }
        }

        // Membership sets, consumed in the reference's build order: each tree depth first, true before false.
        var sets: [Set<Double>] = [[]]
        let membershipValues = try ctx.tensor("membership_values").map { try $0.doubles() } ?? []
        for v in membershipValues {
            if v.isNaN { sets.append([]) } else { sets[sets.count - 1].insert(v) }
        }
        let memberCount = nodes.filter { $0.mode == .member }.count
        if memberCount > 0 {
            guard sets.count - 1 == memberCount else {
                throw KernelError("membership_values holds \(sets.count - 1) NaN-terminated sets for \(memberCount) set-membership nodes")
            }
            var next = 0
            var seen = Set<Int>()
            for root in roots {
                var stack = [root]
                while let top = stack.popLast() {
                    guard case .node(let i) = top, seen.insert(i).inserted else { continue }
                    if nodes[i].mode == .member { members[i] = sets[next]; next += 1 }
                    stack.append(nodes[i].whenFalse)
                    stack.append(nodes[i].whenTrue)
                }
            }
        }
    }

    /// The leaf row `x` reaches from `root`; throws on a cycle (a path longer than the node count).
    func leaf(from root: Child, _ x: UnsafeBufferPointer<Double>) throws -> Int {
        var at = root
        var steps = 0
        while case .node(let i) = at {
            steps += 1
            guard steps <= nodes.count else { throw KernelError("the trees contain a cycle through node \(i)") }
            let node = nodes[i]
            let v = x[node.feature]
            let goesTrue: Bool
            if v.isNaN && node.missingTracksTrue {
                goesTrue = true
            } else {
                switch node.mode {
                case .leq: goesTrue = v <= node.split
                case .lt: goesTrue = v < node.split
                case .gte: goesTrue = v >= node.split
                case .gt: goesTrue = v > node.split
                case .eq: goesTrue = v == node.split
                case .neq: goesTrue = v != node.split
                case .member: goesTrue = members[i]?.contains(v) ?? false
                }
            }
            at = goesTrue ? node.whenTrue : node.whenFalse
        }
        guard case .leaf(let l) = at else { throw KernelError("unreachable") }
        return l
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        guard x.rank == 2, x.dtype == .float32 || x.dtype == .float64 || x.isHalf else {
            throw KernelError("input X must be a float matrix [N, F], got \(x)")
        }
        let (rows, features) = (x.shape[0], x.shape[1])
        guard maxFeature < features else { throw KernelError("nodes_featureids reaches feature \(maxFeature), X has \(features)") }
        _ = try Tensor.checkedElementCount([rows, targets])
        let values = try x.doubles()
        // MIN/MAX start from the element type's extremes, as the reference does (np.finfo(X.dtype)).
        let largest: Double = switch x.dtype {
        case .float64: .greatestFiniteMagnitude
        case .float16: 65504
        case .bfloat16: 3.3895313892515355e38
        default: Double(Float.greatestFiniteMagnitude)
        }
        let start: Double = switch aggregate { case .min: largest; case .max: -largest; default: 0 }
        var y = [Double](repeating: start, count: rows * targets)  // [N, n_targets]
        let treeCount = Double(roots.count)
        try values.withUnsafeBufferPointer { all in
            for r in 0..<rows {
                let row = UnsafeBufferPointer(rebasing: all[(r * features)..<((r + 1) * features)])
                for root in roots {
                    let l = try leaf(from: root, row)
                    let o = r * targets + leafTargets[l], w = leafWeights[l]
                    switch aggregate {
                    case .sum: y[o] += w
                    case .average: y[o] += w / treeCount
                    case .min: y[o] = Swift.min(y[o], w)
                    case .max: y[o] = Swift.max(y[o], w)
                    }
                }
            }
        }
        return [.tensor(try Tensor(dtype: x.dtype, shape: [rows, targets], doubles: y))]
    }
}
