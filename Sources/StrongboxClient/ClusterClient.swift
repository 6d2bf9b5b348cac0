import HashRing
import NIOCore
import NIOPosix
import RESP
import Synchronization

/// A client for keys spread over several nodes: it routes each command to the node that owns its keys.
///
/// Two ways to know who owns what:
/// - **discovered** (`init(seeds:)`): read from a Redis Cluster or Strongbox cluster node with
///   `CLUSTER SHARDS` (or `CLUSTER SLOTS` on servers without it); `MOVED` replies update the table and
///   trigger a re-read, `ASK` is followed for one command.
/// - **ring** (`init(members:)`): computed locally with the shared `HashRing` from the member list,
///   exactly as a Strongbox cluster computes it — this also shards over independent servers, like twemproxy.
///
/// Multi-key `MGET`, `MSET`, `DEL`, `UNLINK`, `EXISTS`, `TOUCH` are split by owner (by slot for a
/// discovered cluster, which refuses keys of several slots in one command; by node on a ring) and
/// their replies merged as one server would answer. Other commands whose keys live apart fail with
/// `.crossSlot` before anything is sent.
public final class StrongboxClusterClient: Sendable {
    public enum Mode: Sendable { case discovered, ring }

    public let mode: Mode
    /// The redirections one command follows before failing with `.tooManyRedirects`.
    public var maximumRedirects: Int { 5 }

    private let template: ConnectionConfiguration
    private let poolConfiguration: PoolConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let seeds: [Endpoint]

    private struct State {
        var nodes: [Endpoint] = []
        /// Slot -> index into `nodes`, -1 when no node serves it.
        var owners = [Int16](repeating: -1, count: HashSlot.count)
        var clients: [Endpoint: StrongboxClient] = [:]
        var refreshing = false
    }

    private let state = Mutex(State())

    /// A client that learns the slot table from `seeds` (call `refreshTopology()` before use, or let
    /// the first command do it).
    public init(seeds: [Endpoint], configuration: ConnectionConfiguration? = nil, pool: PoolConfiguration = PoolConfiguration(),
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        precondition(!seeds.isEmpty, "a cluster client needs at least one seed")
        self.mode = .discovered
        self.seeds = seeds
        self.template = configuration ?? ConnectionConfiguration(endpoint: seeds[0])
        self.poolConfiguration = pool
        self.eventLoopGroup = eventLoopGroup
    }

    /// A client that places keys with the consistent-hash ring of `members` (the same table a
    /// Strongbox cluster with these `--cluster-peers` computes).
    public init(members: [Endpoint], virtualNodes: Int = HashRing.defaultVirtualNodes, configuration: ConnectionConfiguration? = nil,
                pool: PoolConfiguration = PoolConfiguration(),
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        precondition(!members.isEmpty, "a cluster client needs at least one member")
        self.mode = .ring
        self.seeds = members
        self.template = configuration ?? ConnectionConfiguration(endpoint: members[0])
        self.poolConfiguration = pool
        self.eventLoopGroup = eventLoopGroup
        let ring = HashRing(members: members.map { RingMember(host: $0.host, port: $0.port) }, virtualNodes: virtualNodes)
        let nodes = ring.members.map { Endpoint(host: $0.host, port: $0.port) }
        state.withLock { s in
            s.nodes = nodes
            for slot in 0..<HashSlot.count { s.owners[slot] = Int16(ring.ownerIndex(ofSlot: slot)) }
        }
    }

    /// The nodes known now.
    public var nodes: [Endpoint] { state.withLock { $0.nodes } }

    /// The node that owns `slot` now, if any.
    public func node(forSlot slot: Int) -> Endpoint? {
        state.withLock { s in s.owners[slot] >= 0 ? s.nodes[Int(s.owners[slot])] : nil }
    }

    /// The node that owns `key` now, if any.
    public func node(forKey key: some RESPArgument) -> Endpoint? {
        var b = ByteBuffer()
        key.write(into: &b)
        return node(forSlot: HashSlot.slot(forKey: b.readableBytesView))
    }

