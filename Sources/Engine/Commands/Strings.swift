import Keyspace
import NIOCore
import RESP

/// The string commands: SET and its family, GET and its family, counters and ranges.
enum StringCommands {
    /// Options of the SET/GETEX grammar, parsed with Redis's exact rules of which may combine.
    struct SetOptions {
        /// NX, XX, or a compare condition (IFEQ/IFNE on the value, IFDEQ/IFDNE on its digest).
        enum Condition: Equatable { case none, nx, xx, ifeq(ByteBuffer), ifne(ByteBuffer), ifdeq(ByteBuffer), ifdne(ByteBuffer) }
        enum Expiry { case none, ex, px, exat, pxat, keepTTL, persist }
        var condition = Condition.none
        var get = false
        var expiry = Expiry.none
        var expiryArgument: ByteBuffer? = nil

        /// Parses `args[from...]`. `forSet` selects the SET grammar, else GETEX's.
        init(_ args: [ByteBuffer], from: Int, forSet: Bool) throws(CommandError) {
            var j = from
            while j < args.count {
                let opt = args[j]
                let hasNext = j + 1 < args.count
                if forSet && opt.isToken("nx") && (condition == .none || condition == .nx) {
                    condition = .nx
                } else if forSet && opt.isToken("xx") && (condition == .none || condition == .xx) {
                    condition = .xx
                } else if forSet && hasNext && condition == .none, let compare = ValueCondition.parse(opt, args[j + 1]) {
                    condition = compare
                    j += 1
                } else if forSet && opt.isToken("get") {
                    get = true
                } else if forSet && opt.isToken("keepttl") && (expiry == .none || expiry == .keepTTL) {
                    expiry = .keepTTL
                } else if !forSet && opt.isToken("persist") && (expiry == .none || expiry == .persist) {
                    expiry = .persist
                } else if hasNext, let kind = Self.expiryKind(opt), expiry == .none || expiry == kind {
                    expiry = kind
                    expiryArgument = args[j + 1]
                    j += 1
                } else {
                    throw .syntax
                }
                j += 1
            }
        }

        private static func expiryKind(_ opt: ByteBuffer) -> Expiry? {
            if opt.isToken("ex") { return .ex }
            if opt.isToken("px") { return .px }
            if opt.isToken("exat") { return .exat }
            if opt.isToken("pxat") { return .pxat }
            return nil
        }

        /// The absolute deadline the expiry option asks for, validated as Redis does, or 0.
        func deadline(now: Int64, command: String) throws(CommandError) -> Int64 {
            guard let raw = expiryArgument else { return 0 }
            return try StringCommands.deadline(
                raw, seconds: expiry == .ex || expiry == .exat,
                relative: expiry == .ex || expiry == .px, now: now, command: command)
        }
    }

    /// Redis's `getExpireMillisecondsOrReply`: positive, no overflow on unit change or addition.
    static func deadline(_ raw: ByteBuffer, seconds: Bool, relative: Bool, now: Int64, command: String) throws(CommandError) -> Int64 {
        var ms = try Arg.integer(raw)
        if ms <= 0 || (seconds && ms > Int64.max / 1000) { throw .invalidExpireTime(command) }
        if seconds { ms *= 1000 }
        if relative {
            let (sum, overflow) = ms.addingReportingOverflow(now)
            if overflow { throw .invalidExpireTime(command) }
            ms = sum
        }
        if ms <= 0 { throw .invalidExpireTime(command) }
        return ms
    }

    /// SET key value [NX | XX] [GET] [EX s | PX ms | EXAT ts | PXAT ts | KEEPTTL]
    /// - Complexity: O(1)
    static func set(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let options = try SetOptions(inv.args, from: 3, forSet: true)
        let deadline = try options.deadline(now: inv.now, command: "set")
        try setGeneric(engine, &inv, key: Key(inv.args[1]), value: inv.args[2], options: options, deadline: deadline, okReply: nil, abortReply: nil)
    }

