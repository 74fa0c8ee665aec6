import ArbiterModels

/// The contract between the trainer and the `lead-grading` plugin: tensor names, parameters, the default
/// feature schema and output columns.
///
/// A version holds, for each stage s of `stages` (contact, interview given contact, hire given interview),
/// a factorization machine over the one-hot encoding of context ++ candidate fields:
/// `s.bias` [1], `s.linear` [dimension], `s.factors` [dimension, k]. Beside them: `norm` [fields, 2]
/// (mean and inverse standard deviation of each field; (0, 1) for categorical fields) and `thresholds` [3]
/// (the p_hire cut-offs of grades A, B and C, descending; below C is D).
public enum LeadGradingLayout {
    public static let kind = "lead-grading"
    public static let stages = ["contact", "interview", "hire"]
    public static let grades = ["A", "B", "C", "D"]
    /// Grade shares the trainer targets on held-out data: A the top 10%, B the next 20%, C the next 30%.
    public static let gradeShares: [Double] = [0.10, 0.20, 0.30]
    /// Manifest parameter: the factor count k.
    public static let factorsParameter = "factors"

    public static func bias(_ stage: String) -> String { "\(stage).bias" }
    public static func linear(_ stage: String) -> String { "\(stage).linear" }
    public static func factors(_ stage: String) -> String { "\(stage).factors" }
    public static let norm = "norm"
    public static let thresholds = "thresholds"

    /// Output columns: chained probabilities, then the grade. The score is p_hire.
    public static let outputs: [OutputColumn] = [
        OutputColumn(name: "p_contact", kind: .float32),
        OutputColumn(name: "p_interview", kind: .float32),
        OutputColumn(name: "p_hire", kind: .float32),
        OutputColumn(name: "grade", kind: .code, labels: grades),
    ]

    /// The schema of the leads `arbiter-train gen-data` writes. A request is one job posting (context)
    /// and the leads who applied to it (candidates).
    public static let defaultSchema = FeatureSchema(
        context: [
            .categorical("job_category", 8),
            .numeric("job_salary"),
        ],
        candidate: [
            .categorical("channel", 5),
            .categorical("city", 12),
            .numeric("distance_km"),
            .numeric("salary_gap"),
            .numeric("activity"),
            .numeric("experience_years"),
        ],
        outputs: outputs)

    /// The grade (0 = A ... 3 = D) of `pHire` under descending `thresholds`.
    @inlinable
    public static func grade(_ pHire: Float, thresholds t: UnsafePointer<Float>) -> UInt8 {
        if pHire >= t[0] { return 0 }
        if pHire >= t[1] { return 1 }
        if pHire >= t[2] { return 2 }
        return 3
    }
}
