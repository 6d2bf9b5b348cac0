import NIOCore
import RESP

// The typed commands. Each names its keys (for routing) and its reply type.

// MARK: Connection and server

extension Command where Reply == String {
    /// `PING [message]`: `PONG`, or the message.
    public static func ping(_ message: String? = nil) -> Command {
        Command(message.map { ["PING", $0] } ?? ["PING"], decode: ReplyDecoders.string)
    }

    /// `ECHO message`.
    public static func echo(_ message: some RESPArgument) -> Command {
        Command(["ECHO", message], decode: ReplyDecoders.string)
    }

    /// `TYPE key`: `string` or `none`.
    public static func type(_ key: some RESPArgument) -> Command {
        Command(["TYPE", key], keyIndices: [1], decode: ReplyDecoders.string)
    }

    /// `SCRIPT LOAD source`: the script's SHA1.
    public static func scriptLoad(_ source: String) -> Command {
        Command(["SCRIPT", "LOAD", source], decode: ReplyDecoders.string)
    }
}

extension Command where Reply == Void {
    /// `FLUSHALL`.
    public static func flushAll() -> Command { Command(["FLUSHALL"], decode: ReplyDecoders.ok) }

    /// `MSET key value [key value …]`.
    public static func mset(_ pairs: [(key: any RESPArgument, value: any RESPArgument)]) -> Command {
        var args: [any RESPArgument] = ["MSET"]
        for p in pairs { args.append(p.key); args.append(p.value) }
        return Command(buffers: encodeArguments(args), keyIndices: Array(stride(from: 1, to: args.count, by: 2)),
                       split: .pairs, decode: ReplyDecoders.ok)
    }

    /// `RENAME key newkey`.
    public static func rename(_ key: some RESPArgument, to newKey: some RESPArgument) -> Command {
        Command(["RENAME", key, newKey], keyIndices: [1, 2], decode: ReplyDecoders.ok)
    }
}

extension Command where Reply == Int {
    /// `DBSIZE`.
    public static func dbsize() -> Command { Command(["DBSIZE"], decode: ReplyDecoders.int) }

    /// `DEL key [key …]`: how many were deleted.
    public static func del(_ keys: [any RESPArgument]) -> Command { multiKey("DEL", keys) }
    /// `UNLINK key [key …]`.
    public static func unlink(_ keys: [any RESPArgument]) -> Command { multiKey("UNLINK", keys) }
    /// `EXISTS key [key …]`: how many exist (a key named twice counts twice).
    public static func exists(_ keys: [any RESPArgument]) -> Command { multiKey("EXISTS", keys) }
    /// `TOUCH key [key …]`.
    public static func touch(_ keys: [any RESPArgument]) -> Command { multiKey("TOUCH", keys) }

    static func multiKey(_ name: String, _ keys: [any RESPArgument]) -> Command {
        Command(buffers: encodeArguments([name] + keys), keyIndices: keys.indices.map { $0 + 1 },
                split: .sumOfKeys, decode: ReplyDecoders.int)
    }

