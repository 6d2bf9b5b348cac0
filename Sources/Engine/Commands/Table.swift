/// The command table: every command Strongbox serves, with Redis 7's arity, flags and key positions.
enum Commands {
    private static let readFast = ["readonly", "fast"]
    private static let writeOOM = ["write", "denyoom"]
    private static let writeOOMFast = ["write", "denyoom", "fast"]
    private static let writeFast = ["write", "fast"]
    private static let connection = ["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"]

    private static func string(_ name: String, _ arity: Int, _ flags: [String], keys: (Int, Int, Int) = (1, 1, 1),
                               _ categories: [String], since: String, _ summary: String, complexity: String = "O(1)",
                               hint: String, _ handler: @escaping CommandHandler) -> CommandSpec {
        CommandSpec(name, arity: arity, flags: flags, keys: keys, categories: categories, group: "string", since: since,
                    summary: summary, complexity: complexity, hint: hint, handler: handler)
    }

    private static func generic(_ name: String, _ arity: Int, _ flags: [String], keys: (Int, Int, Int) = (1, 1, 1),
                                _ categories: [String], since: String, _ summary: String, complexity: String = "O(1)",
                                hint: String, _ handler: @escaping CommandHandler) -> CommandSpec {
        CommandSpec(name, arity: arity, flags: flags, keys: keys, categories: categories, group: "generic", since: since,
                    summary: summary, complexity: complexity, hint: hint, handler: handler)
    }

    private static func sub(_ container: String, _ name: String, _ arity: Int, _ flags: [String], _ categories: [String],
                            group: String, _ summary: String, hint: String = "", _ handler: @escaping CommandHandler) -> CommandSpec {
        CommandSpec("\(container)|\(name)", arity: arity, flags: flags, categories: categories, group: group, since: "2.8.0",
                    summary: summary, hint: hint, handler: handler)
    }

    static let all: [CommandSpec] = strings + locks + keys + expiry + connectionCommands + server + scripting + cluster + transactions

    private static let transactionFlags = ["noscript", "loading", "stale", "fast", "allow_busy"]

    static let transactions: [CommandSpec] = [
        CommandSpec("multi", arity: 1, flags: transactionFlags, categories: ["@fast", "@transaction"], group: "transactions", since: "1.2.0",
                    summary: "Starts a transaction.", handler: TransactionCommands.multi),
        CommandSpec("exec", arity: 1, flags: ["noscript", "loading", "stale", "skip_slowlog"], categories: ["@slow", "@transaction"], group: "transactions",
                    since: "1.2.0", summary: "Executes all commands in a transaction.", complexity: "Depends on commands in the transaction",
                    handler: TransactionCommands.exec),
        CommandSpec("discard", arity: 1, flags: transactionFlags, categories: ["@fast", "@transaction"], group: "transactions", since: "2.0.0",
                    summary: "Discards a transaction.", complexity: "O(N), when N is the number of queued commands",
                    handler: TransactionCommands.discard),
        CommandSpec("watch", arity: -2, flags: transactionFlags, keys: (1, -1, 1), categories: ["@fast", "@transaction"], group: "transactions",
                    since: "2.2.0", summary: "Monitors changes to keys to determine the execution of a transaction.",
                    complexity: "O(1) for every key.", hint: "key [key ...]", handler: TransactionCommands.watch),
        CommandSpec("unwatch", arity: 1, flags: transactionFlags, categories: ["@fast", "@transaction"], group: "transactions", since: "2.2.0",
                    summary: "Forgets about watched keys of a transaction.", handler: TransactionCommands.unwatch),
    ]

    private static let clusterFlags = ["stale"]

