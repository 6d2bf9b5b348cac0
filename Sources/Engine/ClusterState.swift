import HashRing
import NIOCore
import Synchronization

/// This node's view of a static cluster: the members (the same `--cluster-peers` list on every
/// node), which one is this node, the consistent-hash ring every member computes alike, and how
/// keys owned elsewhere are answered.
public final class ClusterState: Sendable {
    public enum Mode: String, Sendable {
        /// Forward to the owner and relay its reply (any client sees one keyspace).
        case proxy
        /// Answer `-MOVED slot host:port`, as Redis Cluster does (cluster-aware clients follow it).
        case redirect
    }

    public let ring: HashRing
    public let myIndex: Int
    public let mode: Mode
    /// Per member: false while health checks fail (`CLUSTER NODES` shows `fail`).
    private let healthy: Mutex<[Bool]>

    public var me: RingMember { ring.members[myIndex] }

    /// - Parameters:
    ///   - peers: every member, this node included.
    ///   - me: this node's address as it appears among `peers`.
    public init(peers: [RingMember], me: RingMember, mode: Mode, virtualNodes: Int = HashRing.defaultVirtualNodes) throws(ClusterConfigError) {
        var all = peers
        if !all.contains(where: { $0.host == me.host && $0.port == me.port }) {
            throw ClusterConfigError("this node (\(me.address)) is not in --cluster-peers; set --cluster-announce-ip or --port to one of them")
        }
        if Set(all.map(\.id)).count != all.count { throw ClusterConfigError("--cluster-peers names a node twice") }
        all.sort { $0.id < $1.id }
        ring = HashRing(members: all, virtualNodes: virtualNodes)
        myIndex = ring.members.firstIndex { $0.host == me.host && $0.port == me.port }!
        self.mode = mode
        owners = .allocate(capacity: HashSlot.count)
        for slot in 0..<HashSlot.count { owners[slot] = UInt16(ring.ownerIndex(ofSlot: slot)) }
        healthy = Mutex([Bool](repeating: true, count: ring.members.count))
    }

    /// Parses `host:port[@node-id]` entries separated by commas or spaces.
    public static func parsePeers(_ text: String) throws(ClusterConfigError) -> [RingMember] {
        var out: [RingMember] = []
        for item in text.split(whereSeparator: { $0 == "," || $0 == " " }) {
            let parts = item.split(separator: "@", maxSplits: 1)
            var id: String?
            if parts.count == 2 {
                let given = String(parts[1])
                guard given.count == 40, given.allSatisfy({ "0123456789abcdef".contains($0) }) else {
                    throw ClusterConfigError("node id '\(given)' is not 40 lowercase hex digits")
                }
                id = given
            }
            guard let member = RingMember(address: String(parts[0]), id: id) else {
                throw ClusterConfigError("'\(item)' is not host:port[@node-id]")
            }
            out.append(member)
        }
        if out.isEmpty { throw ClusterConfigError("--cluster-peers is empty") }
        return out
    }

    /// Slot -> owner index, copied out of the ring once: the routing path reads it without
    /// touching the ring's arrays (no reference counting per lookup).
    // Written once in init, read-only afterwards: safe to share.
    nonisolated(unsafe) private let owners: UnsafeMutableBufferPointer<UInt16>

    @inline(__always)
    public func ownerIndex(ofSlot slot: Int) -> Int { Int(owners[slot]) }

    deinit { owners.deallocate() }

    public func isHealthy(_ index: Int) -> Bool { healthy.withLock { $0[index] } }
    public func setHealthy(_ index: Int, _ value: Bool) { healthy.withLock { $0[index] = value } }
}

public struct ClusterConfigError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension CommandError {
    public static let clusterDown = CommandError("CLUSTERDOWN The cluster is down")
    public static let crossSlot = CommandError("CROSSSLOT Keys in request don't hash to the same slot")
    /// Proxy mode: `WATCH` (and the transaction after it) runs where the client is connected.
    public static let watchElsewhere = CommandError("CROSSSLOT WATCH in proxy mode needs keys this node owns: connect to their owner (CLUSTER SLOTS)")
}

