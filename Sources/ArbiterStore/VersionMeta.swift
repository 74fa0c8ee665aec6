import Foundation

/// What the store records about one published version, at `m/<model>/v/<version>/meta`. Written once, in
/// the publishing transaction, and never changed.
public struct VersionMeta: Codable, Equatable, Sendable {
    /// Bumped when the layout of the store changes. Format 1: float32 tensors only. Format 2: tensors of
    /// any ``TensorDType``. Format 3: tensors shared with an earlier version (``TensorEntry/storedIn``). A
    /// version is written in the lowest format that holds it, so a version of float32 tensors of its own
    /// stays readable by builds that read format 1 only, and a build that cannot read shared tensors refuses
    /// a version that has them by its format, naming it.
    public static let currentFormat = 3
    /// The formats this build reads.
    public static let readableFormats: ClosedRange<Int> = 1...3

    /// The lowest format that holds `tensors`.
    public static func format(for tensors: [TensorEntry]) -> Int {
        if tensors.contains(where: { $0.storedIn != nil }) { return 3 }
        return tensors.allSatisfy { $0.dtype == TensorDType.f32.rawValue } ? 1 : 2
    }

    public var format: Int
    public var model: String
    public var version: UInt64
    /// The plugin kind that serves it (`lead-grading`, ...).
    public var kind: String
    public var createdUnixMillis: UInt64
    /// Training metrics (held-out AUC, log loss, ...), by name.
    public var metrics: [String: Double]
    public var tensors: [TensorEntry]
    /// XXH3-64 of the manifest's bytes.
    public var manifestChecksum: String
    public var manifestBytes: Int

    public struct TensorEntry: Codable, Equatable, Sendable {
        public var name: String
        /// A ``TensorDType`` raw value: `f32` (little-endian IEEE-754), `u64`, `i32`, `u32`, `u8`.
        public var dtype: String
        public var shape: [Int]
        public var byteCount: Int
        public var checksum: String
        /// The earlier version of the same model whose key holds the bytes (`m/<model>/v/<storedIn>/t/<name>`),
        /// when this version's tensor is byte for byte that version's: publishing shares it instead of
        /// writing it again. Absent (nil): stored under this version's own key. `gc` keeps a stored tensor
        /// while any version it keeps points at it.
        public var storedIn: UInt64?

        public init(name: String, dtype: String, shape: [Int], byteCount: Int, checksum: String, storedIn: UInt64? = nil) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.byteCount = byteCount
            self.checksum = checksum
            self.storedIn = storedIn
        }

        /// The version whose key holds this tensor's bytes, for a tensor of `version`.
        public func home(in version: UInt64) -> UInt64 { storedIn ?? version }
    }
}

/// Keys of the catalog. Version numbers are zero-padded so that key order is version order.
public enum StoreKeys {
    public static let generation = "generation"
    public static func modelPrefix(_ m: String) -> String { "m/\(m)/" }
    public static func active(_ m: String) -> String { "m/\(m)/active" }
    public static func latest(_ m: String) -> String { "m/\(m)/latest" }
    public static func versionPrefix(_ m: String) -> String { "m/\(m)/v/" }
    public static func version(_ m: String, _ v: UInt64) -> String {
        let s = String(v)
        return "m/\(m)/v/" + String(repeating: "0", count: max(0, 12 - s.count)) + s + "/"
    }
    public static func meta(_ m: String, _ v: UInt64) -> String { version(m, v) + "meta" }
    public static func manifest(_ m: String, _ v: UInt64) -> String { version(m, v) + "manifest" }
    /// A server's `ValidationRecord` for the version (JSON).
    public static func validation(_ m: String, _ v: UInt64) -> String { version(m, v) + "validation" }
    public static func tensor(_ m: String, _ v: UInt64, _ name: String) -> String { version(m, v) + "t/" + name }
    /// The model's traffic split (JSON ``TrafficSplit``), present only while one holds.
    public static func split(_ m: String) -> String { "m/\(m)/split" }
    /// The version scored in the shadow of the served ones (JSON ``ShadowConfig``), present only while one is set.
    public static func shadow(_ m: String) -> String { "m/\(m)/shadow" }
    /// What a server keeps loaded for the model (JSON ``RetainedRecord``): `gc` keeps those versions.
    public static func retained(_ m: String) -> String { "m/\(m)/retained" }
    /// How a version scored in the shadow of the served ones (JSON ``ShadowRecord``).
    public static func shadowRecord(_ m: String, _ v: UInt64) -> String { version(m, v) + "shadow" }

    /// Model names: 1 to 64 characters from a-z, 0-9, '-', '_', '.'.
    public static func validate(model: String) throws(StoreError) {
        let ok = !model.isEmpty && model.utf8.count <= 64 && model.utf8.allSatisfy { c in
            (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c == 0x2d || c == 0x5f || c == 0x2e
        }
        guard ok else { throw StoreError.invalidModelName(model) }
    }
}
