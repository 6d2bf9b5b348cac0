import Keyspace
import NIOCore
import RESP

/// EXPIRE and its family, TTL and its family, PERSIST.
enum ExpiryCommands {
    struct Flags: OptionSet {
        let rawValue: UInt8
        static let nx = Flags(rawValue: 1), xx = Flags(rawValue: 2), gt = Flags(rawValue: 4), lt = Flags(rawValue: 8)
    }

    /// The one implementation behind EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT (Redis's `expireGenericCommand`).
    /// `key seconds|ms [NX | XX | GT | LT] [IFEQ value]` · - Complexity: O(1)
    ///
    /// `IFEQ value` is Strongbox's compare-and-extend: the deadline changes only while the key
    /// still holds `value` (a lock's token), atomically.
    static func expire(_ engine: Engine, _ inv: inout Invocation, seconds: Bool, absolute: Bool, name: String) throws(CommandError) {
        var flags: Flags = []
        var match: ByteBuffer? = nil
        var j = 3
        while j < inv.argc {
            let opt = inv.args[j]
            if opt.isToken("ifeq") && j + 1 < inv.argc && match == nil {
                match = inv.args[j + 1]
                j += 1
            }
            else if opt.isToken("nx") { flags.insert(.nx) }
            else if opt.isToken("xx") { flags.insert(.xx) }
            else if opt.isToken("gt") { flags.insert(.gt) }
            else if opt.isToken("lt") { flags.insert(.lt) }
            else { throw CommandError("ERR Unsupported option \(opt.text)") }
            j += 1
        }
        if flags.contains(.nx) && !flags.isDisjoint(with: [.xx, .gt, .lt]) {
            throw CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
        }
        if flags.contains(.gt) && flags.contains(.lt) {
            throw CommandError("ERR GT and LT options at the same time are not compatible")
        }
        var when = try Arg.integer(inv.args[2])
        if seconds {
            if when > Int64.max / 1000 || when < Int64.min / 1000 { throw .invalidExpireTime(name) }
            when *= 1000
        }
        let base = absolute ? 0 : inv.now
        if when > Int64.max - base { throw .invalidExpireTime(name) }
        when += base
        let now = inv.now
        let key = Key(inv.args[1])
        let result: Int64 = engine.keyspace.withShard(for: key) { shard in
            guard let entry = shard.entry(key, now: now) else { return 0 }
            if let match, !entry.value.equals(match) { return 0 }
            let current: Int64 = entry.hasDeadline ? entry.deadline : -1
            if flags.contains(.nx) && current != -1 { return 0 }
            if flags.contains(.xx) && current == -1 { return 0 }
            if flags.contains(.gt) && (when <= current || current == -1) { return 0 }
            if flags.contains(.lt) && current != -1 && when >= current { return 0 }
            if when <= now {
                shard.remove(key)
            } else {
                shard.setDeadline(key, when)
            }
            return 1
        }
        inv.out.writeRESPInteger(result)
    }

    /// TTL, PTTL, EXPIRETIME and PEXPIRETIME: -2 missing, -1 no deadline.
    static func ttl(_ engine: Engine, _ inv: inout Invocation, milliseconds: Bool, absolute: Bool) throws(CommandError) {
        let now = inv.now
        let key = Key(inv.args[1])
        let result: Int64 = engine.keyspace.withShard(for: key) { shard in
            guard let entry = shard.entry(key, now: now) else { return -2 }
            guard entry.hasDeadline else { return -1 }
            var ttl = absolute ? entry.deadline : entry.deadline - now
            if ttl < 0 { ttl = 0 }
            // Rounded to the nearest second without overflowing at a deadline near Int64.max.
            return milliseconds ? ttl : Int64((UInt64(ttl) + 500) / 1000)
        }
        inv.out.writeRESPInteger(result)
    }

    /// PERSIST key · - Complexity: O(1)
    static func persist(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let now = inv.now
        let key = Key(inv.args[1])
        let result: Int64 = engine.keyspace.withShard(for: key) { shard in
            guard let entry = shard.entry(key, now: now), entry.hasDeadline else { return 0 }
            shard.setDeadline(key, 0)
            return 1
        }
        inv.out.writeRESPInteger(result)
    }
}