    /// The one implementation behind SET, SETNX, SETEX and PSETEX (Redis's `setGenericCommand`).
    /// `okReply`/`abortReply` nil mean `+OK` / null.
    static func setGeneric(
        _ engine: Engine, _ inv: inout Invocation, key: Key, value: ByteBuffer,
        options: SetOptions, deadline: Int64, okReply: Int64?, abortReply: Int64?
    ) throws(CommandError) {
        let now = inv.now
        let version = inv.version
        engine.keyspace.withShard(for: key) { shard in
            // A plain SET overwrites whatever is there: no need to look first.
            if options.condition == .none && !options.get {
                shard.set(key, value: value, deadline: deadline, keepTTL: options.expiry == .keepTTL, now: now)
                if let okReply { inv.out.writeRESPInteger(okReply) } else { inv.out.writeRESPOK() }
                return
            }
            let existing = shard.entry(key, now: now)
            if options.get {
                if let existing { inv.out.writeRESPBulk(existing.value) } else { inv.out.writeRESPNull(version: version) }
            }
            if !options.condition.allows(existing?.value) {
                if !options.get {
                    if let abortReply { inv.out.writeRESPInteger(abortReply) } else { inv.out.writeRESPNull(version: version) }
                }
                return
            }
            // SET NX with a TTL is how every lock library takes a lock: mark it, so eviction spares
            // it. A lock rewritten with its own token (an extension by SET … IFEQ) stays one.
            let lock = (options.condition == .nx && deadline != 0) || (existing.map { $0.isLock && $0.value.equals(value) } ?? false)
            shard.set(key, value: value, deadline: deadline, keepTTL: options.expiry == .keepTTL, lock: lock, now: now)
            if !options.get {
                if let okReply { inv.out.writeRESPInteger(okReply) } else { inv.out.writeRESPOK() }
            }
        }
    }

    /// SETNX key value · - Complexity: O(1)
    static func setnx(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var options = try SetOptions([], from: 0, forSet: true)
        options.condition = .nx
        try setGeneric(engine, &inv, key: Key(inv.args[1]), value: inv.args[2], options: options, deadline: 0, okReply: 1, abortReply: 0)
    }

    /// SETEX key seconds value · - Complexity: O(1)
    static func setex(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let deadline = try Self.deadline(inv.args[2], seconds: true, relative: true, now: inv.now, command: "setex")
        let options = try SetOptions([], from: 0, forSet: true)
        try setGeneric(engine, &inv, key: Key(inv.args[1]), value: inv.args[3], options: options, deadline: deadline, okReply: nil, abortReply: nil)
    }

    /// PSETEX key milliseconds value · - Complexity: O(1)
    static func psetex(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let deadline = try Self.deadline(inv.args[2], seconds: false, relative: true, now: inv.now, command: "psetex")
        let options = try SetOptions([], from: 0, forSet: true)
        try setGeneric(engine, &inv, key: Key(inv.args[1]), value: inv.args[3], options: options, deadline: deadline, okReply: nil, abortReply: nil)
    }

    /// GET key · - Complexity: O(1)
    static func get(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        readGeneric(engine, &inv, delete: false)
    }

    /// GETDEL key · - Complexity: O(1)
    static func getdel(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        readGeneric(engine, &inv, delete: true)
    }

    /// GET and GETDEL: reply the value or null, counting a hit or a miss.
    @inline(__always)
    static func readGeneric(_ engine: Engine, _ inv: inout Invocation, delete: Bool) {
        let now = inv.now
        let key = Key(inv.args[1])
        let version = inv.version
        engine.keyspace.withShard(for: key) { shard in
            if let e = shard.lookupForRead(key, now: now) {
                inv.out.writeRESPBulk(e.value)
                if delete { shard.remove(key) }
            } else {
                inv.out.writeRESPNull(version: version)
            }
        }
    }

    /// GETEX key [EX s | PX ms | EXAT ts | PXAT ts | PERSIST] · - Complexity: O(1)
    static func getex(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let options = try SetOptions(inv.args, from: 2, forSet: false)
        let deadline = try options.deadline(now: inv.now, command: "getex")
        let now = inv.now
        let key = Key(inv.args[1])
        let version = inv.version
        engine.keyspace.withShard(for: key) { shard in
            guard let e = shard.lookupForRead(key, now: now) else {
                inv.out.writeRESPNull(version: version)
                return
            }
            inv.out.writeRESPBulk(e.value)
            if (options.expiry == .exat || options.expiry == .pxat) && deadline <= now {
                shard.remove(key)
            } else if deadline != 0 {
                shard.setDeadline(key, deadline)
            } else if options.expiry == .persist && e.hasDeadline {
                // Only a TTL really removed is a change (WATCH).
                shard.setDeadline(key, 0)
            }
        }
    }

    /// GETSET key value · - Complexity: O(1)
    static func getset(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let now = inv.now
        let key = Key(inv.args[1]); let value = inv.args[2]
        let version = inv.version
        engine.keyspace.withShard(for: key) { shard in
            if let e = shard.entry(key, now: now) { inv.out.writeRESPBulk(e.value) } else { inv.out.writeRESPNull(version: version) }
            shard.set(key, value: value, deadline: 0, now: now)
        }
    }

