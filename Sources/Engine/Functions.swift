import CLua
import NIOCore

/// Redis 7 functions: libraries loaded with `FUNCTION LOAD`, whose code registers named
/// functions (`redis.register_function`) that `FCALL`/`FCALL_RO` run.
///
/// The metadata lives here, behind a mutex (so `FCALL`'s flag checks, `FUNCTION LIST` and
/// `FUNCTION STATS` need no keyspace lock); the callbacks live in the functions' own Lua state,
/// in its registry table `sb_functions`, touched only under the keyspace's exclusive access.
struct FunctionCatalog: Sendable {
    struct Function: Sendable {
        var name: String
        /// Raw bytes, as given (any bytes, as in Redis).
        var description: [UInt8]?
        /// In Redis's order: no-writes, allow-oom, allow-stale, no-cluster, allow-cross-slot-keys.
        var flagNames: [String]
        var flags: ScriptFlags
    }

    struct Library: Sendable {
        var name: String
        var code: [UInt8]
        var functions: [Function]
        /// Load order (`FUNCTION LIST` and `FUNCTION DUMP` list libraries so).
        var sequence = 0
    }

    /// By name: every lookup is O(1), however many libraries there are.
    private(set) var libraries: [String: Library] = [:]
    /// Function name (lowercased: `FCALL` names them in any case, as in Redis) → its library's
    /// name and its index there.
    private(set) var owners: [String: (library: String, index: Int)] = [:]
    private var nextSequence = 0

    var functionCount: Int { owners.count }

    /// Every library, in load order.
    var ordered: [Library] { libraries.values.sorted { $0.sequence < $1.sequence } }

    func library(_ name: String) -> Library? { libraries[name] }

    func function(_ name: String) -> Function? {
        guard let (owner, index) = owners[name.lowercased()], let library = libraries[owner],
              index < library.functions.count else { return nil }
        return library.functions[index]
    }

    func owner(of function: String) -> String? { owners[function.lowercased()]?.library }

    mutating func insert(_ library: Library) {
        remove(library.name)
        var library = library
        library.sequence = nextSequence
        nextSequence += 1
        libraries[library.name] = library
        for (i, f) in library.functions.enumerated() { owners[f.name.lowercased()] = (library.name, i) }
    }

    @discardableResult
    mutating func remove(_ name: String) -> Library? {
        guard let library = libraries.removeValue(forKey: name) else { return nil }
        // A function another library has taken over (FUNCTION RESTORE REPLACE) stays its.
        for f in library.functions where owners[f.name.lowercased()]?.library == name { owners[f.name.lowercased()] = nil }
        return library
    }

    /// Redis's rule for library (and function) names.
    static func isValidName(_ name: some Collection<UInt8>) -> Bool {
        !name.isEmpty && name.allSatisfy { b in
            (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b == 95
        }
    }

    /// The `#!lua name=<library>` first line of a library's code.
    /// - Returns: the library name and where the Lua code starts (its newline: line numbers stay
    ///   the code's own).
    static func parseHeader(_ code: [UInt8]) throws(CommandError) -> (name: String, codeStart: Int) {
        guard code.count >= 2, code[0] == UInt8(ascii: "#"), code[1] == UInt8(ascii: "!") else {
            throw CommandError("ERR Missing library metadata")
        }
        guard let end = code.firstIndex(of: UInt8(ascii: "\n")) else { throw CommandError("ERR Invalid library metadata") }
        let isSpace: (UInt8) -> Bool = { $0 == 32 || ($0 >= 9 && $0 <= 13) }
        let parts = code[2..<end].split(whereSeparator: isSpace).map { String(decoding: $0, as: UTF8.self) }
        let engine = parts.first ?? ""
        var name: String?
        for part in parts.dropFirst() {
            guard part.hasPrefix("name=") else { throw CommandError("ERR Invalid metadata value given: \(part)") }
            guard name == nil else { throw CommandError("ERR Invalid metadata value, name argument was given multiple times") }
            name = String(part.dropFirst(5))
        }
        guard engine.lowercased() == "lua" else { throw CommandError("ERR Engine '\(engine)' not found") }
        guard let name else { throw CommandError("ERR Library name was not given") }
        guard isValidName(name.utf8) else {
            throw CommandError("ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long")
        }
        return (name, end)
    }
}

extension ScriptEngine {
    /// A library whose code ran and registered its functions, not yet visible to `FCALL`.
    struct PendingLibrary {
        var library: FunctionCatalog.Library
        /// Registry reference to the list of registrations (name, callback, flags, description).
        var registrations: Int32
    }

