import Keyspace
import NIOCore
import RESP

/// EVAL, EVALSHA, their read-only forms, and SCRIPT.
enum ScriptCommands {
    /// EVAL script numkeys [key ...] [arg ...] (and EVALSHA, EVAL_RO, EVALSHA_RO)
    /// - Complexity: depends on the script
    static func eval(_ engine: Engine, _ inv: inout Invocation, bySHA: Bool, readOnly: Bool) throws(CommandError) {
        let count = try Arg.integer(inv.args[2])
        if count < 0 { throw CommandError("ERR Number of keys can't be negative") }
        if count > Int64(inv.argc - 3) { throw CommandError("ERR Number of keys can't be greater than number of args") }
        let keys = inv.args[3..<(3 + Int(count))]
        let argv = inv.args[(3 + Int(count))...]
        let script = inv.args[1]
        let sha = bySHA ? script.text.lowercased() : ScriptEngine.sha1Hex(script.readableBytesView)
        // The unlock and extend scripts of lock libraries run natively: same replies, no Lua.
        if !readOnly, let known = KnownScript.bySHA[sha] {
            if !engine.scripts.exists(sha) {
                if bySHA { throw CommandError("NOSCRIPT No matching script. Please use EVAL.") }
                try engine.keyspace.withExclusiveAccess { () throws(CommandError) in
                    try engine.scripts.load(Array(script.readableBytesView), sha: sha)
                }
            }
            if known.run(engine, &inv, keys: keys, argv: argv) {
                engine.stats.nativeScriptCalls.add(1, ordering: .relaxed)
                return
            }
        }
        // Shebang flags (a cached script's, or read now from the body): checked before anything runs.
        let flags: ScriptFlags
        if bySHA {
            guard let cached = engine.scripts.flags(sha) else { throw CommandError("NOSCRIPT No matching script. Please use EVAL.") }
            flags = cached
        } else {
            // Only a shebang's first line is read (the flags live there), however long it is.
            let view = script.readableBytesView
            if view.starts(with: "#!".utf8) {
                let firstLine = view.firstIndex(of: UInt8(ascii: "\n")).map { view[...$0] } ?? view[...]
                flags = try ScriptFlags.parse(Array(firstLine)).0
            } else {
                flags = ScriptFlags()
            }
        }
        if readOnly && flags.hasShebang && !flags.noWrites {
            throw CommandError("ERR Can not execute a script with write flag using *_ro command.")
        }
        if flags.noCluster && engine.cluster != nil {
            throw CommandError("ERR Can not run script on cluster, 'no-cluster' flag is set.")
        }
        if flags.hasShebang && !flags.allowOOM && !flags.noWrites && !engine.makeRoom() {
            throw CommandError.outOfMemory
        }
        if inv.mayDeferScripts {
            inv.deferredScript = true
            return
        }
        try engine.keyspace.withExclusiveAccess { () throws(CommandError) in
            if !bySHA { try engine.scripts.load(Array(script.readableBytesView), sha: sha) }
            try engine.scripts.run(sha: sha, keys: keys, argv: argv, engine: engine, invocation: &inv, readOnly: readOnly || flags.noWrites)
        }
    }

    /// SCRIPT LOAD script → its SHA1
    static func load(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let body = Array(inv.args[2].readableBytesView)
        let sha = ScriptEngine.sha1Hex(body)
        try engine.keyspace.withExclusiveAccess { () throws(CommandError) in try engine.scripts.load(body, sha: sha) }
        inv.out.writeRESPBulk(string: sha)
    }

    /// SCRIPT EXISTS sha1 [sha1 ...] → 1 or 0 for each
    static func exists(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        inv.out.writeRESPArrayHeader(inv.argc - 2)
        for j in 2..<inv.argc { inv.out.writeRESPInteger(engine.scripts.exists(inv.args[j].text) ? 1 : 0) }
    }

