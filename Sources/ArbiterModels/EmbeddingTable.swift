import ArbiterStore
import Atomics
import CPrefetch

/// An embedding table in the store: rows of `dimension` f32 values found by u64 id, with no LMDB call per
/// lookup and nothing copied — both tensors are views into the map.
///
/// Two tensors per table `NAME`:
/// - `NAME.vectors`, f32, shape `[rows + 1, dimension]`, row-major; the last row is the table's default row,
///   served for an id the table does not hold (each such lookup is counted: `unknownLookups`);
/// - `NAME.slots`, u64, shape `[capacity, 2]`: an open-addressing hash index, `capacity` a power of two at
///   least twice the row count; slot `s` holds an id and its row + 1 (0: empty). An id's first slot is its
///   Fibonacci hash (`id × 2^64/φ`, the top log2(capacity) bits); collisions go to the next slot.
///
/// Why a hash and not sorted ids with a search: over 1M random ids, finding a row took 18–24 ns with this
/// layout (one cache line: the id and its row share a slot) and 141 ns with a branch-free binary search over
/// the sorted ids (about twenty dependent cache misses); reading the row then adds one miss (49 ns in all).
/// A 200-candidate request spends about 10 µs rather than 40. The index costs 32 bytes per id at the load
/// factor of one half (31 MiB for 1M ids, beside 244 MiB of vectors at dimension 64).
/// `bench/embeddings/run.sh` measures it (bench/results/embeddings-2026-12-01.md).
///
/// Loading reads every page (the store's checksum of each tensor, and the finite-values check here); the
/// server then gives those pages back (`LoadedVersion.releaseResidentPages`), so its resident memory holds
/// the rows requests touch, not the table: 30 → 307 → 31 MiB for 1M × 64 (load, checks, release).
public final class EmbeddingTable: Sendable {
    public let name: String
    public let dimension: Int
    /// Rows that ids map to (the default row not counted).
    public let rowCount: Int
    @usableFromInline let vectors: Tensor<Float>
    @usableFromInline let slots: Tensor<UInt64>
    @usableFromInline let mask: Int
    @usableFromInline let shift: UInt64
    private let unknown = ManagedAtomic<Int>(0)

    /// Lookups of ids the table does not hold, since it was loaded.
    public var unknownLookups: Int { unknown.load(ordering: .relaxed) }

    /// Whether both tensors are views into the map (zero-copy).
    public var isMapped: Bool { vectors.isMapped && slots.isMapped }

    /// Loads table `name` of `version`, checking its index: a power-of-two capacity, every row in range and
    /// held by one slot, at least one empty slot (so that a lookup of an unknown id ends), every id found
    /// from its own first slot. An error names the table and what is wrong.
    public init(version: LoadedVersion, name: String) throws(ModelError) {
        self.name = name
        func stored(_ suffix: String) throws(ModelError) -> StoredTensor {
            guard let t = version.tensors["\(name).\(suffix)"] else {
                throw ModelError.invalidParameters("embedding table '\(name)' has no tensor '\(name).\(suffix)'")
            }
            return t
        }
        let v = try stored("vectors"), s = try stored("slots")
        guard v.shape.count == 2, v.shape[0] >= 1, v.shape[1] >= 1 else {
            throw ModelError.invalidParameters("embedding table '\(name)': vectors have shape \(v.shape), expected [rows + 1, dimension]")
        }
        guard s.shape.count == 2, s.shape[1] == 2, s.shape[0] >= 2, s.shape[0] & (s.shape[0] - 1) == 0 else {
            throw ModelError.invalidParameters("embedding table '\(name)': slots have shape \(s.shape), expected [a power of two, 2]")
        }
        do {
            vectors = try v.typed(as: Float.self)
            slots = try s.typed(as: UInt64.self)
        } catch {
            throw ModelError.invalidParameters("embedding table '\(name)': \(error)")
        }
        dimension = v.shape[1]
        rowCount = v.shape[0] - 1
        let capacity = s.shape[0]
        mask = capacity - 1
        shift = UInt64(64 - capacity.trailingZeroBitCount)
        guard capacity >= 2 * rowCount else {
            throw ModelError.invalidParameters("embedding table '\(name)': \(capacity) slots for \(rowCount) rows; at least twice as many are needed")
        }
        // The index is checked unless both tensors are the very bytes, with the same shapes, of a table that a
        // validated version already loaded (shared with it, and not read again).
        if !(v.reused && s.reused) { try checkIndex() }
        if let i = v.firstNonFinite {
            throw ModelError.nonFinite("embedding table '\(name)': row \(i / dimension) holds \(vectors[i])")
        }
    }

