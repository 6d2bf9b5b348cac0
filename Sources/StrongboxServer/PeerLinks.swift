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
    /// The secret links prove themselves with, read at each connect (`requirepass`, its fallback,
    /// may change at run time).
    private let password: @Sendable () -> String
    private let logger: Logger
    /// Each event loop's links (one `LoopLinks` per loop, made on first use).
    private let loops = Mutex<[ObjectIdentifier: LoopLinks]>([:])
    static let forwardTimeout: Duration = .milliseconds(1500)

    init(cluster: ClusterState, password: @escaping @Sendable () -> String, logger: Logger) {
        self.cluster = cluster
        self.password = password
        self.logger = logger
    }

    private func configuration(_ index: Int, version: RESPVersion = .v3) -> ConnectionConfiguration {
        let m = cluster.ring.members[index]
        var c = ConnectionConfiguration(endpoint: Endpoint(host: m.host, port: m.port))
        c.protocolVersion = version
        let secret = password()
        // With a secret the link proves it is a member (the name alone then grants nothing).
        if !secret.isEmpty {
            c.password = secret
            c.username = Session.peerName
        }
        c.clientName = Session.peerName
        c.connectTimeout = .milliseconds(500)
        c.commandTimeout = Self.forwardTimeout
        c.coarseTimeouts = true
        return c
    }

    /// The links of `loop`; a connection handler asks once and keeps the answer.
    func links(for loop: any EventLoop) -> LoopLinks {
        loops.withLock { all in
            if let l = all[ObjectIdentifier(loop)] { return l }
            let made = LoopLinks(peers: self, loop: loop, members: cluster.ring.members.count)
            all[ObjectIdentifier(loop)] = made
            return made
        }
    }

    func linkConfiguration(_ index: Int) -> ConnectionConfiguration { configuration(index, version: .v2) }

    /// The error reply for a forward that failed (a broken link, a timeout).
    func errorReply(_ error: any Error) -> RESPValue {
        let e = error as? StrongboxError
        if let node = e?.node, let index = cluster.ring.members.firstIndex(where: { $0.address == node }), !cluster.isHealthy(index) {
            return .error(CommandError.clusterDown.message)
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
        let m = cluster.ring.members[index]
        while !Task.isCancelled {
            var ok = false
            do throws(StrongboxError) {
                if connection == nil || connection?.isConnected == false {
                    var configuration = configuration(index)
                    configuration.clientName = Session.peerName
                    configuration.commandTimeout = .milliseconds(400)
                    configuration.coarseTimeouts = false
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

/// One event loop's links to the peers: one RESP2 connection per peer, made on this loop, so a
/// client connection and the link it forwards over share a thread, every forward of a client
/// reaches the peer in the order the client sent it, and requests from every client of the loop
/// share one pipeline and one write per loop turn. RESP2 clients get the peer's bytes as they
/// came; RESP3 clients get them decoded and re-encoded (for the keyed commands Strongbox serves
/// the two protocols differ only in how nulls are written). A link that breaks is made again on
/// next use.
///
/// Touched only on `loop` (by the connection handlers living there): no locks in the forwarding path.
final class LoopLinks: @unchecked Sendable {
    /// What this loop has for one peer.
    private struct Peer {
        var connected: StrongboxConnection?
        var connecting: EventLoopFuture<StrongboxConnection>?
        /// Written to in this loop turn (listed in `dirtyList`).
        var dirty = false
        /// Relayed requests collected during this loop turn, written at its end.
        var batch: RelayBatch
    }

    private unowned let peers: PeerLinks
    let loop: any EventLoop
    // Per-peer state behind a pointer: the forwarding path touches it per command, and class
    // stored properties would cost a dynamic exclusivity check each time.
    private let slots: UnsafeMutablePointer<Peer>
    private let count: Int
    private let state: UnsafeMutablePointer<(dirtyList: [Int], flushScheduled: Bool)>
    private let allocator = ByteBufferAllocator()

    init(peers: PeerLinks, loop: any EventLoop, members: Int) {
        self.peers = peers
        self.loop = loop
        count = members
        slots = .allocate(capacity: members)
        slots.initialize(repeating: Peer(batch: RelayBatch(allocator: allocator)), count: members)
        state = .allocate(capacity: 1)
        state.initialize(to: ([], false))
    }

    deinit {
        slots.deinitialize(count: count)
        slots.deallocate()
        state.deinitialize(count: 1)
        state.deallocate()
    }

    /// Hands peer `index`'s collected relays to its connection (unflushed), so that whatever is
    /// written next follows them on the wire: one client's forwards reach a peer in order.
    private func writeBatch(_ index: Int, to connection: StrongboxConnection) {
        guard !slots[index].batch.isEmpty else { return }
        connection.submit(takeBatch(index), flush: false)
    }

    /// Peer `index`'s collected relays, leaving an empty batch in their place.
    private func takeBatch(_ index: Int) -> RelayBatch {
        let batch = slots[index].batch
        slots[index].batch = RelayBatch(allocator: allocator)
        return batch
    }

    private func ready(_ index: Int) -> StrongboxConnection? {
        let peer = slots + index
        guard let c = peer.pointee.connected else { return nil }
        if c.isConnected {
            if !peer.pointee.dirty {
                peer.pointee.dirty = true
                state.pointee.dirtyList.append(index)
            }
            return c
        }
        peer.pointee.connected = nil
        return nil
    }

    private func connect(_ index: Int) -> EventLoopFuture<StrongboxConnection> {
        if let pending = slots[index].connecting { return pending }
        let configuration = peers.linkConfiguration(index)
        let loop = self.loop
        let made = loop.makeFutureWithTask { try await StrongboxConnection.connect(configuration, eventLoopGroup: loop) }.hop(to: loop)
        slots[index].connecting = made
        made.whenComplete { [self] result in
            slots[index].connecting = nil
            if case .success(let c) = result { slots[index].connected = c }
        }
        return made
    }

    /// Sends `arguments` to member `index`; the reply decoded. Written now, flushed at the end of
    /// the loop's turn (`scheduleFlush`). Failures become error replies in the caller.
    func send(_ arguments: [ByteBuffer], to index: Int) -> EventLoopFuture<RESPValue> {
        if let c = ready(index) {
            writeBatch(index, to: c)
            return c.submit(arguments, flush: false)
        }
        return connect(index).flatMap { $0.submit(arguments) }
    }

    /// Sends `arguments` to member `index`; the peer's exact (RESP2) reply bytes go straight to
    /// `sink` with `tag` (no future per command). The request is encoded at once into this
    /// turn's batch for the peer (the arguments are not kept), written at the turn's end.
    func relay(_ arguments: [ByteBuffer], to index: Int, sink: NIOLoopBound<any ReplySink>, tag: Int) {
        if ready(index) != nil {
            slots[index].batch.append(arguments, sink: sink, tag: tag)
            return
        }
        connect(index).whenComplete { result in
            switch result {
            case .success(let c): c.submitRaw(arguments, sink: sink, tag: tag)
            case .failure(let error):
                let e = error as? StrongboxError ?? StrongboxError(code: .connectFailed, message: "\(error)")
                sink.value.replyArrived(tag: tag, .failure(e))
            }
        }
    }

    /// Flushes the links written to, once, after every channel ready in this turn of the loop has
    /// been read: many clients' forwarded requests share one write to each peer.
    func scheduleFlush() {
        guard !state.pointee.flushScheduled, !state.pointee.dirtyList.isEmpty else { return }
        state.pointee.flushScheduled = true
        loop.execute { [self] in
            state.pointee.flushScheduled = false
            for i in state.pointee.dirtyList {
                slots[i].dirty = false
                guard let c = slots[i].connected else {
                    takeBatch(i).fail(StrongboxError(code: .connectionClosed, message: "the link to the peer closed"))
                    continue
                }
                writeBatch(i, to: c)
                c.flush()
            }
            state.pointee.dirtyList.removeAll(keepingCapacity: true)
        }
    }
}
