import Foundation

/// A read-only view of a float32 tensor. Zero-copy into the map when the stored bytes are 4-byte aligned
/// (always, for values large enough to live on LMDB overflow pages); a small tensor stored inline at an
/// odd address is copied once, at load.
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let shape: [Int]
    public let count: Int
    /// Valid while the `LoadedVersion` that produced it is alive.
    public let pointer: UnsafePointer<Float>
    /// Whether `pointer` points into the memory map.
    public let isMapped: Bool
    let storage: [Float]?

    public var buffer: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: pointer, count: count) }

    @inlinable
    public subscript(i: Int) -> Float { pointer[i] }
}

/// A version loaded from one pinned snapshot: metadata, manifest bytes and tensor views resolved once.
/// The snapshot (and so every pointer) lives as long as this object.
public final class LoadedVersion: @unchecked Sendable {
    public let meta: VersionMeta
    /// The model-level manifest (JSON), copied out of the map.
    public let manifest: Data
    public let tensors: [String: TensorView]
    let snapshot: ReadSnapshot

    /// Loads `version` of `model` (0 = the active one) and verifies every checksum, which also faults in
    /// every page of the version's tensors.
    public init(environment: StoreEnvironment, model: String, version: UInt64 = 0) throws(StoreError) {
        try StoreKeys.validate(model: model)
        let s = try environment.snapshot()
        var v = version
        if v == 0 {
            guard let a = try s.getUInt64(StoreKeys.active(model)) else {
                if try s.getUInt64(StoreKeys.latest(model)) == nil { throw StoreError.unknownModel(model) }
                throw StoreError.noActiveVersion(model: model)
            }
            v = a
        }
        guard let metaBytes = try s.get(StoreKeys.meta(model, v)) else {
            throw StoreError.unknownVersion(model: model, version: v)
        }
        let meta = try decodeMeta(metaBytes, key: StoreKeys.meta(model, v))
        guard meta.format == VersionMeta.currentFormat else {
            throw StoreError.corrupt("\(model) v\(v) has store format \(meta.format); this build reads \(VersionMeta.currentFormat)")
        }
        guard meta.model == model, meta.version == v else {
            throw StoreError.corrupt("record at \(model) v\(v) describes \(meta.model) v\(meta.version)")
        }
        guard let man = try s.get(StoreKeys.manifest(model, v)) else {
            throw StoreError.corrupt("\(model) v\(v) has no manifest")
        }
        guard man.count == meta.manifestBytes, Checksum.hex(man) == meta.manifestChecksum else {
            throw StoreError.checksumMismatch(model: model, version: v, item: "manifest")
        }
        var views: [String: TensorView] = [:]
        for t in meta.tensors {
            guard t.dtype == "f32" else { throw StoreError.corrupt("\(model) v\(v) tensor \(t.name) has dtype \(t.dtype)") }
            guard let raw = try s.get(StoreKeys.tensor(model, v, t.name)) else {
                throw StoreError.corrupt("\(model) v\(v) lacks tensor \(t.name)")
            }
            let count = t.shape.reduce(1, *)
            guard raw.count == t.byteCount, raw.count == count * 4 else {
                throw StoreError.corrupt("\(model) v\(v) tensor \(t.name) is \(raw.count) bytes; shape \(t.shape) needs \(count * 4)")
            }
            guard Checksum.hex(raw) == t.checksum else {
                throw StoreError.checksumMismatch(model: model, version: v, item: "tensor \(t.name)")
            }
            if count == 0 {
                let storage = [Float](repeating: 0, count: 1)
                views[t.name] = TensorView(name: t.name, shape: t.shape, count: 0,
                                           pointer: storage.withUnsafeBufferPointer { $0.baseAddress! },
                                           isMapped: false, storage: storage)
            } else if Int(bitPattern: raw.baseAddress!) % MemoryLayout<Float>.alignment == 0 {
                views[t.name] = TensorView(name: t.name, shape: t.shape, count: count,
                                           pointer: raw.baseAddress!.assumingMemoryBound(to: Float.self),
                                           isMapped: true, storage: nil)
            } else {
                let storage = [Float](unsafeUninitializedCapacity: count) { dst, n in
                    UnsafeMutableRawBufferPointer(dst).copyMemory(from: raw)
                    n = count
                }
                views[t.name] = TensorView(name: t.name, shape: t.shape, count: count,
                                           pointer: storage.withUnsafeBufferPointer { $0.baseAddress! },
                                           isMapped: false, storage: storage)
            }
        }
        self.meta = meta
        self.manifest = Data(man)
        self.tensors = views
        self.snapshot = s
    }

    public var model: String { meta.model }
    public var version: UInt64 { meta.version }
    public var kind: String { meta.kind }

    /// The tensor named `name` with exactly `shape`, or an error naming what is wrong.
    public func tensor(_ name: String, shape: [Int]) throws(StoreError) -> TensorView {
        guard let t = tensors[name] else { throw StoreError.invalidTensor("\(model) v\(version) has no tensor '\(name)'") }
        guard t.shape == shape else {
            throw StoreError.invalidTensor("\(model) v\(version) tensor '\(name)' has shape \(t.shape), expected \(shape)")
        }
        return t
    }
}
