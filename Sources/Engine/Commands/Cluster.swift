import HashRing
import NIOCore
import RESP

/// `CLUSTER …`, `READONLY`, `READWRITE`, `ASKING`: what a Redis Cluster node answers, built from
/// the ring. Without `--cluster-peers` they fail as on a Redis without cluster support.
enum ClusterCommands {
    static let disabled = CommandError("ERR This instance has cluster support disabled")

    static func state(_ e: Engine) throws(CommandError) -> ClusterState {
        guard let c = e.cluster else { throw disabled }
        return c
    }

    static func ok(_ e: Engine, _ inv: inout Invocation) throws(CommandError) {
        _ = try state(e)
        inv.out.writeRESPOK()
    }

    static func info(_ e: Engine, _ inv: inout Invocation) throws(CommandError) {
        let c = try state(e)
        let failed = (0..<c.ring.members.count).filter { !c.isHealthy($0) }
        let failSlots = failed.reduce(0) { $0 + c.ring.slotCounts[$1] }
        let lines = [
            "cluster_state:\(failed.isEmpty ? "ok" : "fail")",
            "cluster_slots_assigned:\(HashSlot.count)",
            "cluster_slots_ok:\(HashSlot.count - failSlots)",
            "cluster_slots_pfail:0",
            "cluster_slots_fail:\(failSlots)",
            "cluster_known_nodes:\(c.ring.members.count)",
            "cluster_size:\(c.ring.members.count)",
            "cluster_current_epoch:\(c.ring.members.count)",
            "cluster_my_epoch:\(c.myIndex + 1)",
            "cluster_stats_messages_sent:0",
            "cluster_stats_messages_received:0",
            "total_cluster_links_buffer_limit_exceeded:0",
        ]
        inv.out.writeRESPVerbatim(format: "txt", text: lines.joined(separator: "\r\n") + "\r\n", version: inv.version)
    }

    static func myid(_ e: Engine, _ inv: inout Invocation) throws(CommandError) {
        inv.out.writeRESPBulk(string: try state(e).me.id)
    }

    static func keyslot(_ e: Engine, _ inv: inout Invocation) throws(CommandError) {
        _ = try state(e)
        inv.out.writeRESPInteger(Int64(HashSlot.slot(forKey: inv.args[2].readableBytesView)))
    }

    static func slotArgument(_ buffer: ByteBuffer) throws(CommandError) -> Int {
        guard let n = Int(String(buffer: buffer)) else { throw .notInteger }
        guard (0..<HashSlot.count).contains(n) else { throw CommandError("ERR Invalid slot") }
        return n
    }

