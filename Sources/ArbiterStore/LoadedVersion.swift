import Foundation
import NIOConcurrencyHelpers

/// A read-only view of a stored tensor of `Element`s that keeps its memory alive: a view into the map
/// holds the snapshot that pins it, and a copy (a small tensor stored at an address not aligned for
/// `Element`) is owned by the view's storage. `pointer` is valid for as long as this view, or any copy of
/// it, exists.
// Unchecked: the elements behind `pointer` never change after load, and `owner` keeps them alive.
public struct Tensor<Element: TensorElement>: @unchecked Sendable {
    public let name: String
    public let shape: [Int]
    public let count: Int
    /// Valid while this view (or the `LoadedVersion` holding it) is alive.
    public let pointer: UnsafePointer<Element>
    /// What keeps `pointer` valid: the `ReadSnapshot` (mapped) or a `TensorStorage` (copied).
    let owner: any AnyObject & Sendable

    /// Whether `pointer` points into the memory map (zero-copy) rather than into a copy.
    public var isMapped: Bool { owner is ReadSnapshot }

    public var buffer: UnsafeBufferPointer<Element> { UnsafeBufferPointer(start: pointer, count: count) }

    @inlinable
    public subscript(i: Int) -> Element { pointer[i] }

    /// Runs `body` with the values; the view is kept alive for the whole call.
    public func withUnsafeBufferPointer<T>(_ body: (UnsafeBufferPointer<Element>) throws -> T) rethrows -> T {
        defer { withExtendedLifetime(owner) {} }
        return try body(buffer)
    }
}

/// A float32 tensor view (the type most models use).
public typealias TensorView = Tensor<Float>

/// A loaded tensor of any element type, as `LoadedVersion.tensors` holds it; ``typed(as:)`` views it as
/// its element type.
// Unchecked: the bytes behind `pointer` never change after load, and `owner` keeps them alive.
public struct StoredTensor: @unchecked Sendable {
    public let name: String
    public let shape: [Int]
    public let count: Int
    public let dtype: TensorDType
    /// For float32 tensors: the index of the first value that is NaN or infinite, found when the version was
    /// loaded (in the pass that checks its checksum); nil when every value is finite, or for other types.
    public let firstNonFinite: Int?
    /// Whether these are the very bytes (same address in the map, shape and checksum) of a tensor of a version
    /// given as verified at load — one the caller had loaded and validated — so not read again. A check that
    /// depends only on a tensor's bytes and shape need not run again on it.
    public let reused: Bool
    /// Aligned for `dtype` (mapped when the store's bytes were, else a copy).
    let pointer: UnsafeRawPointer
    let owner: any AnyObject & Sendable

    init(name: String, shape: [Int], count: Int, dtype: TensorDType, firstNonFinite: Int?, reused: Bool = false,
         pointer: UnsafeRawPointer, owner: any AnyObject & Sendable) {
        self.name = name
        self.shape = shape
        self.count = count
        self.dtype = dtype
        self.firstNonFinite = firstNonFinite
        self.reused = reused
        self.pointer = pointer
        self.owner = owner
    }

    /// The element bytes, as stored (for tools that copy a version).
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: count * dtype.byteWidth) }

    /// This tensor as `T`, which must be its element type.
    public func typed<T: TensorElement>(as type: T.Type = T.self) throws(StoreError) -> Tensor<T> {
        guard T.dtype == dtype else {
            throw StoreError.invalidTensor("tensor '\(name)' holds \(dtype), not \(T.dtype)")
        }
        return Tensor(name: name, shape: shape, count: count,
                      pointer: pointer.bindMemory(to: T.self, capacity: max(count, 1)), owner: owner)
    }
}

