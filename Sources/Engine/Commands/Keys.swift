import Keyspace
import NIOCore
import RESP
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The generic key commands: DEL, EXISTS, TYPE, RENAME, KEYS, SCAN and friends.
enum KeyCommands {
    /// DEL key [key ...] (and UNLINK) · - Complexity: O(N). Atomic: the keys' shards are held together.
    static func del(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let now = inv.now
        let removed: Int64 = engine.keyspace.withShards(ofKeysIn: inv.args, from: 1) { set in
            var removed: Int64 = 0
            for i in 1..<inv.argc {
                let key = Key(inv.args[i])
                set.withShard(for: key) { shard in
                    if shard.entry(key, now: now) != nil {
                        shard.remove(key)
                        removed += 1
                    }
                }
            }
            return removed
        }
        inv.out.writeRESPInteger(removed)
    }

    /// EXISTS key [key ...] (and TOUCH): counts every named key that exists, repeats included. Atomic.
    static func exists(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let now = inv.now
        let found: Int64 = engine.keyspace.withShards(ofKeysIn: inv.args, from: 1) { set in
            var found: Int64 = 0
            for i in 1..<inv.argc {
                let key = Key(inv.args[i])
                if set.withShard(for: key, { $0.entry(key, now: now) != nil }) { found += 1 }
            }
            return found
        }
        inv.out.writeRESPInteger(found)
    }

    /// TYPE key · - Complexity: O(1)
    static func type(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let now = inv.now
        let key = Key(inv.args[1])
        let exists = engine.keyspace.withShard(for: key) { $0.entry(key, now: now) != nil }
        if exists { inv.out.writeRESPSimpleString("string" as StaticString) } else { inv.out.writeRESPSimpleString("none" as StaticString) }
    }

    /// RENAME key newkey / RENAMENX key newkey · - Complexity: O(1)
    static func rename(_ engine: Engine, _ inv: inout Invocation, nx: Bool) throws(CommandError) {
        let now = inv.now
        let source = Key(inv.args[1]), target = Key(inv.args[2])
        let result: Bool = try engine.keyspace.withShards(ofKeysIn: inv.args, from: 1) { (set: inout Keyspace.ShardSet) throws(CommandError) -> Bool in
            guard let entry = set.withShard(for: source, { $0.entry(source, now: now) }) else { throw .noSuchKey }
            if source == target { return !nx }
            let targetExists = set.withShard(for: target) { $0.entry(target, now: now) != nil }
            if targetExists && nx { return false }
            // The entry is a view of the source's record: copy it to the target before removing it.
            entry.value.withUnsafeBytes { bytes in
                set.withShard(for: target) { $0.set(target, bytes: bytes, deadline: entry.deadline, lock: entry.isLock, now: now) }
            }
            _ = set.withShard(for: source) { $0.remove(source) }
            return true
        }
        if nx { inv.out.writeRESPInteger(result ? 1 : 0) } else { inv.out.writeRESPOK() }
    }

    /// KEYS pattern · - Complexity: O(N)
    static func keys(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let pattern = Array(inv.args[1].readableBytesView)
        let now = inv.now
        let matchAll = pattern == [UInt8(ascii: "*")]
        var found: [ByteBuffer] = []
        // Every shard held at once: a transaction or multi-key command is seen whole or not at all.
        engine.keyspace.withAllShards { set in
            for shard in 0..<engine.keyspace.shardCount {
                set.withShard(shard) { s in
                    s.forEach(now: now) { key, _ in
                        if matchAll || Glob.match(pattern, key) { found.append(ByteBuffer(bytes: key)) }
                    }
                }
            }
        }
        inv.out.writeRESPArrayHeader(found.count)
        for key in found { inv.out.writeRESPBulk(key) }
    }

