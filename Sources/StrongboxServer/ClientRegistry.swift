import Engine
import NIOCore
import Synchronization

/// Every connected client: admission (`maxclients`), `CLIENT LIST`/`KILL`, and graceful shutdown.
final class ClientRegistry: Sendable {
    /// Delivered to a connection's pipeline to make it close (`CLIENT KILL`, shutdown).
    struct KillEvent: Sendable {}

    /// One connected client as the rest of the server sees it. The connection refreshes the
    /// snapshot once per read batch under the record's own lock, so no lock is shared between
    /// connections on the request path.
    final class Record: Sendable {
        let channel: any Channel
        let snapshot: Mutex<Session?>
        let commands = Atomic<Int>(0)
        let id: UInt64

        init(session: Session, channel: any Channel) {
            self.channel = channel
            self.id = session.id
            // Not `Mutex(session)`: handing a borrowed non-trivial value to Mutex's `sending`
            // initializer double-released it with this toolchain (a crash seen in tests).
            self.snapshot = Mutex(nil)
            snapshot.withLock { $0 = session }
        }

        var session: Session {
            snapshot.withLock { $0 } ?? Session(id: id, authenticated: false)
        }
    }

    private struct State {
        var clients: [UInt64: Record] = [:]
        /// Commands run by clients that have since disconnected.
        var closedCommands = 0
        var nextID: UInt64 = 1
        var totalConnections = 0
        var rejectedConnections = 0
    }

    private let state = Mutex(State())
    private let config: ConfigStore

    init(config: ConfigStore) {
        self.config = config
    }

    func nextID() -> UInt64 {
        state.withLock { s in
            defer { s.nextID += 1 }
            return s.nextID
        }
    }

    /// Registers a new connection. - Returns: its record, or the error text to send before closing.
    func admit(_ session: Session, channel: any Channel) -> Result<Record, AdmissionError> {
        let maxClients = config.maxClients.load(ordering: .relaxed)
        return state.withLock { s in
            s.totalConnections += 1
            if s.clients.count >= maxClients {
                s.rejectedConnections += 1
                return .failure(AdmissionError(message: "ERR max number of clients reached"))
            }
            let record = Record(session: session, channel: channel)
            s.clients[session.id] = record
            return .success(record)
        }
    }

    struct AdmissionError: Error { let message: String }

    func remove(id: UInt64) {
        state.withLock { s in
            if let record = s.clients.removeValue(forKey: id) {
                s.closedCommands += record.commands.load(ordering: .relaxed)
            }
        }
    }

    /// Commands run by every client since start (or `CONFIG RESETSTAT`).
    var commandsProcessed: Int {
        state.withLock { s in s.clients.values.reduce(s.closedCommands) { $0 + $1.commands.load(ordering: .relaxed) } }
    }

    func resetStats() {
        state.withLock { s in
            s.closedCommands = 0
            s.totalConnections = s.clients.count
            s.rejectedConnections = 0
            for r in s.clients.values { r.commands.store(0, ordering: .relaxed) }
        }
    }

    var count: Int { state.withLock { $0.clients.count } }

    var counters: (total: Int, rejected: Int) {
        state.withLock { ($0.totalConnections, $0.rejectedConnections) }
    }

    func sessions() -> [Session] {
        state.withLock { Array($0.clients.values) }.map(\.session).sorted { $0.id < $1.id }
    }

    /// Closes the clients the filter selects (never the requester when `skipMe`). - Returns: how many.
    func kill(_ filter: ClientKillFilter, requester: UInt64) -> Int {
        let victims: [(UInt64, any Channel)] = state.withLock { s in
            s.clients.compactMap { id, c in filter.matches(c.session, requester: requester) ? (id, c.channel) : nil }
        }
        for (id, channel) in victims where id != requester {
            channel.pipeline.fireUserInboundEventTriggered(KillEvent())
        }
        return victims.count
    }

    /// Asks every connection to flush what it has and close.
    func closeAll() -> [EventLoopFuture<Void>] {
        let channels = state.withLock { $0.clients.values.map(\.channel) }
        return channels.map { channel in
            channel.pipeline.fireUserInboundEventTriggered(KillEvent())
            return channel.closeFuture
        }
    }
}
