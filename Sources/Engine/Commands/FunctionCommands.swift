import Keyspace
import NIOCore
import RESP

/// FCALL, FCALL_RO and FUNCTION (Redis 7 functions).
enum FunctionCommands {
    /// FCALL function numkeys [key ...] [arg ...] (and FCALL_RO)
    /// - Complexity: depends on the function
    static func fcall(_ engine: Engine, _ inv: inout Invocation, readOnly: Bool) throws(CommandError) {
        let name = inv.args[1].text
        guard let function = engine.scripts.catalog.withLock({ $0.function(name) }) else {
            throw CommandError("ERR Function not found")
        }
        guard let count = RedisInteger.parse(inv.args[2]) else { throw CommandError("ERR Bad number of keys provided") }
        if count < 0 { throw CommandError("ERR Number of keys can't be negative") }
        if count > Int64(inv.argc - 3) { throw CommandError("ERR Number of keys can't be greater than number of args") }
        let flags = function.flags
        if readOnly && !flags.noWrites { throw CommandError("ERR Can not execute a script with write flag using *_ro command.") }
        if flags.noCluster && engine.cluster != nil {
            throw CommandError("ERR Can not run script on cluster, 'no-cluster' flag is set.")
        }
        if !flags.allowOOM && !flags.noWrites && !engine.makeRoom() { throw CommandError.outOfMemory }
        if inv.mayDeferScripts {
            inv.deferredScript = true
            return
        }
        let keys = inv.args[3..<(3 + Int(count))]
        let argv = inv.args[(3 + Int(count))...]
        try engine.keyspace.withExclusiveAccess { () throws(CommandError) in
            try engine.scripts.runFunction(name, keys: keys, argv: argv, engine: engine, invocation: &inv,
                                           readOnly: readOnly || flags.noWrites)
        }
    }

    /// FUNCTION LOAD [REPLACE] function-code → the library's name
    static func load(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var replace = false
        for j in 2..<(inv.argc - 1) {
            guard inv.args[j].isToken("replace") else { throw CommandError("ERR Unknown option given: \(inv.args[j].text)") }
            replace = true
        }
        let code = Array(inv.args[inv.argc - 1].readableBytesView)
        let name = try engine.keyspace.withExclusiveAccess { () throws(CommandError) -> String in
            let (name, _) = try FunctionCatalog.parseHeader(code)
            if !replace, engine.scripts.catalog.withLock({ $0.library(name) }) != nil {
                throw CommandError("ERR Library '\(name)' already exists")
            }
            let pending = try engine.scripts.compileLibrary(code, engine: engine)
            let clash = engine.scripts.catalog.withLock { catalog in
                pending.library.functions.first { f in catalog.owner(of: f.name).map { $0 != name } ?? false }
            }
            if let clash {
                engine.scripts.discard(pending)
                throw CommandError("ERR Function \(clash.name) already exists")
            }
            engine.scripts.commit(pending)
            return name
        }
        inv.out.writeRESPBulk(string: name)
    }

    /// FUNCTION DELETE library-name
    static func delete(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let name = inv.args[2].text
        let found = engine.keyspace.withExclusiveAccess { engine.scripts.deleteLibrary(name) }
        guard found else { throw CommandError("ERR Library not found") }
        inv.out.writeRESPOK()
    }

    /// FUNCTION FLUSH [ASYNC | SYNC]
    static func flush(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        if inv.argc > 3 { throw subcommandSyntax(inv) }
        if inv.argc == 3 && !inv.args[2].isToken("async") && !inv.args[2].isToken("sync") {
            throw CommandError("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")
        }
        engine.keyspace.withExclusiveAccess { engine.scripts.flushFunctions() }
        inv.out.writeRESPOK()
    }

    /// FUNCTION KILL: stops a function that has not written anything.
    static func kill(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        if let refusal = engine.scripts.kill(function: true) { throw refusal }
        inv.out.writeRESPOK()
    }

