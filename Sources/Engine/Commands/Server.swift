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

/// Server commands: INFO, COMMAND, CONFIG, TIME, SHUTDOWN.
enum ServerCommands {
    /// TIME: seconds and microseconds, as two bulk strings.
    static func time(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        inv.out.writeRESPArrayHeader(2)
        inv.out.writeRESPBulk(string: String(ts.tv_sec))
        inv.out.writeRESPBulk(string: String(ts.tv_nsec / 1000))
    }

    /// SHUTDOWN [NOSAVE | SAVE] [NOW] [FORCE] [ABORT]: graceful; no reply when it goes ahead.
    static func shutdown(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        for j in 1..<max(1, inv.argc) {
            let a = inv.args[j]
            guard a.isToken("nosave") || a.isToken("save") || a.isToken("now") || a.isToken("force") || a.isToken("abort") else {
                throw .syntax
            }
            if a.isToken("abort") { throw CommandError("ERR No shutdown in progress.") }
        }
        inv.session.closeAfterReply = true
        engine.host?.requestShutdown()
    }

    // MARK: INFO

    /// INFO [section [section ...]]: server, clients, memory, stats, keyspace (`default`, `all`, `everything`).
    static func info(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let known = ["server", "clients", "memory", "stats", "keyspace"]
        var wanted = Set<String>()
        if inv.argc == 1 {
            wanted = Set(known)
        } else {
            for j in 1..<inv.argc {
                let name = inv.args[j].text.lowercased()
                if name == "default" || name == "all" || name == "everything" { wanted.formUnion(known) } else { wanted.insert(name) }
            }
        }
        let text = infoText(engine, sections: known.filter { wanted.contains($0) })
        inv.out.writeRESPVerbatim(format: "txt", text: text, version: inv.version)
    }

    static func infoText(_ engine: Engine, sections: [String]) -> String {
        let host = engine.host?.serverInfo() ?? ServerInfo()
        let totals = engine.keyspace.totals()
        var parts: [String] = []
        for section in sections {
            var lines: [String] = []
            switch section {
            case "server":
                lines = [
                    "# Server",
                    "redis_version:\(Engine.redisVersion)",
                    "strongbox_version:\(Engine.strongboxVersion)",
                    "redis_mode:standalone",
                    "os:\(osName())",
                    "arch_bits:64",
                    "multiplexing_api:epoll",
                    "process_id:\(host.processID)",
                    "tcp_port:\(host.tcpPort)",
                    "uptime_in_seconds:\(host.uptimeSeconds)",
                    "uptime_in_days:\(host.uptimeSeconds / 86400)",
                    "hz:\(engine.config.integer("hz"))",
                    "event_loop_threads:\(host.threads)",
                    "executable:\(host.executable)",
                    "config_file:\(host.configFile)",
                ]
            case "clients":
                lines = [
                    "# Clients",
                    "connected_clients:\(host.connectedClients)",
                    "maxclients:\(host.maxClients)",
                    "blocked_clients:0",
                ]
            case "memory":
                let rss = residentSetBytes()
                let used = totals.usedBytes + baselineBytes
                let peak = max(used, engine.keyspace.peakUsedBytes + baselineBytes)
                lines = [
                    "# Memory",
                    "used_memory:\(used)",
                    "used_memory_human:\(human(used))",
                    "used_memory_rss:\(rss)",
                    "used_memory_peak:\(peak)",
                    "used_memory_peak_human:\(human(peak))",
                    "used_memory_rss_human:\(human(rss))",
                    "used_memory_dataset:\(totals.usedBytes)",
                    "maxmemory:\(engine.config.integer("maxmemory"))",
                    "maxmemory_human:\(human(engine.config.integer("maxmemory")))",
                    "maxmemory_policy:\(engine.config.get("maxmemory-policy") ?? "noeviction")",
                    "maxmemory_samples:\(engine.config.integer("maxmemory-samples"))",
                    "maxmemory_protect_locks:\(engine.config.get("maxmemory-protect-locks") ?? "yes")",
                    "lock_keys:\(totals.locks)",
                    "mem_fragmentation_ratio:\(used > 0 ? CFormat.format("%.2f", Double(rss) / Double(used)) : "0")",
                ]
            case "stats":
                lines = [
                    "# Stats",
                    "total_connections_received:\(host.totalConnections)",
                    "total_commands_processed:\(host.commandsProcessed)",
                    "rejected_connections:\(host.rejectedConnections)",
                    "expired_keys:\(totals.expiredKeys)",
                    "evicted_keys:\(totals.evictedKeys)",
                    "evicted_locks_skipped:\(totals.evictedLocksSkipped)",
                    "keyspace_hits:\(totals.hits)",
                    "keyspace_misses:\(totals.misses)",
                    "protocol_errors:\(engine.stats.protocolErrors.load(ordering: .relaxed))",
                    "native_script_calls:\(engine.stats.nativeScriptCalls.load(ordering: .relaxed))",
                ]
            case "keyspace":
                lines = ["# Keyspace"]
                if totals.keys > 0 { lines.append("db0:keys=\(totals.keys),expires=\(totals.expires),avg_ttl=0") }
            default:
                continue
            }
            parts.append(lines.joined(separator: "\r\n") + "\r\n")
        }
        return parts.joined(separator: "\r\n")
    }

