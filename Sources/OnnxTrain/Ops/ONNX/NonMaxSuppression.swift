import Foundation

/// NonMaxSuppression: greedy box selection by score and IoU, per batch and class.

/// NonMaxSuppression, since opset 10.
func nonMaxSuppressionKernel(_ ctx: NodeContext) throws -> Kernel {
    let centerBox = try ctx.int("center_point_box", default: 0) != 0
    return AnyKernel { inputs, _ in
        let boxes = try inputs.tensor(0), scores = try inputs.tensor(1)
        guard boxes.rank == 3, boxes.shape[2] == 4, scores.rank == 3, scores.shape[0] == boxes.shape[0], scores.shape[2] == boxes.shape[1] else {
            throw KernelError("expected boxes [B,N,4] and scores [B,C,N], got \(boxes.shape) and \(scores.shape)")
        }
        let maxOut = try inputs.optionalTensor(2)?.ints("max_output_boxes_per_class").first ?? 0
        let iouThreshold = try inputs.optionalTensor(3)?.doubles().first ?? 0
        let scoreThreshold = try inputs.optionalTensor(4)?.doubles().first
        let bx = try boxes.doubles(), sc = try scores.doubles()
        let (nb, nc, n) = (scores.shape[0], scores.shape[1], scores.shape[2])
        func corners(_ b: Int, _ i: Int) -> (Double, Double, Double, Double) {
            let p = (b * n + i) * 4
            if centerBox {
                return (bx[p + 1] - bx[p + 3] / 2, bx[p] - bx[p + 2] / 2, bx[p + 1] + bx[p + 3] / 2, bx[p] + bx[p + 2] / 2)
            }
            return (min(bx[p], bx[p + 2]), min(bx[p + 1], bx[p + 3]), max(bx[p], bx[p + 2]), max(bx[p + 1], bx[p + 3]))
        }
        func iou(_ a: (Double, Double, Double, Double), _ b: (Double, Double, Double, Double)) -> Double {
            let ih = max(0, min(a.2, b.2) - max(a.0, b.0)), iw = max(0, min(a.3, b.3) - max(a.1, b.1))
            let inter = ih * iw
            let union = (a.2 - a.0) * (a.3 - a.1) + (b.2 - b.0) * (b.3 - b.1) - inter
            return inter <= 0 || union <= 0 ? 0 : inter / union
        }
        var selected: [Int64] = []
        for b in 0..<nb {
            for c in 0..<nc where maxOut > 0 {
                let s = (0..<n).map { sc[(b * nc + c) * n + $0] }
                var candidates = (0..<n).filter { i in scoreThreshold.map { s[i] > $0 } ?? true }
                candidates.sort { s[$0] > s[$1] || (s[$0] == s[$1] && $0 < $1) }
                var kept: [Int] = []
                for i in candidates where kept.count < maxOut {
                    let box = corners(b, i)
                    if kept.allSatisfy({ iou(corners(b, $0), box) <= iouThreshold }) { kept.append(i) }
                }
                for i in kept { selected += [Int64(b), Int64(c), Int64(i)] }
            }
        }
        return [.tensor(Tensor(shape: [selected.count / 3, 3], scalars: selected))]
    }
}