    /// Every row held once, every id reachable from its own first slot.
    private func checkIndex() throws(ModelError) {
        var seen = [Bool](repeating: false, count: rowCount)
        var held = 0
        for slot in 0...mask {
            let rowPlusOne = slots[2 * slot + 1]
            if rowPlusOne == 0 { continue }
            let id = slots[2 * slot]
            guard rowPlusOne <= UInt64(rowCount), !seen[Int(rowPlusOne - 1)] else {
                throw ModelError.invalidParameters("embedding table '\(name)': slot \(slot) (id \(id)) names row \(Int64(bitPattern: rowPlusOne) - 1), out of range or named twice")
            }
            seen[Int(rowPlusOne - 1)] = true
            held += 1
            guard find(id) == Int(rowPlusOne - 1) else {
                throw ModelError.invalidParameters("embedding table '\(name)': id \(id) in slot \(slot) is not found from its first slot (the index is damaged or holds it twice)")
            }
        }
        guard held == rowCount else {
            throw ModelError.invalidParameters("embedding table '\(name)': the index holds \(held) ids for \(rowCount) rows")
        }
    }

    /// Starts loading the first index slot of `id` into the cache (a hint: nothing is read or counted).
    /// A caller about to look up many ids prefetches them all first, so that their cache misses overlap.
    @inlinable @inline(__always)
    public func prefetchSlot(of id: UInt64) {
        arbiter_prefetch(slots.pointer + 2 * firstSlot(id))
    }

    /// Starts loading the first cache lines of `row` (a pointer from ``vector(of:)``): up to 4 lines, 256 bytes.
    @inlinable @inline(__always)
    public func prefetchRow(_ row: UnsafePointer<Float>) {
        let bytes = dimension * 4
        var offset = 0
        while offset < bytes && offset < 256 {
            arbiter_prefetch(UnsafeRawPointer(row) + offset)
            offset += 64
        }
    }

    @inlinable @inline(__always)
    func firstSlot(_ id: UInt64) -> Int { Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> shift) & mask }

    /// The row of `id`, or nil if the table does not hold it.
    @inline(__always)
    func find(_ id: UInt64) -> Int? {
        var slot = firstSlot(id)
        let p = slots.pointer
        while true {
            let rowPlusOne = p[2 * slot + 1]
            if rowPlusOne == 0 { return nil }
            if p[2 * slot] == id { return Int(rowPlusOne - 1) }
            slot = (slot + 1) & mask
        }
    }

    /// The row of `id`, or nil if the table does not hold it (not counted: for callers that handle a miss
    /// themselves, and for measuring the index alone).
    @inline(__always)
    public func row(of id: UInt64) -> Int? { find(id) }

    /// The vector of `id` (`dimension` values, valid while this table is alive), or the default row's if the
    /// table does not hold it (counted).
    @inline(__always)
    public func vector(of id: UInt64) -> UnsafePointer<Float> {
        if let row = find(id) { return vectors.pointer + row * dimension }
        unknown.wrappingIncrement(ordering: .relaxed)
        return vectors.pointer + rowCount * dimension
    }

    /// The tensors of a table holding `ids` (distinct) with `vectors` (row-major, `ids.count × dimension`)
    /// and `defaultRow` (`dimension` values), to publish with a version.
    public static func tensors(name: String, ids: [UInt64], dimension: Int, vectors: [Float], defaultRow: [Float]) throws(ModelError) -> [TensorData] {
        guard dimension >= 1 else { throw ModelError.invalidParameters("embedding table '\(name)': dimension must be at least 1") }
        guard vectors.count == ids.count * dimension else {
            throw ModelError.invalidParameters("embedding table '\(name)': \(vectors.count) values for \(ids.count) ids of dimension \(dimension)")
        }
        guard defaultRow.count == dimension else {
            throw ModelError.invalidParameters("embedding table '\(name)': the default row has \(defaultRow.count) values, not \(dimension)")
        }
        if let bad = (vectors + defaultRow).first(where: { !$0.isFinite }) {
            throw ModelError.nonFinite("embedding table '\(name)': a value is \(bad)")
        }
        var capacity = 2
        while capacity < 2 * ids.count { capacity *= 2 }
        let shift = UInt64(64 - capacity.trailingZeroBitCount)
        var slots = [UInt64](repeating: 0, count: 2 * capacity)
        for (row, id) in ids.enumerated() {
            var slot = Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> shift) & (capacity - 1)
            while slots[2 * slot + 1] != 0 {
                guard slots[2 * slot] != id else {
                    throw ModelError.invalidParameters("embedding table '\(name)': id \(id) is listed twice (rows \(slots[2 * slot + 1] - 1) and \(row))")
                }
                slot = (slot + 1) & (capacity - 1)
            }
            slots[2 * slot] = id
            slots[2 * slot + 1] = UInt64(row) + 1
        }
        return [TensorData(name: "\(name).vectors", shape: [ids.count + 1, dimension], values: vectors + defaultRow),
                TensorData(name: "\(name).slots", shape: [capacity, 2], elements: slots)]
    }
}
