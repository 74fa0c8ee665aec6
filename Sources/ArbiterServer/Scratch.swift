/// A growable buffer of trivial values that is reused across requests: it allocates only when a request
/// is larger than every earlier one on the connection.
struct ScratchBuffer<T: BitwiseCopyable>: ~Copyable {
    private(set) var pointer: UnsafeMutablePointer<T>
    private(set) var capacity: Int

    init(capacity: Int = 64) {
        self.capacity = max(capacity, 1)
        pointer = .allocate(capacity: self.capacity)
    }

    deinit { pointer.deallocate() }

    /// A pointer to at least `count` elements (contents undefined after growth).
    @inline(__always)
    mutating func reserve(_ count: Int) -> UnsafeMutablePointer<T> {
        if count > capacity {
            pointer.deallocate()
            capacity = max(count, capacity * 2)
            pointer = .allocate(capacity: capacity)
        }
        return pointer
    }
}

/// Every buffer one connection needs to score, reused from request to request.
struct ScoringScratch: ~Copyable {
    var context = ScratchBuffer<Float>()
    var matrix = ScratchBuffer<Float>(capacity: 1024)
    var ids = ScratchBuffer<UInt64>()
    var scores = ScratchBuffer<Float>()
    var floatColumns = ScratchBuffer<Float>()
    var codeColumns = ScratchBuffer<UInt8>()
    /// Top-k: selected row indices, and the gathered outputs.
    var order = ScratchBuffer<Int32>()
    var gatherIDs = ScratchBuffer<UInt64>()
    var gatherFloats = ScratchBuffer<Float>()
    var gatherCodes = ScratchBuffer<UInt8>()
}

/// Top-k selection without allocation: a min-heap of size k over row indices, then sorted best first
/// (ties broken by the lower row index, so results are deterministic).
enum TopK {
    @inline(__always)
    static func worse(_ a: Int32, _ b: Int32, _ s: UnsafeMutablePointer<Float>) -> Bool {
        let x = s[Int(a)], y = s[Int(b)]
        return x < y || (x == y && a > b)
    }

    /// Writes the indices of the best `k` of `n` scores into `out`, best first. Returns the count.
    static func select(scores s: UnsafeMutablePointer<Float>, n: Int, k: Int, into out: UnsafeMutablePointer<Int32>) -> Int {
        let k = min(k, n)
        guard k > 0 else { return 0 }
        // Build a min-heap (worst at the root) of the first k.
        for i in 0..<k { out[i] = Int32(i) }
        var i = k / 2 - 1
        while i >= 0 { siftDown(out, i, k, s); i -= 1 }
        var r = k
        while r < n {
            if worse(out[0], Int32(r), s) {
                out[0] = Int32(r)
                siftDown(out, 0, k, s)
            }
            r += 1
        }
        // Heap sort: repeatedly move the worst to the end, leaving best first.
        var end = k - 1
        while end > 0 {
            out.swapAt(0, end)
            siftDown(out, 0, end, s)
            end -= 1
        }
        return k
    }

    @inline(__always)
    static func siftDown(_ h: UnsafeMutablePointer<Int32>, _ start: Int, _ count: Int, _ s: UnsafeMutablePointer<Float>) {
        var i = start
        while true {
            let l = 2 * i + 1
            if l >= count { return }
            var w = l
            if l + 1 < count && worse(h[l + 1], h[l], s) { w = l + 1 }
            if worse(h[w], h[i], s) {
                h.swapAt(i, w)
                i = w
            } else {
                return
            }
        }
    }
}

extension UnsafeMutablePointer where Pointee == Int32 {
    @inline(__always)
    func swapAt(_ a: Int, _ b: Int) {
        let t = self[a]
        self[a] = self[b]
        self[b] = t
    }
}