    /// MGET key [key ...] · - Complexity: O(N)
    static func mget(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let now = inv.now
        let version = inv.version
        inv.out.writeRESPArrayHeader(inv.argc - 1)
        // Atomic: the keys' shards are held together, so no write lands between two of the reads.
        try engine.keyspace.withShards(ofKeysIn: inv.args, from: 1) { (set: inout Keyspace.ShardSet) throws(CommandError) in
            for i in 1..<inv.argc {
                let key = Key(inv.args[i])
                set.withShard(for: key) { shard in
                    if let e = shard.lookupForRead(key, now: now) { inv.out.writeRESPBulk(e.value) } else { inv.out.writeRESPNull(version: version) }
                }
                try inv.checkReplySize()
            }
        }
    }

    /// MSET key value [key value ...] · - Complexity: O(N)
    static func mset(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        try msetGeneric(engine, &inv, nx: false)
    }

    /// MSETNX key value [key value ...] · - Complexity: O(N)
    static func msetnx(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        try msetGeneric(engine, &inv, nx: true)
    }

    static func msetGeneric(_ engine: Engine, _ inv: inout Invocation, nx: Bool) throws(CommandError) {
        guard inv.argc % 2 == 1 else { throw .arity(nx ? "msetnx" : "mset") }
        let now = inv.now
        let args = inv.args
        let stored: Bool = engine.keyspace.withShards(ofKeysIn: args, from: 1, step: 2) { set in
            if nx {
                var p = 1
                while p < args.count {
                    let key = Key(args[p])
                    if set.withShard(for: key, { $0.entry(key, now: now) != nil }) { return false }
                    p += 2
                }
            }
            var p = 1
            while p < args.count {
                let key = Key(args[p])
                set.withShard(for: key) { $0.set(key, value: args[p + 1], deadline: 0, now: now) }
                p += 2
            }
            return true
        }
        if nx { inv.out.writeRESPInteger(stored ? 1 : 0) } else { inv.out.writeRESPOK() }
    }

    /// APPEND key value · - Complexity: O(1) amortized
    static func append(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let now = inv.now
        let key = Key(inv.args[1]); let suffix = inv.args[2]
        let limit = engine.config.maxBulkLength.load(ordering: .relaxed)
        let length: Int = try engine.keyspace.withShard(for: key) { (shard: inout ShardState) throws(CommandError) -> Int in
            guard let e = shard.entry(key, now: now) else {
                shard.set(key, value: suffix, deadline: 0, now: now)
                return suffix.readableBytes
            }
            let total = e.value.count + suffix.readableBytes
            if total > limit { throw .stringTooLong }
            return suffix.withUnsafeReadableBytes { shard.append(key, $0) } ?? total
        }
        inv.out.writeRESPInteger(Int64(length))
    }

    /// STRLEN key · - Complexity: O(1)
    static func strlen(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let now = inv.now
        let key = Key(inv.args[1])
        let n = engine.keyspace.withShard(for: key) { $0.entry(key, now: now)?.value.count ?? 0 }
        inv.out.writeRESPInteger(Int64(n))
    }

    /// GETRANGE key start end (and SUBSTR) · - Complexity: O(N) in the returned length
    static func getrange(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var start = try Arg.integer(inv.args[2])
        var end = try Arg.integer(inv.args[3])
        let now = inv.now
        let key = Key(inv.args[1])
        engine.keyspace.withShard(for: key) { shard in
            guard let e = shard.lookupForRead(key, now: now) else {
                inv.out.writeRESPEmptyBulk()
                return
            }
            let length = Int64(e.value.count)
            if start < 0 && end < 0 && start > end {
                inv.out.writeRESPEmptyBulk()
                return
            }
            if start < 0 { start = length + start }
            if end < 0 { end = length + end }
            if start < 0 { start = 0 }
            if end < 0 { end = 0 }
            if end >= length { end = length - 1 }
            if start > end || length == 0 {
                inv.out.writeRESPEmptyBulk()
            } else {
                let range = Int(start)...Int(end)
                e.value.withUnsafeBytes { inv.out.writeRESPBulk(bytes: UnsafeRawBufferPointer(rebasing: $0[range])) }
            }
        }
    }

