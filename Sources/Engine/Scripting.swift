import CLua
import Crypto
import Dispatch
import Keyspace
import NIOCore
import RESP
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Lua 5.1 scripting as Redis does it: `EVAL`/`EVALSHA`, scripts cached by SHA1, `redis.call`
/// and friends, Redis's conversions between Lua and RESP, a sandbox, and `SCRIPT KILL`.
///
/// A script runs holding every shard lock (`Keyspace.withExclusiveAccess`), so no other command
/// interleaves with it; the one Lua state is only ever touched under that lock. Lua errors are
/// raised only from Lua or C frames (the kill hook, the `redis.call` wrapper), never through Swift.
public final class ScriptEngine: @unchecked Sendable {
    /// Where connections run Lua scripts: one serial queue, off every event loop.
    public let queue = DispatchQueue(label: "strongbox.scripts")
    /// When the running script started (keyspace clock), or 0 when none runs.
    public let runningSince = Atomic<Int64>(0)
    /// Whether the running script has written (then `SCRIPT KILL` refuses, as in Redis).
    let runningScriptWrote = Atomic<Bool>(false)
    private let killFlag: UnsafeMutablePointer<Int32>
    private let known = Mutex<Set<String>>([])
    // Touched only under the keyspace's exclusive access:
    private var state: OpaquePointer
    private var bodies: [String: [UInt8]] = [:]
    private var messageHandlerRef: Int32 = 0

    init() {
        killFlag = .allocate(capacity: 1)
        killFlag.initialize(to: 0)
        state = Self.makeState(killFlag: killFlag)
        messageHandlerRef = Self.bootstrap(state)
    }

    deinit {
        lua_close(state)
        killFlag.deallocate()
    }

    // MARK: The Lua state

    private static func makeState(killFlag: UnsafeMutablePointer<Int32>) -> OpaquePointer {
        let L = luaL_newstate()!
        // Only the libraries Redis offers that need no system access.
        for (name, opener) in [("", luaopen_base), (LUA_TABLIBNAME, luaopen_table), (LUA_STRLIBNAME, luaopen_string),
                               (LUA_MATHLIBNAME, luaopen_math), (LUA_DBLIBNAME, luaopen_debug)] as [(String, lua_CFunction)] {
            sb_lua_pushcfunction(L, opener)
            lua_pushstring(L, name)
            lua_call(L, 1, 0)
        }
        sb_lua_pushcfunction(L, scriptCall)
        sb_lua_setglobal(L, "__sb_call")
        sb_register_call(L, scriptCall)
        sb_lua_pushcfunction(L, scriptSHA1)
        sb_lua_setglobal(L, "__sb_sha1")
        sb_lua_pushcfunction(L, scriptLog)
        sb_lua_setglobal(L, "__sb_log")
        sb_install_kill_hook(L, killFlag)
        return L
    }