    /// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]
    ///
    /// The cursor names a shard: one call returns whole shards until it has at least COUNT keys,
    /// so a key present for the whole iteration is returned exactly once.
    /// - Complexity: O(1) per call in shards, O(N) for a full iteration
    static func scan(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let cursor = try parseCursor(inv.args[1])
        var count: Int64 = 10
        var pattern: [UInt8]? = nil
        var typeFilter: ByteBuffer? = nil
        var i = 2
        while i < inv.argc {
            let remaining = inv.argc - i - 1
            let opt = inv.args[i]
            if opt.isToken("count") && remaining >= 1 {
                count = try Arg.integer(inv.args[i + 1])
                if count < 1 { throw .syntax }
            } else if opt.isToken("match") && remaining >= 1 {
                pattern = Array(inv.args[i + 1].readableBytesView)
            } else if opt.isToken("type") && remaining >= 1 {
                typeFilter = inv.args[i + 1]
            } else {
                throw .syntax
            }
            i += 2
        }
        let now = inv.now
        var found: [ByteBuffer] = []
        var shard = cursor > UInt64(engine.keyspace.shardCount) ? engine.keyspace.shardCount : Int(cursor)
        let matchesType = typeFilter.map { $0.isToken("string") } ?? true
        if pattern == [UInt8(ascii: "*")] { pattern = nil }
        while shard < engine.keyspace.shardCount && found.count < count {
            engine.keyspace.forEachKey(inShard: shard, now: now) { key, _ in
                guard matchesType else { return }
                if let pattern, !Glob.match(pattern, key.readableBytesView) { return }
                found.append(key)
            }
            shard += 1
        }
        let next = shard >= engine.keyspace.shardCount ? 0 : shard
        inv.out.writeRESPArrayHeader(2)
        inv.out.writeRESPBulk(string: String(next))
        inv.out.writeRESPArrayHeader(found.count)
        for key in found { inv.out.writeRESPBulk(key) }
    }

    /// Redis's cursor syntax (`strtoul`): no leading space, all bytes used, no overflow.
    static func parseCursor(_ b: ByteBuffer) throws(CommandError) -> UInt64 {
        let invalid = CommandError("ERR invalid cursor")
        var bytes = Array(b.readableBytesView)
        if let first = bytes.first, first == 32 || (first >= 9 && first <= 13) { throw invalid }
        if bytes.contains(0) { throw invalid }
        bytes.append(0)
        return try bytes.withUnsafeBufferPointer { (p: UnsafeBufferPointer<UInt8>) throws(CommandError) -> UInt64 in
            let s = UnsafeRawPointer(p.baseAddress!).assumingMemoryBound(to: CChar.self)
            var end: UnsafeMutablePointer<CChar>? = nil
            errno = 0
            let v = strtoul(s, &end, 10)
            guard let end, end.pointee == 0, errno != ERANGE else { throw invalid }
            return UInt64(v)
        }
    }

    /// RANDOMKEY · - Complexity: O(1)
    static func randomkey(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        if let key = engine.keyspace.randomKey() { inv.out.writeRESPBulk(key) } else { inv.out.writeRESPNull(version: inv.version) }
    }

    /// DBSIZE · - Complexity: O(1)
    static func dbsize(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        inv.out.writeRESPInteger(Int64(engine.keyspace.count))
    }

    /// FLUSHDB / FLUSHALL [ASYNC | SYNC] · - Complexity: O(N)
    static func flush(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        if inv.argc == 2 {
            guard inv.args[1].isToken("sync") || inv.args[1].isToken("async") else { throw .syntax }
        } else if inv.argc != 1 {
            throw .syntax
        }
        engine.keyspace.flush()
        inv.out.writeRESPOK()
    }
}

/// Redis's glob matching (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a]`, `[a-z]` and `\` escapes.
public enum Glob {
    public static func match<C: Collection>(_ pattern: [UInt8], _ string: C, noCase: Bool = false) -> Bool where C.Element == UInt8 {
        let s = Array(string)
        var skipLonger = false
        return matchFrom(pattern, 0, s, 0, noCase: noCase, depth: 0, skipLonger: &skipLonger)
    }

    private static func lower(_ c: UInt8) -> UInt8 { (c >= 65 && c <= 90) ? c | 0x20 : c }