    /// SETRANGE key offset value · - Complexity: O(1), O(M) to grow
    static func setrange(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let offset = try Arg.integer(inv.args[2])
        if offset < 0 { throw CommandError("ERR offset is out of range") }
        let now = inv.now
        let key = Key(inv.args[1]); let patch = inv.args[3]
        let limit = Int64(engine.config.maxBulkLength.load(ordering: .relaxed))
        let length: Int = try engine.keyspace.withShard(for: key) { (shard: inout ShardState) throws(CommandError) -> Int in
            let existing = shard.entry(key, now: now)
            if patch.readableBytes == 0 { return existing?.value.count ?? 0 }
            let (needed, overflow) = offset.addingReportingOverflow(Int64(patch.readableBytes))
            if overflow || needed > limit { throw .stringTooLong }
            if existing != nil {
                return patch.withUnsafeReadableBytes { shard.setRange(key, offset: Int(offset), $0) } ?? 0
            }
            var value = ByteBufferAllocator().buffer(capacity: Int(needed))
            value.writeRepeatingByte(0, count: Int(offset))
            value.writeImmutableBuffer(patch)
            shard.set(key, value: value, deadline: 0, now: now)
            return value.readableBytes
        }
        inv.out.writeRESPInteger(Int64(length))
    }

    /// INCR / DECR / INCRBY / DECRBY: the one implementation (Redis's `incrDecrCommand`).
    static func incrDecr(_ engine: Engine, _ inv: inout Invocation, by increment: Int64) throws(CommandError) {
        let now = inv.now
        let key = Key(inv.args[1])
        let result: Int64 = try engine.keyspace.withShard(for: key) { (shard: inout ShardState) throws(CommandError) -> Int64 in
            let existing = shard.entry(key, now: now)
            var current: Int64 = 0
            if let existing {
                guard let v = existing.value.withUnsafeBytes({ RedisInteger.parse($0) }) else { throw .notInteger }
                current = v
            }
            if (increment < 0 && current < 0 && increment < Int64.min - current)
                || (increment > 0 && current > 0 && increment > Int64.max - current) {
                throw .overflow
            }
            let next = current + increment
            var digits = ByteBuffer()
            digits.writeDecimal(next)
            if existing != nil { shard.replaceValue(key, with: digits) } else { shard.set(key, value: digits, deadline: 0, now: now) }
            return next
        }
        inv.out.writeRESPInteger(result)
    }

    static func incr(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) { try incrDecr(engine, &inv, by: 1) }
    static func decr(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) { try incrDecr(engine, &inv, by: -1) }
    static func incrby(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        try incrDecr(engine, &inv, by: try Arg.integer(inv.args[2]))
    }
    static func decrby(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let n = try Arg.integer(inv.args[2])
        if n == Int64.min { throw CommandError("ERR decrement would overflow") }
        try incrDecr(engine, &inv, by: -n)
    }

    /// INCRBYFLOAT key increment · - Complexity: O(1)
    static func incrbyfloat(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let now = inv.now
        let key = Key(inv.args[1]); let incrementArg = inv.args[2]
        let text: String = try engine.keyspace.withShard(for: key) { (shard: inout ShardState) throws(CommandError) -> String in
            let existing = shard.entry(key, now: now)
            var current: Float80 = 0
            if let existing {
                guard let v = Arg.longDouble(existing.value) else { throw .notFloat }
                current = v
            }
            guard let increment = Arg.longDouble(incrementArg) else { throw .notFloat }
            let next = current + increment
            if next.isNaN || next.isInfinite { throw CommandError("ERR increment would produce NaN or Infinity") }
            let text = Arg.humanLongDouble(next)
            let value = ByteBuffer(string: text)
            if existing != nil { shard.replaceValue(key, with: value) } else { shard.set(key, value: value, deadline: 0, now: now) }
            return text
        }
        inv.out.writeRESPBulk(string: text)
    }
}

/// The compare conditions of SET, DELEX and EXPIRE … IFEQ: on the value itself or on its digest.
enum ValueCondition {
    /// `IFEQ v`, `IFNE v`, `IFDEQ d`, `IFDNE d` as a SET condition, or nil when `token` is none of them.
    static func parse(_ token: ByteBuffer, _ operand: ByteBuffer) -> StringCommands.SetOptions.Condition? {
        if token.isToken("ifeq") { return .ifeq(operand) }
        if token.isToken("ifne") { return .ifne(operand) }
        if token.isToken("ifdeq") { return .ifdeq(operand) }
        if token.isToken("ifdne") { return .ifdne(operand) }
        return nil
    }
}

extension StringCommands.SetOptions.Condition {
    /// Whether the write may go ahead given the key's current value (nil: missing).
    /// IFEQ/IFDEQ never create a key; IFNE/IFDNE do.
    func allows(_ current: ValueBytes?) -> Bool {
        switch self {
        case .none: return true
        case .nx: return current == nil
        case .xx: return current != nil
        case .ifeq(let match): return current.map { $0.equals(match) } ?? false
        case .ifne(let match): return current.map { !$0.equals(match) } ?? true
        case .ifdeq(let digest): return current.map { Digest.matches($0, digest) } ?? false
        case .ifdne(let digest): return current.map { !Digest.matches($0, digest) } ?? true
        }
    }
}