extension Engine {
    /// Decides where a command runs in a cluster. Returns true when it has been answered (an error)
    /// or handed on (`invocation.forward` set); false when it runs here.
    ///
    /// A command whose keys have one owner (nearly all of them) is routed without allocating;
    /// only a multi-key command whose keys live apart builds its per-owner groups.
    func routed(_ cluster: ClusterState, _ spec: CommandSpec, _ invocation: inout Invocation) -> Bool {
        let proxy = cluster.mode == .proxy && invocation.mayForward
        switch spec.clusterRole {
        case .everywhere(let merge) where proxy:
            if (0..<cluster.ring.members.count).contains(where: { !cluster.isHealthy($0) }) {
                invocation.out.writeRESPError(CommandError.clusterDown.message)
            } else {
                invocation.forward = .everywhere(merge)
            }
            return true
        case .scan where proxy:
            // A cursor that is not a number runs here, so the local SCAN reports the error.
            guard let global = UInt64(String(buffer: invocation.args[1])) else { return false }
            let members = UInt64(cluster.ring.members.count)
            let member = Int(global % members)
            if cluster.isHealthy(member) {
                invocation.forward = .scan(member: member, localCursor: global / members)
            } else {
                invocation.out.writeRESPError(CommandError.clusterDown.message)
            }
            return true
        case .local where proxy:
            var foreign = false
            Self.forEachKeyPosition(spec, invocation.args) { p in
                let s = invocation.args[p].withUnsafeReadableBytes { HashSlot.slot(forKeyBytes: $0) }
                if cluster.ownerIndex(ofSlot: s) != cluster.myIndex { foreign = true }
            }
            guard foreign else { return false }
            invocation.out.writeRESPError(CommandError.watchElsewhere.message)
            return true
        default:
            break
        }
        // Odd MSET-style arity: no routing; the command's own check answers the arity error.
        if spec.keyStep > 1, spec.lastKey < 0, (invocation.args.count - spec.firstKey) % spec.keyStep != 0 { return false }
        // One walk over the keys: the first key's slot and owner, and whether any key differs.
        var slot = -1, owner = -1, otherSlot = false, otherOwner = false
        Self.forEachKeyPosition(spec, invocation.args) { p in
            let s = invocation.args[p].withUnsafeReadableBytes { HashSlot.slot(forKeyBytes: $0) }
            if slot < 0 {
                slot = s
                owner = cluster.ownerIndex(ofSlot: s)
            } else if s != slot {
                otherSlot = true
                if cluster.ownerIndex(ofSlot: s) != owner { otherOwner = true }
            }
        }
        guard slot >= 0 else { return false }  // no keys: runs here
        if !proxy {
            // Redirect mode answers as Redis Cluster: one slot per command.
            if otherSlot {
                invocation.out.writeRESPError(CommandError.crossSlot.message)
            } else if owner == cluster.myIndex {
                return false
            } else if !cluster.isHealthy(owner) {
                invocation.out.writeRESPError(CommandError.clusterDown.message)
            } else {
                let m = cluster.ring.members[owner]
                invocation.out.writeRESPError("MOVED \(slot) \(m.host):\(m.port)")
            }
            return true
        }
        if !otherOwner {
            if owner == cluster.myIndex { return false }
            if cluster.isHealthy(owner) {
                invocation.forward = .whole(owner: owner)
            } else {
                invocation.out.writeRESPError(CommandError.clusterDown.message)
            }
            return true
        }
        guard case .splittable(let merge) = spec.clusterRole else {
            invocation.out.writeRESPError(CommandError.crossSlot.message)
            return true
        }
        // Keys on several owners: split by owner, in order of first appearance.
        var parts: [(owner: Int, positions: [Int])] = []
        Self.forEachKeyPosition(spec, invocation.args) { p in
            let o = cluster.ownerIndex(ofSlot: invocation.args[p].withUnsafeReadableBytes { HashSlot.slot(forKeyBytes: $0) })
            if let i = parts.firstIndex(where: { $0.owner == o }) { parts[i].positions.append(p) } else { parts.append((o, [p])) }
        }
        if parts.contains(where: { !cluster.isHealthy($0.owner) }) {
            invocation.out.writeRESPError(CommandError.clusterDown.message)
            return true
        }
        invocation.forward = .split(parts: parts, merge: merge)
        return true
    }

    /// For a command from a peer link: `-MOVED` when a key is not this node's (a ring that
    /// disagrees, or a client posing as a peer), else nil.
    func refusalForPeer(_ cluster: ClusterState, _ spec: CommandSpec, _ args: [ByteBuffer]) -> String? {
        var foreign = -1
        Self.forEachKeyPosition(spec, args) { p in
            guard foreign < 0 else { return }
            let s = args[p].withUnsafeReadableBytes { HashSlot.slot(forKeyBytes: $0) }
            if cluster.ownerIndex(ofSlot: s) != cluster.myIndex { foreign = s }
        }
        guard foreign >= 0 else { return nil }
        let m = cluster.ring.members[cluster.ownerIndex(ofSlot: foreign)]
        return "MOVED \(foreign) \(m.host):\(m.port)"
    }

    /// Calls `body` with the argument position of each key of the command, in order.
    @inline(__always)
    static func forEachKeyPosition(_ spec: CommandSpec, _ args: [ByteBuffer], _ body: (Int) -> Void) {
        if case .scriptKeys = spec.clusterRole {
            // EVAL script numkeys key… arg…
            guard args.count >= 3, let n = Int(String(buffer: args[2])), n > 0, n <= args.count - 3 else { return }
            for p in 3..<(3 + n) { body(p) }
            return
        }
        guard spec.firstKey > 0 else { return }
        let last = spec.lastKey < 0 ? args.count + spec.lastKey : min(spec.lastKey, args.count - 1)
        var p = spec.firstKey
        while p <= last {
            body(p)
            p += max(1, spec.keyStep)
        }
    }
}
