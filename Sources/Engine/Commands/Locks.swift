import Keyspace
import NIOCore
import RESP

/// Compare-and-delete and compare-and-set: the commands that release and extend locks safely,
/// in every spelling clients use (Redis 8.4, Valkey 9, Tair/Kvrocks).
enum LockCommands {
    /// DELEX key [IFEQ value | IFNE value | IFDEQ digest | IFDNE digest] → 1 deleted, 0 not.
    /// Without a condition it is DEL of one key. · - Complexity: O(1), O(N) for the digest forms
    static func delex(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var condition = StringCommands.SetOptions.Condition.none
        if inv.argc == 4 {
            guard let parsed = ValueCondition.parse(inv.args[2], inv.args[3]) else { throw .syntax }
            condition = parsed
        } else if inv.argc != 2 {
            throw .syntax
        }
        try compareAndDelete(engine, &inv, condition: condition, missingReply: 0)
    }

    /// DELIFEQ key value → 1 deleted, 0 not (Valkey 9). · - Complexity: O(1)
    static func delifeq(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        try compareAndDelete(engine, &inv, condition: .ifeq(inv.args[2]), missingReply: 0)
    }

    /// CAD key value → 1 deleted, 0 value differs, -1 missing (Tair/Kvrocks). · - Complexity: O(1)
    static func cad(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        try compareAndDelete(engine, &inv, condition: .ifeq(inv.args[2]), missingReply: -1)
    }

    /// The one compare-and-delete behind DELEX, DELIFEQ and CAD.
    static func compareAndDelete(
        _ engine: Engine, _ inv: inout Invocation,
        condition: StringCommands.SetOptions.Condition, missingReply: Int64
    ) throws(CommandError) {
        let now = inv.now
        let key = Key(inv.args[1])
        let result: Int64 = engine.keyspace.withShard(for: key) { shard in
            guard let entry = shard.entry(key, now: now) else { return missingReply }
            guard condition.allows(entry.value) else { return 0 }
            shard.remove(key)
            return 1
        }
        inv.out.writeRESPInteger(result)
    }

    /// DIGEST key → the XXH3-64 of the value as 16 lowercase hex digits, or null. · - Complexity: O(N)
    static func digest(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let now = inv.now
        let key = Key(inv.args[1])
        let digest = engine.keyspace.withShard(for: key) { $0.lookupForRead(key, now: now).map { Digest.hex($0.value) } }
        if let digest {
            inv.out.writeRESPBulk(string: digest)
        } else {
            inv.out.writeRESPNull(version: inv.version)
        }
    }

    /// CAS key old new [EX seconds | PX milliseconds] → 1 swapped, 0 value differs, -1 missing.
    /// Without EX or PX the key loses its TTL (Tair/Kvrocks). · - Complexity: O(1)
    static func cas(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var deadline: Int64 = 0
        if inv.argc != 4 {
            guard inv.argc == 6 else { throw .syntax }
            let unit = inv.args[4]
            guard unit.isToken("ex") || unit.isToken("px") else { throw .syntax }
            deadline = try StringCommands.deadline(inv.args[5], seconds: unit.isToken("ex"), relative: true, now: inv.now, command: "cas")
        }
        let now = inv.now
        let key = Key(inv.args[1])
        let expected = inv.args[2], replacement = inv.args[3]
        let result: Int64 = engine.keyspace.withShard(for: key) { shard in
            guard let entry = shard.entry(key, now: now) else { return -1 }
            guard entry.value.equals(expected) else { return 0 }
            // A lock handed to a new token stays a lock.
            shard.set(key, value: replacement, deadline: deadline, lock: entry.isLock, now: now)
            return 1
        }
        inv.out.writeRESPInteger(result)
    }
}