/// Memory a `LoadedVersion` allocated for a tensor it could not map (unaligned or empty), freed with the
/// last view of it. 64-byte aligned, so it suits every element type.
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
    /// Every tensor of the version, by name.
    public let tensors: [String: StoredTensor]
    /// The snapshot the mapped views point into (nil for a detached version).
    let snapshot: ReadSnapshot?
    /// Bytes of tensors that were not read at load because a version in `verified` maps the same stored bytes.
    public let sharedBytes: Int
    /// Whether this version holds its large tensors mapped (``prefaultResidentPages(minimumBytes:)``; each
    /// span's holders are counted in the environment).
    private let residency = NIOLockedValueBox(false)

    /// A version that is not in any store: its tensors are copies of `tensors`. Trainers build one to score
    /// golden cases with the very code that will serve the version, before publishing it.
    public init(detachedModel model: String, kind: String, manifest: [UInt8], tensors: [TensorData]) throws(StoreError) {
        var views: [String: StoredTensor] = [:]
        var entries: [VersionMeta.TensorEntry] = []
        for t in tensors {
            guard t.shape.allSatisfy({ $0 >= 0 }), let count = Self.elementCount(t.shape), count * t.dtype.byteWidth == t.bytes.count else {
                throw StoreError.invalidTensor("tensor '\(t.name)' has shape \(t.shape) for \(t.bytes.count) bytes of \(t.dtype)")
            }
            guard views[t.name] == nil else { throw StoreError.invalidTensor("tensor '\(t.name)' is given twice") }
            let storage = t.bytes.withUnsafeBytes { TensorStorage(copying: $0) }
            let scan = t.bytes.withUnsafeBytes { Checksum.scan($0, float32: t.dtype == .f32) }
            views[t.name] = StoredTensor(name: t.name, shape: t.shape, count: count, dtype: t.dtype, firstNonFinite: scan.firstNonFinite,
                                         pointer: UnsafeRawPointer(storage.pointer), owner: storage)
            entries.append(VersionMeta.TensorEntry(name: t.name, dtype: t.dtype.rawValue, shape: t.shape, byteCount: t.bytes.count,
                                                   checksum: Checksum.hex(scan.checksum)))
        }
        meta = VersionMeta(format: VersionMeta.format(for: entries), model: model, version: 0, kind: kind, createdUnixMillis: 0,
                           metrics: [:], tensors: entries, manifestChecksum: manifest.withUnsafeBytes { Checksum.hex($0) },
                           manifestBytes: manifest.count)
        self.manifest = Data(manifest)
        self.tensors = views
        snapshot = nil
        sharedBytes = 0
    }

    /// Loads `version` of `model` (0 = the active one) and verifies every checksum, which also faults in
    /// every page of the version's tensors; float32 tensors are checked for non-finite values in the same
    /// pass (``StoredTensor/firstNonFinite``).
    ///
    /// A tensor that a version in `verified` (loaded from this environment, and still alive) maps at the
    /// same address is not read again: it is the same stored value — a tensor a later version shares
    /// (``VersionMeta/TensorEntry/storedIn``) — and pages a live snapshot can see are never rewritten, so
    /// what was verified for that version holds for this one. Its checksum must still be the one this
    /// version's record names.
    public init(environment: StoreEnvironment, model: String, version: UInt64 = 0, verified: [LoadedVersion] = []) throws(StoreError) {
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
        guard meta.model == model, meta.version == v else {
            throw StoreError.corrupt("record at \(model) v\(v) describes \(meta.model) v\(meta.version)")
        }
        guard let man = try s.bytes(StoreKeys.manifest(model, v)) else {
            throw StoreError.corrupt("\(model) v\(v) has no manifest")
        }
        guard man.count == meta.manifestBytes, man.withUnsafeBytes({ Checksum.hex($0) }) == meta.manifestChecksum else {
            throw StoreError.checksumMismatch(model: model, version: v, item: "manifest")
        }
        guard VersionMeta.readableFormats.contains(meta.format) else {
            throw StoreError.corrupt("\(model) v\(v) has store format \(meta.format); this build reads formats \(VersionMeta.readableFormats)")
        }
        var views: [String: StoredTensor] = [:]
        var shared = 0
        for t in meta.tensors {
            guard let dtype = TensorDType(rawValue: t.dtype), meta.format >= 2 || dtype == .f32 else {
                throw StoreError.corrupt("\(model) v\(v) tensor \(t.name) has dtype '\(t.dtype)', which store format \(meta.format) does not define")
            }
            let home = t.home(in: v)
            guard home <= v, meta.format >= 3 || home == v else {
                throw StoreError.corrupt("\(model) v\(v) tensor \(t.name) says it is stored in v\(home), which store format \(meta.format) does not allow")
            }
            guard let value = try s.value(StoreKeys.tensor(model, home, t.name)) else {
                throw StoreError.corrupt("\(model) v\(v) lacks tensor \(t.name)" + (home == v ? "" : " (stored with v\(home))"))
            }
            let raw = value.buffer
            guard t.shape.allSatisfy({ $0 >= 0 }), let count = Self.elementCount(t.shape) else {
                throw StoreError.corrupt("\(model) v\(v) tensor \(t.name) has an invalid shape \(t.shape)")
            }
            let width = dtype.byteWidth
            guard raw.count == t.byteCount, raw.count % width == 0, raw.count / width == count else {
                throw StoreError.corrupt("\(model) v\(v) tensor \(t.name) is \(raw.count) bytes; shape \(t.shape) holds \(count) \(dtype) values")
            }
            // Large values sit on overflow pages (page-aligned plus a 16-byte header); small ones inline in a
            // leaf page, at any address: those are copied, once, if misaligned for their type.
            let mapped = count > 0 && Int(bitPattern: raw.baseAddress!) % width == 0
            let firstNonFinite: Int?
            var reused = false
            if mapped, let known = Self.verifiedView(of: raw, shape: t.shape, dtype: dtype, checksum: t.checksum, in: verified, environment: environment) {
                firstNonFinite = known.firstNonFinite
                reused = true
                shared += raw.count
            } else {
                let scan = Checksum.scan(raw, float32: dtype == .f32)
                guard Checksum.hex(scan.checksum) == t.checksum else {
                    throw StoreError.checksumMismatch(model: model, version: v, item: "tensor \(t.name)")
                }
                firstNonFinite = scan.firstNonFinite
            }
            if mapped {
                views[t.name] = StoredTensor(name: t.name, shape: t.shape, count: count, dtype: dtype, firstNonFinite: firstNonFinite,
                                             reused: reused, pointer: raw.baseAddress!, owner: s)
            } else {
                let storage = TensorStorage(copying: raw)
                views[t.name] = StoredTensor(name: t.name, shape: t.shape, count: count, dtype: dtype, firstNonFinite: firstNonFinite,
                                             pointer: UnsafeRawPointer(storage.pointer), owner: storage)
            }
        }
        self.meta = meta
        self.manifest = Data(man)
        self.tensors = views
        self.snapshot = s
        self.sharedBytes = shared
    }

    /// The tensor of a version in `verified` that maps exactly `raw` from `environment`'s map, with the same
    /// shape, type and checksum, if one does.
    private static func verifiedView(of raw: UnsafeRawBufferPointer, shape: [Int], dtype: TensorDType, checksum: String,
                                     in verified: [LoadedVersion], environment: StoreEnvironment) -> StoredTensor? {
        for version in verified where version.snapshot?.environment === environment {
            for (name, t) in version.tensors where t.pointer == UnsafeRawPointer(raw.baseAddress!) && t.shape == shape && t.dtype == dtype {
                if t.owner is ReadSnapshot, version.meta.tensors.first(where: { $0.name == name })?.checksum == checksum { return t }
            }
        }
        return nil
    }

    /// Tensors at least this large have their pages given back by ``releaseResidentPages()``.
    public static let releaseThreshold = 16 << 20

    /// Gives back to the kernel the pages of every mapped tensor of at least `minimumBytes` that loading
    /// brought into this process (the checksums, the model's own checks and its golden cases read them all):
    /// `madvise(MADV_DONTNEED)` on the pages wholly inside each tensor. The pages stay in the page cache and
    /// the map stays valid; a request that reads a row faults its page back in (a minor fault), so the
    /// process's resident memory grows only with what is touched — a large embedding table costs its hot
    /// rows, not its size. Nothing is copied or freed; a detached version has nothing to give back.
    ///
    /// Undoes ``prefaultResidentPages(minimumBytes:)``. A span that another loaded version keeps mapped (a
    /// tensor they share) is left alone. Returns the bytes advised.
    @discardableResult
    public func releaseResidentPages(minimumBytes: Int = LoadedVersion.releaseThreshold) -> Int {
        guard let environment = snapshot?.environment else { return 0 }
        let held = residency.withLockedValue { h in defer { h = false }; return h }
        return forEachLargeMappedTensor(minimumBytes) { p, n in
            let key = Int(bitPattern: p)
            let free = environment.residentHolds.withLockedValue { holds -> Bool in
                guard held else { return holds[key] == nil }
                let left = (holds[key] ?? 1) - 1
                holds[key] = left > 0 ? left : nil
                return left <= 0
            }
            return free && madvise(p, n, MADV_DONTNEED) == 0
        }
    }

    /// Maps every page of every mapped tensor of at least `minimumBytes` into this process now
    /// (`MADV_POPULATE_READ`, Linux 5.14 and later; elsewhere one read per page), and keeps them mapped until
    /// ``releaseResidentPages(minimumBytes:)``, so that requests after a swap find them mapped instead of
    /// faulting them in one by one. The pages are the page cache's, shared: they show in RssFile, not in
    /// private memory. A span another loaded version already holds is not walked again (its pages are mapped).
    /// Calling it again while held does nothing. Returns the bytes now held mapped.
    @discardableResult
    public func prefaultResidentPages(minimumBytes: Int = LoadedVersion.releaseThreshold) -> Int {
        guard let environment = snapshot?.environment else { return 0 }
        guard residency.withLockedValue({ h in defer { h = true }; return !h }) else { return 0 }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        return forEachLargeMappedTensor(minimumBytes) { p, n in
            let first = environment.residentHolds.withLockedValue { holds -> Bool in
                holds[Int(bitPattern: p), default: 0] += 1
                return holds[Int(bitPattern: p)] == 1
            }
            // Another version holds this span mapped (a tensor they share): its pages are mapped already, and
            // walking 300 MiB of them again would cost the swap about 10 ms.
            guard first else { return true }
            environment.populated.wrappingIncrement(by: n, ordering: .relaxed)
            #if os(Linux)
            if madvise(p, n, 22 /* MADV_POPULATE_READ */) == 0 { return true }
            #endif
            var sum: UInt8 = 0
            for offset in stride(from: 0, to: n, by: page) { sum &+= p.load(fromByteOffset: offset, as: UInt8.self) }
            withExtendedLifetime(sum) {}
            return true
        }
    }

    /// Calls `body` with the page-aligned span wholly inside each mapped tensor of at least `minimumBytes`;
    /// returns the bytes of the spans for which it returned true.
    private func forEachLargeMappedTensor(_ minimumBytes: Int, _ body: (UnsafeMutableRawPointer, Int) -> Bool) -> Int {
        guard snapshot != nil else { return 0 }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var done = 0
        for t in tensors.values where t.owner is ReadSnapshot {
            let bytes = t.count * t.dtype.byteWidth
            guard bytes >= minimumBytes else { continue }
            let start = (Int(bitPattern: t.pointer) + page - 1) / page * page
            let end = (Int(bitPattern: t.pointer) + bytes) / page * page
            guard end > start, let p = UnsafeMutableRawPointer(bitPattern: start) else { continue }
            if body(p, end - start) { done += end - start }
        }
        return done
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

    /// The float32 tensor named `name` with exactly `shape`, or an error naming what is wrong.
    public func tensor(_ name: String, shape: [Int]) throws(StoreError) -> TensorView {
        try tensor(name, shape: shape, as: Float.self)
    }

    /// The tensor named `name` of element type `T` with exactly `shape`, or an error naming what is wrong.
    public func tensor<T: TensorElement>(_ name: String, shape: [Int], as type: T.Type) throws(StoreError) -> Tensor<T> {
        guard let t = tensors[name] else { throw StoreError.invalidTensor("\(model) v\(version) has no tensor '\(name)'") }
        guard t.shape == shape else {
            throw StoreError.invalidTensor("\(model) v\(version) tensor '\(name)' has shape \(t.shape), expected \(shape)")
        }
        guard t.dtype == T.dtype else {
            throw StoreError.invalidTensor("\(model) v\(version) tensor '\(name)' holds \(t.dtype), expected \(T.dtype)")
        }
        return try t.typed(as: T.self)
    }
}