    /// Builds the `redis` table and the sandbox: read-only globals (reading a missing one is an
    /// error too), no `os`, `io`, `loadfile`, `dofile`, `require`, `debug`.
    /// - Returns: a registry reference to the error handler.
    private static func bootstrap(_ L: OpaquePointer) -> Int32 {
        let library = """
            local getinfo, setenv = debug.getinfo, setfenv
            local rawcall, raisingcall, sha1, log = __sb_call, __sb_rcall, __sb_sha1, __sb_log
            local type, error, tostring, concat = type, error, tostring, table.concat
            __sb_call, __sb_rcall, __sb_sha1, __sb_log = nil, nil, nil, nil
            redis = {}
            redis.call = raisingcall
            redis.pcall = rawcall
            redis.error_reply = function(e) return {err = e} end
            redis.status_reply = function(s) return {ok = s} end
            redis.sha1hex = function(s)
              if type(s) ~= 'string' and type(s) ~= 'number' then error('wrong number of arguments', 2) end
              return sha1(tostring(s))
            end
            redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
            redis.log = function(level, ...)
              local parts = {...}
              for i = 1, #parts do parts[i] = tostring(parts[i]) end
              log(level, concat(parts, ' '))
            end
            redis.setresp = function(v) if v ~= 2 then error('RESP version must be 2', 2) end end
            -- As in Redis, pcall hands scripts an error reply's text, not the table.
            local rawpcall, select, unpack = pcall, select, unpack
            local function pack(...) return {n = select('#', ...), ...} end
            pcall = function(...)
              local r = pack(rawpcall(...))
              if not r[1] and type(r[2]) == 'table' and r[2].err ~= nil then r[2] = r[2].err end
              return unpack(r, 1, r.n)
            end
            debug, dofile, loadfile, load, loadstring, module, require, package, newproxy, gcinfo, setfenv = nil
            -- Read-only tables as Redis has them: an empty proxy whose reads fall through to the
            -- real table (a table __index, so reads stay fast) and whose writes always fail.
            local function readonly(t, missing)
              if missing then setmetatable(t, {__index = missing}) end
              return setmetatable({}, {__index = t, __newindex = function() error('Attempt to modify a readonly table', 2) end,
                                       __metatable = false})
            end
            for _, name in ipairs({'redis', 'string', 'table', 'math'}) do _G[name] = readonly(_G[name]) end
            local backing = {}
            for k, v in pairs(_G) do backing[k] = v end
            local globals = readonly(backing, function(_, k)
              error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
            end)
            backing._G = globals
            -- The error handler: where in the user's script the error happened, and its text.
            local function handler(e)
              local line = 0
              for level = 2, 64 do
                local info = getinfo(level, 'Sl')
                if not info then break end
                if info.source == '@user_script' then line = info.currentline break end
              end
              if type(e) == 'table' and e.err ~= nil then return {err = tostring(e.err), line = line} end
              return {err = 'ERR ' .. tostring(e), line = line}
            end
            -- Scripts compiled from now on see the read-only globals.
            setenv(0, globals)
            return handler, backing
            """
        var bytes = Array(library.utf8)
        let loaded = bytes.withUnsafeMutableBufferPointer { p in
            luaL_loadbuffer(L, UnsafeRawPointer(p.baseAddress!).assumingMemoryBound(to: CChar.self), p.count, "@sb_lib")
        }
        guard loaded == 0, lua_pcall(L, 0, 2, 0) == 0 else {
            // The library is a constant: failing to load it is a build defect, not an input error.
            let message = String(cString: lua_tolstring(L, -1, nil))
            fatalError("strongbox: Lua library failed to load: \(message)")
        }
        // Stack: handler, backing globals (where KEYS and ARGV are set for each call).
        lua_setfield(L, sb_lua_registryindex(), "sb_globals")
        return luaL_ref(L, sb_lua_registryindex())
    }

    // MARK: Cache

    public static func sha1Hex(_ bytes: some Sequence<UInt8>) -> String {
        Insecure.SHA1.hash(data: Array(bytes)).map { b in
            let s = String(b, radix: 16)
            return b < 16 ? "0" + s : s
        }.joined()
    }

    public func exists(_ sha: String) -> Bool {
        known.withLock { $0.contains(sha.lowercased()) }
    }

    /// Compiles and caches `body`, whose SHA1 is `sha`. Call under exclusive access.
    func load(_ body: [UInt8], sha: String) throws(CommandError) {
        if bodies[sha] != nil { return }
        let L = state
        lua_getfield(L, sb_lua_registryindex(), "sb_scripts")
        if sb_lua_isnil(L, -1) != 0 {
            sb_lua_pop(L, 1)
            sb_lua_newtable(L)
            lua_pushvalue(L, -1)
            lua_setfield(L, sb_lua_registryindex(), "sb_scripts")
        }
        let status = body.withUnsafeBufferPointer { p in
            luaL_loadbuffer(L, UnsafeRawPointer(p.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self), p.count, "@user_script")
        }
        guard status == 0 else {
            let message = Self.string(L, -1)
            lua_settop(L, 0)
            throw CommandError("ERR Error compiling script (new function): \(message)")
        }
        lua_setfield(L, -2, sha)
        lua_settop(L, 0)
        bodies[sha] = body
        known.withLock { _ = $0.insert(sha) }
    }