    /// The local keys in `slot` (at most `limit`).
    static func keys(_ e: Engine, inSlot slot: Int, limit: Int) -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        let now = e.keyspace.clock.now()
        for shard in 0..<e.keyspace.shardCount where out.count < limit {
            e.keyspace.forEachKey(inShard: shard, now: now) { key, _ in
                if out.count < limit, HashSlot.slot(forKey: key.readableBytesView) == slot { out.append(key) }
            }
        }
        return out
    }

    static func countkeysinslot(_ e: Engine, _ inv: inout Invocation) throws(CommandError) {
        _ = try state(e)
        let slot = try slotArgument(inv.args[2])
        inv.out.writeRESPInteger(Int64(keys(e, inSlot: slot, limit: .max).count))
    }

    static func getkeysinslot(_ e: Engine, _ inv: inout Invocation) throws(CommandError) {
        _ = try state(e)
        guard let slot = Int(String(buffer: inv.args[2])), let count = Int(String(buffer: inv.args[3])) else { throw .notInteger }
        guard (0..<HashSlot.count).contains(slot), count >= 0 else { throw CommandError("ERR Invalid slot or number of keys") }
        let found = keys(e, inSlot: slot, limit: count)
        inv.out.writeRESPArrayHeader(found.count)
        for k in found { inv.out.writeRESPBulk(k) }
    }

    /// `CLUSTER SLOTS`: [start, end, [ip, port, id, {}]] per contiguous range, in slot order.
    static func slots(_ e: Engine, _ inv: inout Invocation) throws(CommandError) {
        let c = try state(e)
        var ranges: [(ClosedRange<Int>, RingMember)] = []
        for (i, m) in c.ring.members.enumerated() where c.isHealthy(i) {
            for r in c.ring.slotRanges(ofIndex: i) { ranges.append((r, m)) }
        }
        ranges.sort { $0.0.lowerBound < $1.0.lowerBound }
        inv.out.writeRESPArrayHeader(ranges.count)
        for (r, m) in ranges {
            inv.out.writeRESPArrayHeader(3)
            inv.out.writeRESPInteger(Int64(r.lowerBound))
            inv.out.writeRESPInteger(Int64(r.upperBound))
            inv.out.writeRESPArrayHeader(4)
            inv.out.writeRESPBulk(string: m.host)
            inv.out.writeRESPInteger(Int64(m.port))
            inv.out.writeRESPBulk(string: m.id)
            inv.out.writeRESPMapHeader(0, version: inv.version)
        }
    }

    /// `CLUSTER SHARDS`: one shard per member, its slot ranges as start/end pairs and one primary.
    static func shards(_ e: Engine, _ inv: inout Invocation) throws(CommandError) {
        let c = try state(e)
        inv.out.writeRESPArrayHeader(c.ring.members.count)
        for (i, m) in c.ring.members.enumerated() {
            let ranges = c.ring.slotRanges(ofIndex: i)
            inv.out.writeRESPMapHeader(2, version: inv.version)
            inv.out.writeRESPBulk(string: "slots")
            inv.out.writeRESPArrayHeader(ranges.count * 2)
            for r in ranges {
                inv.out.writeRESPInteger(Int64(r.lowerBound))
                inv.out.writeRESPInteger(Int64(r.upperBound))
            }
            inv.out.writeRESPBulk(string: "nodes")
            inv.out.writeRESPArrayHeader(1)
            inv.out.writeRESPMapHeader(7, version: inv.version)
            inv.out.writeRESPBulk(string: "id"); inv.out.writeRESPBulk(string: m.id)
            inv.out.writeRESPBulk(string: "port"); inv.out.writeRESPInteger(Int64(m.port))
            inv.out.writeRESPBulk(string: "ip"); inv.out.writeRESPBulk(string: m.host)
            inv.out.writeRESPBulk(string: "endpoint"); inv.out.writeRESPBulk(string: m.host)
            inv.out.writeRESPBulk(string: "role"); inv.out.writeRESPBulk(string: "master")
            inv.out.writeRESPBulk(string: "replication-offset"); inv.out.writeRESPInteger(0)
            inv.out.writeRESPBulk(string: "health"); inv.out.writeRESPBulk(string: c.isHealthy(i) ? "online" : "failed")
        }
    }

    /// `CLUSTER NODES`: Redis Cluster's line per node (the bus port is reported as port + 10000;
    /// Strongbox has no cluster bus).
    static func nodes(_ e: Engine, _ inv: inout Invocation) throws(CommandError) {
        let c = try state(e)
        var text = ""
        for (i, m) in c.ring.members.enumerated() {
            var flags = i == c.myIndex ? "myself,master" : "master"
            if !c.isHealthy(i) { flags += ",fail" }
            let slots = c.ring.slotRanges(ofIndex: i).map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
            text += "\(m.id) \(m.host):\(m.port)@\(m.port + 10000) \(flags) - 0 0 \(i + 1) \(c.isHealthy(i) ? "connected" : "disconnected")"
            text += slots.isEmpty ? "\n" : " " + slots.joined(separator: " ") + "\n"
        }
        inv.out.writeRESPVerbatim(format: "txt", text: text, version: inv.version)
    }

    static func help(_ e: Engine, _ inv: inout Invocation) throws(CommandError) {
        Help.write(&inv, "CLUSTER", [
            "COUNTKEYSINSLOT <slot>", "    Return the number of keys in <slot>.",
            "GETKEYSINSLOT <slot> <count>", "    Return key names stored by current node in a slot.",
            "INFO", "    Return information about the cluster.",
            "KEYSLOT <key>", "    Return the hash slot for <key>.",
            "MYID", "    Return the node id.",
            "NODES", "    Return cluster configuration seen by node.",
            "SHARDS", "    Return information about slot range mappings and the nodes associated with them.",
            "SLOTS", "    Return information about slots range mappings.",
        ])
    }
}
