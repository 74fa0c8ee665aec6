/// Evaluation metrics used by the trainer (and compared with LightGBM's by `scripts/quality.sh`).
public enum Metrics {
    /// Area under the ROC curve, with ties given half credit. Returns nan when a class is missing.
    public static func auc(scores: [Float], labels: [Bool]) -> Double {
        precondition(scores.count == labels.count)
        let order = scores.indices.sorted { scores[$0] < scores[$1] }
        var rankSumPositive = 0.0
        var positives = 0.0
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && scores[order[j + 1]] == scores[order[i]] { j += 1 }
            let avgRank = Double(i + j) / 2 + 1
            for t in i...j where labels[order[t]] {
                rankSumPositive += avgRank
                positives += 1
            }
            i = j + 1
        }
        let negatives = Double(labels.count) - positives
        guard positives > 0, negatives > 0 else { return .nan }
        return (rankSumPositive - positives * (positives + 1) / 2) / (positives * negatives)
    }

    /// Mean binary log loss, with probabilities clipped to [1e-7, 1 − 1e-7].
    public static func logLoss(probabilities: [Float], labels: [Bool]) -> Double {
        guard !labels.isEmpty else { return .nan }
        var s = 0.0
        for (p, y) in zip(probabilities, labels) {
            let q = min(max(Double(p), 1e-7), 1 - 1e-7)
            s -= y ? _log(q) : _log(1 - q)
        }
        return s / Double(labels.count)
    }

    /// The q-quantile (0...1) of `values`, by linear interpolation.
    public static func quantile(_ values: [Float], _ q: Double) -> Float {
        precondition(!values.isEmpty)
        let s = values.sorted()
        let pos = q * Double(s.count - 1)
        let lo = Int(pos.rounded(.down)), hi = min(lo + 1, s.count - 1)
        let f = Float(pos - Double(lo))
        return s[lo] + (s[hi] - s[lo]) * f
    }
}