    /// Forgets every script (`SCRIPT FLUSH`). Call under exclusive access.
    func flush() {
        let L = state
        lua_pushnil(L)
        lua_setfield(L, sb_lua_registryindex(), "sb_scripts")
        bodies = [:]
        known.withLock { $0 = [] }
        lua_gc(L, LUA_GCCOLLECT, 0)
    }

    /// `SCRIPT KILL`. - Returns: nil when a kill was requested, else the error to reply.
    public func kill() -> CommandError? {
        if runningSince.load(ordering: .relaxed) == 0 { return CommandError("NOTBUSY No scripts in execution right now.") }
        if runningScriptWrote.load(ordering: .relaxed) {
            return CommandError("UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.")
        }
        sb_flag_store(killFlag, 1)
        return nil
    }

    // MARK: Running

    /// Runs cached script `sha` and writes its reply to `inv.out`. Call under exclusive access.
    func run(sha: String, keys: ArraySlice<ByteBuffer>, argv: ArraySlice<ByteBuffer>, engine: Engine,
             invocation inv: inout Invocation, readOnly: Bool) throws(CommandError) {
        guard bodies[sha] != nil else { throw CommandError("NOSCRIPT No matching script. Please use EVAL.") }
        let L = state
        lua_settop(L, 0)
        Self.setGlobalArray(L, "KEYS", keys)
        Self.setGlobalArray(L, "ARGV", argv)
        lua_rawgeti(L, sb_lua_registryindex(), messageHandlerRef)
        lua_getfield(L, sb_lua_registryindex(), "sb_scripts")
        lua_getfield(L, -1, sha)
        lua_remove(L, -2)

        let context = ScriptContext(engine: engine, session: inv.session, readOnly: readOnly, now: inv.now, scripts: self)
        // The context travels in this Lua state's registry (not a global): several engines in
        // one process (tests start many servers) each have their own state and context.
        lua_pushlightuserdata(L, Unmanaged.passUnretained(context).toOpaque())
        lua_setfield(L, sb_lua_registryindex(), "sb_context")
        sb_flag_store(killFlag, 0)
        runningScriptWrote.store(false, ordering: .relaxed)
        runningSince.store(max(1, engine.keyspace.clock.now()), ordering: .relaxed)
        let status = withExtendedLifetime(context) { lua_pcall(L, 0, 1, 1) }
        runningSince.store(0, ordering: .relaxed)
        lua_pushnil(L)
        lua_setfield(L, sb_lua_registryindex(), "sb_context")
        sb_reset_kill_hook(L)
        defer { lua_settop(L, 0) }
        if status != 0 {
            var message = "ERR unknown error"
            var line: Int64 = 0
            if sb_lua_istable(L, -1) != 0 {
                lua_getfield(L, -1, "err")
                message = Self.string(L, -1)
                sb_lua_pop(L, 1)
                lua_getfield(L, -1, "line")
                line = Int64(lua_tonumber(L, -1))
                sb_lua_pop(L, 1)
            } else {
                message = "ERR " + Self.string(L, -1)
            }
            throw CommandError("\(message) script: \(sha), on @user_script:\(line).")
        }
        Self.writeReply(L, -1, into: &inv.out, version: inv.version, depth: 0)
    }

    private static func setGlobalArray(_ L: OpaquePointer, _ name: String, _ values: ArraySlice<ByteBuffer>) {
        lua_pushstring(L, name)
        lua_createtable(L, Int32(values.count), 0)
        for (i, v) in values.enumerated() {
            v.withUnsafeReadableBytes { pushBytes(L, $0) }
            lua_rawseti(L, -2, Int32(i + 1))
        }
        lua_getfield(L, sb_lua_registryindex(), "sb_globals")
        lua_insert(L, -3)
        lua_rawset(L, -3)
        sb_lua_pop(L, 1)
    }

    /// Pushes bytes as a Lua string (an empty one when there are none).
    static func pushBytes(_ L: OpaquePointer, _ bytes: UnsafeRawBufferPointer) {
        if let base = bytes.baseAddress, bytes.count > 0 {
            lua_pushlstring(L, base.assumingMemoryBound(to: CChar.self), bytes.count)
        } else {
            lua_pushstring(L, "")
        }
    }

