import NIOConcurrencyHelpers
import NIOCore

/// The table of served models. Each event loop keeps its own copy, which connections on that loop read
/// without a lock or an atomic; a swap installs the new table under a lock and then hands it to every
/// loop as a task on that loop. Old versions are released as soon as each loop has moved on and the
/// requests holding them have finished.
final class ServingState: Sendable {
    private let current: NIOLockedValueBox<ModelTable>
    private let loops: [LoopTable]

    init(_ table: ModelTable, loops: [any EventLoop]) {
        current = NIOLockedValueBox(table)
        self.loops = loops.map { LoopTable(loop: $0, table: table) }
    }

    /// Every loop's part (the deadline sweep and shutdown visit each on its loop).
    var loopTables: [LoopTable] { loops }

    /// The newest table (admin paths, not the hot path).
    var table: ModelTable { current.withLockedValue { $0 } }

    /// The table owned by `loop`, for connections served there.
    func local(for loop: any EventLoop) -> LoopTable {
        loops.first { $0.loop === loop } ?? LoopTable(loop: loop, table: table)
    }

    /// Installs a new table and propagates it to every loop. The future completes once every loop serves
    /// the new table: a request read after that is answered from it.
    ///
    /// The tables the loops served until now are handed back to `releaseOn` once every loop has switched, so
    /// that the versions no longer served are let go there (their snapshots end, their models' memory is
    /// freed) rather than on an event loop — unless a request still holds one, which lets it go when it ends.
    @discardableResult
    func replace(_ table: ModelTable, releaseOn: (any EventLoop)? = nil) -> EventLoopFuture<Void> {
        current.withLockedValue { $0 = table }
        let switched = loops.map { l in
            l.loop.submit { () -> ModelTable in
                let old = l.table
                l.table = table
                return old
            }
        }
        guard let first = loops.first else { preconditionFailure("a server has at least one event loop") }
        let target = releaseOn ?? first.loop
        return EventLoopFuture.whenAllSucceed(switched, on: target).map { old in
            // `old` dies here, on `target`.
            withExtendedLifetime(old) {}
        }
    }

    /// Lets every loaded version go (their snapshots end), once the loops have stopped: nothing reads the
    /// tables any more.
    func clearAfterShutdown() {
        current.withLockedValue { $0 = ModelTable() }
        for l in loops { l.table = ModelTable() }
    }
}

/// One event loop's copy of the table, and the connections it serves.
// Unchecked: `table` and `connections` are read and written only on `loop` (connections read the table
// there; `replace`, the sweeper and shutdown hop there).
final class LoopTable: @unchecked Sendable {
    let loop: any EventLoop
    var table: ModelTable
    /// The connections served on this loop, for the deadline sweep and for shutdown.
    private(set) var connections: [ObjectIdentifier: ConnectionHandler] = [:]
    /// The request counters of the connections served on this loop.
    let metrics = LoopMetrics()

    init(loop: any EventLoop, table: ModelTable) {
        self.loop = loop
        self.table = table
    }

    func add(_ handler: ConnectionHandler) {
        loop.preconditionInEventLoop()
        connections[ObjectIdentifier(handler)] = handler
    }

    func remove(_ handler: ConnectionHandler) {
        loop.preconditionInEventLoop()
        connections[ObjectIdentifier(handler)] = nil
    }
}
