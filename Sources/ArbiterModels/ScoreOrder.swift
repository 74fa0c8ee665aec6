/// Orders candidate indices by score without allocating: what a model that ranks its own rows needs on the
/// hot path.
public enum ScoreOrder {
    /// Sorts `idx[0..<n]` by `score[idx[i]]` descending, ties to the lower index: a heapsort, in place.
    @inlinable
    public static func sortDescending(_ idx: UnsafeMutablePointer<Int32>, _ n: Int, by score: UnsafePointer<Float>) {
        // `a` comes after `b` in the answer.
        @inline(__always) func after(_ a: Int32, _ b: Int32) -> Bool {
            let sa = score[Int(a)], sb = score[Int(b)]
            return sa < sb || (sa == sb && a > b)
        }
        @inline(__always) func swapAt(_ a: Int, _ b: Int) {
            let t = idx[a]
            idx[a] = idx[b]
            idx[b] = t
        }
        @inline(__always) func siftDown(_ start: Int, _ end: Int) {
            var root = start
            while true {
                var child = 2 * root + 1
                if child >= end { return }
                // A heap whose top is the candidate that comes last; popping it to the back leaves the best first.
                if child + 1 < end && after(idx[child + 1], idx[child]) { child += 1 }
                if after(idx[child], idx[root]) {
                    swapAt(root, child)
                    root = child
                } else {
                    return
                }
            }
        }
        guard n > 1 else { return }
        var i = n / 2 - 1
        while i >= 0 {
            siftDown(i, n)
            i -= 1
        }
        var end = n - 1
        while end > 0 {
            swapAt(0, end)
            siftDown(0, end)
            end -= 1
        }
    }
}