    /// `INCR key`.
    public static func incr(_ key: some RESPArgument) -> Command {
        Command(["INCR", key], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `DECR key`.
    public static func decr(_ key: some RESPArgument) -> Command {
        Command(["DECR", key], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `INCRBY key n`.
    public static func incrBy(_ key: some RESPArgument, _ n: Int) -> Command {
        Command(["INCRBY", key, n], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `DECRBY key n`.
    public static func decrBy(_ key: some RESPArgument, _ n: Int) -> Command {
        Command(["DECRBY", key, n], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `APPEND key value`: the new length.
    public static func append(_ key: some RESPArgument, _ value: some RESPArgument) -> Command {
        Command(["APPEND", key, value], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `STRLEN key`.
    public static func strlen(_ key: some RESPArgument) -> Command {
        Command(["STRLEN", key], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `SETRANGE key offset value`: the new length.
    public static func setRange(_ key: some RESPArgument, offset: Int, _ value: some RESPArgument) -> Command {
        Command(["SETRANGE", key, offset, value], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `TTL key`: seconds left, -1 without expiry, -2 missing.
    public static func ttl(_ key: some RESPArgument) -> Command {
        Command(["TTL", key], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `PTTL key`: milliseconds left, -1 without expiry, -2 missing.
    public static func pttl(_ key: some RESPArgument) -> Command {
        Command(["PTTL", key], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `EXPIRETIME key`: the Unix time in seconds, -1 or -2.
    public static func expireTime(_ key: some RESPArgument) -> Command {
        Command(["EXPIRETIME", key], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `PEXPIRETIME key`: the Unix time in milliseconds, -1 or -2.
    public static func pexpireTime(_ key: some RESPArgument) -> Command {
        Command(["PEXPIRETIME", key], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `CAD key value` (Strongbox, Tair): 1 deleted, 0 the value differs, -1 missing.
    public static func compareAndDelete(_ key: some RESPArgument, _ value: some RESPArgument) -> Command {
        Command(["CAD", key, value], keyIndices: [1], decode: ReplyDecoders.int)
    }
    /// `CAS key old new [PX ms]` (Strongbox, Tair): 1 replaced, 0 the value differs, -1 missing.
    public static func compareAndSet(_ key: some RESPArgument, expected: some RESPArgument, new: some RESPArgument,
                                     milliseconds: Int? = nil) -> Command {
        var args: [any RESPArgument] = ["CAS", key, expected, new]
        if let ms = milliseconds { args += ["PX", ms] }
        return Command(args, keyIndices: [1], decode: ReplyDecoders.int)
    }
}

extension Command where Reply == Bool {
    /// `SET key value [condition] [expiration]`: true when the value was written.
    public static func set(_ key: some RESPArgument, _ value: some RESPArgument, condition: SetCondition = .always,
                           expiration: Expiration? = nil) -> Command {
        let args: [any RESPArgument] = ["SET", key, value] + condition.arguments + (expiration?.arguments ?? [])
        return Command(args, keyIndices: [1], decode: ReplyDecoders.okOrNull)
    }
    /// `SETNX key value`.
    public static func setNX(_ key: some RESPArgument, _ value: some RESPArgument) -> Command {
        Command(["SETNX", key, value], keyIndices: [1], decode: ReplyDecoders.bool)
    }
    /// `MSETNX key value [key value …]`: true when all were set (none existed).
    public static func msetNX(_ pairs: [(key: any RESPArgument, value: any RESPArgument)]) -> Command {
        var args: [any RESPArgument] = ["MSETNX"]
        for p in pairs { args.append(p.key); args.append(p.value) }
        return Command(args, keyIndices: Array(stride(from: 1, to: args.count, by: 2)), decode: ReplyDecoders.bool)
    }
    /// `RENAMENX key newkey`.
    public static func renameNX(_ key: some RESPArgument, to newKey: some RESPArgument) -> Command {
        Command(["RENAMENX", key, newKey], keyIndices: [1, 2], decode: ReplyDecoders.bool)
    }
    /// `EXPIRE key seconds [NX|XX|GT|LT]`: true when the TTL was set.
    public static func expire(_ key: some RESPArgument, seconds: Int, _ condition: ExpireCondition? = nil) -> Command {
        expireFamily("EXPIRE", key, seconds, condition, ifEqual: nil)
    }
    /// `PEXPIRE key ms [NX|XX|GT|LT]`.
    public static func pexpire(_ key: some RESPArgument, milliseconds: Int, _ condition: ExpireCondition? = nil) -> Command {
        expireFamily("PEXPIRE", key, milliseconds, condition, ifEqual: nil)
    }
    /// `EXPIREAT key unix-seconds [NX|XX|GT|LT]`.
    public static func expireAt(_ key: some RESPArgument, unixSeconds: Int, _ condition: ExpireCondition? = nil) -> Command {
        expireFamily("EXPIREAT", key, unixSeconds, condition, ifEqual: nil)
    }
    /// `PEXPIREAT key unix-ms [NX|XX|GT|LT]`.
    public static func pexpireAt(_ key: some RESPArgument, unixMilliseconds: Int, _ condition: ExpireCondition? = nil) -> Command {
        expireFamily("PEXPIREAT", key, unixMilliseconds, condition, ifEqual: nil)
    }
    /// `PEXPIRE key ms IFEQ token` (Strongbox): extend a lock only while it still holds `token`.
    public static func pexpireIfEqual(_ key: some RESPArgument, milliseconds: Int, token: some RESPArgument) -> Command {
        expireFamily("PEXPIRE", key, milliseconds, nil, ifEqual: token)
    }
    static func expireFamily(_ name: String, _ key: some RESPArgument, _ n: Int, _ condition: ExpireCondition?,
                             ifEqual: (any RESPArgument)?) -> Command {
        var args: [any RESPArgument] = [name, key, n]
        if let c = condition { args.append(c.rawValue) }
        if let t = ifEqual { args += ["IFEQ", t] }
        return Command(args, keyIndices: [1], decode: ReplyDecoders.bool)
    }
    /// `PERSIST key`: true when a TTL was removed.
    public static func persist(_ key: some RESPArgument) -> Command {
        Command(["PERSIST", key], keyIndices: [1], decode: ReplyDecoders.bool)
    }
    /// `DELIFEQ key token` (Strongbox, Valkey 9): release a lock only while it still holds `token`.
    public static func delIfEqual(_ key: some RESPArgument, _ token: some RESPArgument) -> Command {
        Command(["DELIFEQ", key, token], keyIndices: [1], decode: ReplyDecoders.bool)
    }
    /// `DELEX key [IFEQ v|IFNE v]` (Strongbox, Redis 8.4): true when deleted.
    public static func delEx(_ key: some RESPArgument, condition: SetCondition = .always) -> Command {
        Command(["DELEX", key] + condition.arguments, keyIndices: [1], decode: ReplyDecoders.bool)
    }
}

extension Command where Reply == ByteBuffer? {
    /// `GET key`: the value, or nil when the key is missing.
    public static func get(_ key: some RESPArgument) -> Command {
        Command(["GET", key], keyIndices: [1], decode: ReplyDecoders.optionalBulk)
    }
    /// `SET key value … GET`: the old value (nil when there was none).
    public static func setGet(_ key: some RESPArgument, _ value: some RESPArgument, condition: SetCondition = .always,
                              expiration: Expiration? = nil) -> Command {
        let args: [any RESPArgument] = ["SET", key, value] + condition.arguments + (expiration?.arguments ?? []) + ["GET"]
        return Command(args, keyIndices: [1], decode: ReplyDecoders.optionalBulk)
    }
    /// `GETDEL key`.
    public static func getDel(_ key: some RESPArgument) -> Command {
        Command(["GETDEL", key], keyIndices: [1], decode: ReplyDecoders.optionalBulk)
    }
    /// `GETSET key value`.
    public static func getSet(_ key: some RESPArgument, _ value: some RESPArgument) -> Command {
        Command(["GETSET", key, value], keyIndices: [1], decode: ReplyDecoders.optionalBulk)
    }
    /// `GETEX key [EX|PX|EXAT|PXAT|PERSIST]`; `expiration: nil, persist: false` only reads.
    public static func getEx(_ key: some RESPArgument, expiration: Expiration? = nil, persist: Bool = false) -> Command {
        var args: [any RESPArgument] = ["GETEX", key]
        if let e = expiration, e != .keepTTL { args += e.arguments }
        if persist { args.append("PERSIST") }
        return Command(args, keyIndices: [1], decode: ReplyDecoders.optionalBulk)
    }
}

extension Command where Reply == ByteBuffer {
    /// `GETRANGE key start end`.
    public static func getRange(_ key: some RESPArgument, _ start: Int, _ end: Int) -> Command {
        Command(["GETRANGE", key, start, end], keyIndices: [1], decode: ReplyDecoders.bulk)
    }
}

extension Command where Reply == String? {
    /// `DIGEST key` (Strongbox, Redis 8.4): the value's XXH3-64 as 16 hex digits, nil when missing.
    public static func digest(_ key: some RESPArgument) -> Command {
        Command(["DIGEST", key], keyIndices: [1], decode: ReplyDecoders.optionalString)
    }
}

extension Command where Reply == Double {
    /// `INCRBYFLOAT key increment`.
    public static func incrByFloat(_ key: some RESPArgument, _ increment: Double) -> Command {
        Command(["INCRBYFLOAT", key, increment], keyIndices: [1], decode: ReplyDecoders.double)
    }
}

extension Command where Reply == [ByteBuffer?] {
    /// `MGET key [key …]`: the values in order, nil for missing keys.
    public static func mget(_ keys: [any RESPArgument]) -> Command {
        Command(buffers: encodeArguments(["MGET"] + keys), keyIndices: keys.indices.map { $0 + 1 },
                split: .valuesOfKeys, decode: ReplyDecoders.optionalBulks)
    }
}

extension Command where Reply == [ByteBuffer] {
    /// `KEYS pattern` (a whole-keyspace scan on the server: prefer `scan` in production).
    public static func keys(_ pattern: String) -> Command {
        Command(["KEYS", pattern], decode: ReplyDecoders.bulks)
    }
}

/// One page of `SCAN`: the cursor to continue from (0 when done) and the keys.
public struct ScanPage: Sendable {
    public let cursor: String
    public let keys: [ByteBuffer]
}

extension Command where Reply == ScanPage {
    /// `SCAN cursor [MATCH pattern] [COUNT n]`.
    public static func scan(cursor: String = "0", match: String? = nil, count: Int? = nil) -> Command {
        var args: [any RESPArgument] = ["SCAN", cursor]
        if let m = match { args += ["MATCH", m] }
        if let c = count { args += ["COUNT", c] }
        return Command(args) { v throws(StrongboxError) in
            guard case .array(let parts) = v, parts.count == 2 else { throw .unexpected(v, "a cursor and keys") }
            return ScanPage(cursor: try ReplyDecoders.string(parts[0]), keys: try ReplyDecoders.bulks(parts[1]))
        }
    }
}

extension Command where Reply == [Bool] {
    /// `SCRIPT EXISTS sha [sha …]`.
    public static func scriptExists(_ shas: [String]) -> Command {
        Command(["SCRIPT", "EXISTS"] + shas) { v throws(StrongboxError) in
            guard case .array(let items) = v else { throw .unexpected(v, "an array") }
            var out: [Bool] = []
            for i in items { out.append(try ReplyDecoders.bool(i)) }
            return out
        }
    }
}
