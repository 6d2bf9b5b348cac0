import CLua
import CLuaLibs
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
    /// The longest string `string.rep` may build (a C loop neither the time limit nor
    /// `SCRIPT KILL` can stop): `proto-max-bulk-len`'s default.
    static let maxStringBytes = 512 * 1024 * 1024
    /// Where connections run Lua scripts: one serial queue, off every event loop.
    public let queue = DispatchQueue(label: "strongbox.scripts")
    /// When the running script started (keyspace clock), or 0 when none runs.
    public let runningSince = Atomic<Int64>(0)
    /// When a transaction that runs scripts started (`EXEC` on the script queue), or 0: the
    /// engine is busy for the whole of it, not only while each of its scripts runs.
    public let transactionSince = Atomic<Int64>(0)

    /// Since when the engine has been busy with a script or a transaction of scripts, or 0.
    @inline(__always)
    public var busySince: Int64 {
        let s = runningSince.load(ordering: .relaxed)
        return s != 0 ? s : transactionSince.load(ordering: .relaxed)
    }

    /// Marks a transaction of scripts as running (`since`, nonzero) or ended (0); at the end,
    /// the connections waiting go on.
    public func transactionRunning(since: Int64) {
        transactionSince.store(since, ordering: .relaxed)
        if since == 0 { wakeWaiters() }
    }
    /// Whether the running script has written (then `SCRIPT KILL` refuses, as in Redis).
    let runningScriptWrote = Atomic<Bool>(false)
    let killFlag: UnsafeMutablePointer<Int32>
    /// Every cached script's SHA1 and its shebang flags (read without the keyspace lock).
    private let known = Mutex<[String: ScriptFlags]>([:])
    /// Called once when the running script ends (connections parked behind it).
    private let idleWaiters = Mutex<[@Sendable () -> Void]>([])
    /// What runs now (for `-BUSY` texts, `SCRIPT KILL` vs `FUNCTION KILL`, `FUNCTION STATS`).
    let running = Mutex<RunningScript?>(nil)
    /// The function libraries' metadata (read without the keyspace lock; changed under it).
    let catalog = Mutex(FunctionCatalog())
    // Touched only under the keyspace's exclusive access:
    /// `EVAL` scripts' Lua state, and the functions' own (as in Redis, `SCRIPT FLUSH` and
    /// `FUNCTION FLUSH` each reset only theirs).
    private var evalVM: LuaVM
    var functionVM: LuaVM
    private var bodies: [String: [UInt8]] = [:]

    init() {
        killFlag = .allocate(capacity: 1)
        killFlag.initialize(to: 0)
        evalVM = LuaVM(killFlag: killFlag)
        functionVM = LuaVM(killFlag: killFlag)
    }

    deinit {
        lua_close(evalVM.state)
        lua_close(functionVM.state)
        killFlag.deallocate()
    }

    /// One Lua state with Strongbox's library and sandbox, and its error handler.
    struct LuaVM {
        let state: OpaquePointer
        let handlerRef: Int32

        init(killFlag: UnsafeMutablePointer<Int32>) {
            state = ScriptEngine.makeState(killFlag: killFlag)
            handlerRef = ScriptEngine.bootstrap(state)
        }
    }

    /// The script or function running now.
    struct RunningScript {
        var isFunction: Bool
        var name: String
        var command: [String]
        var since: Int64
    }

    // MARK: The Lua state

    static func makeState(killFlag: UnsafeMutablePointer<Int32>) -> OpaquePointer {
        let L = luaL_newstate()!
        // Only the libraries Redis offers that need no system access.
        for (name, opener) in [("", luaopen_base), (LUA_TABLIBNAME, luaopen_table), (LUA_STRLIBNAME, luaopen_string),
                               (LUA_MATHLIBNAME, luaopen_math), (LUA_DBLIBNAME, luaopen_debug)] as [(String, lua_CFunction)] {
            sb_lua_pushcfunction(L, opener)
            lua_pushstring(L, name)
            lua_call(L, 1, 0)
        }
        // cjson and bit as Redis has them: globals of their own.
        for (name, opener) in [("cjson", luaopen_cjson), ("bit", luaopen_bit), ("struct", sb_luaopen_struct),
                               ("cmsgpack", sb_luaopen_cmsgpack)] as [(String, lua_CFunction)] {
            sb_lua_pushcfunction(L, opener)
            lua_call(L, 0, 1)
            sb_lua_setglobal(L, name)
        }
        sb_lua_pushcfunction(L, scriptCall)
        sb_lua_setglobal(L, "__sb_call")
        sb_register_call(L, scriptCall)
        sb_lua_pushcfunction(L, scriptSHA1)
        sb_lua_setglobal(L, "__sb_sha1")
        sb_lua_pushcfunction(L, scriptLog)
        sb_lua_setglobal(L, "__sb_log")
        sb_lua_pushcfunction(L, scriptSetResp)
        sb_lua_setglobal(L, "__sb_setresp")
        sb_register_loadstring(L)
        sb_register_cwrap(L)
        sb_register_interrupt(L)
        sb_install_kill_hook(L, killFlag)
        return L
    }

    /// Builds the `redis` table and the sandbox: read-only globals (reading a missing one is an
    /// error too), no `os`, `io`, `loadfile`, `dofile`, `require`, `debug`.
    /// - Returns: a registry reference to the error handler.
    static func bootstrap(_ L: OpaquePointer) -> Int32 {
        let library = """
            local getinfo, setenv = debug.getinfo, setfenv
            local rawcall, raisingcall, sha1, log, textload, setresp, cwrap = __sb_call, __sb_rcall, __sb_sha1, __sb_log, __sb_loadstring, __sb_setresp, __sb_cwrap
            local interrupt = __sb_interrupt
            __sb_interrupt = nil
            local type, error, tostring, concat, rawset, rawget, select, unpack, next, pairs, ipairs, setmetatable =
                  type, error, tostring, table.concat, rawset, rawget, select, unpack, next, pairs, ipairs, setmetatable
            local rawpcall, tinsert, tremove, tsort, srep, sfind, smatch, sgmatch, sgsub =
                  pcall, table.insert, table.remove, table.sort, string.rep, string.find, string.match, string.gmatch, string.gsub
            __sb_call, __sb_rcall, __sb_sha1, __sb_log, __sb_loadstring, __sb_setresp, __sb_cwrap = nil
            local function pack(...) return {n = select('#', ...), ...} end
            redis = {}
            redis.call = raisingcall
            redis.pcall = rawcall
            redis.error_reply = function(e) return {err = e} end
            redis.status_reply = function(s) return {ok = s} end
            redis.sha1hex = function(...)
              if select('#', ...) ~= 1 then error('wrong number of arguments', 0) end
              local s = ...
              local t = type(s)
              return sha1((t == 'string' or t == 'number') and tostring(s) or '')
            end
            redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
            -- Redis's checks, in its order; a level that is NaN or out of range is refused, never converted.
            redis.log = function(...)
              local n = select('#', ...)
              if n < 2 then error('redis.log() requires two arguments or more.', 0) end
              local level = ...
              -- A number or a numeric string, truncated toward zero as Redis's C cast does.
              level = (type(level) == 'number' or type(level) == 'string') and tonumber(level) or nil
              if level == nil then error('First argument must be a number (log level).', 0) end
              if level ~= level or level <= -1 or level >= 4 then error('Invalid debug level.', 0) end
              if level < 0 then level = 0 end
              local parts = {}
              for i = 2, n do
                local v = select(i, ...)
                local t = type(v)
                if t == 'string' or t == 'number' then parts[#parts + 1] = tostring(v) end
              end
              log(level - level % 1, concat(parts, ' '))
            end
            redis.setresp = function(...)
              if select('#', ...) ~= 1 then error('redis.setresp() requires one argument.', 0) end
              local v = ...
              v = (type(v) == 'number' or type(v) == 'string') and tonumber(v) or 0
              if not (v >= 2 and v < 4) then error('RESP version must be 2 or 3.', 0) end
              setresp(v - v % 1)
            end
            redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL = 0, 1, 2, 2, 3
            redis.set_repl = function(...)
              if select('#', ...) ~= 1 then error('redis.set_repl() requires one argument.', 0) end
              local v = ...
              v = (type(v) == 'number' or type(v) == 'string') and tonumber(v) or 0
              if not (v > -1 and v < 4) then error('Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.', 0) end
            end
            redis.replicate_commands = function() return true end
            redis.breakpoint = function() return false end
            redis.debug = function() end
            redis.REDIS_VERSION = '\(Engine.redisVersion)'
            redis.REDIS_VERSION_NUM = \(Engine.redisVersionNumber)
            -- As in Redis, pcall hands scripts an error reply's text, not the table.
            pcall = function(...)
              local r = pack(rawpcall(...))
              if not r[1] and type(r[2]) == 'table' and type(rawget(r[2], 'err')) == 'string' then r[2] = rawget(r[2], 'err') end
              return unpack(r, 1, r.n)
            end
            -- Text only: a precompiled chunk is parsed as text (and refused), as Redis's Lua does.
            loadstring = textload
            load = function(f, name)
              if type(f) == 'string' then return textload(f, name) end
              local parts = {}
              while true do
                local piece = f()
                if piece == nil or piece == '' then break end
                if type(piece) ~= 'string' then return nil, 'reader function must return a string' end
                parts[#parts + 1] = piece
              end
              return textload(concat(parts), name or '=(load)')
            end
            -- string.rep and Lua 5.1's recursive pattern matcher run in C, where neither the time
            -- limit nor SCRIPT KILL reaches: bound what they can be asked to do.
            -- Library functions wrapped here (size and pattern bounds, read-only guards) keep the
            -- originals' error texts: the original runs under pcall, its "bad argument … to '?'"
            -- gets its name back, and the error is raised at the script's line (the wrapper sits
            -- behind a C trampoline, so a script's `return f()` keeps its frame).
            local function native(name, f, check, adjust)
              return cwrap(function(...)
                interrupt()
                if check then check(...) end
                local r
                if adjust then r = pack(rawpcall(f, adjust(...))) else r = pack(rawpcall(f, ...)) end
                if r[1] then return unpack(r, 2, r.n) end
                local e = r[2]
                if type(e) == 'string' then e = sgsub(e, "^bad argument (#%d+) to '%?'", "bad argument %1 to '" .. name .. "'") end
                error(e, 3)
              end)
            end
            -- string.rep and Lua 5.1's recursive pattern matcher run in C, where neither the time
            -- limit nor SCRIPT KILL reaches: bound what they can be asked to build or recurse into.
            string.rep = native('rep', srep, function(s, n)
              -- The same coercions string.rep applies (numbers as strings, numeric strings as counts).
              local count, text = tonumber(n), (type(s) == 'number') and tostring(s) or s
              if count and type(text) == 'string' and #text * count > \(Self.maxStringBytes) then
                error('resulting string too large', 4)
              end
            end, function(...)
              -- An empty string repeated 2^63 times is '', but Lua 5.1 still loops 2^63 times
              -- (found by the command fuzzer): answer it without the loop.
              local s, n = ...
              if s == '' and tonumber(n) then return '', 0 end
              return ...
            end)
            local function checkPattern(_, p)
              if type(p) == 'string' and #p > 200 and select(2, sgsub(p, '[%?%*%+%-%(%%]', '')) > 200 then
                error('pattern too complex', 4)
              end
            end
            string.find = native('find', sfind, checkPattern)
            string.match = native('match', smatch, checkPattern)
            string.gmatch = native('gmatch', sgmatch, checkPattern)
            string.gsub = native('gsub', sgsub, checkPattern)
            debug, dofile, loadfile, module, require, package, newproxy, setfenv, getfenv, print = nil
            -- Read-only tables as Redis has them: an empty proxy whose reads fall through to the
            -- real table (a table __index, so reads stay fast) and whose writes always fail. Raw
            -- writes (rawset, table.insert on a proxy) are refused too, and whatever gets past is
            -- wiped after every script (`sb_proxies`).
            local proxies, isProxy = {}, {}
            local function readonly(t, missing)
              if missing then setmetatable(t, {__index = missing}) end
              local meta = {__index = t, __newindex = function() error('Attempt to modify a readonly table', 2) end,
                            __metatable = false}
              local p = setmetatable({}, meta)
              proxies[#proxies + 1] = p
              isProxy[p] = true
              return p, meta
            end
            local function guard(name, f)
              return native(name, f, function(t) if isProxy[t] then error('Attempt to modify a readonly table', 0) end end)
            end
            -- LuaBitOp's tohex reads past its buffer for a digit count of -2^31 (CVE-2024-31449's
            -- class): that count means -8, as Redis's patched copy has it. (A tail call, so an
            -- argument error still names 'tohex'.)
            local btohex, btobit = bit.tohex, bit.tobit
            bit.tohex = native('tohex', btohex, nil, function(...)
              local x, n = ...
              local v = tonumber(n)
              if v ~= nil and btobit(v) == -2147483648 then return x, -8, select(3, ...) end
              return ...
            end)
            _G.rawset, table.insert, table.remove, table.sort =
              guard('rawset', rawset), guard('insert', tinsert), guard('remove', tremove), guard('sort', tsort)
            -- Library functions written here raise their errors as Redis's C ones: naming the caller's line.
            for _, name in ipairs({'sha1hex', 'log', 'setresp', 'set_repl'}) do redis[name] = cwrap(redis[name]) end
            for _, name in ipairs({'redis', 'string', 'table', 'math', 'coroutine', 'bit', 'cjson', 'struct', 'cmsgpack'}) do
              if _G[name] ~= nil then _G[name] = readonly(_G[name]) end
            end
            -- Strings' metatable: methods come from the read-only string table, and
            -- getmetatable('') hands out a read-only view, never the real metatable.
            local smt = getmetatable('')
            smt.__index = _G.string
            smt.__metatable = readonly({__index = _G.string})
            local backing = {}
            for k, v in pairs(_G) do backing[k] = v end
            local function missing(_, k)
              error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
            end
            local globals, globalsMeta = readonly(backing, missing)
            backing._G = globals
            -- FUNCTION LOAD runs a library's code with these globals instead (the Swift side
            -- points the globals' __index here while it runs): only redis.register_function,
            -- redis.log and the constants, as Redis 7.0.
            local pending = {}
            local flagOrder = {'no-writes', 'allow-oom', 'allow-stale', 'no-cluster', 'allow-cross-slot-keys'}
            local knownFlag = {}
            for _, f in ipairs(flagOrder) do knownFlag[f] = true end
            local function fail(message) error({err = 'ERR ' .. message}, 0) end
            local function register(...)
              if pending.list == nil then fail('redis.register_function can only be called on FUNCTION LOAD command') end
              local n = select('#', ...)
              local name, callback, flags, description
              if n == 1 then
                local named = ...
                if type(named) ~= 'table' then
                  fail('calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).')
                end
                for k, v in next, named do
                  if k == 'function_name' then
                    if type(v) ~= 'string' and type(v) ~= 'number' then fail('function_name argument given to redis.register_function must be a string') end
                    name = tostring(v)
                  elseif k == 'callback' then
                    if type(v) ~= 'function' then fail('callback argument given to redis.register_function must be a function') end
                    callback = v
                  elseif k == 'flags' then
                    if type(v) ~= 'table' then fail('flags argument to redis.register_function must be a table representing function flags') end
                    flags = v
                  elseif k == 'description' then
                    if type(v) ~= 'string' and type(v) ~= 'number' then fail('description argument given to redis.register_function must be a string') end
                    description = tostring(v)
                  else
                    fail('unknown argument given to redis.register_function')
                  end
                end
                if name == nil then fail('redis.register_function must get a function name argument') end
                if callback == nil then fail('redis.register_function must get a callback argument') end
              elseif n == 2 then
                name, callback = ...
                if type(name) ~= 'string' and type(name) ~= 'number' then fail('first argument to redis.register_function must be a string') end
                if type(callback) ~= 'function' then fail('second argument to redis.register_function must be a function') end
                name = tostring(name)
              else
                fail('wrong number of arguments to redis.register_function')
              end
              local given = {}
              for _, f in next, flags or {} do
                if type(f) ~= 'string' or not knownFlag[f] then fail('unknown flag given') end
                given[f] = true
              end
              local ordered = {}
              for _, f in ipairs(flagOrder) do if given[f] then ordered[#ordered + 1] = f end end
              -- Redis's text (it names libraries here too).
              if #name == 0 or sfind(name, '[^%w_]') then
                fail('Library names can only contain letters, numbers, or underscores(_) and must be at least one character long')
              end
              local list = pending.list
              for i = 1, #list do
                if list[i].name == name then fail('Function already exists in the library') end
              end
              list[#list + 1] = {name = name, callback = callback, flags = ordered, description = description}
            end
            local loadRedis = {register_function = cwrap(register), log = redis.log, REDIS_VERSION = redis.REDIS_VERSION,
                               REDIS_VERSION_NUM = redis.REDIS_VERSION_NUM}
            for _, level in ipairs({'LOG_DEBUG', 'LOG_VERBOSE', 'LOG_NOTICE', 'LOG_WARNING'}) do loadRedis[level] = redis[level] end
            local loadGlobals = readonly({redis = readonly(loadRedis, missing)}, missing)
            -- The error handler: where in the user's script the error happened, and its text.
            -- Only raw reads and type checks here: an error object's metamethods never run.
            local function handler(e)
              local line = 0
              for level = 2, 64 do
                local info = getinfo(level, 'Sl')
                if not info then break end
                if info.source == '@user_script' or info.source == '@user_function' then line = info.currentline break end
              end
              local t = type(e)
              if t == 'table' and type(rawget(e, 'err')) == 'string' then return {err = rawget(e, 'err'), line = line} end
              if t == 'string' or t == 'number' then return {err = 'ERR ' .. e, line = line} end
              if t == 'nil' then return {err = 'ERR nil', line = line} end
              return {err = 'ERR unknown error (a script raised a ' .. t .. ')', line = line}
            end
            -- Scripts compiled from now on see the read-only globals.
            setenv(0, globals)
            return handler, backing, proxies, {globals = globalsMeta, backing = backing, loading = loadGlobals, pending = pending}
            """
        var bytes = Array(library.utf8)
        let loaded = bytes.withUnsafeMutableBufferPointer { p in
            luaL_loadbuffer(L, UnsafeRawPointer(p.baseAddress!).assumingMemoryBound(to: CChar.self), p.count, "@sb_lib")
        }
        guard loaded == 0, lua_pcall(L, 0, 4, 0) == 0 else {
            // The library is a constant: failing to load it is a build defect, not an input error.
            let message = String(cString: lua_tolstring(L, -1, nil))
            fatalError("strongbox: Lua library failed to load: \(message)")
        }
        // Stack: handler, backing globals (where KEYS and ARGV are set for each call), proxies,
        // what FUNCTION LOAD needs (`withLibraryGlobals`).
        lua_setfield(L, sb_lua_registryindex(), "sb_loader")
        sb_lua_newtable(L)
        lua_setfield(L, sb_lua_registryindex(), "sb_functions")
        lua_setfield(L, sb_lua_registryindex(), "sb_proxies")
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
        known.withLock { $0[sha.lowercased()] != nil }
    }

    /// The shebang flags of cached script `sha`, or nil when it is not cached.
    public func flags(_ sha: String) -> ScriptFlags? {
        known.withLock { $0[sha.lowercased()] }
    }

    /// Compiles and caches `body`, whose SHA1 is `sha`. Call under exclusive access.
    func load(_ body: [UInt8], sha: String) throws(CommandError) {
        if bodies[sha] != nil { return }
        // A `#!lua` first line is read (and refused if wrong) here; Lua gets the rest, newline
        // included, so line numbers stay the script's own.
        let (flags, start) = try ScriptFlags.parse(body)
        let L = evalVM.state
        lua_getfield(L, sb_lua_registryindex(), "sb_scripts")
        if sb_lua_isnil(L, -1) != 0 {
            sb_lua_pop(L, 1)
            sb_lua_newtable(L)
            lua_pushvalue(L, -1)
            lua_setfield(L, sb_lua_registryindex(), "sb_scripts")
        }
        let status = body[start...].withUnsafeBufferPointer { p in
            sb_load_text(L, UnsafeRawPointer(p.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self), p.count, "@user_script")
        }
        guard status == 0 else {
            let message = Self.string(L, -1)
            lua_settop(L, 0)
            throw CommandError("ERR Error compiling script (new function): \(message)")
        }
        lua_setfield(L, -2, sha)
        lua_settop(L, 0)
        bodies[sha] = body
        known.withLock { $0[sha] = flags }
    }

    /// Forgets every script (`SCRIPT FLUSH`). Call under exclusive access.
    func flush() {
        // A new Lua state: nothing any script did survives a flush.
        lua_close(evalVM.state)
        evalVM = LuaVM(killFlag: killFlag)
        bodies = [:]
        known.withLock { $0 = [:] }
    }

    static let evalBusy = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
    static let functionBusy = "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."

    /// The `-BUSY` text for the script running now (it names the command that can stop it).
    public var busyMessage: String {
        running.withLock { $0?.isFunction ?? false } ? Self.functionBusy : Self.evalBusy
    }

    /// `SCRIPT KILL` (`function` false) or `FUNCTION KILL`: each stops only its own kind.
    /// - Returns: nil when a kill was requested, else the error to reply.
    public func kill(function: Bool = false) -> CommandError? {
        guard let current = running.withLock({ $0 }), runningSince.load(ordering: .relaxed) != 0 else {
            return CommandError("NOTBUSY No scripts in execution right now.")
        }
        if runningScriptWrote.load(ordering: .relaxed) {
            return CommandError("UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.")
        }
        if current.isFunction != function { return CommandError(current.isFunction ? Self.functionBusy : Self.evalBusy) }
        sb_flag_store(killFlag, 1)
        return nil
    }

    /// Stops whatever script runs, written or not (the server is shutting down).
    public func forceKill() {
        sb_flag_store(killFlag, 1)
    }

    // MARK: Running

    /// Calls `wake` once the running script has ended (at once when none runs).
    public func whenIdle(_ wake: @escaping @Sendable () -> Void) {
        idleWaiters.withLock { $0.append(wake) }
        if busySince == 0 { wakeWaiters() }
    }

    private func wakeWaiters() {
        let waiting = idleWaiters.withLock { w in defer { w = [] }; return w }
        for wake in waiting { wake() }
    }

    /// Runs cached script `sha` and writes its reply to `inv.out`. Call under exclusive access.
    func run(sha: String, keys: ArraySlice<ByteBuffer>, argv: ArraySlice<ByteBuffer>, engine: Engine,
             invocation inv: inout Invocation, readOnly: Bool) throws(CommandError) {
        guard bodies[sha] != nil else { throw CommandError("NOSCRIPT No matching script. Please use EVAL.") }
        let L = evalVM.state
        lua_settop(L, 0)
        Self.setGlobalArray(L, "KEYS", keys)
        Self.setGlobalArray(L, "ARGV", argv)
        lua_rawgeti(L, sb_lua_registryindex(), evalVM.handlerRef)
        lua_getfield(L, sb_lua_registryindex(), "sb_scripts")
        lua_getfield(L, -1, sha)
        lua_remove(L, -2)
        try invoke(L, arguments: 0, running: RunningScript(isFunction: false, name: sha, command: [], since: 0),
                   chunk: "user_script", engine: engine, invocation: &inv, readOnly: readOnly)
    }

    /// Runs function `name` (`FCALL`): its callback gets the keys and the arguments as two
    /// tables (no `KEYS`/`ARGV` globals, as in Redis). Call under exclusive access.
    func runFunction(_ name: String, keys: ArraySlice<ByteBuffer>, argv: ArraySlice<ByteBuffer>, engine: Engine,
                     invocation inv: inout Invocation, readOnly: Bool) throws(CommandError) {
        let L = functionVM.state
        lua_settop(L, 0)
        lua_rawgeti(L, sb_lua_registryindex(), functionVM.handlerRef)
        lua_getfield(L, sb_lua_registryindex(), "sb_functions")
        lua_getfield(L, -1, name.lowercased())
        lua_remove(L, -2)
        guard lua_type(L, -1) == LUA_TFUNCTION else {
            lua_settop(L, 0)
            throw CommandError("ERR Function not found")
        }
        for values in [keys, argv] {
            lua_createtable(L, Int32(values.count), 0)
            for (i, v) in values.enumerated() {
                v.withUnsafeReadableBytes { Self.pushBytes(L, $0) }
                lua_rawseti(L, -2, Int32(i + 1))
            }
        }
        let command = inv.args.prefix(32).map { String(decoding: $0.readableBytesView.prefix(128), as: UTF8.self) }
        try invoke(L, arguments: 2, running: RunningScript(isFunction: true, name: name, command: command, since: 0),
                   chunk: "user_function", engine: engine, invocation: &inv, readOnly: readOnly)
    }

    /// Calls the function on `L`'s stack (above the error handler at index 1, below its
    /// `arguments`) under the time limit and `SCRIPT KILL`, then writes its reply.
    private func invoke(_ L: OpaquePointer, arguments: Int32, running script: RunningScript, chunk: String,
                        engine: Engine, invocation inv: inout Invocation, readOnly: Bool) throws(CommandError) {
        let context = ScriptContext(engine: engine, session: inv.session, readOnly: readOnly, now: inv.now, scripts: self)
        // The context travels in this Lua state's registry (not a global): several engines in
        // one process (tests start many servers) each have their own state and context.
        lua_pushlightuserdata(L, Unmanaged.passUnretained(context).toOpaque())
        lua_setfield(L, sb_lua_registryindex(), "sb_context")
        sb_flag_store(killFlag, 0)
        // math.random draws from C's rand(): a fresh seed per script, so what one script seeds
        // (math.randomseed) never decides another client's draws.
        srand(UInt32.random(in: .min ... .max))
        runningScriptWrote.store(false, ordering: .relaxed)
        var script = script
        script.since = max(1, engine.keyspace.clock.now())
        running.withLock { [script] in $0 = script }
        runningSince.store(script.since, ordering: .relaxed)
        let status = withExtendedLifetime(context) { lua_pcall(L, arguments, 1, 1) }
        sb_reset_kill_hook(L)
        defer {
            lua_pushnil(L)
            lua_setfield(L, sb_lua_registryindex(), "sb_context")
            lua_settop(L, 0)
            sb_wipe_proxies(L)
            running.withLock { $0 = nil }
            runningSince.store(0, ordering: .relaxed)
            // Parked connections go on once the reply is built (nothing here runs Lua code),
            // unless a transaction of scripts still holds the keyspace.
            if transactionSince.load(ordering: .relaxed) == 0 { wakeWaiters() }
        }
        if status != 0 {
            // The handler's table, or (when the handler itself failed, or memory ran out) a string.
            var message = "ERR unknown error"
            var line: Int64 = 0
            if sb_lua_istable(L, -1) != 0 {
                sb_rawgetfield(L, -1, "err")
                if lua_type(L, -1) == LUA_TSTRING { message = Self.string(L, -1) }
                sb_lua_pop(L, 1)
                sb_rawgetfield(L, -1, "line")
                let n = lua_tonumber(L, -1)
                line = n.isFinite && n >= 0 && n < 1e9 ? Int64(n) : 0
                sb_lua_pop(L, 1)
            } else if lua_type(L, -1) == LUA_TSTRING {
                message = "ERR " + Self.string(L, -1)
            }
            throw CommandError("\(message) script: \(script.name), on @\(chunk):\(line).")
        }
        // Conversion reads with raw access only: nothing the script returns runs Lua code now.
        try Self.writeReply(L, -1, into: &inv, version: inv.version, resp3: context.resp == 3, depth: 0)
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
    static func writeReply(_ L: OpaquePointer, _ index: Int32, into inv: inout Invocation, version: RESPVersion, resp3: Bool, depth: Int) throws(CommandError) {
        try writeValue(L, index, into: &inv, version: version, resp3: resp3, depth: depth)
    }

    private static func writeValue(_ L: OpaquePointer, _ index: Int32, into inv: inout Invocation, version: RESPVersion, resp3: Bool, depth: Int) throws(CommandError) {
        let index = index < 0 ? lua_gettop(L) + index + 1 : index
        switch lua_type(L, index) {
        case LUA_TSTRING:
            var length = 0
            let p = lua_tolstring(L, index, &length)
            // One string larger than the buffer's room (built with `..`) is refused, not a trap.
            if inv.out.writerIndex + length > Invocation.maxReplyBytes {
                try inv.checkReplySize()
                if inv.out.writerIndex + length > Invocation.maxReplyBytes {
                    inv.replyTooLarge = true
                    throw CommandError("ERR reply is too large (more than \(Invocation.maxReplyBytes >> 20) MiB)")
                }
            }
            inv.out.writeRESPBulk(bytes: UnsafeRawBufferPointer(start: p, count: length))
        case LUA_TBOOLEAN:
            if resp3 {
                // RESP3 true/false (RESP2 clients get 1 / 0, as Redis's addReplyBool).
                let truth = lua_toboolean(L, index) != 0
                if version == .v3 { inv.out.writeString(truth ? "#t\r\n" : "#f\r\n") } else { inv.out.writeRESPInteger(truth ? 1 : 0) }
            } else if lua_toboolean(L, index) != 0 {
                inv.out.writeRESPInteger(1)
            } else {
                inv.out.writeRESPNull(version: version)
            }
        case LUA_TNUMBER:
            let n = lua_tonumber(L, index)
            // Redis truncates toward zero: (long long)lua_tonumber.
            inv.out.writeRESPInteger(n.isFinite && abs(n) < 9.2e18 ? Int64(n) : (n.isNaN ? 0 : (n > 0 ? Int64.max : Int64.min)))
        case LUA_TTABLE:
            guard depth < 64, lua_checkstack(L, 8) != 0 else {
                inv.out.writeRESPError("ERR reached lua stack limit")
                return
            }
            sb_rawgetfield(L, index, "err")
            if lua_type(L, -1) == LUA_TSTRING {
                inv.out.writeRESPError(string(L, -1))
                sb_lua_pop(L, 1)
                return
            }
            sb_lua_pop(L, 1)
            sb_rawgetfield(L, index, "ok")
            if lua_type(L, -1) == LUA_TSTRING {
                inv.out.writeRESPSimpleString(string(L, -1).replacing("\r", with: " ").replacing("\n", with: " "))
                sb_lua_pop(L, 1)
                return
            }
            sb_lua_pop(L, 1)
            // As Redis: the RESP3 table forms are read whatever redis.setresp said.
            if try writeRESP3Table(L, index, into: &inv, version: version, depth: depth) { return }
            // An array: elements 1, 2, … up to the first nil.
            var count = 0
            while true {
                lua_rawgeti(L, index, Int32(count + 1))
                let isNil = sb_lua_isnil(L, -1) != 0
                sb_lua_pop(L, 1)
                if isNil { break }
                count += 1
            }
            inv.out.writeRESPArrayHeader(count)
            for i in 0..<count {
                lua_rawgeti(L, index, Int32(i + 1))
                try writeValue(L, -1, into: &inv, version: version, resp3: resp3, depth: depth + 1)
                sb_lua_pop(L, 1)
                try inv.checkReplySize()
            }
        default:
            inv.out.writeRESPNull(version: version)
        }
    }

    /// A script under `redis.setresp(3)` returns RESP3 types as tables: `{map = {...}}`,
    /// `{set = {...}}`, `{double = n}`, `{big_number = s}`. - Returns: false for any other table.
    private static func writeRESP3Table(_ L: OpaquePointer, _ index: Int32, into inv: inout Invocation, version: RESPVersion, depth: Int) throws(CommandError) -> Bool {
        sb_rawgetfield(L, index, "double")
        if lua_type(L, -1) == LUA_TNUMBER {
            inv.out.writeRESPDouble(lua_tonumber(L, -1), version: version)
            sb_lua_pop(L, 1)
            return true
        }
        sb_lua_pop(L, 1)
        sb_rawgetfield(L, index, "big_number")
        if lua_type(L, -1) == LUA_TSTRING {
            let text = string(L, -1).replacing("\r", with: " ").replacing("\n", with: " ")
            if version == .v3 { inv.out.writeString("(\(text)\r\n") } else { inv.out.writeRESPBulk(string: text) }
            sb_lua_pop(L, 1)
            return true
        }
        sb_lua_pop(L, 1)
        for (field, isMap) in [("map", true), ("set", false)] {
            sb_rawgetfield(L, index, field)
            guard sb_lua_istable(L, -1) != 0 else { sb_lua_pop(L, 1); continue }
            let table = lua_gettop(L)
            var count = 0
            lua_pushnil(L)
            while lua_next(L, table) != 0 { count += 1; sb_lua_pop(L, 1) }
            if isMap { inv.out.writeRESPMapHeader(count, version: version) } else { inv.out.writeRESPSetHeader(count, version: version) }
            lua_pushnil(L)
            while lua_next(L, table) != 0 {
                // Key at -2, value at -1: the key is written from a copy, so lua_next's key stays untouched.
                lua_pushvalue(L, -2)
                try writeValue(L, -1, into: &inv, version: version, resp3: true, depth: depth + 1)
                sb_lua_pop(L, 1)
                if isMap { try writeValue(L, -1, into: &inv, version: version, resp3: true, depth: depth + 1) }
                sb_lua_pop(L, 1)
                try inv.checkReplySize()
            }
            sb_lua_pop(L, 1)
            return true
        }
        return false
    }

    /// Redis's RESP → Lua conversion of a `redis.call` reply.
    static func push(_ L: OpaquePointer, _ value: RESPValue, depth: Int, resp3: Bool = false) {
        if resp3 {
            switch value {
            case .null, .nullArray:
                lua_pushnil(L)
                return
            case .map(let pairs):
                guard lua_checkstack(L, 6) != 0 else { return }
                sb_lua_newtable(L)
                lua_pushstring(L, "map")
                lua_createtable(L, 0, Int32(clamping: pairs.count))
                for (k, v) in pairs where depth < 64 {
                    push(L, k, depth: depth + 1, resp3: true)
                    push(L, v, depth: depth + 1, resp3: true)
                    lua_rawset(L, -3)
                }
                lua_rawset(L, -3)
                return
            case .set(let items):
                guard lua_checkstack(L, 6) != 0 else { return }
                sb_lua_newtable(L)
                lua_pushstring(L, "set")
                lua_createtable(L, 0, Int32(clamping: items.count))
                for item in items where depth < 64 {
                    push(L, item, depth: depth + 1, resp3: true)
                    lua_pushboolean(L, 1)
                    lua_rawset(L, -3)
                }
                lua_rawset(L, -3)
                return
            case .double(let d):
                sb_lua_newtable(L)
                lua_pushnumber(L, d)
                lua_setfield(L, -2, "double")
                return
            case .bigNumber(let text):
                sb_lua_newtable(L)
                lua_pushstring(L, text)
                lua_setfield(L, -2, "big_number")
                return
            case .array(let items), .push(let items):
                guard lua_checkstack(L, 4) != 0 else { return }
                lua_createtable(L, Int32(clamping: items.count), 0)
                for (i, item) in items.enumerated() where depth < 64 {
                    push(L, item, depth: depth + 1, resp3: true)
                    lua_rawseti(L, -2, Int32(clamping: i + 1))
                }
                return
            default:
                break
            }
        }
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
    /// `redis.setresp`: the protocol `redis.call` replies come in (2 or 3).
    var resp = 2

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
        invocation.session.protocolVersion = resp == 3 ? .v3 : .v2
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
    ScriptEngine.push(L, reply, depth: 0, resp3: context.resp == 3)
    return 1
}

/// `redis.setresp` (the Lua wrapper checks the argument).
private let scriptSetResp: lua_CFunction = { L in
    guard let L else { return 0 }
    ScriptContext.current(in: L)?.resp = lua_tonumber(L, 1) == 3 ? 3 : 2
    return 0
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
    // The Lua wrapper passed a whole level in 0...3.
    let level = lua_tonumber(L, 1)
    ScriptContext.current(in: L)?.engine.scriptLog(level >= 0 && level <= 3 ? Int(level) : 3, message)
    return 0
}

/// The flags of a script's `#!lua flags=…` first line (Redis 7), or `compatible` without one.
public struct ScriptFlags: Sendable, Equatable {
    /// No shebang: Redis's pre-7 behaviour (writes and OOM checked per command).
    public var hasShebang = false
    public var noWrites = false
    public var allowOOM = false
    public var noCluster = false
    public var allowCrossSlotKeys = false
    public var allowStale = false

    /// Reads the shebang line of `body`. - Returns: the flags and where the Lua code starts.
    static func parse(_ body: [UInt8]) throws(CommandError) -> (ScriptFlags, Int) {
        var flags = ScriptFlags()
        guard body.count >= 2, body[0] == UInt8(ascii: "#"), body[1] == UInt8(ascii: "!") else { return (flags, 0) }
        flags.hasShebang = true
        guard let end = body.firstIndex(of: UInt8(ascii: "\n")) else { throw CommandError("ERR Invalid script shebang") }
        // Split as Redis's sdssplitargs does: on any white space.
        let isSpace: (UInt8) -> Bool = { $0 == 32 || ($0 >= 9 && $0 <= 13) }
        let parts = body[0..<end].split(whereSeparator: isSpace).map { String(decoding: $0, as: UTF8.self) }
        guard let engine = parts.first, engine == "#!lua" else {
            throw CommandError("ERR Unexpected engine in script shebang: \(parts.first ?? "")")
        }
        for option in parts.dropFirst() {
            guard option.hasPrefix("flags=") else { throw CommandError("ERR Unknown lua shebang option: \(option)") }
            let list = option.dropFirst(6)
            // `flags=` is no flags; an empty item (`a,,b`) is an unknown flag, as in Redis.
            for flag in list.isEmpty ? [] : list.split(separator: ",", omittingEmptySubsequences: false) {
                switch flag {
                case "no-writes": flags.noWrites = true
                case "allow-oom": flags.allowOOM = true
                case "no-cluster": flags.noCluster = true
                case "allow-cross-slot-keys": flags.allowCrossSlotKeys = true
                case "allow-stale": flags.allowStale = true
                default: throw CommandError("ERR Unexpected flag in script shebang: \(flag)")
                }
            }
        }
        return (flags, end)
    }
}
