import NIOCore
import ArbiterStore
import ArbiterWire

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
    /// Event-loop threads serving connections. Default: one per core.
    public var threads: Int = System.coreCount
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
    /// Threads of that pool. Default: one per core.
    public var offloadThreads: Int = System.coreCount
    /// The name sent in HELLO_OK.
    public var serverName = "arbiterd/0.1"

    public init(storePath: String) {
        self.storePath = storePath
    }
}

