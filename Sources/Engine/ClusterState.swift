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

extension Engine {
    /// Decides where a command runs in a cluster. Returns true when it has been answered (an error)
    /// or handed on (`invocation.forward` set); false when it runs here.
    func routed(_ cluster: ClusterState, _ spec: CommandSpec, _ invocation: inout Invocation) -> Bool {
        let proxy = cluster.mode == .proxy && invocation.mayForward
        if proxy, case .everywhere(let merge) = spec.clusterRole {
            if let down = (0..<cluster.ring.members.count).first(where: { !cluster.isHealthy($0) }) {
                _ = down
                invocation.out.writeRESPError("CLUSTERDOWN The cluster is down")
                return true
            }
            invocation.forward = .everywhere(merge)
            return true
        }
        if proxy, case .scan = spec.clusterRole {
            guard let global = UInt64(String(buffer: invocation.args[1])) else { return false }  // the local SCAN reports the error
            let members = UInt64(cluster.ring.members.count)
            let member = Int(global % members)
            if !cluster.isHealthy(member) {
                invocation.out.writeRESPError("CLUSTERDOWN The cluster is down")
                return true
            }
            invocation.forward = .scan(member: member, localCursor: global / members)
            return true
        }
        guard let route = Self.keyRoute(spec, invocation.args) else { return false }
        if !proxy {
            switch route {
            case .crossSlot:
                invocation.out.writeRESPError("CROSSSLOT Keys in request don't hash to the same slot")
                return true
            case .slot(let slot):
                let owner = cluster.ownerIndex(ofSlot: slot)
                if owner == cluster.myIndex { return false }
                if !cluster.isHealthy(owner) {
                    invocation.out.writeRESPError("CLUSTERDOWN The cluster is down")
                    return true
                }
                let m = cluster.ring.members[owner]
                invocation.out.writeRESPError("MOVED \(slot) \(m.host):\(m.port)")
                return true
            }
        }
        // Proxy: group the key positions by owner.
        let positions = Self.keyPositions(spec, invocation.args)
        var owners: [Int] = []
        var groups: [Int: [Int]] = [:]
        for p in positions {
            let owner = cluster.ownerIndex(ofSlot: invocation.args[p].withUnsafeReadableBytes { HashSlot.slot(forKeyBytes: $0) })
            if groups[owner] == nil { owners.append(owner) }
            groups[owner, default: []].append(p)
        }
        if let down = owners.first(where: { !cluster.isHealthy($0) }) {
            _ = down
            invocation.out.writeRESPError("CLUSTERDOWN The cluster is down")
            return true
        }
        if owners == [cluster.myIndex] || owners.isEmpty { return false }
        if owners.count == 1 {
            invocation.forward = .whole(owner: owners[0])
            return true
        }
        guard case .splittable(let merge) = spec.clusterRole else {
            invocation.out.writeRESPError("CROSSSLOT Keys in request don't hash to the same slot")
            return true
        }
        invocation.forward = .split(parts: owners.map { ($0, groups[$0]!) }, merge: merge)
        return true
    }

    /// The argument positions of a command's keys.
    static func keyPositions(_ spec: CommandSpec, _ args: [ByteBuffer]) -> [Int] {
        if case .scriptKeys = spec.clusterRole {
            guard args.count >= 3, let n = Int(String(buffer: args[2])), n > 0, n <= args.count - 3 else { return [] }
            return Array(3..<(3 + n))
        }
        guard spec.firstKey > 0 else { return [] }
        let last = spec.lastKey < 0 ? args.count + spec.lastKey : min(spec.lastKey, args.count - 1)
        return Array(stride(from: spec.firstKey, through: last, by: max(1, spec.keyStep)))
    }

    /// Where the keys of a command live: nil when it names no key (it runs here); otherwise the
    /// one slot of all its keys, or `crossSlot` when they hash to different slots.
    enum KeyRoute { case slot(Int), crossSlot }

    static func keyRoute(_ spec: CommandSpec, _ args: [ByteBuffer]) -> KeyRoute? {
        var first: Int?
        func visit(_ key: ByteBuffer) -> Bool {
            let slot = key.withUnsafeReadableBytes { HashSlot.slot(forKeyBytes: $0) }
            if let f = first { return f == slot }
            first = slot
            return true
        }
        if case .scriptKeys = spec.clusterRole {
            // EVAL script numkeys key… arg…
            guard args.count >= 3, let n = Int(String(buffer: args[2])), n > 0, n <= args.count - 3 else { return nil }
            for i in 3..<(3 + n) where !visit(args[i]) { return .crossSlot }
        } else if spec.firstKey > 0 {
            let last = spec.lastKey < 0 ? args.count + spec.lastKey : min(spec.lastKey, args.count - 1)
            var i = spec.firstKey
            while i <= last {
                if !visit(args[i]) { return .crossSlot }
                i += max(1, spec.keyStep)
            }
        }
        return first.map { .slot($0) }
    }
}