    /// How long a library's code may run while it loads (Redis: 500 ms).
    static let libraryLoadMilliseconds = 500

    /// Compiles library `code` and runs it with the load-time globals (only
    /// `redis.register_function`, `redis.log` and the constants), under a time limit.
    /// Call under exclusive access; `commit` or `discard` the result.
    func compileLibrary(_ code: [UInt8], engine: Engine) throws(CommandError) -> PendingLibrary {
        let (name, start) = try FunctionCatalog.parseHeader(code)
        let L = functionVM.state
        let registry = sb_lua_registryindex()
        lua_settop(L, 0)
        lua_rawgeti(L, registry, functionVM.handlerRef)                          // 1: handler
        let status = code[start...].withUnsafeBufferPointer { p in
            sb_load_text(L, UnsafeRawPointer(p.baseAddress ?? UnsafePointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self), p.count, "@user_function")
        }                                                                         // 2: chunk
        guard status == 0 else {
            let message = Self.string(L, -1)
            lua_settop(L, 0)
            throw CommandError("ERR Error compiling function: \(message)")
        }
        lua_getfield(L, registry, "sb_loader")                                   // 3: loader
        sb_rawgetfield(L, 3, "pending")                                          // 4: pending
        lua_pushstring(L, "list")
        sb_lua_newtable(L)
        lua_rawset(L, 4)
        sb_rawgetfield(L, 3, "globals")                                          // 5: the globals' metatable
        lua_pushstring(L, "__index")
        sb_rawgetfield(L, 3, "loading")
        lua_rawset(L, 5)

        let context = ScriptContext(engine: engine, session: Session(id: 0, authenticated: true), readOnly: true,
                                    now: engine.keyspace.clock.now(), scripts: self)
        lua_pushlightuserdata(L, Unmanaged.passUnretained(context).toOpaque())
        lua_setfield(L, registry, "sb_context")
        sb_flag_store(killFlag, 0)
        lua_pushvalue(L, 2)
        sb_set_deadline(L, Self.libraryLoadMilliseconds)
        let ran = withExtendedLifetime(context) { lua_pcall(L, 0, 0, 1) }
        sb_set_deadline(L, 0)
        sb_reset_kill_hook(L)
        lua_pushnil(L)
        lua_setfield(L, registry, "sb_context")
        lua_pushstring(L, "__index")
        sb_rawgetfield(L, 3, "backing")
        lua_rawset(L, 5)
        sb_wipe_proxies(L)
        guard ran == 0 else {
            lua_pushstring(L, "list")
            lua_pushnil(L)
            lua_rawset(L, 4)
            var message = "ERR unknown error"
            if sb_lua_istable(L, -1) != 0 {
                sb_rawgetfield(L, -1, "err")
                if lua_type(L, -1) == LUA_TSTRING { message = Self.string(L, -1) }
            } else if lua_type(L, -1) == LUA_TSTRING {
                message = "ERR " + Self.string(L, -1)
            }
            lua_settop(L, 0)
            throw CommandError("ERR Error registering functions: \(message)")
        }
        sb_rawgetfield(L, 4, "list")                                             // 6: registrations
        let count = Int32(lua_objlen(L, 6))
        guard count > 0 else {
            lua_pushstring(L, "list")
            lua_pushnil(L)
            lua_rawset(L, 4)
            lua_settop(L, 0)
            throw CommandError("ERR No functions registered")
        }
        var functions: [FunctionCatalog.Function] = []
        for i in 1...count {
            lua_rawgeti(L, 6, i)
            let entry = lua_gettop(L)
            sb_rawgetfield(L, entry, "name")
            let functionName = Self.string(L, -1)
            sb_rawgetfield(L, entry, "description")
            var description: [UInt8]?
            if lua_type(L, -1) == LUA_TSTRING {
                var length = 0
                let p = lua_tolstring(L, -1, &length)
                description = Array(UnsafeRawBufferPointer(start: p, count: length))
            }
            sb_rawgetfield(L, entry, "flags")
            var flagNames: [String] = []
            for j in 1...max(1, Int32(lua_objlen(L, -1))) {
                lua_rawgeti(L, -1, j)
                if lua_type(L, -1) == LUA_TSTRING { flagNames.append(Self.string(L, -1)) }
                sb_lua_pop(L, 1)
            }
            lua_settop(L, entry - 1)
            var flags = ScriptFlags()
            flags.hasShebang = true
            flags.noWrites = flagNames.contains("no-writes")
            flags.allowOOM = flagNames.contains("allow-oom")
            flags.allowStale = flagNames.contains("allow-stale")
            flags.noCluster = flagNames.contains("no-cluster")
            flags.allowCrossSlotKeys = flagNames.contains("allow-cross-slot-keys")
            functions.append(.init(name: functionName, description: description, flagNames: flagNames, flags: flags))
        }
        let reference = luaL_ref(L, registry)
        // Registering is for the load only: a function that kept `redis.register_function`
        // gets Redis's error when it calls it later.
        lua_pushstring(L, "list")
        lua_pushnil(L)
        lua_rawset(L, 4)
        lua_settop(L, 0)
        return PendingLibrary(library: .init(name: name, code: code, functions: functions), registrations: reference)
    }