    /// What the process holds before any key: reported in `used_memory` like Redis's baseline.
    static let baselineBytes = 1_000_000

    static func residentSetBytes() -> Int {
        guard let f = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 128)
        guard fgets(&line, 128, f) != nil else { return 0 }
        // statm: total pages, resident pages, …
        let fields = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ")
        let resident = fields.count >= 2 ? Int(fields[1]) ?? 0 : 0
        return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func osName() -> String {
        var u = utsname()
        uname(&u)
        func field<T>(_ t: T) -> String {
            withUnsafeBytes(of: t) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        return "\(field(u.sysname)) \(field(u.release)) \(field(u.machine))"
    }

    static func human(_ bytes: Int) -> String {
        let b = Double(bytes)
        if b < 1024 { return "\(bytes)B" }
        if b < 1024 * 1024 { return CFormat.format("%.2fK", b / 1024) }
        if b < 1024 * 1024 * 1024 { return CFormat.format("%.2fM", b / 1024 / 1024) }
        return CFormat.format("%.2fG", b / 1024 / 1024 / 1024)
    }

    // MARK: CONFIG

    /// CONFIG GET parameter [parameter ...]: globs allowed; a map in RESP3.
    static func configGet(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var pairs: [(String, String)] = []
        var seen = Set<String>()
        let all = engine.config.all()
        for j in 2..<inv.argc {
            let pattern = Array(inv.args[j].text.lowercased().utf8)
            for (name, value) in all where !seen.contains(name) && Glob.match(pattern, name.utf8) {
                seen.insert(name)
                pairs.append((name, value))
            }
        }
        inv.out.writeRESP(.map(pairs.map { (.bulk($0.0), .bulk($0.1)) }), version: inv.version)
    }

    /// CONFIG SET parameter value [parameter value ...]: all or nothing.
    static func configSet(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        guard inv.argc % 2 == 0 else { throw .arity("config|set") }
        var changes: [(String, String)] = []
        for j in stride(from: 2, to: inv.argc, by: 2) {
            let name = inv.args[j].text
            guard let p = ConfigStore.parameter(named: name) else {
                throw CommandError("ERR Unknown option or number of arguments for CONFIG SET - '\(name)'")
            }
            if !p.mutable {
                throw CommandError("ERR CONFIG SET failed (possibly related to argument '\(p.name)') - can't set immutable config")
            }
            do {
                _ = try ConfigStore.normalize(p.name, inv.args[j + 1].text)
            } catch {
                throw CommandError("ERR CONFIG SET failed (possibly related to argument '\(p.name)') - \(error.reason)")
            }
            changes.append((p.name, inv.args[j + 1].text))
        }
        for (name, value) in changes { try? engine.config.set(name, value) }
        inv.out.writeRESPOK()
    }

    static func configResetStat(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        engine.keyspace.resetStats()
        engine.host?.resetStats()
        inv.out.writeRESPOK()
    }

    // MARK: MEMORY

    /// MEMORY USAGE key [SAMPLES count]: the bytes the key's record and table slot take.
    static func memoryUsage(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var j = 3
        while j < inv.argc {
            guard inv.args[j].isToken("samples"), j + 1 < inv.argc else { throw .syntax }
            if try Arg.integer(inv.args[j + 1]) < 0 { throw .syntax }
            j += 2
        }
        let key = Key(inv.args[2])
        let now = inv.now
        if let bytes = engine.keyspace.withShard(for: key, { $0.peek(key, now: now)?.memoryUsage }) {
            inv.out.writeRESPInteger(Int64(bytes))
        } else {
            inv.out.writeRESPNull(version: inv.version)
        }
    }

    /// MEMORY PURGE: hands free memory back to the system (`malloc_trim`).
    static func memoryPurge(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        ProcessAllocator.releaseFreeMemory()
        inv.out.writeRESPOK()
    }

    static func memoryHelp(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        Help.write(&inv, "MEMORY", [
            "PURGE", "    Attempt to purge dirty pages for reclamation by the allocator.",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value. Nested values are",
            "    sampled up to <count> times (default: 5, 0 means sample all).",
        ])
    }

    static func configHelp(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        Help.write(&inv, "CONFIG", [
            "GET <pattern>", "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>", "    Set the configuration <directive> to <value>.",
            "RESETSTAT", "    Reset statistics reported by the INFO command.",
        ])
    }

    // MARK: COMMAND

    static func writeInfo(_ spec: CommandSpec, _ inv: inout Invocation) {
        inv.out.writeRESPArrayHeader(10)
        inv.out.writeRESPBulk(string: spec.name)
        inv.out.writeRESPInteger(Int64(spec.arity))
        inv.out.writeRESPSetHeader(spec.flags.count, version: inv.version)
        for f in spec.flags { inv.out.writeRESPSimpleString(f) }
        inv.out.writeRESPInteger(Int64(spec.firstKey))
        inv.out.writeRESPInteger(Int64(spec.lastKey))
        inv.out.writeRESPInteger(Int64(spec.keyStep))
        inv.out.writeRESPSetHeader(spec.categories.count, version: inv.version)
        for c in spec.categories { inv.out.writeRESPSimpleString(c) }
        inv.out.writeRESPSetHeader(0, version: inv.version)
        // Key specifications: one range spec when the command has keys.
        if spec.firstKey > 0 {
            inv.out.writeRESPArrayHeader(1)
            inv.out.writeRESP(.map([
                (.bulk("flags"), .set(spec.flags.contains("readonly") ? [.simpleString("RO")] : [.simpleString("RW")])),
                (.bulk("begin_search"), .map([(.bulk("type"), .bulk("index")), (.bulk("spec"), .map([(.bulk("index"), .integer(Int64(spec.firstKey)))]))])),
                (.bulk("find_keys"), .map([(.bulk("type"), .bulk("range")), (.bulk("spec"), .map([
                    (.bulk("lastkey"), .integer(Int64(spec.lastKey < 0 ? spec.lastKey : spec.lastKey - spec.firstKey))),
                    (.bulk("keystep"), .integer(Int64(spec.keyStep))),
                    (.bulk("limit"), .integer(0)),
                ]))])),
            ]), version: inv.version)
        } else {
            inv.out.writeRESPArrayHeader(0)
        }
        inv.out.writeRESPArrayHeader(spec.subcommands.count)
        for sub in spec.subcommands { writeInfo(sub, &inv) }
    }

    /// COMMAND: every command's info.
    static func command(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        inv.out.writeRESPArrayHeader(engine.table.specs.count)
        for spec in engine.table.specs { writeInfo(spec, &inv) }
    }

    static func commandCount(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        inv.out.writeRESPInteger(Int64(engine.table.specs.count))
    }

    static func commandList(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        inv.out.writeRESPArrayHeader(engine.table.specs.count)
        for spec in engine.table.specs { inv.out.writeRESPBulk(string: spec.name) }
    }

    /// COMMAND INFO [name ...]: a null for each unknown name.
    static func commandInfo(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        if inv.argc == 2 { return try command(engine, &inv) }
        inv.out.writeRESPArrayHeader(inv.argc - 2)
        for j in 2..<inv.argc {
            if let spec = engine.table.lookup(inv.args[j]) { writeInfo(spec, &inv) } else { inv.out.writeRESPNull(version: inv.version) }
        }
    }

    /// COMMAND DOCS [name ...]: summary, since, group, complexity and the argument list that
    /// redis-cli turns into hints.
    static func commandDocs(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var specs: [CommandSpec] = []
        if inv.argc == 2 {
            specs = engine.table.specs
        } else {
            for j in 2..<inv.argc { if let s = engine.table.lookup(inv.args[j]) { specs.append(s) } }
        }
        inv.out.writeRESP(.map(specs.map { (.bulk($0.name), docs($0)) }), version: inv.version)
    }

    static func docs(_ spec: CommandSpec) -> RESPValue {
        var fields: [(RESPValue, RESPValue)] = [
            (.bulk("summary"), .bulk(spec.summary)),
            (.bulk("since"), .bulk(spec.since)),
            (.bulk("group"), .bulk(spec.group)),
            (.bulk("complexity"), .bulk(spec.complexity)),
        ]
        let arguments = HintGrammar.arguments(spec.hint)
        if !arguments.isEmpty { fields.append((.bulk("arguments"), .array(arguments))) }
        if !spec.subcommands.isEmpty {
            fields.append((.bulk("subcommands"), .map(spec.subcommands.map { (.bulk($0.name), docs($0)) })))
        }
        return .map(fields)
    }

    static func commandGetKeys(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let args = Array(inv.args.dropFirst(2))
        guard let spec = engine.table.lookup(args[0]) else { throw CommandError("ERR Invalid command specified") }
        guard spec.acceptsArgumentCount(args.count) else { throw CommandError("ERR Invalid number of arguments specified for command") }
        guard spec.firstKey > 0 else { throw CommandError("ERR The command has no key arguments") }
        let last = spec.lastKey < 0 ? args.count + spec.lastKey : spec.lastKey
        let keys = stride(from: spec.firstKey, through: last, by: max(1, spec.keyStep)).map { args[$0] }
        inv.out.writeRESPArrayHeader(keys.count)
        for k in keys { inv.out.writeRESPBulk(k) }
    }

    static func commandHelp(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        Help.write(&inv, "COMMAND", [
            "(no subcommand)", "    Return details about all commands.",
            "COUNT", "    Return the total number of commands in this server.",
            "LIST", "    Return a list of all commands in this server.",
            "INFO [<command-name> ...]", "    Return details about multiple commands.",
            "DOCS [<command-name> ...]", "    Return documentation details about multiple commands.",
            "GETKEYS <full-command>", "    Return the keys from a full command.",
        ])
    }
}

/// Turns a grammar line such as `key value [NX|XX] [EX seconds]` into the argument list of
/// `COMMAND DOCS`, which redis-cli reads to show hints as you type.
enum HintGrammar {
    static func arguments(_ hint: String) -> [RESPValue] {
        var result: [RESPValue] = []
        var rest = Substring(hint)
        while let c = rest.first {
            if c == " " { rest = rest.dropFirst(); continue }
            if c == "[" {
                guard let close = rest.firstIndex(of: "]") else { break }
                let inner = rest[rest.index(after: rest.startIndex)..<close]
                rest = rest[rest.index(after: close)...]
                result.append(argument(String(inner), optional: true))
            } else {
                let end = rest.firstIndex(of: " ") ?? rest.endIndex
                let word = String(rest[..<end])
                rest = rest[end...]
                result.append(argument(word, optional: false))
            }
        }
        return result
    }