    /// FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE]
    static func list(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var withCode = false
        var pattern: [UInt8]?
        var j = 2
        while j < inv.argc {
            let arg = inv.args[j]
            if arg.isToken("withcode") && !withCode {
                withCode = true
            } else if arg.isToken("libraryname") && pattern == nil {
                guard j + 1 < inv.argc else { throw CommandError("ERR library name argument was not given") }
                pattern = Array(inv.args[j + 1].readableBytesView)
                j += 1
            } else {
                throw CommandError("ERR Unknown argument \(arg.text)")
            }
            j += 1
        }
        let libraries = engine.scripts.catalog.withLock { $0.ordered }.filter { library in
            pattern.map { Glob.match($0, Array(library.name.utf8), noCase: true) } ?? true
        }
        let v = inv.version
        inv.out.writeRESPArrayHeader(libraries.count)
        for library in libraries {
            // Code can be large (hundreds of MiB restored from a compressed dump): the reply
            // leaves in chunks, or stops with an error, as MGET's does.
            try inv.checkReplySize()
            inv.out.writeRESPMapHeader(withCode ? 4 : 3, version: v)
            inv.out.writeRESPBulk(string: "library_name")
            inv.out.writeRESPBulk(string: library.name)
            inv.out.writeRESPBulk(string: "engine")
            inv.out.writeRESPBulk(string: "LUA")
            inv.out.writeRESPBulk(string: "functions")
            inv.out.writeRESPArrayHeader(library.functions.count)
            for f in library.functions {
                inv.out.writeRESPMapHeader(3, version: v)
                inv.out.writeRESPBulk(string: "name")
                inv.out.writeRESPBulk(string: f.name)
                inv.out.writeRESPBulk(string: "description")
                if let d = f.description {
                    d.withUnsafeBytes { inv.out.writeRESPBulk(bytes: $0) }
                } else {
                    inv.out.writeRESPNull(version: v)
                }
                inv.out.writeRESPBulk(string: "flags")
                inv.out.writeRESPSetHeader(f.flagNames.count, version: v)
                for flag in f.flagNames { inv.out.writeRESPSimpleString(flag) }
            }
            if withCode {
                inv.out.writeRESPBulk(string: "library_code")
                library.code.withUnsafeBytes { inv.out.writeRESPBulk(bytes: $0) }
            }
        }
    }

    /// FUNCTION STATS: the running function (if any) and the engine's counts. Runs while a
    /// function is busy; during an `EVAL` script it is refused, as in Redis.
    static func stats(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let running = engine.scripts.running.withLock { $0 }
        if let running, !running.isFunction { throw CommandError(ScriptEngine.evalBusy) }
        let (libraries, functions) = engine.scripts.catalog.withLock { ($0.libraries.count, $0.functionCount) }
        let v = inv.version
        inv.out.writeRESPMapHeader(2, version: v)
        inv.out.writeRESPBulk(string: "running_script")
        if let running {
            inv.out.writeRESPMapHeader(3, version: v)
            inv.out.writeRESPBulk(string: "name")
            inv.out.writeRESPBulk(string: running.name)
            inv.out.writeRESPBulk(string: "command")
            inv.out.writeRESPArrayHeader(running.command.count)
            for part in running.command { inv.out.writeRESPBulk(string: part) }
            inv.out.writeRESPBulk(string: "duration_ms")
            inv.out.writeRESPInteger(max(0, engine.keyspace.clock.now() - running.since))
        } else {
            inv.out.writeRESPNull(version: v)
        }
        inv.out.writeRESPBulk(string: "engines")
        inv.out.writeRESPMapHeader(1, version: v)
        inv.out.writeRESPBulk(string: "LUA")
        inv.out.writeRESPMapHeader(2, version: v)
        inv.out.writeRESPBulk(string: "libraries_count")
        inv.out.writeRESPInteger(Int64(libraries))
        inv.out.writeRESPBulk(string: "functions_count")
        inv.out.writeRESPInteger(Int64(functions))
    }

    /// FUNCTION DUMP → a payload FUNCTION RESTORE (here or in Redis 7) takes back
    static func dump(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let payload = engine.scripts.dumpFunctions()
        // One bulk string: it must fit a buffer (libraries restored from compressed dumps could add up past that).
        guard inv.out.writerIndex + payload.count < Invocation.maxReplyBytes else {
            throw CommandError("ERR reply is too large (more than \(Invocation.maxReplyBytes >> 20) MiB)")
        }
        payload.withUnsafeBytes { inv.out.writeRESPBulk(bytes: $0) }
    }

    enum RestorePolicy { case flush, append, replace }