    /// SCRIPT FLUSH [ASYNC | SYNC]
    static func flush(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        if inv.argc == 3 {
            guard inv.args[2].isToken("async") || inv.args[2].isToken("sync") else {
                throw CommandError("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
            }
        } else if inv.argc > 3 {
            throw CommandError("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
        }
        engine.keyspace.withExclusiveAccess { engine.scripts.flush() }
        inv.out.writeRESPOK()
    }

    /// SCRIPT KILL: stops a script that has not written anything.
    static func kill(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        if let refusal = engine.scripts.kill() { throw refusal }
        inv.out.writeRESPOK()
    }

    static func help(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        Help.write(&inv, "SCRIPT", [
            "EXISTS <sha1> [<sha1> ...]", "    Return information about the existence of the scripts in the script cache.",
            "FLUSH [ASYNC|SYNC]", "    Flush the Lua scripts cache.",
            "KILL", "    Kill the currently executing Lua script.",
            "LOAD <script>", "    Load a script into the scripts cache without executing it.",
        ])
    }
}

/// Lock-library scripts that Strongbox recognises by SHA1 and runs as native code. Each touches
/// one key, so one shard lock gives it the atomicity the script has; each gives the replies the
/// Lua would (the scripting corpus checks them against redis-server). Inputs the Lua would turn
/// into an error, or that need Lua's number formatting, go to Lua instead (`run` returns false).
enum KnownScript {
    /// `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`
    /// (the Redis docs' unlock, in its common spellings) and redis-py's `Lock` release.
    case unlock
    /// redis-py's `Lock.reacquire`: `PEXPIRE key ARGV[2]` if the token matches; 1 or 0.
    case reacquire
    /// redis-py's `Lock.extend`: add ARGV[2] ms to the TTL (ARGV[3] == "0") or set it; 1 or 0.
    case extend

    static let bySHA: [String: KnownScript] = [
        "e9f69f2beb755be68b5e456ee2ce9aadfbc4ebf4": .unlock,
        "b70c2384248f88e6b75b9f89241a180f856ad852": .unlock,
        "c3f8721cbb97f72bc19e972846bd7aaf91901658": .unlock,
        "1cac51482acf5858da00f6d685d68f886cd6b6b2": .reacquire,
        "a4e8783852e6b949f9ef3a97212805108459a890": .extend,
    ]

    /// Milliseconds argument the native path takes: an integer small enough that Lua would
    /// print it back unchanged (`%.14g`) and no deadline can overflow.
    private static func milliseconds(_ b: ByteBuffer) -> Int64? {
        guard let v = RedisInteger.parse(b), v.magnitude < 10_000_000_000_000 else { return nil }
        return v
    }

    /// - Returns: false when the Lua must run instead.
    func run(_ engine: Engine, _ inv: inout Invocation, keys: ArraySlice<ByteBuffer>, argv: ArraySlice<ByteBuffer>) -> Bool {
        guard let keyBytes = keys.first, let token = argv.first else { return false }
        let key = Key(keyBytes)
        let now = inv.now
        let result: Int64?
        switch self {
        case .unlock:
            result = engine.keyspace.withShard(for: key) { shard in
                guard let entry = shard.entry(key, now: now), entry.value.equals(token) else { return 0 }
                shard.remove(key)
                return 1
            }
        case .reacquire:
            guard argv.count >= 2, let ms = Self.milliseconds(argv[argv.startIndex + 1]) else { return false }
            result = engine.keyspace.withShard(for: key) { shard in
                guard let entry = shard.entry(key, now: now), entry.value.equals(token) else { return 0 }
                Self.pexpire(&shard, key, ms, now: now)
                return 1
            }
        case .extend:
            guard argv.count >= 3, let ms = Self.milliseconds(argv[argv.startIndex + 1]) else { return false }
            let additive = argv[argv.startIndex + 2].readableBytesView.elementsEqual("0".utf8)
            result = engine.keyspace.withShard(for: key) { shard in
                guard let entry = shard.entry(key, now: now), entry.value.equals(token) else { return 0 }
                guard entry.hasDeadline else { return 0 }  // PTTL -1: the script returns 0
                let remaining = max(0, entry.deadline - now)
                // A deadline far out (PXAT near Int64.max): Lua's number formatting decides what
                // the script does with it, so the Lua runs.
                guard !additive || remaining < 10_000_000_000_000 else { return nil }
                Self.pexpire(&shard, key, additive ? ms + remaining : ms, now: now)
                return 1
            }
        }
        guard let result else { return false }
        inv.out.writeRESPInteger(result)
        return true
    }

    /// PEXPIRE's effect: a deadline in the future, or deletion for one that is not.
    private static func pexpire(_ shard: inout ShardState, _ key: Key, _ ms: Int64, now: Int64) {
        if ms <= 0 { shard.remove(key) } else { shard.setDeadline(key, now + ms) }
    }
}