    /// The client for one node (made on first use, shared afterwards).
    public func client(for endpoint: Endpoint) -> StrongboxClient {
        state.withLock { s in
            if let c = s.clients[endpoint] { return c }
            var configuration = template
            configuration.endpoint = endpoint
            let c = StrongboxClient(configuration, pool: poolConfiguration, eventLoopGroup: eventLoopGroup)
            s.clients[endpoint] = c
            return c
        }
    }

    // MARK: Topology

    /// Reads the slot table from the first seed or known node that answers.
    public func refreshTopology() async throws(StrongboxError) {
        guard mode == .discovered else { return }
        var lastError: StrongboxError?
        for endpoint in nodes + seeds {
            do {
                let table = try await Self.readTopology(from: client(for: endpoint))
                state.withLock { s in
                    s.nodes = table.nodes
                    s.owners = table.owners
                }
                return
            } catch {
                lastError = error
            }
        }
        throw lastError ?? StrongboxError(code: .connectFailed, message: "no seed answered")
    }

    struct Table {
        var nodes: [Endpoint] = []
        var owners = [Int16](repeating: -1, count: HashSlot.count)

        mutating func assign(_ range: ClosedRange<Int>, to endpoint: Endpoint) {
            let index: Int
            if let i = nodes.firstIndex(of: endpoint) { index = i } else { nodes.append(endpoint); index = nodes.count - 1 }
            for slot in range where (0..<HashSlot.count).contains(slot) { owners[slot] = Int16(index) }
        }
    }

    static func readTopology(from client: StrongboxClient) async throws(StrongboxError) -> Table {
        let seedHost = client.endpoint.host
        do {
            return try parseShards(try await client.send(.raw(["CLUSTER", "SHARDS"])), seedHost: seedHost)
        } catch let error where error.isServerError {
            return try parseSlots(try await client.send(.raw(["CLUSTER", "SLOTS"])), seedHost: seedHost)
        }
    }

    /// Fields of a RESP3 map or a RESP2 flat key/value array.
    static func fields(_ value: RESPValue) -> [String: RESPValue] {
        var out: [String: RESPValue] = [:]
        switch value {
        case .map(let pairs):
            for (k, v) in pairs { if let key = try? ReplyDecoders.string(k) { out[key] = v } }
        case .array(let items):
            var i = 0
            while i + 1 < items.count {
                if let key = try? ReplyDecoders.string(items[i]) { out[key] = items[i + 1] }
                i += 2
            }
        default: break
        }
        return out
    }

    static func parseShards(_ value: RESPValue, seedHost: String) throws(StrongboxError) -> Table {
        guard case .array(let shards) = value else { throw .unexpected(value, "CLUSTER SHARDS array") }
        var table = Table()
        for shard in shards {
            let f = fields(shard)
            guard case .array(let bounds)? = f["slots"], case .array(let members)? = f["nodes"] else { continue }
            var primary: Endpoint?
            for member in members {
                let m = fields(member)
                let role = m["role"].flatMap { try? ReplyDecoders.string($0) }
                let health = m["health"].flatMap { try? ReplyDecoders.string($0) }
                guard role == nil || role == "master" || role == "primary" else { continue }
                guard health == nil || health == "online" else { continue }
                let port = m["port"].flatMap { try? ReplyDecoders.int($0) } ?? 0
                var host = m["endpoint"].flatMap { try? ReplyDecoders.string($0) } ?? ""
                if host.isEmpty || host == "?" { host = m["ip"].flatMap { try? ReplyDecoders.string($0) } ?? "" }
                if host.isEmpty || host == "?" { host = seedHost }
                if port > 0 { primary = Endpoint(host: host, port: port) }
            }
            guard let primary else { continue }
            var i = 0
            while i + 1 < bounds.count {
                let lo = try ReplyDecoders.int(bounds[i]), hi = try ReplyDecoders.int(bounds[i + 1])
                if lo <= hi { table.assign(lo...hi, to: primary) }
                i += 2
            }
        }
        return table
    }

