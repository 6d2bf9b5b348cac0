import Engine
import NIOCore
import Synchronization

/// Every connected client: admission (`maxclients`), `CLIENT LIST`/`KILL`, and graceful shutdown.
final class ClientRegistry: Sendable {
    /// Delivered to a connection's pipeline to make it close (`CLIENT KILL`, shutdown).
    struct KillEvent: Sendable {}

    private struct Client {
        var session: Session
        let channel: any Channel
    }

    private struct State {
        var clients: [UInt64: Client] = [:]
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

    /// Registers a new connection, or returns the error text to send it before closing.
    func admit(_ session: Session, channel: any Channel) -> String? {
        let maxClients = config.maxClients.load(ordering: .relaxed)
        return state.withLock { s in
            s.totalConnections += 1
            if s.clients.count >= maxClients {
                s.rejectedConnections += 1
                return "ERR max number of clients reached"
            }
            s.clients[session.id] = Client(session: session, channel: channel)
            return nil
        }
    }

    func update(_ session: Session) {
        state.withLock { s in
            guard s.clients[session.id] != nil else { return }
            s.clients[session.id]!.session = session
        }
    }

    func remove(id: UInt64) {
        _ = state.withLock { $0.clients.removeValue(forKey: id) }
    }

    var count: Int { state.withLock { $0.clients.count } }

    var counters: (total: Int, rejected: Int) {
        state.withLock { ($0.totalConnections, $0.rejectedConnections) }
    }

    func sessions() -> [Session] {
        state.withLock { $0.clients.values.map(\.session) }.sorted { $0.id < $1.id }
    }

    /// Closes the clients the filter selects (never the requester when `skipMe`). - Returns: how many.
    func kill(_ filter: ClientKillFilter, requester: UInt64) -> Int {
        let victims: [(UInt64, any Channel)] = state.withLock { s in
            s.clients.values.compactMap { c in
                if let id = filter.id, c.session.id != id { return nil }
                if let a = filter.address, c.session.address != a { return nil }
                if let l = filter.localAddress, c.session.localAddress != l { return nil }
                if filter.skipMe && c.session.id == requester { return nil }
                return (c.session.id, c.channel)
            }
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
