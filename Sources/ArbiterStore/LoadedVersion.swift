import Foundation

/// A read-only view of a float32 tensor that keeps its memory alive: a view into the map holds the
/// snapshot that pins it, and a copy (a small tensor stored at an unaligned address) is owned by the
/// view's storage. `pointer` is valid for as long as this view, or any copy of it, exists.
// Unchecked: the floats behind `pointer` never change after load, and `owner` keeps them alive.
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let shape: [Int]
    public let count: Int
    /// Valid while this view (or the `LoadedVersion` holding it) is alive.
    public let pointer: UnsafePointer<Float>
    /// What keeps `pointer` valid: the `ReadSnapshot` (mapped) or a `TensorStorage` (copied).
    let owner: any AnyObject & Sendable

    /// Whether `pointer` points into the memory map (zero-copy) rather than into a copy.
    public var isMapped: Bool { owner is ReadSnapshot }

    public var buffer: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: pointer, count: count) }

    @inlinable
    public subscript(i: Int) -> Float { pointer[i] }

    /// Runs `body` with the values; the view is kept alive for the whole call.
    public func withUnsafeBufferPointer<T>(_ body: (UnsafeBufferPointer<Float>) throws -> T) rethrows -> T {
        defer { withExtendedLifetime(owner) {} }
        return try body(buffer)
    }
}

/// Memory a `LoadedVersion` allocated for a tensor it could not map (unaligned or empty), freed with the
/// last view of it.
// Unchecked: written once in init, immutable afterwards.
final class TensorStorage: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer

    /// A 64-byte aligned copy of `bytes` (at least 4 bytes, so an empty tensor has a valid pointer too).
    init(copying bytes: UnsafeRawBufferPointer) {
        pointer = .allocate(byteCount: max(bytes.count, 4), alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(bytes.count, 4))
        if bytes.count > 0 { pointer.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
    }

    deinit { pointer.deallocate() }
}

/// A version loaded from one pinned snapshot: metadata, manifest bytes and tensor views resolved once.
/// The snapshot (and so every mapped pointer) lives as long as this object or any of its tensor views.
public final class LoadedVersion: Sendable {
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
        guard let metaBytes = try s.bytes(StoreKeys.meta(model, v)) else {
            throw StoreError.unknownVersion(model: model, version: v)
        }
        let meta = try decodeMeta(Data(metaBytes), key: StoreKeys.meta(model, v))
        guard meta.format == VersionMeta.currentFormat else {
            throw StoreError.corrupt("\(model) v\(v) has store format \(meta.format); this build reads \(VersionMeta.currentFormat)")
        }
        guard meta.model == model, meta.version == v else {
            throw StoreError.corrupt("record at \(model) v\(v) describes \(meta.model) v\(meta.version)")
        }
        guard let man = try s.bytes(StoreKeys.manifest(model, v)) else {
            throw StoreError.corrupt("\(model) v\(v) has no manifest")
        }
        guard man.count == meta.manifestBytes, man.withUnsafeBytes({ Checksum.hex($0) }) == meta.manifestChecksum else {
            throw StoreError.checksumMismatch(model: model, version: v, item: "manifest")
        }
        var views: [String: TensorView] = [:]
        for t in meta.tensors {
            guard t.dtype == "f32" else { throw StoreError.corrupt("\(model) v\(v) tensor \(t.name) has dtype \(t.dtype)") }
            guard let value = try s.value(StoreKeys.tensor(model, v, t.name)) else {
                throw StoreError.corrupt("\(model) v\(v) lacks tensor \(t.name)")
            }
            let raw = value.buffer
            guard t.shape.allSatisfy({ $0 >= 0 }), let count = Self.elementCount(t.shape) else {
                throw StoreError.corrupt("\(model) v\(v) tensor \(t.name) has an invalid shape \(t.shape)")
            }
            guard raw.count == t.byteCount, raw.count % 4 == 0, raw.count / 4 == count else {
                throw StoreError.corrupt("\(model) v\(v) tensor \(t.name) is \(raw.count) bytes; shape \(t.shape) holds \(count) floats")
            }
            guard Checksum.hex(raw) == t.checksum else {
                throw StoreError.checksumMismatch(model: model, version: v, item: "tensor \(t.name)")
            }
            if count > 0, Int(bitPattern: raw.baseAddress!) % MemoryLayout<Float>.alignment == 0 {
                views[t.name] = TensorView(name: t.name, shape: t.shape, count: count,
                                           pointer: raw.baseAddress!.assumingMemoryBound(to: Float.self), owner: s)
            } else {
                let storage = TensorStorage(copying: raw)
                views[t.name] = TensorView(name: t.name, shape: t.shape, count: count,
                                           pointer: UnsafePointer(storage.pointer.bindMemory(to: Float.self, capacity: max(count, 1))),
                                           owner: storage)
            }
        }
        self.meta = meta
        self.manifest = Data(man)
        self.tensors = views
        self.snapshot = s
    }

    /// The number of elements of `shape`, or nil if it overflows.
    static func elementCount(_ shape: [Int]) -> Int? {
        var n = 1
        for d in shape {
            let (p, o) = n.multipliedReportingOverflow(by: d)
            if o { return nil }
            n = p
        }
        return n
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