    static func parseSlots(_ value: RESPValue, seedHost: String) throws(StrongboxError) -> Table {
        guard case .array(let ranges) = value else { throw .unexpected(value, "CLUSTER SLOTS array") }
        var table = Table()
        for range in ranges {
            guard case .array(let parts) = range, parts.count >= 3, case .array(let node) = parts[2], node.count >= 2 else {
                throw .unexpected(range, "a CLUSTER SLOTS entry")
            }
            let lo = try ReplyDecoders.int(parts[0]), hi = try ReplyDecoders.int(parts[1])
            var host = (try? ReplyDecoders.string(node[0])) ?? ""
            if host.isEmpty || host == "?" { host = seedHost }
            let port = try ReplyDecoders.int(node[1])
            if lo <= hi { table.assign(lo...hi, to: Endpoint(host: host, port: port)) }
        }
        return table
    }

    private func ensureTopology() async throws(StrongboxError) {
        let empty = state.withLock { $0.nodes.isEmpty }
        if empty { try await refreshTopology() }
    }

    /// After a MOVED: re-read the table in the background (one refresh at a time).
    private func refreshSoon() {
        guard mode == .discovered else { return }
        let start = state.withLock { s -> Bool in
            if s.refreshing { return false }
            s.refreshing = true
            return true
        }
        guard start else { return }
        Task {
            try? await self.refreshTopology()
            self.state.withLock { $0.refreshing = false }
        }
    }

    private func learn(slot: Int, owner: Endpoint) {
        state.withLock { s in
            let index: Int
            if let i = s.nodes.firstIndex(of: owner) { index = i } else { s.nodes.append(owner); index = s.nodes.count - 1 }
            s.owners[slot] = Int16(index)
        }
    }

    // MARK: Sending

    /// Sends a command to the node that owns its keys (split over nodes when it is a splittable
    /// multi-key command), following `MOVED` and `ASK`. A command without keys goes to the first node.
    @discardableResult
    public func send<Reply>(_ command: Command<Reply>) async throws(StrongboxError) -> Reply {
        try await ensureTopology()
        let keySlots = command.keyIndices.map { HashSlot.slot(forKey: command.arguments[$0].readableBytesView) }
        guard let first = keySlots.first else { return try await routed(command, slot: nil) }
        let groups = group(keySlots)
        if groups.count == 1 { return try await routed(command, slot: first) }
        guard command.split != .none else {
            throw StrongboxError(code: .crossSlot, message: "CROSSSLOT Keys in request don't hash to the same slot")
        }
        return try command.decode(try await splitAndMerge(command, keySlots: keySlots))
    }

    /// Sends any command given as its words, routed by the keys at `keyIndices`.
    @discardableResult
    public func send(_ arguments: [any RESPArgument], keyIndices: [Int]) async throws(StrongboxError) -> RESPValue {
        try await send(.raw(arguments, keyIndices: keyIndices))
    }

    /// Sends a keyless command to every node; each node's reply or error.
    public func sendToAllNodes<Reply>(_ command: Command<Reply>) async throws(StrongboxError) -> [(Endpoint, Result<Reply, StrongboxError>)] {
        try await ensureTopology()
        let targets = state.withLock { s in
            Set(s.owners.filter { $0 >= 0 }.map { s.nodes[Int($0)] })
        }
        return await withTaskGroup(of: (Endpoint, Result<Reply, StrongboxError>).self) { group in
            for endpoint in targets {
                group.addTask {
                    do throws(StrongboxError) { return (endpoint, .success(try await self.client(for: endpoint).send(command))) }
                    catch { return (endpoint, .failure(error)) }
                }
            }
            var out: [(Endpoint, Result<Reply, StrongboxError>)] = []
            for await r in group { out.append(r) }
            return out.sorted { $0.0.description < $1.0.description }
        }
    }

    /// Groups of argument positions (indices into `keySlots`) that can go to one node in one command.
    private func group(_ keySlots: [Int]) -> [[Int]] {
        var order: [Int] = []
        var members: [Int: [Int]] = [:]
        let byNode = mode == .ring
        let owners = state.withLock { $0.owners }
        for (i, slot) in keySlots.enumerated() {
            let g = byNode ? Int(owners[slot]) : slot
            if members[g] == nil { order.append(g) }
            members[g, default: []].append(i)
        }
        return order.map { members[$0]! }
    }