    static let cluster: [CommandSpec] = [
        CommandSpec("cluster", arity: -2, flags: [], categories: ["@slow"], group: "cluster", since: "3.0.0",
                    summary: "A container for Redis Cluster commands.", subcommands: [
            sub("cluster", "info", 2, clusterFlags, ["@slow"], group: "cluster", "Returns information about the state of a node.", ClusterCommands.info),
            sub("cluster", "myid", 2, clusterFlags, ["@slow"], group: "cluster", "Returns the ID of a node.", ClusterCommands.myid),
            sub("cluster", "keyslot", 3, clusterFlags, ["@slow"], group: "cluster", "Returns the hash slot for a key.", hint: "key", ClusterCommands.keyslot),
            sub("cluster", "countkeysinslot", 3, clusterFlags, ["@slow"], group: "cluster", "Returns the number of keys in a hash slot.", hint: "slot", ClusterCommands.countkeysinslot),
            sub("cluster", "getkeysinslot", 4, clusterFlags, ["@slow"], group: "cluster", "Returns the key names in a hash slot.", hint: "slot count", ClusterCommands.getkeysinslot),
            sub("cluster", "slots", 2, ["loading", "stale"], ["@slow"], group: "cluster", "Returns the mapping of cluster slots to nodes.", ClusterCommands.slots),
            sub("cluster", "shards", 2, ["loading", "stale"], ["@slow"], group: "cluster", "Returns the mapping of cluster slots to shards.", ClusterCommands.shards),
            sub("cluster", "nodes", 2, ["loading", "stale"], ["@slow"], group: "cluster", "Returns the cluster configuration for a node.", ClusterCommands.nodes),
            sub("cluster", "help", 2, ["loading", "stale"], ["@slow"], group: "cluster", "Returns helpful text about the different subcommands.", ClusterCommands.help),
        ], handler: nil),
        CommandSpec("readonly", arity: 1, flags: ["loading", "stale", "fast"], categories: ["@fast", "@connection"], group: "cluster", since: "3.0.0",
                    summary: "Enables read-only queries for a connection to a Redis Cluster replica node.", handler: ClusterCommands.ok),
        CommandSpec("readwrite", arity: 1, flags: ["loading", "stale", "fast"], categories: ["@fast", "@connection"], group: "cluster", since: "3.0.0",
                    summary: "Enables read-write queries for a connection to a Redis Cluster replica node.", handler: ClusterCommands.ok),
        CommandSpec("asking", arity: 1, flags: ["fast"], categories: ["@fast", "@connection"], group: "cluster", since: "3.0.0",
                    summary: "Signals that a cluster client is following an -ASK redirect.", handler: ClusterCommands.ok),
    ]

    private static let evalFlags = ["noscript", "stale", "skip_monitor", "may_replicate", "no_mandatory_keys", "movablekeys"]
    private static let evalROFlags = ["noscript", "stale", "skip_monitor", "no_mandatory_keys", "readonly", "movablekeys"]

    /// EVAL and its three siblings differ only in how the script is named and whether it may write.
    private static func eval(_ name: String, bySHA: Bool, readOnly: Bool, since: String, _ summary: String) -> CommandSpec {
        CommandSpec(name, arity: -3, flags: readOnly ? evalROFlags : evalFlags, categories: ["@slow", "@scripting"],
                    group: "scripting", since: since, summary: summary, complexity: "Depends on the script that is executed.",
                    hint: (bySHA ? "sha1" : "script") + " numkeys [key ...] [arg ...]") { e, i throws(CommandError) in
            try ScriptCommands.eval(e, &i, bySHA: bySHA, readOnly: readOnly)
        }
    }

    private static let fcallFlags = ["noscript", "stale", "skip_monitor", "may_replicate", "no_mandatory_keys", "movablekeys"]
    private static let fcallROFlags = ["noscript", "stale", "skip_monitor", "no_mandatory_keys", "readonly", "movablekeys"]

    private static func fcall(_ name: String, readOnly: Bool, _ summary: String) -> CommandSpec {
        CommandSpec(name, arity: -3, flags: readOnly ? fcallROFlags : fcallFlags, categories: ["@slow", "@scripting"],
                    group: "scripting", since: "7.0.0", summary: summary, complexity: "Depends on the function that is executed.",
                    hint: "function numkeys [key ...] [arg ...]") { e, i throws(CommandError) in
            try FunctionCommands.fcall(e, &i, readOnly: readOnly)
        }
    }

