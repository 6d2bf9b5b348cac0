import Engine
import HashRing
import Logging
import NIOCore
import RESP
import StrongboxClient
import Synchronization

/// Connections from this node to the other members of its cluster, for forwarding (proxy mode)
/// and health checks.
///
/// Forwarding uses one pipelined connection per peer *per event loop*, made on that loop, so a
/// client connection and the link it forwards over share a thread: no hop per forwarded command,
/// and requests from every client on the loop share one pipeline to the peer. A link that breaks
/// is dropped and made again on next use. Health checks `PING` every peer on a connection of
/// their own; a peer that fails two in a row is marked down (its keys get `-CLUSTERDOWN`) until
/// one succeeds again.
final class PeerLinks: Sendable {
    let cluster: ClusterState
    private let password: String?
    private let logger: Logger
    /// Links by loop, then by member: one RESP2 link per peer and loop, so every forward of a client
    /// reaches the peer in the order the client sent it. RESP2 clients get the peer's bytes as
    /// they came; RESP3 clients get them decoded and re-encoded (for the keyed commands Strongbox
    /// serves the two protocols differ only in how nulls are written, so nothing is lost).
    private let links = Mutex<[ObjectIdentifier: [Int: EventLoopFuture<StrongboxConnection>]]>([:])
    /// Per loop: connected links by member and protocol, and those written to since the last flush.
    private let ready = Mutex<[ObjectIdentifier: [Int: StrongboxConnection]]>([:])
    private let unflushed = Mutex<[ObjectIdentifier: [StrongboxConnection]]>([:])
    private let flushScheduled = Mutex<Set<ObjectIdentifier>>([])
    static let forwardTimeout: Duration = .milliseconds(1500)

    init(cluster: ClusterState, password: String?, logger: Logger) {
        self.cluster = cluster
        self.password = password?.isEmpty == false ? password : nil
        self.logger = logger
    }

    private func configuration(_ index: Int, version: RESPVersion = .v3) -> ConnectionConfiguration {
        let m = cluster.ring.members[index]
        var c = ConnectionConfiguration(endpoint: Endpoint(host: m.host, port: m.port))
        c.protocolVersion = version
        c.password = password
        c.clientName = Session.peerName
        c.connectTimeout = .milliseconds(500)
        c.commandTimeout = Self.forwardTimeout
        c.coarseTimeouts = true
        return c
    }

    private func link(to index: Int, on loop: any EventLoop, version: RESPVersion) -> EventLoopFuture<StrongboxConnection> {
        let key = ObjectIdentifier(loop)
        let slot = index * 4 + version.rawValue
        if let existing = links.withLock({ $0[key]?[slot] }) { return existing }
        let configuration = configuration(index, version: version)
        let made = loop.makeFutureWithTask { try await StrongboxConnection.connect(configuration, eventLoopGroup: loop) }
        links.withLock { $0[key, default: [:]][slot] = made }
        made.whenComplete { [self] result in
            switch result {
            case .success(let c):
                ready.withLock { $0[key, default: [:]][slot] = c }
                c.closeFuture.whenComplete { [self] _ in forget(slot, loop: loop, made) }
            case .failure: forget(slot, loop: loop, made)
            }
        }
        return made
    }

    private func forget(_ index: Int, loop: any EventLoop, _ link: EventLoopFuture<StrongboxConnection>) {
        let dropped = links.withLock { all -> Bool in
            guard all[ObjectIdentifier(loop)]?[index] === link else { return false }
            all[ObjectIdentifier(loop)]?[index] = nil
            return true
        }
        if dropped { ready.withLock { $0[ObjectIdentifier(loop)]?[index] = nil } }
    }

    /// Flushes the links of `loop` once, after every channel that is ready in this turn of the loop
    /// has been read: many clients' forwarded requests then share one write to each peer.
    func scheduleFlush(on loop: any EventLoop) {
        let key = ObjectIdentifier(loop)
        let first = flushScheduled.withLock { s -> Bool in s.insert(key).inserted }
        guard first else { return }
        loop.execute { [self] in
            flushScheduled.withLock { _ = $0.remove(key) }
            flush(on: loop)
        }
    }