    private func splitAndMerge<Reply>(_ command: Command<Reply>, keySlots: [Int]) async throws(StrongboxError) -> RESPValue {
        let name = command.arguments[0]
        let groups = group(keySlots)
        let parts: [(group: [Int], command: Command<RESPValue>, slot: Int)] = groups.map { g in
            var args = [name]
            for i in g {
                let position = command.keyIndices[i]
                args.append(command.arguments[position])
                if command.split == .pairs { args.append(command.arguments[position + 1]) }
            }
            let keyIndices = command.split == .pairs ? Array(stride(from: 1, to: args.count, by: 2)) : Array(1..<args.count)
            return (g, Command<RESPValue>(buffers: args, keyIndices: keyIndices, split: .none, decode: ReplyDecoders.raw), keySlots[g[0]])
        }
        let results = await withTaskGroup(of: (Int, Result<RESPValue, StrongboxError>).self) { group in
            for (index, part) in parts.enumerated() {
                group.addTask {
                    do throws(StrongboxError) { return (index, .success(try await self.routed(part.command, slot: part.slot))) }
                    catch { return (index, .failure(error)) }
                }
            }
            var out = [Result<RESPValue, StrongboxError>?](repeating: nil, count: parts.count)
            for await (i, r) in group { out[i] = r }
            return out.map { $0! }
        }
        switch command.split {
        case .sumOfKeys:
            var total: Int64 = 0
            for r in results {
                guard case .integer(let n) = try r.get() else { throw .unexpected(try r.get(), "an integer") }
                total += n
            }
            return .integer(total)
        case .valuesOfKeys:
            var values = [RESPValue](repeating: .null, count: keySlots.count)
            for (part, r) in zip(parts, results) {
                guard case .array(let items) = try r.get(), items.count == part.group.count else {
                    throw .unexpected(try r.get(), "\(part.group.count) values")
                }
                for (i, v) in zip(part.group, items) { values[i] = v }
            }
            return .array(values)
        case .pairs:
            for r in results { _ = try r.get() }
            return .simpleString("OK")
        case .none:
            preconditionFailure("unsplittable commands are refused before sending")
        }
    }

    /// Sends `command` to the owner of `slot` (any node when nil), following redirections.
    private func routed<Reply>(_ command: Command<Reply>, slot: Int?) async throws(StrongboxError) -> Reply {
        var target: Endpoint
        if let slot, let owner = node(forSlot: slot) {
            target = owner
        } else if slot == nil, let any = nodes.first {
            target = any
        } else {
            throw StrongboxError(code: .clusterDown, message: "CLUSTERDOWN Hash slot not served")
        }
        var asking = false
        for _ in 0...maximumRedirects {
            do {
                let client = client(for: target)
                if asking {
                    return try await client.pool.withConnectionTyped { c throws(StrongboxError) in
                        _ = try await c.send(.raw(["ASKING"]))
                        return try await c.send(command)
                    }
                }
                return try await client.send(command)
            } catch where error.code == .moved || error.code == .ask {
                // "MOVED 3999 127.0.0.1:6381"
                let words = error.message.split(separator: " ")
                guard words.count == 3, let movedSlot = Int(words[1]), var endpoint = Endpoint(String(words[2])) else { throw error }
                if endpoint.host.isEmpty || endpoint.host == "?" { endpoint.host = target.host }
                asking = error.code == .ask
                if !asking {
                    learn(slot: movedSlot, owner: endpoint)
                    refreshSoon()
                }
                target = endpoint
            } catch where error.code == .tryAgain {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        throw StrongboxError(code: .tooManyRedirects, message: "still redirected after \(maximumRedirects) hops", node: target.description)
    }

    /// Closes every node's connections.
    public func shutdown() async {
        let clients = state.withLock { Array($0.clients.values) }
        for c in clients { await c.shutdown() }
    }
}