    /// Forgets a pending library. Call under exclusive access.
    func discard(_ pending: PendingLibrary) {
        luaL_unref(functionVM.state, sb_lua_registryindex(), pending.registrations)
    }

    /// Makes a pending library's functions callable, replacing a library of the same name.
    /// Call under exclusive access, after the name checks.
    func commit(_ pending: PendingLibrary) {
        let L = functionVM.state
        let registry = sb_lua_registryindex()
        lua_settop(L, 0)
        lua_getfield(L, registry, "sb_functions")                                // 1
        let name = pending.library.name
        if let old = catalog.withLock({ $0.library(name) }) {
            for f in old.functions where catalog.withLock({ $0.owner(of: f.name) == name }) {
                lua_pushstring(L, f.name.lowercased())
                lua_pushnil(L)
                lua_rawset(L, 1)
            }
        }
        lua_rawgeti(L, registry, pending.registrations)                          // 2
        for (i, f) in pending.library.functions.enumerated() {
            lua_rawgeti(L, 2, Int32(i + 1))
            lua_pushstring(L, f.name.lowercased())
            sb_rawgetfield(L, -2, "callback")
            lua_rawset(L, 1)
            sb_lua_pop(L, 1)
        }
        lua_settop(L, 0)
        discard(pending)
        catalog.withLock { $0.insert(pending.library) }
    }

    /// `FUNCTION DELETE`. Call under exclusive access. - Returns: false when there is no such library.
    func deleteLibrary(_ name: String) -> Bool {
        guard let library = catalog.withLock({ $0.library(name) }) else { return false }
        let L = functionVM.state
        lua_settop(L, 0)
        lua_getfield(L, sb_lua_registryindex(), "sb_functions")
        for f in library.functions where catalog.withLock({ $0.owner(of: f.name) == name }) {
            lua_pushstring(L, f.name.lowercased())
            lua_pushnil(L)
            lua_rawset(L, 1)
        }
        lua_settop(L, 0)
        catalog.withLock { _ = $0.remove(name) }
        return true
    }

    /// `FUNCTION FLUSH`: every library goes, with the Lua state their code ran in.
    /// Call under exclusive access.
    func flushFunctions() {
        lua_close(functionVM.state)
        functionVM = LuaVM(killFlag: killFlag)
        catalog.withLock { $0 = FunctionCatalog() }
    }

    /// `FUNCTION DUMP`'s payload: every library's code as Redis serializes it.
    func dumpFunctions() -> [UInt8] {
        var out: [UInt8] = []
        for library in catalog.withLock({ $0.ordered }) {
            out.append(RDB.opcodeFunction2)
            RDB.appendString(library.code, to: &out)
        }
        RDB.appendFooter(to: &out)
        return out
    }
}
