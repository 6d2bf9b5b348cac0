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

    @inline(__always)
    public func ownerIndex(ofSlot slot: Int) -> Int { ring.ownerIndex(ofSlot: slot) }

    public func isHealthy(_ index: Int) -> Bool { healthy.withLock { $0[index] } }
    public func setHealthy(_ index: Int, _ value: Bool) { healthy.withLock { $0[index] = value } }
}

public struct ClusterConfigError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension Engine {
    /// Where the keys of a command live: nil when it names no key (it runs here); otherwise the
    /// one slot of all its keys, or `crossSlot` when they hash to different slots.
    enum KeyRoute { case slot(Int), crossSlot }

    static func keyRoute(_ spec: CommandSpec, _ args: [ByteBuffer]) -> KeyRoute? {
        var first: Int?
        func visit(_ key: ByteBuffer) -> Bool {
            let slot = HashSlot.slot(forKey: key.readableBytesView)
            if let f = first { return f == slot }
            first = slot
            return true
        }
        if spec.flags.contains("movablekeys"), spec.name.hasPrefix("eval") {
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