    private static func matchFrom(_ p: [UInt8], _ pi0: Int, _ s: [UInt8], _ si0: Int, noCase: Bool, depth: Int, skipLonger: inout Bool) -> Bool {
        // Deep recursion on hostile patterns: give up as Redis does past its nesting limit.
        if depth > 1000 { return false }
        var pi = pi0, si = si0
        while pi < p.count && si < s.count {
            switch p[pi] {
            case UInt8(ascii: "*"):
                while pi + 1 < p.count && p[pi + 1] == UInt8(ascii: "*") { pi += 1 }
                if pi + 1 == p.count { return true }
                while si < s.count {
                    if matchFrom(p, pi + 1, s, si, noCase: noCase, depth: depth + 1, skipLonger: &skipLonger) { return true }
                    // A later `*` already failed on every suffix: longer matches here cannot succeed.
                    if skipLonger { return false }
                    si += 1
                }
                skipLonger = true
                return false
            case UInt8(ascii: "?"):
                si += 1
            case UInt8(ascii: "["):
                pi += 1
                let not = pi < p.count && p[pi] == UInt8(ascii: "^")
                if not { pi += 1 }
                var matched = false
                while true {
                    if pi + 1 < p.count && p[pi] == UInt8(ascii: "\\") {
                        pi += 1
                        if p[pi] == s[si] { matched = true }
                    } else if pi >= p.count {
                        pi -= 1
                        break
                    } else if p[pi] == UInt8(ascii: "]") {
                        break
                    } else if pi + 2 < p.count && p[pi + 1] == UInt8(ascii: "-") {
                        var start = p[pi], end = p[pi + 2]
                        var c = s[si]
                        if start > end { swap(&start, &end) }
                        if noCase {
                            start = lower(start); end = lower(end); c = lower(c)
                        }
                        pi += 2
                        if c >= start && c <= end { matched = true }
                    } else {
                        if noCase ? lower(p[pi]) == lower(s[si]) : p[pi] == s[si] { matched = true }
                    }
                    pi += 1
                }
                if not { matched = !matched }
                if !matched { return false }
                si += 1
            case UInt8(ascii: "\\"):
                if pi + 1 < p.count { pi += 1 }
                fallthrough
            default:
                if noCase ? lower(p[pi]) != lower(s[si]) : p[pi] != s[si] { return false }
                si += 1
            }
            pi += 1
            if si == s.count {
                while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
                break
            }
        }
        return pi == p.count && si == s.count
    }
}

/// OBJECT ENCODING | FREQ | IDLETIME | REFCOUNT | HELP: what the keyspace knows about a key,
/// looked up without counting as an access (as Redis's `objectCommand`).
enum ObjectCommands {
    static let policyNote = "Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."

    /// Looks `inv.args[2]` up and hands the entry to `body`, or replies null when it is missing.
    private static func withEntry(_ engine: Engine, _ inv: inout Invocation,
                                  _ body: (Entry, Int64) throws(CommandError) -> RESPReply) throws(CommandError) {
        let key = Key(inv.args[2])
        let now = inv.now
        let reply: RESPReply? = try engine.keyspace.withShard(for: key) { (shard: inout ShardState) throws(CommandError) -> RESPReply? in
            guard let entry = shard.peek(key, now: now) else { return nil }
            return try body(entry, now)
        }
        switch reply {
        case nil: inv.out.writeRESPNull(version: inv.version)
        case .integer(let n): inv.out.writeRESPInteger(n)
        case .bulk(let s): inv.out.writeRESPBulk(string: s)
        }
    }

    enum RESPReply {
        case integer(Int64)
        case bulk(String)
    }

    /// The value as Redis's `int` encoding holds it (at most 20 characters, a 64-bit integer), or nil.
    private static func integer(_ value: ValueBytes) -> Int64? {
        value.count <= 20 ? value.withUnsafeBytes { RedisInteger.parse($0) } : nil
    }

    /// The encoding Redis gives a string it has just stored: `int`, `embstr` (up to 44 bytes) or `raw`.
    static func encoding(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        try withEntry(engine, &inv) { entry, _ in
            if integer(entry.value) != nil { return .bulk("int") }
            return .bulk(entry.value.count <= 44 ? "embstr" : "raw")
        }
    }

    static func freq(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let lfu = engine.config.evictionPolicy.usesLFU
        try withEntry(engine, &inv) { (entry, now) throws(CommandError) in
            guard lfu else { throw CommandError("ERR An LFU maxmemory policy is not selected, access frequency not tracked. \(policyNote)") }
            return .integer(Int64(entry.frequency(now: now)))
        }
    }

    static func idletime(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let lfu = engine.config.evictionPolicy.usesLFU
        try withEntry(engine, &inv) { (entry, now) throws(CommandError) in
            guard !lfu else { throw CommandError("ERR An LFU maxmemory policy is selected, idle time not tracked. \(policyNote)") }
            return .integer(entry.idleMilliseconds(now: now) / 1000)
        }
    }

    /// Redis shares the integers 0…9999 between keys (refcount INT_MAX) unless a maxmemory
    /// LRU/LFU policy needs per-key access data; every other value has one reference.
    static func refcount(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let policy = engine.config.evictionPolicy
        let perKeyAccess = engine.config.maxMemory.load(ordering: .relaxed) > 0
            && [.allkeysLRU, .allkeysLFU, .volatileLRU, .volatileLFU].contains(policy)
        try withEntry(engine, &inv) { entry, _ in
            if !perKeyAccess, let n = integer(entry.value), n >= 0 && n < 10_000 {
                return .integer(Int64(Int32.max))
            }
            return .integer(1)
        }
    }

    static func help(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        Help.write(&inv, "OBJECT", [
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. The returned integer is",
            "    proportional to the logarithm of the recent access frequency of the key.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
        ])
    }
}
