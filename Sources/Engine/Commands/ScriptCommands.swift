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
        try engine.keyspace.withExclusiveAccess { () throws(CommandError) in
            let sha = bySHA ? script.text.lowercased() : try engine.scripts.load(Array(script.readableBytesView))
            try engine.scripts.run(sha: sha, keys: keys, argv: argv, engine: engine, invocation: &inv, readOnly: readOnly)
        }
    }

    /// SCRIPT LOAD script → its SHA1
    static func load(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let body = Array(inv.args[2].readableBytesView)
        let sha = try engine.keyspace.withExclusiveAccess { () throws(CommandError) -> String in try engine.scripts.load(body) }
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