    /// Writes out every request submitted from `loop` since the last call.
    func flush(on loop: any EventLoop) {
        let pending = unflushed.withLock { all -> [StrongboxConnection] in
            let list = all[ObjectIdentifier(loop)] ?? []
            if !list.isEmpty { all[ObjectIdentifier(loop)] = [] }
            return list
        }
        for c in pending { c.flush() }
    }

    /// Sends `arguments` to member `index` from `loop`; the reply as the peer sent it, or an error
    /// reply saying why the peer could not answer.
    /// The connected link, marked for the next flush, or nil when it still has to be made.
    private func readyLink(_ index: Int, version: RESPVersion, on loop: any EventLoop) -> StrongboxConnection? {
        let key = ObjectIdentifier(loop)
        guard let connection = ready.withLock({ $0[key]?[index * 4 + version.rawValue] }), connection.isConnected else { return nil }
        unflushed.withLock { all in
            if !(all[key]?.contains { $0 === connection } ?? false) { all[key, default: []].append(connection) }
        }
        return connection
    }

    /// Sends `arguments` to member `index` from `loop`; the reply decoded. The request is written
    /// but not flushed when the link is up: `scheduleFlush(on:)` after the batch. Failures are
    /// turned into error replies by the caller (`errorReply`).
    func send(_ arguments: [ByteBuffer], to index: Int, on loop: any EventLoop) -> EventLoopFuture<RESPValue> {
        if let connection = readyLink(index, version: .v2, on: loop) { return connection.submit(arguments, flush: false) }
        return link(to: index, on: loop, version: .v2).flatMap { $0.submit(arguments) }.hop(to: loop)
    }

    /// Like `send`, the reply as the peer's exact (RESP2) bytes.
    func relay(_ arguments: [ByteBuffer], to index: Int, on loop: any EventLoop) -> EventLoopFuture<ByteBuffer> {
        if let connection = readyLink(index, version: .v2, on: loop) { return connection.submitRaw(arguments, flush: false) }
        return link(to: index, on: loop, version: .v2).flatMap { $0.submitRaw(arguments) }.hop(to: loop)
    }

    /// The error reply for a forward that failed (a broken link, a timeout).
    func errorReply(_ error: any Error) -> RESPValue {
        let e = error as? StrongboxError
        if let node = e?.node, let index = cluster.ring.members.firstIndex(where: { $0.address == node }), !cluster.isHealthy(index) {
            return .error("CLUSTERDOWN The cluster is down")
        }
        return .error("TRYAGAIN Node \(e?.node ?? "?") did not answer (\(e?.message ?? "\(error)"))")
    }

    /// Pings every other member until cancelled, marking each up or down.
    func runHealthChecks() async {
        let others = (0..<cluster.ring.members.count).filter { $0 != cluster.myIndex }
        await withTaskGroup(of: Void.self) { group in
            for index in others {
                group.addTask { await self.watch(index) }
            }
        }
    }

    private func watch(_ index: Int) async {
        var connection: StrongboxConnection?
        var failures = 0
        var configuration = configuration(index)
        configuration.clientName = Session.peerName
        configuration.commandTimeout = .milliseconds(400)
        configuration.coarseTimeouts = false
        let m = cluster.ring.members[index]
        while !Task.isCancelled {
            var ok = false
            do throws(StrongboxError) {
                if connection == nil || connection?.isConnected == false {
                    connection = try await StrongboxConnection.connect(configuration)
                }
                ok = try await connection!.send(.ping()) == "PONG"
            } catch {
                if let c = connection { await c.close() }
                connection = nil
            }
            failures = ok ? 0 : failures + 1
            if ok && !cluster.isHealthy(index) {
                cluster.setHealthy(index, true)
                logger.notice("cluster peer is back", metadata: ["sb.peer": "\(m.address)"])
            } else if failures >= 2 && cluster.isHealthy(index) {
                cluster.setHealthy(index, false)
                logger.warning("cluster peer is down", metadata: ["sb.peer": "\(m.address)"])
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
        if let c = connection { await c.close() }
    }
}