    static let scripting: [CommandSpec] = [
        eval("eval", bySHA: false, readOnly: false, since: "2.6.0", "Executes a server-side Lua script."),
        eval("evalsha", bySHA: true, readOnly: false, since: "2.6.0", "Executes a server-side Lua script by SHA1 digest."),
        eval("eval_ro", bySHA: false, readOnly: true, since: "7.0.0", "Executes a read-only server-side Lua script."),
        eval("evalsha_ro", bySHA: true, readOnly: true, since: "7.0.0", "Executes a read-only server-side Lua script by SHA1 digest."),
        CommandSpec("script", arity: -2, flags: [], categories: ["@slow"], group: "scripting", since: "2.6.0",
                    summary: "A container for Lua scripts management commands.", subcommands: [
            sub("script", "load", 3, ["noscript", "stale"], ["@slow", "@scripting"], group: "scripting", "Loads a server-side Lua script to the script cache.", hint: "script", ScriptCommands.load),
            sub("script", "exists", -3, ["noscript"], ["@slow", "@scripting"], group: "scripting", "Determines whether server-side Lua scripts exist in the script cache.", hint: "sha1 [sha1 ...]", ScriptCommands.exists),
            sub("script", "flush", -2, ["noscript"], ["@slow", "@scripting"], group: "scripting", "Removes all server-side Lua scripts from the script cache.", hint: "[ASYNC|SYNC]", ScriptCommands.flush),
            sub("script", "kill", 2, ["noscript", "allow_busy"], ["@slow", "@scripting"], group: "scripting", "Terminates a server-side Lua script during execution.", ScriptCommands.kill),
            sub("script", "help", 2, ["loading", "stale"], ["@slow", "@scripting"], group: "scripting", "Returns helpful text about the different subcommands.", ScriptCommands.help),
        ], handler: nil),
        fcall("fcall", readOnly: false, "Invokes a function."),
        fcall("fcall_ro", readOnly: true, "Invokes a read-only function."),
        CommandSpec("function", arity: -2, flags: [], categories: ["@slow"], group: "scripting", since: "7.0.0",
                    summary: "A container for function commands.", subcommands: [
            sub("function", "load", -3, ["write", "denyoom", "noscript"], ["@write", "@slow", "@scripting"], group: "scripting", "Creates a library.", hint: "[REPLACE] function-code", FunctionCommands.load),
            sub("function", "delete", 3, ["write", "noscript"], ["@write", "@slow", "@scripting"], group: "scripting", "Deletes a library and its functions.", hint: "library-name", FunctionCommands.delete),
            sub("function", "flush", -2, ["write", "noscript"], ["@write", "@slow", "@scripting"], group: "scripting", "Deletes all libraries and functions.", hint: "[ASYNC|SYNC]", FunctionCommands.flush),
            sub("function", "kill", 2, ["noscript", "allow_busy"], ["@slow", "@scripting"], group: "scripting", "Terminates a function during execution.", FunctionCommands.kill),
            sub("function", "list", -2, ["noscript"], ["@slow", "@scripting"], group: "scripting", "Returns information about all libraries.", hint: "[LIBRARYNAME library-name-pattern] [WITHCODE]", FunctionCommands.list),
            sub("function", "stats", 2, ["noscript", "allow_busy"], ["@slow", "@scripting"], group: "scripting", "Returns information about a function during execution.", FunctionCommands.stats),
            sub("function", "dump", 2, ["noscript"], ["@slow", "@scripting"], group: "scripting", "Dumps all libraries into a serialized binary payload.", FunctionCommands.dump),
            sub("function", "restore", -3, ["write", "denyoom", "noscript"], ["@write", "@slow", "@scripting"], group: "scripting", "Restores all libraries from a payload.", hint: "serialized-value [FLUSH|APPEND|REPLACE]", FunctionCommands.restore),
            sub("function", "help", 2, ["loading", "stale"], ["@slow", "@scripting"], group: "scripting", "Returns helpful text about the different subcommands.", FunctionCommands.help),
        ], handler: nil),
    ]