    /// FUNCTION RESTORE serialized-value [FLUSH | APPEND | REPLACE]: all the payload's libraries
    /// or none.
    static func restore(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var policy = RestorePolicy.append
        if inv.argc > 4 { throw subcommandSyntax(inv) }
        if inv.argc == 4 {
            let p = inv.args[3]
            if p.isToken("flush") { policy = .flush } else if p.isToken("append") { policy = .append } else if p.isToken("replace") {
                policy = .replace
            } else {
                throw CommandError("ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.")
            }
        }
        guard let body = RDB.verifiedBody(Array(inv.args[2].readableBytesView)) else {
            throw CommandError("ERR DUMP payload version or checksum are wrong")
        }
        try engine.keyspace.withExclusiveAccess { () throws(CommandError) in
            var pending: [ScriptEngine.PendingLibrary] = []
            defer { for p in pending { engine.scripts.discard(p) } }
            // Libraries are read and compiled in payload order (so errors come in Redis's order);
            // names must not clash among them (quoted, as Redis), nor (by policy) with ours.
            var libraries = Set<String>()
            var reader = RDB.Reader(bytes: body)
            while !reader.isAtEnd {
                let opcode = (try? reader.byte()) ?? 0
                if opcode == RDB.opcodeFunctionPreGA { throw CommandError("ERR Failed loading engine name") }
                guard opcode == RDB.opcodeFunction2 else { throw CommandError("ERR given type is not a function") }
                guard let code = try? reader.string() else { throw CommandError("ERR Failed loading library payload") }
                let p = try engine.scripts.compileLibrary(code, engine: engine)
                pending.append(p)
                guard libraries.insert(p.library.name).inserted else {
                    throw CommandError("ERR Library '\(p.library.name)' already exists")
                }
            }
            let catalog = engine.scripts.catalog.withLock { $0 }
            if policy == .append, let clash = pending.first(where: { catalog.library($0.library.name) != nil }) {
                // (Redis's text here has no quotes.)
                throw CommandError("ERR Library \(clash.library.name) already exists")
            }
            var functions = Set<String>()
            for p in pending {
                for f in p.library.functions {
                    guard functions.insert(f.name.lowercased()).inserted else { throw CommandError("ERR Function \(f.name) already exists") }
                    if policy != .flush, let owner = catalog.owner(of: f.name), !libraries.contains(owner) || policy == .append {
                        throw CommandError("ERR Function \(f.name) already exists")
                    }
                }
            }
            if policy == .flush {
                for name in catalog.libraries.keys { _ = engine.scripts.deleteLibrary(name) }
            }
            for p in pending { engine.scripts.commit(p) }
            pending = []
        }
        inv.out.writeRESPOK()
    }

    /// Redis's reply to a subcommand given more arguments than it takes.
    private static func subcommandSyntax(_ inv: Invocation) -> CommandError {
        CommandError("ERR unknown subcommand or wrong number of arguments for '\(String(inv.args[1].text.prefix(128)))'. Try FUNCTION HELP.")
    }

    static func help(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        Help.write(&inv, "FUNCTION", [
            "LOAD [REPLACE] <FUNCTION CODE>",
            "    Create a new library with the given library name and code.",
            "DELETE <LIBRARY NAME>",
            "    Delete the given library.",
            "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
            "    Return general information on all the libraries:",
            "    * Library name",
            "    * The engine used to run the Library",
            "    * Library description",
            "    * Functions list",
            "    * Library code (if WITHCODE is given)",
            "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
            "STATS",
            "    Return information about the current function running:",
            "    * Function name",
            "    * Command used to run the function",
            "    * Duration in MS that the function is running",
            "    If no function is running, return nil",
            "    In addition, returns a list of available engines.",
            "KILL",
            "    Kill the current running function.",
            "FLUSH [ASYNC|SYNC]",
            "    Delete all the libraries.",
            "    When called without the optional mode argument, the behavior is determined by the",
            "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
            "    * ASYNC: Asynchronously flush the libraries.",
            "    * SYNC: Synchronously flush the libraries.",
            "DUMP",
            "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
            "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
            "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
            "    control how to handle existing libraries (default APPEND):",
            "    * FLUSH: delete all existing libraries.",
            "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
            "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
            "      libraries with the new libraries (notice that even on this option there is a chance of failure",
            "      in case of functions name collision with another library).",
        ])
    }
}