    static func string(_ L: OpaquePointer, _ index: Int32) -> String {
        var length = 0
        guard let p = lua_tolstring(L, index, &length) else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: length), as: UTF8.self)
    }

    /// Redis's Lua → RESP conversion of a script's return value.
    static func writeReply(_ L: OpaquePointer, _ index: Int32, into out: inout ByteBuffer, version: RESPVersion, depth: Int) {
        let index = index < 0 ? lua_gettop(L) + index + 1 : index
        switch lua_type(L, index) {
        case LUA_TSTRING:
            var length = 0
            let p = lua_tolstring(L, index, &length)
            out.writeRESPBulk(bytes: UnsafeRawBufferPointer(start: p, count: length))
        case LUA_TBOOLEAN:
            if lua_toboolean(L, index) != 0 { out.writeRESPInteger(1) } else { out.writeRESPNull(version: version) }
        case LUA_TNUMBER:
            let n = lua_tonumber(L, index)
            // Redis truncates toward zero: (long long)lua_tonumber.
            out.writeRESPInteger(n.isFinite && abs(n) < 9.2e18 ? Int64(n) : (n.isNaN ? 0 : (n > 0 ? Int64.max : Int64.min)))
        case LUA_TTABLE:
            lua_getfield(L, index, "err")
            if lua_type(L, -1) == LUA_TSTRING {
                out.writeRESPError(string(L, -1))
                sb_lua_pop(L, 1)
                return
            }
            sb_lua_pop(L, 1)
            lua_getfield(L, index, "ok")
            if lua_type(L, -1) == LUA_TSTRING {
                out.writeRESPSimpleString(string(L, -1).replacing("\r", with: " ").replacing("\n", with: " "))
                sb_lua_pop(L, 1)
                return
            }
            sb_lua_pop(L, 1)
            guard depth < 64, lua_checkstack(L, 4) != 0 else {
                out.writeRESPError("ERR reached lua stack limit")
                return
            }
            // An array: elements 1, 2, … up to the first nil.
            var count = 0
            while true {
                lua_rawgeti(L, index, Int32(count + 1))
                let isNil = sb_lua_isnil(L, -1) != 0
                sb_lua_pop(L, 1)
                if isNil { break }
                count += 1
            }
            out.writeRESPArrayHeader(count)
            for i in 0..<count {
                lua_rawgeti(L, index, Int32(i + 1))
                writeReply(L, -1, into: &out, version: version, depth: depth + 1)
                sb_lua_pop(L, 1)
            }
        default:
            out.writeRESPNull(version: version)
        }
    }

    /// Redis's RESP → Lua conversion of a `redis.call` reply.
    static func push(_ L: OpaquePointer, _ value: RESPValue, depth: Int) {
        guard lua_checkstack(L, 4) != 0 else { return }
        switch value {
        case .simpleString(let s):
            sb_lua_newtable(L)
            lua_pushstring(L, s)
            lua_setfield(L, -2, "ok")
        case .error(let e):
            sb_lua_newtable(L)
            lua_pushstring(L, e)
            lua_setfield(L, -2, "err")
        case .integer(let i):
            lua_pushnumber(L, lua_Number(i))
        case .bulkString(let b):
            b.withUnsafeReadableBytes { pushBytes(L, $0) }
        case .null, .nullArray:
            lua_pushboolean(L, 0)
        case .array(let items), .set(let items), .push(let items):
            lua_createtable(L, Int32(items.count), 0)
            for (i, item) in items.enumerated() where depth < 64 {
                push(L, item, depth: depth + 1)
                lua_rawseti(L, -2, Int32(i + 1))
            }
        case .map(let pairs):
            lua_createtable(L, Int32(pairs.count * 2), 0)
            for (i, (k, v)) in pairs.enumerated() where depth < 64 {
                push(L, k, depth: depth + 1)
                lua_rawseti(L, -2, Int32(2 * i + 1))
                push(L, v, depth: depth + 1)
                lua_rawseti(L, -2, Int32(2 * i + 2))
            }
        case .double(let d):
            lua_pushnumber(L, d)
        case .boolean(let b):
            lua_pushboolean(L, b ? 1 : 0)
        case .bigNumber(let s), .verbatim(_, let s):
            lua_pushstring(L, s)
        }
    }
}