    static let locks: [CommandSpec] = [
        string("delex", -2, writeFast, ["@write", "@string", "@fast"], since: "8.4.0",
               "Conditionally removes the specified key based on value or digest comparison.", complexity: "O(1) for IFEQ/IFNE, O(N) for IFDEQ/IFDNE",
               hint: "key [IFEQ ifeq-value|IFNE ifne-value|IFDEQ ifdeq-digest|IFDNE ifdne-digest]", LockCommands.delex),
        string("digest", 2, readFast, ["@read", "@string", "@fast"], since: "8.4.0",
               "Returns the XXH3 hash digest of a string value as a hex string.", complexity: "O(N)", hint: "key", LockCommands.digest),
        string("delifeq", 3, writeFast, ["@write", "@string", "@fast"], since: "9.0.0",
               "Deletes the key if it holds the given value.", hint: "key value", LockCommands.delifeq),
        string("cad", 3, writeFast, ["@write", "@string", "@fast"], since: "0.1.0",
               "Compare and delete: deletes the key if it holds the given value; -1 when missing.", hint: "key value", LockCommands.cad),
        string("cas", -4, writeOOM, ["@write", "@string", "@fast"], since: "0.1.0",
               "Compare and set: replaces the value if it equals the old one; -1 when missing.", hint: "key oldvalue newvalue [EX seconds|PX milliseconds]", LockCommands.cas),
    ]

