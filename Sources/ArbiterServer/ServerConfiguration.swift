import NIOCore
import ArbiterStore
import ArbiterWire
#if canImport(Glibc)
import Glibc
#endif

/// Everything `arbiterd` can be told. Every default is stated where it is declared.
public struct ServerConfiguration: Sendable {
    /// Address to listen on. Default 127.0.0.1.
    public var host: String = "127.0.0.1"
    /// Port; 0 picks a free one (tests). Default 7878.
    public var port: Int = 7878
    /// The LMDB store directory.
    public var storePath: String
    /// Map size and reader slots; the map size must equal the trainer's. Default 32 GiB.
    public var store = StoreConfiguration()
    /// Event-loop threads serving connections. Default: one per core the process may run on
    /// (`ServerConfiguration.usableCores()`).
    public var threads: Int = ServerConfiguration.usableCores()
    /// Limits announced in HELLO_OK and enforced. Defaults: 4 MiB frames, 10,000 candidates, 1,024 in flight.
    public var limits = Limits.default
    /// Offer zstd to clients that ask for it. Default on.
    public var allowCompression = true
    /// Responses at least this large are compressed when the connection negotiated zstd. Default 4 KiB.
    public var compressionThreshold = 4096
    /// How often the store's generation is polled for new versions, in milliseconds (0 = never). Default 100.
    public var pollIntervalMillis: Int64 = 100
    /// SCOREs with at least this many candidates are scored on a thread pool, so that the small requests
    /// behind them on the same connection are not held up (their answers then come out of order).
    /// 0 scores everything inline on the event loop. Default 1,000.
    public var offloadCandidates: Int = 1_000
    /// Threads of that pool. Default: one per core the process may run on.
    public var offloadThreads: Int = ServerConfiguration.usableCores()
    /// The name sent in HELLO_OK.
    public var serverName = "arbiterd/0.1"

    public init(storePath: String) {
        self.storePath = storePath
    }
}

extension ServerConfiguration {
    /// The cores the calling thread may run on: NIO's `System.coreCount` (which honours cgroup CPU quotas
    /// and cpusets), lowered to the CPUs in the thread's affinity mask, so that a server started under
    /// `taskset`, `numactl` or systemd's `CPUAffinity=` runs one event loop per core it was given rather
    /// than per core of the machine (more loops than cores time-share them: on two cores shared with a
    /// load generator, two loops served 0.84x the requests of one; see the README's Performance section).
    public static func usableCores() -> Int {
        let machine = max(System.coreCount, 1)
        #if os(Linux)
        var mask = [UInt64](repeating: 0, count: 16)  // 1,024 CPUs, the kernel's default cpumask size
        let status = mask.withUnsafeMutableBytes { linuxSchedGetaffinity(0, $0.count, $0.baseAddress!) }
        guard status == 0 else { return machine }
        let allowed = mask.reduce(0) { $0 + $1.nonzeroBitCount }
        return allowed > 0 ? min(machine, allowed) : machine
        #else
        return machine
        #endif
    }
}

#if os(Linux)
@_silgen_name("sched_getaffinity")
private func linuxSchedGetaffinity(_ pid: Int32, _ size: Int, _ mask: UnsafeMutableRawPointer) -> Int32
#endif