/// What `redis.call` needs while a script runs; reached from C callbacks through the Lua
/// state's registry (`ScriptContext.current(in:)`).
final class ScriptContext {
    /// The context of the script running in `L`, or nil.
    static func current(in L: OpaquePointer) -> ScriptContext? {
        lua_getfield(L, sb_lua_registryindex(), "sb_context")
        defer { sb_lua_pop(L, 1) }
        guard let raw = lua_touserdata(L, -1) else { return nil }
        return Unmanaged<ScriptContext>.fromOpaque(raw).takeUnretainedValue()
    }

    let engine: Engine
    let readOnly: Bool
    let scripts: ScriptEngine
    var invocation: Invocation

    init(engine: Engine, session: Session, readOnly: Bool, now: Int64, scripts: ScriptEngine) {
        self.engine = engine
        self.readOnly = readOnly
        self.scripts = scripts
        var s = session
        s.protocolVersion = .v2
        s.authenticated = true
        invocation = Invocation(session: s, out: ByteBuffer())
        invocation.now = now
    }

    /// Runs one command for the script. - Returns: its reply, or an error reply.
    func call(_ args: [ByteBuffer]) -> RESPValue {
        guard let name = args.first else {
            return .error("ERR Please specify at least one argument for this redis lib call")
        }
        guard let spec = engine.table.lookup(name) else { return .error("ERR Unknown Redis command called from script") }
        var effective = spec
        if !spec.subcommands.isEmpty, args.count >= 2, let sub = spec.subcommand(named: args[1]) {
            effective = sub
        }
        guard effective.acceptsArgumentCount(args.count) else { return .error("ERR Wrong number of args calling Redis command from script") }
        if effective.flags.contains("noscript") { return .error("ERR This Redis command is not allowed from script") }
        let writes = effective.flags.contains("write")
        if writes && readOnly { return .error("ERR Write commands are not allowed from read-only scripts.") }
        if writes { scripts.runningScriptWrote.store(true, ordering: .relaxed) }
        invocation.args = args
        invocation.out.clear()
        engine.execute(&invocation, fromScript: true)
        var out = invocation.out
        return (try? RESPValueDecoder().next(from: &out)) ?? .error("ERR internal error decoding a reply")
    }
}

/// `redis.call`/`redis.pcall`: returns the reply converted to Lua; an error reply is a table
/// with `err`, which the Lua wrapper raises for `redis.call`.
private let scriptCall: lua_CFunction = { L in
    guard let L, let context = ScriptContext.current(in: L) else { return 0 }
    let argc = lua_gettop(L)
    if argc == 0 {
        ScriptEngine.push(L, .error("ERR Please specify at least one argument for this redis lib call"), depth: 0)
        return 1
    }
    var args: [ByteBuffer] = []
    args.reserveCapacity(Int(argc))
    for i in 1...argc {
        let t = lua_type(L, i)
        guard t == LUA_TSTRING || t == LUA_TNUMBER else {
            ScriptEngine.push(L, .error("ERR Lua redis lib command arguments must be strings or integers"), depth: 0)
            return 1
        }
        var length = 0
        let p = lua_tolstring(L, i, &length)
        args.append(ByteBuffer(bytes: UnsafeRawBufferPointer(start: p, count: length)))
    }
    let reply = context.call(args)
    lua_settop(L, 0)
    ScriptEngine.push(L, reply, depth: 0)
    return 1
}

/// `redis.sha1hex` (the Lua wrapper checks the argument).
private let scriptSHA1: lua_CFunction = { L in
    guard let L else { return 0 }
    var length = 0
    let p = lua_tolstring(L, 1, &length)
    let hex = ScriptEngine.sha1Hex(UnsafeRawBufferPointer(start: p, count: length))
    lua_pushstring(L, hex)
    return 1
}

/// `redis.log`: script log lines go to the server log at debug level.
private let scriptLog: lua_CFunction = { L in
    guard let L else { return 0 }
    let message = ScriptEngine.string(L, 2)
    ScriptContext.current(in: L)?.engine.scriptLog(Int(lua_tonumber(L, 1)), message)
    return 0
}
