import Foundation

/// This process's memory, as the kernel reports it.
public enum ProcessMemory {
    /// Resident kB of the mapping that holds `address` (its `Rss:` in /proc/self/smaps), or -1 if no mapping
    /// holds it.
    public static func residentKB(of address: UnsafeRawPointer) -> Int {
        // /proc files report size 0: read to the end rather than by size.
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/smaps") else { return -1 }
        defer { try? handle.close() }
        let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        let a = UInt(bitPattern: Int(bitPattern: address))
        var inside = false
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let ends = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = ends.count == 2 && ends[0] <= a && a < ends[1]
            } else if inside, fields.first == "Rss:", fields.count >= 2 {
                return Int(fields[1]) ?? -1
            }
        }
        return -1
    }
}

extension ProcessMemory {
    /// Bytes of the pages in `[address, address + count)` that are mapped in this process now (present in its
    /// page table, from /proc/self/pagemap) — unlike `residentKB`, for a range inside a larger mapping. -1 if
    /// pagemap cannot be read.
    public static func mappedBytes(_ address: UnsafeRawPointer, count: Int) -> Int {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = Int(bitPattern: address) / page, last = (Int(bitPattern: address) + count - 1) / page
        let fd = open("/proc/self/pagemap", O_RDONLY)
        guard fd >= 0 else { return -1 }
        defer { close(fd) }
        var entries = [UInt64](repeating: 0, count: last - first + 1)
        let want = entries.count * 8
        let got = entries.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(first * 8)) }
        guard got == want else { return -1 }
        // Bit 63: the page is present (mapped to memory) in this process.
        return entries.reduce(0) { $0 + ($1 >> 63 == 1 ? page : 0) }
    }
}
