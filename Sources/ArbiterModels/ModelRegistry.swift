import ArbiterStore

/// Builds a model of one kind from a loaded version and its manifest.
public typealias ModelFactory = @Sendable (LoadedVersion, ModelManifest) throws -> any ScoringModel

/// Model kinds by name. Each plugin registers one factory; a manifest names its kind, and an unknown kind
/// is refused with the list of known ones.
public struct ModelRegistry: Sendable {
    private var factories: [String: ModelFactory] = [:]

    public init() {}

    /// Registers `factory` under `kind` (replacing any earlier one).
    public mutating func register(kind: String, factory: @escaping ModelFactory) {
        factories[kind] = factory
    }

    public var kinds: [String] { factories.keys.sorted() }

    /// Calls `body` with each kind and its factory, in kind order.
    public func forEachFactory(_ body: (String, @escaping ModelFactory) -> Void) {
        for kind in kinds { body(kind, factories[kind]!) }
    }

    /// Loads and validates a version: manifest, kind, schema, finiteness of every float32 tensor (found as the
    /// version was loaded), golden outputs. Only a model that passes all of them is returned.
    public func load(_ version: LoadedVersion) throws -> any ScoringModel {
        let manifest = try ModelManifest.decode(version.manifest)
        guard manifest.kind == version.kind else {
            throw ModelError.invalidManifest("manifest kind '\(manifest.kind)' differs from the store's '\(version.kind)'")
        }
        guard let factory = factories[manifest.kind] else {
            throw ModelError.unknownKind(manifest.kind, known: kinds)
        }
        try manifest.schema.check()
        // Found when the version was loaded, in the pass that checked its checksums.
        for (name, stored) in version.tensors.sorted(by: { $0.key < $1.key }) where stored.dtype == .f32 {
            if let i = stored.firstNonFinite {
                let x = try stored.typed(as: Float.self)[i]
                throw ModelError.nonFinite("tensor '\(name)' holds \(x) at index \(i)")
            }
        }
        let model = try factory(version, manifest)
        try model.checkGolden()
        return model
    }
}