    static let strings: [CommandSpec] = [
        string("get", 2, readFast, ["@read", "@string", "@fast"], since: "1.0.0", "Returns the string value of a key.", hint: "key", StringCommands.get),
        string("set", -3, writeOOM, ["@write", "@string", "@slow"], since: "1.0.0",
               "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
               hint: "key value [NX|XX|IFEQ ifeq-value|IFNE ifne-value|IFDEQ ifdeq-digest|IFDNE ifdne-digest] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]", StringCommands.set),
        string("setnx", 3, writeOOMFast, ["@write", "@string", "@fast"], since: "1.0.0", "Set the string value of a key only when the key doesn't exist.", hint: "key value", StringCommands.setnx),
        string("setex", 4, writeOOM, ["@write", "@string", "@slow"], since: "2.0.0", "Sets the string value and expiration time of a key.", hint: "key seconds value", StringCommands.setex),
        string("psetex", 4, writeOOM, ["@write", "@string", "@slow"], since: "2.6.0", "Sets both string value and expiration time in milliseconds of a key.", hint: "key milliseconds value", StringCommands.psetex),
        string("getdel", 2, writeFast, ["@write", "@string", "@fast"], since: "6.2.0", "Returns the string value of a key after deleting the key.", hint: "key", StringCommands.getdel),
        string("getex", -2, writeFast, ["@write", "@string", "@fast"], since: "6.2.0", "Returns the string value of a key after setting its expiration time.",
               hint: "key [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|PERSIST]", StringCommands.getex),
        string("getset", 3, writeOOMFast, ["@write", "@string", "@fast"], since: "1.0.0", "Returns the previous string value of a key after setting it to a new value.", hint: "key value", StringCommands.getset),
        string("mget", -2, readFast, keys: (1, -1, 1), ["@read", "@string", "@fast"], since: "1.0.0", "Atomically returns the string values of one or more keys.", complexity: "O(N)", hint: "key [key ...]", StringCommands.mget),
        string("mset", -3, writeOOM, keys: (1, -1, 2), ["@write", "@string", "@slow"], since: "1.0.1", "Atomically creates or modifies the string values of one or more keys.", complexity: "O(N)", hint: "key value [key value ...]", StringCommands.mset),
        string("msetnx", -3, writeOOM, keys: (1, -1, 2), ["@write", "@string", "@slow"], since: "1.0.1", "Atomically modifies the string values of one or more keys only when all keys don't exist.", complexity: "O(N)", hint: "key value [key value ...]", StringCommands.msetnx),
        string("append", 3, writeOOMFast, ["@write", "@string", "@fast"], since: "2.0.0", "Appends a string to the value of a key. Creates the key if it doesn't exist.", hint: "key value", StringCommands.append),
        string("strlen", 2, readFast, ["@read", "@string", "@fast"], since: "2.2.0", "Returns the length of a string value.", hint: "key", StringCommands.strlen),
        string("getrange", 4, ["readonly"], ["@read", "@string", "@slow"], since: "2.4.0", "Returns a substring of the string stored at a key.", complexity: "O(N)", hint: "key start end", StringCommands.getrange),
        string("substr", 4, ["readonly"], ["@read", "@string", "@slow"], since: "1.0.0", "Returns a substring from a string value.", complexity: "O(N)", hint: "key start end", StringCommands.getrange),
        string("setrange", 4, writeOOM, ["@write", "@string", "@slow"], since: "2.2.0", "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", hint: "key offset value", StringCommands.setrange),
        string("incr", 2, writeOOMFast, ["@write", "@string", "@fast"], since: "1.0.0", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", hint: "key", StringCommands.incr),
        string("decr", 2, writeOOMFast, ["@write", "@string", "@fast"], since: "1.0.0", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", hint: "key", StringCommands.decr),
        string("incrby", 3, writeOOMFast, ["@write", "@string", "@fast"], since: "1.0.0", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", hint: "key increment", StringCommands.incrby),
        string("decrby", 3, writeOOMFast, ["@write", "@string", "@fast"], since: "1.0.0", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", hint: "key decrement", StringCommands.decrby),
        string("incrbyfloat", 3, writeOOMFast, ["@write", "@string", "@fast"], since: "2.6.0", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", hint: "key increment", StringCommands.incrbyfloat),
    ]

    static let keys: [CommandSpec] = [
        generic("del", -2, ["write"], keys: (1, -1, 1), ["@keyspace", "@write", "@slow"], since: "1.0.0", "Deletes one or more keys.", complexity: "O(N)", hint: "key [key ...]", KeyCommands.del),
        generic("unlink", -2, writeFast, keys: (1, -1, 1), ["@keyspace", "@write", "@fast"], since: "4.0.0", "Asynchronously deletes one or more keys.", complexity: "O(N)", hint: "key [key ...]", KeyCommands.del),
        generic("exists", -2, readFast, keys: (1, -1, 1), ["@keyspace", "@read", "@fast"], since: "1.0.0", "Determines whether one or more keys exist.", complexity: "O(N)", hint: "key [key ...]", KeyCommands.exists),
        generic("touch", -2, readFast, keys: (1, -1, 1), ["@keyspace", "@read", "@fast"], since: "3.2.1", "Returns the number of existing keys out of those specified after updating the time they were last accessed.", complexity: "O(N)", hint: "key [key ...]", KeyCommands.exists),
        generic("type", 2, readFast, ["@keyspace", "@read", "@fast"], since: "1.0.0", "Determines the type of value stored at a key.", hint: "key", KeyCommands.type),
        generic("rename", 3, ["write"], keys: (1, 2, 1), ["@keyspace", "@write", "@slow"], since: "1.0.0", "Renames a key and overwrites the destination.", hint: "key newkey") { e, i throws(CommandError) in try KeyCommands.rename(e, &i, nx: false) },
        generic("renamenx", 3, writeFast, keys: (1, 2, 1), ["@keyspace", "@write", "@fast"], since: "1.0.0", "Renames a key only when the target key name doesn't exist.", hint: "key newkey") { e, i throws(CommandError) in try KeyCommands.rename(e, &i, nx: true) },
        generic("keys", 2, ["readonly"], keys: (0, 0, 0), ["@keyspace", "@read", "@slow", "@dangerous"], since: "1.0.0", "Returns all key names that match a pattern.", complexity: "O(N)", hint: "pattern", KeyCommands.keys),
        generic("scan", -2, ["readonly"], keys: (0, 0, 0), ["@keyspace", "@read", "@slow"], since: "2.8.0", "Iterates over the key names in the database.", complexity: "O(1) per call, O(N) for a complete iteration", hint: "cursor [MATCH pattern] [COUNT count] [TYPE type]", KeyCommands.scan),
        generic("randomkey", 1, ["readonly"], keys: (0, 0, 0), ["@keyspace", "@read", "@slow"], since: "1.0.0", "Returns a random key name from the database.", hint: "", KeyCommands.randomkey),
        CommandSpec("dbsize", arity: 1, flags: readFast, categories: ["@keyspace", "@read", "@fast"], group: "server", since: "1.0.0", summary: "Returns the number of keys in the database.", handler: KeyCommands.dbsize),
        CommandSpec("flushdb", arity: -1, flags: ["write"], categories: ["@keyspace", "@write", "@slow", "@dangerous"], group: "server", since: "1.0.0", summary: "Remove all keys from the current database.", complexity: "O(N)", hint: "[ASYNC|SYNC]", handler: KeyCommands.flush),
        CommandSpec("flushall", arity: -1, flags: ["write"], categories: ["@keyspace", "@write", "@slow", "@dangerous"], group: "server", since: "1.0.0", summary: "Removes all keys from all databases.", complexity: "O(N)", hint: "[ASYNC|SYNC]", handler: KeyCommands.flush),
        CommandSpec("object", arity: -2, flags: [], categories: ["@slow"], group: "generic", since: "2.2.3",
                    summary: "A container for object introspection commands.", subcommands: [
            objectSub("encoding", "Returns the internal encoding of a Redis object.", ObjectCommands.encoding),
            objectSub("freq", "Returns the logarithmic access frequency counter of a Redis object.", ObjectCommands.freq),
            objectSub("idletime", "Returns the time since the last access to a Redis object.", ObjectCommands.idletime),
            objectSub("refcount", "Returns the reference count of a value of a key.", ObjectCommands.refcount),
            sub("object", "help", 2, ["loading", "stale"], ["@keyspace", "@slow"], group: "generic", "Returns helpful text about the different subcommands.", ObjectCommands.help),
        ], handler: nil),
    ]

    private static func objectSub(_ name: String, _ summary: String, _ handler: @escaping CommandHandler) -> CommandSpec {
        CommandSpec("object|\(name)", arity: 3, flags: ["readonly"], keys: (2, 2, 1), categories: ["@keyspace", "@read", "@slow"],
                    group: "generic", since: name == "freq" ? "4.0.0" : "2.2.3", summary: summary, hint: "key", handler: handler)
    }

    static let expiry: [CommandSpec] = [
        generic("expire", -3, writeFast, ["@keyspace", "@write", "@fast"], since: "1.0.0", "Sets the expiration time of a key in seconds.", hint: "key seconds [NX|XX|GT|LT] [IFEQ value]") { e, i throws(CommandError) in
            try ExpiryCommands.expire(e, &i, seconds: true, absolute: false, name: "expire") },
        generic("pexpire", -3, writeFast, ["@keyspace", "@write", "@fast"], since: "2.6.0", "Sets the expiration time of a key in milliseconds.", hint: "key milliseconds [NX|XX|GT|LT] [IFEQ value]") { e, i throws(CommandError) in
            try ExpiryCommands.expire(e, &i, seconds: false, absolute: false, name: "pexpire") },
        generic("expireat", -3, writeFast, ["@keyspace", "@write", "@fast"], since: "1.2.0", "Sets the expiration time of a key to a Unix timestamp.", hint: "key unix-time-seconds [NX|XX|GT|LT]") { e, i throws(CommandError) in
            try ExpiryCommands.expire(e, &i, seconds: true, absolute: true, name: "expireat") },
        generic("pexpireat", -3, writeFast, ["@keyspace", "@write", "@fast"], since: "2.6.0", "Sets the expiration time of a key to a Unix milliseconds timestamp.", hint: "key unix-time-milliseconds [NX|XX|GT|LT]") { e, i throws(CommandError) in
            try ExpiryCommands.expire(e, &i, seconds: false, absolute: true, name: "pexpireat") },
        generic("ttl", 2, readFast, ["@keyspace", "@read", "@fast"], since: "1.0.0", "Returns the expiration time in seconds of a key.", hint: "key") { e, i throws(CommandError) in
            try ExpiryCommands.ttl(e, &i, milliseconds: false, absolute: false) },
        generic("pttl", 2, readFast, ["@keyspace", "@read", "@fast"], since: "2.6.0", "Returns the expiration time in milliseconds of a key.", hint: "key") { e, i throws(CommandError) in
            try ExpiryCommands.ttl(e, &i, milliseconds: true, absolute: false) },
        generic("expiretime", 2, readFast, ["@keyspace", "@read", "@fast"], since: "7.0.0", "Returns the expiration time of a key as a Unix timestamp.", hint: "key") { e, i throws(CommandError) in
            try ExpiryCommands.ttl(e, &i, milliseconds: false, absolute: true) },
        generic("pexpiretime", 2, readFast, ["@keyspace", "@read", "@fast"], since: "7.0.0", "Returns the expiration time of a key as a Unix milliseconds timestamp.", hint: "key") { e, i throws(CommandError) in
            try ExpiryCommands.ttl(e, &i, milliseconds: true, absolute: true) },
        generic("persist", 2, writeFast, ["@keyspace", "@write", "@fast"], since: "2.2.0", "Removes the expiration time of a key.", hint: "key", ExpiryCommands.persist),
    ]

    static let connectionCommands: [CommandSpec] = [
        CommandSpec("ping", arity: -1, flags: ["fast"], categories: ["@fast", "@connection"], group: "connection", since: "1.0.0", summary: "Returns the server's liveliness response.", hint: "[message]", handler: ConnectionCommands.ping),
        CommandSpec("echo", arity: 2, flags: ["fast"], categories: ["@fast", "@connection"], group: "connection", since: "1.0.0", summary: "Returns the given string.", hint: "message", handler: ConnectionCommands.echo),
        CommandSpec("hello", arity: -1, flags: connection, categories: ["@fast", "@connection"], group: "connection", since: "6.0.0", summary: "Handshakes with the Redis server.", hint: "[protover [AUTH username password] [SETNAME clientname]]", handler: ConnectionCommands.hello),
        CommandSpec("auth", arity: -2, flags: connection, categories: ["@fast", "@connection"], group: "connection", since: "1.0.0", summary: "Authenticates the connection.", hint: "[username] password", handler: ConnectionCommands.auth),
        CommandSpec("select", arity: 2, flags: ["loading", "stale", "fast"], categories: ["@keyspace", "@fast", "@connection"], group: "connection", since: "1.0.0", summary: "Changes the selected database.", hint: "index", handler: ConnectionCommands.select),
        CommandSpec("quit", arity: -1, flags: connection, categories: ["@fast", "@connection"], group: "connection", since: "1.0.0", summary: "Closes the connection.", handler: ConnectionCommands.quit),
        CommandSpec("reset", arity: 1, flags: connection, categories: ["@fast", "@connection"], group: "connection", since: "6.2.0", summary: "Resets the connection.", handler: ConnectionCommands.reset),
        CommandSpec("client", arity: -2, flags: [], categories: ["@slow"], group: "connection", since: "2.4.0", summary: "A container for client connection commands.", subcommands: [
            sub("client", "id", 2, ["noscript", "loading", "stale"], ["@slow", "@connection"], group: "connection", "Returns the unique client ID of the connection.", ConnectionCommands.clientID),
            sub("client", "setname", 3, ["noscript", "loading", "stale"], ["@slow", "@connection"], group: "connection", "Sets the connection name.", hint: "connection-name", ConnectionCommands.clientSetName),
            sub("client", "getname", 2, ["noscript", "loading", "stale"], ["@slow", "@connection"], group: "connection", "Returns the name of the connection.", ConnectionCommands.clientGetName),
            sub("client", "setinfo", 4, ["noscript", "loading", "stale"], ["@slow", "@connection"], group: "connection", "Sets information specific to the client or connection.", hint: "LIB-NAME libname|LIB-VER libver", ConnectionCommands.clientSetInfo),
            sub("client", "info", 2, ["noscript", "loading", "stale"], ["@slow", "@connection"], group: "connection", "Returns information about the connection.", ConnectionCommands.clientInfo),
            sub("client", "list", -2, ["admin", "noscript", "loading", "stale"], ["@admin", "@slow", "@dangerous", "@connection"], group: "connection", "Lists open connections.", hint: "[TYPE NORMAL] [ID client-id ...]", ConnectionCommands.clientList),
            sub("client", "kill", -3, ["admin", "noscript", "loading", "stale"], ["@admin", "@slow", "@dangerous", "@connection"], group: "connection", "Terminates open connections.", hint: "ip:port|ID client-id|ADDR ip:port|LADDR ip:port|SKIPME yes/no", ConnectionCommands.clientKill),
            sub("client", "no-evict", 3, ["admin", "noscript", "loading", "stale"], ["@admin", "@slow", "@dangerous", "@connection"], group: "connection", "Sets the client eviction mode of the connection.", hint: "ON|OFF", ConnectionCommands.clientNoEvict),
            sub("client", "help", 2, ["loading", "stale"], ["@slow", "@connection"], group: "connection", "Returns helpful text about the different subcommands.", ConnectionCommands.clientHelp),
        ], handler: nil),
    ]

    static let server: [CommandSpec] = [
        CommandSpec("info", arity: -1, flags: ["loading", "stale"], categories: ["@slow", "@dangerous"], group: "server", since: "1.0.0", summary: "Returns information and statistics about the server.", complexity: "O(1)", hint: "[section [section ...]]", handler: ServerCommands.info),
        CommandSpec("time", arity: 1, flags: ["loading", "stale", "fast"], categories: ["@fast"], group: "server", since: "2.6.0", summary: "Returns the server time.", handler: ServerCommands.time),
        CommandSpec("shutdown", arity: -1, flags: ["admin", "noscript", "loading", "stale", "no_multi", "allow_busy"], categories: ["@admin", "@slow", "@dangerous"], group: "server", since: "1.0.0", summary: "Synchronously saves the database(s) to disk and shuts down the Redis server.", hint: "[NOSAVE|SAVE] [NOW] [FORCE] [ABORT]", handler: ServerCommands.shutdown),
        CommandSpec("memory", arity: -2, flags: [], categories: ["@slow"], group: "server", since: "4.0.0", summary: "A container for memory diagnostics commands.", subcommands: [
            CommandSpec("memory|usage", arity: -3, flags: ["readonly"], keys: (2, 2, 1), categories: ["@read", "@slow"], group: "server", since: "4.0.0",
                        summary: "Estimates the memory usage of a key.", complexity: "O(1)", hint: "key [SAMPLES count]", handler: ServerCommands.memoryUsage),
            sub("memory", "purge", 2, [], ["@slow"], group: "server", "Asks the allocator to release memory.", ServerCommands.memoryPurge),
            sub("memory", "help", 2, ["loading", "stale"], ["@slow"], group: "server", "Returns helpful text about the different subcommands.", ServerCommands.memoryHelp),
        ], handler: nil),
        CommandSpec("config", arity: -2, flags: [], categories: ["@slow"], group: "server", since: "2.0.0", summary: "A container for server configuration commands.", subcommands: [
            sub("config", "get", -3, ["admin", "noscript", "loading", "stale"], ["@admin", "@slow", "@dangerous"], group: "server", "Returns the effective values of configuration parameters.", hint: "parameter [parameter ...]", ServerCommands.configGet),
            sub("config", "set", -4, ["admin", "noscript", "loading", "stale"], ["@admin", "@slow", "@dangerous"], group: "server", "Sets configuration parameters in-flight.", hint: "parameter value [parameter value ...]", ServerCommands.configSet),
            sub("config", "resetstat", 2, ["admin", "noscript", "loading", "stale"], ["@admin", "@slow", "@dangerous"], group: "server", "Resets the server's statistics.", ServerCommands.configResetStat),
            sub("config", "help", 2, ["loading", "stale"], ["@slow"], group: "server", "Returns helpful text about the different subcommands.", ServerCommands.configHelp),
        ], handler: nil),
        CommandSpec("command", arity: -1, flags: ["loading", "stale"], categories: ["@slow", "@connection"], group: "server", since: "2.8.13", summary: "Returns detailed information about all commands.", complexity: "O(N)", subcommands: [
            sub("command", "count", 2, ["loading", "stale"], ["@slow", "@connection"], group: "server", "Returns a count of commands.", ServerCommands.commandCount),
            sub("command", "list", -2, ["loading", "stale"], ["@slow", "@connection"], group: "server", "Returns a list of command names.", ServerCommands.commandList),
            sub("command", "info", -2, ["loading", "stale"], ["@slow", "@connection"], group: "server", "Returns information about one, multiple or all commands.", hint: "[command-name ...]", ServerCommands.commandInfo),
            sub("command", "docs", -2, ["loading", "stale"], ["@slow", "@connection"], group: "server", "Returns documentary information about one, multiple or all commands.", hint: "[command-name ...]", ServerCommands.commandDocs),
            sub("command", "getkeys", -4, ["loading", "stale"], ["@slow", "@connection"], group: "server", "Extracts the key names from an arbitrary command.", hint: "command [arg ...]", ServerCommands.commandGetKeys),
            sub("command", "help", 2, ["loading", "stale"], ["@slow", "@connection"], group: "server", "Returns helpful text about the different subcommands.", ServerCommands.commandHelp),
        ], handler: ServerCommands.command),
    ]
}