    static func argument(_ text: String, optional: Bool) -> RESPValue {
        var flags: [RESPValue] = optional ? [.simpleString("optional")] : []
        var text = text
        if text.hasSuffix(" ...") || text.hasSuffix("...") {
            text = text.replacing(" ...", with: "").replacing("...", with: "")
            flags.append(.simpleString("multiple"))
        }
        let alternatives = text.split(separator: "|").map { String($0).trimmingCharacters(in: " ") }
        func single(_ word: String) -> RESPValue {
            let parts = word.split(separator: " ").map(String.init)
            if parts.count == 2 {
                return .map([(.bulk("name"), .bulk(parts[1])), (.bulk("type"), .bulk("string")), (.bulk("token"), .bulk(parts[0]))])
            }
            let isToken = word == word.uppercased() && word.contains(where: { $0.isLetter })
            if isToken {
                return .map([(.bulk("name"), .bulk(word.lowercased())), (.bulk("type"), .bulk("pure-token")), (.bulk("token"), .bulk(word))])
            }
            return .map([(.bulk("name"), .bulk(word)), (.bulk("type"), .bulk(word == "key" ? "key" : "string"))])
        }
        if alternatives.count > 1 {
            return .map([
                (.bulk("name"), .bulk("option")), (.bulk("type"), .bulk("oneof")),
                (.bulk("flags"), .set(flags)), (.bulk("arguments"), .array(alternatives.map(single))),
            ])
        }
        guard case .map(var fields) = single(text) else { return .null }
        if !flags.isEmpty { fields.append((.bulk("flags"), .set(flags))) }
        return .map(fields)
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return String(s)
    }

}
