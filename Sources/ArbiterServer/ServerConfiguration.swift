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
    /// Versions of each model kept loaded for pins beyond the active one, a split's and a shadow: the newest
    /// this many others that no server rejected. Default 2.
    public var retainedVersions: Int = 2
    /// The priority of the work beside the event loops. With a value above 0, the threads that load and
    /// validate new versions and that score the shadow run in SCHED_IDLE (only when the cores are otherwise
    /// idle, and a waking event loop takes the core back at once: a swap's checksums and golden cases never
    /// hold a request up; under saturation a new version waits for spare CPU, a starved shadow drops samples,
    /// counted), and the thread that writes the server's records to the store runs at this nice value (it
    /// holds the store's write lock: at SCHED_IDLE a busy server could keep a trainer waiting for it).
    /// Linux priorities are per thread. Default 10; 0 runs them all as the loops run.
    public var backgroundNice: Int32 = 10
    /// Accept RELOAD from any address (with a token that has the `admin` right when tokens are required);
    /// otherwise only from loopback. Default off.
    public var remoteAdmin = false
    /// SCOREs with at least this many candidates are scored on a thread pool, so that the small requests
    /// behind them on the same connection are not held up (their answers then come out of order).
    /// 0 scores everything inline on the event loop. Default 1,000.
    public var offloadCandidates: Int = 1_000
    /// Threads of that pool. Default: one per core the process may run on.
    public var offloadThreads: Int = ServerConfiguration.usableCores()
    /// The name sent in HELLO_OK.
    public var serverName = "arbiterd/0.1"

    // Connections: every wait has an end and their number a bound (docs/OPERATIONS.md lists what a client
    // sees). A timeout of 0 disables it.

    /// A connection must complete HELLO within this, in milliseconds. Default 10,000.
    public var helloTimeoutMillis: Int64 = 10_000
    /// A connection with nothing read and nothing being scored for this long is closed (ERROR `TIMEOUT`),
    /// in milliseconds. Default 120,000.
    public var idleTimeoutMillis: Int64 = 120_000
    /// A frame whose first byte has arrived must be complete within this, in milliseconds. Default 10,000.
    public var frameTimeoutMillis: Int64 = 10_000
    /// On shutdown, and after a closing ERROR, a connection is closed within this whatever the client
    /// does; `shutdown()` returns within about this. In milliseconds. Default 10,000.
    public var shutdownGraceMillis: Int64 = 10_000
    /// Most connections served at once; one more is answered ERROR `TOO_MANY_CONNECTIONS` and closed.
    /// Default: 10,000, lowered to leave 64 of the process's file descriptors (RLIMIT_NOFILE) free.
    public var maxConnections: Int = ServerConfiguration.defaultMaxConnections()
    /// The memory the server may use: what all connections together hold (partial frames, queued answers,
    /// requests being scored off the event loop) and, with `countsProcessMemory`, the process's resident
    /// memory (RSS) less the store's mapped pages. Past 70% of it, connections that hold much and do not
    /// read their answers stop reading and their SCOREs are answered `OVERLOADED`; past 85%, every
    /// connection's are. Default: a quarter of the machine's memory (or of the cgroup's limit), at
    /// least 64 MiB.
    public var memoryBudgetBytes: Int = MemoryBudget.defaultLimit()
    /// Whether the budget counts the process's resident memory less the store's mapped pages (sampled every
    /// 100 ms from /proc/self/statm, the store's resident pages once a second from /proc/self/smaps), not only
    /// what connections hold. arbiterd sets it; off by default, for a server embedded in a process whose other
    /// memory it does not own (the tests).
    public var countsProcessMemory: Bool = false
    /// Bytes one connection may have in requests being scored off the event loop (their bodies and
    /// answers); past it the connection stops reading until some finish. Default 32 MiB.
    public var maxOffloadedBytesPerConnection: Int = 32 << 20
    /// A stamped SCORE (FrameHeader.sendStamp) that waited longer than this before the server read it is
    /// answered `OVERLOADED` unscored, so that the server catches up instead of answering everything late.
    /// In milliseconds; 0 = never. Default 100.
    public var maxQueueMillis: Int64 = 100
    /// How often each event loop checks its connections' deadlines, in milliseconds. Default 100.
    public var sweepIntervalMillis: Int64 = 100

    /// TLS for every connection (certificate, key, and for mutual TLS the CA client certificates must
    /// chain to); nil serves plain TCP.
    public var tls: TLSFiles?
    /// A file of hashed tokens (see `TokenTable`): with one, HELLO must carry a listed token (else ERROR
    /// `UNAUTHENTICATED`, and the connection is closed) and each request needs its token's right (else
    /// `FORBIDDEN`). nil: no token is asked for, every client may do everything.
    public var tokenFile: String?

    public init(storePath: String) {
        self.storePath = storePath
    }
}

extension ServerConfiguration {
    var connectionTimeouts: ConnectionStateMachine.Timeouts {
        func ns(_ ms: Int64) -> UInt64 { UInt64(max(0, ms)) * 1_000_000 }
        return .init(hello: ns(helloTimeoutMillis), idle: ns(idleTimeoutMillis), frame: ns(frameTimeoutMillis),
                     grace: ns(shutdownGraceMillis))
    }

    /// 10,000 connections, or fewer if the process may open fewer files: its soft RLIMIT_NOFILE less 64
    /// (for the store, the listening socket, logs), at least 1. arbiterd raises the soft limit to the hard
    /// one at start, before this is read.
    public static func defaultMaxConnections() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return 10_000 }
        return max(1, min(10_000, Int(clamping: limit.rlim_cur) - 64))
    }

    /// Raises this process's soft limit on open files to its hard limit (what servers usually do first);
    /// returns the soft limit in force afterwards.
    @discardableResult
    public static func raiseFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return limit.rlim_cur == rlim_t.max ? Int.max : Int(limit.rlim_cur)
    }

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
