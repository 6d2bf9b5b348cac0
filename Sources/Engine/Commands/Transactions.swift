import HashRing
import Keyspace
import NIOCore
import RESP

/// A connection's open `MULTI`: the commands queued so far (owned copies of their arguments).
public struct Transaction: Sendable {
    public var commands: [[ByteBuffer]] = []
    /// A command was refused while queuing (unknown, arity, `-OOM`, not allowed): `EXEC` aborts.
    public var failed = false
    /// A queued command runs Lua: `EXEC` then runs off the event loop, on the script queue.
    public var runsScripts = false
    /// A queued command is `denyoom`: `EXEC` is refused while memory cannot be made.
    public var deniesOOM = false
    /// Redirect-mode cluster: the slot of the first key queued, and whether a later one differs
    /// (`EXEC` then answers `-CROSSSLOT`, as Redis Cluster).
    var slot = -1
    var crossSlot = false

    public init() {}
}

/// A connection's `WATCH`: the keys watched (owned copies) and the token their writes mark.
public struct Watching: Sendable {
    public let token = WatchToken()
    public var keys: Set<ByteBuffer> = []
}

/// MULTI, EXEC, DISCARD, WATCH, UNWATCH: Redis 7.0's transactions.
///
/// `EXEC` runs the queued commands holding every shard (as a script does), so no other client
/// and no script sees part of a transaction, whichever shards its keys live in. A transaction
/// that queues `EVAL`/`FCALL` runs on the script queue, so no event loop waits on Lua.
enum TransactionCommands {
    static let execAbort = CommandError("EXECABORT Transaction discarded because of previous errors.")

    static func multi(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        guard inv.transaction == nil else { throw CommandError("ERR MULTI calls can not be nested") }
        inv.transaction = Transaction()
        inv.out.writeRESPOK()
    }

    static func discard(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        guard inv.transaction != nil else { throw CommandError("ERR DISCARD without MULTI") }
        engine.endTransaction(&inv)
        inv.out.writeRESPOK()
    }

    static func watch(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        guard inv.transaction == nil else { throw CommandError("ERR WATCH inside MULTI is not allowed") }
        if inv.watching == nil { inv.watching = Watching() }
        let token = inv.watching!.token
        let now = inv.now
        for i in 1..<inv.argc {
            let name = inv.args[i]
            if inv.watching!.keys.contains(name) { continue }
            // An owned copy: the registry outlives the request buffer.
            let owned = ByteBuffer(bytes: name.readableBytesView)
            let key = Key(owned)
            engine.keyspace.withShard(for: key) { $0.watch(key, token: token, now: now) }
            inv.watching!.keys.insert(owned)
        }
        inv.out.writeRESPOK()
    }

    static func unwatch(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        engine.unwatchAll(&inv)
        inv.out.writeRESPOK()
    }

    static func exec(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        guard let transaction = inv.transaction else { throw CommandError("ERR EXEC without MULTI") }
        if transaction.failed || transaction.crossSlot {
            engine.endTransaction(&inv)
            throw transaction.failed ? execAbort : .crossSlot
        }
        if transaction.deniesOOM && !engine.makeRoom() {
            engine.abortExec(&inv, CommandError.outOfMemory.message)
            return
        }
        if transaction.runsScripts && inv.mayDeferScripts {
            // Run again on the script queue (the connection hands over the transaction).
            inv.deferredScript = true
            return
        }
        inv.transaction = nil
        // As Redis, the client is still in MULTI while its commands run (CLIENT LIST: `flags=x`).
        inv.session.queuedCommands = transaction.commands.count
        defer { inv.session.queuedCommands = -1 }
        let execArgs = inv.args
        let now = inv.now
        inv.runningTransaction = true
        defer {
            inv.runningTransaction = false
            inv.args = execArgs
            inv.session.lastCommand = "exec"
        }
        if transaction.runsScripts {
            // Busy for the whole transaction: other clients wait (and get -BUSY past the
            // threshold) between its scripts too, instead of blocking on the shard locks.
            engine.scripts.transactionRunning(since: max(1, engine.keyspace.clock.now()))
        }
        defer { if transaction.runsScripts { engine.scripts.transactionRunning(since: 0) } }
        try engine.keyspace.withExclusiveAccess { () throws(CommandError) in
            if let watching = inv.watching {
                // A watched key past its deadline is removed here, which marks the token.
                for name in watching.keys {
                    let key = Key(name)
                    engine.keyspace.withShard(for: key) { _ = $0.peek(key, now: now) }
                }
                let dirty = watching.token.isDirty
                engine.unwatchAll(&inv)
                if dirty {
                    inv.out.writeRESPNullArray(version: inv.version)
                    return
                }
            }
            inv.out.writeRESPArrayHeader(transaction.commands.count)
            let mayDefer = inv.mayDeferScripts
            inv.mayDeferScripts = false
            defer { inv.mayDeferScripts = mayDefer }
            for command in transaction.commands {
                inv.args = command
                engine.execute(&inv, fromScript: true)
                if inv.outputLimitExceeded { break }
                try inv.checkReplySize()
            }
        }
    }
}

extension Engine {
    /// Leaves `MULTI` (if in it) and drops the `WATCH` registrations (DISCARD, EXECABORT, RESET).
    func endTransaction(_ inv: inout Invocation) {
        inv.transaction = nil
        unwatchAll(&inv)
    }

    /// Drops the connection's `WATCH` registrations (EXEC, DISCARD, UNWATCH, RESET, disconnect).
    public func unwatchAll(_ inv: inout Invocation) {
        guard let watching = inv.watching else { return }
        inv.watching = nil
        unregister(watching)
    }

    /// Removes `watching`'s registrations from the keyspace.
    public func unregister(_ watching: Watching) {
        for name in watching.keys {
            let key = Key(name)
            keyspace.withShard(for: key) { $0.unwatch(key, token: watching.token) }
        }
    }

    /// Queues the command of `invocation` in its open transaction (`+QUEUED`), or refuses it as
    /// Redis does, marking the transaction failed.
    func queue(_ spec: CommandSpec, _ invocation: inout Invocation) {
        if spec.flags.contains("no_multi") {
            reject(&invocation, "ERR Command not allowed inside a transaction")
            return
        }
        // As Redis: over maxmemory, nothing more is queued (queuing itself takes memory).
        if !makeRoom() {
            reject(&invocation, CommandError.outOfMemory.message)
            return
        }
        if let cluster, !invocation.session.isPeer, let refusal = transactionRefusal(cluster, spec, &invocation) {
            reject(&invocation, refusal)
            return
        }
        var owned: [ByteBuffer] = []
        owned.reserveCapacity(invocation.args.count)
        for a in invocation.args { owned.append(ByteBuffer(bytes: a.readableBytesView)) }
        invocation.transaction!.commands.append(owned)
        // Lua runs for EVAL/FCALL, and for FUNCTION LOAD/RESTORE (the library's code at load):
        // off the event loop, then.
        if case .scriptKeys = spec.clusterRole { invocation.transaction!.runsScripts = true }
        if spec.name == "function|load" || spec.name == "function|restore" { invocation.transaction!.runsScripts = true }
        if spec.denyOOM { invocation.transaction!.deniesOOM = true }
        invocation.out.writeRESPSimpleString("QUEUED" as StaticString)
    }

    /// An `EXEC` refused before it runs (arity, auth): as Redis, the transaction (if any) is
    /// discarded and the reply says why, with or without an open `MULTI`.
    func abortExec(_ invocation: inout Invocation, _ reason: String) {
        endTransaction(&invocation)
        invocation.out.writeRESPError("EXECABORT Transaction discarded because of: \(reason)")
    }

    /// Writes a refusal; inside `MULTI` it also dooms the transaction (`EXEC` answers `-EXECABORT`).
    func reject(_ invocation: inout Invocation, _ message: String) {
        invocation.out.writeRESPError(message)
        if invocation.transaction != nil { invocation.transaction!.failed = true }
    }

    /// In a cluster, a transaction runs on the node that owns its keys, as Redis Cluster: each
    /// queued command's keys must be this node's (redirect mode: `-MOVED`, and `EXEC` answers
    /// `-CROSSSLOT` when the commands' slots differ; proxy mode: `-CROSSSLOT` at once).
    /// - Returns: the error to refuse the command with, or nil.
    private func transactionRefusal(_ cluster: ClusterState, _ spec: CommandSpec, _ invocation: inout Invocation) -> String? {
        switch spec.clusterRole {
        case .everywhere, .scan:
            return cluster.mode == .proxy ? CommandError.crossSlot.message : nil
        default:
            break
        }
        var refusal: String?
        var commandSlot = -1
        var slot = invocation.transaction!.slot
        var crossSlot = invocation.transaction!.crossSlot
        Self.forEachKeyPosition(spec, invocation.args) { p in
            guard refusal == nil else { return }
            let s = invocation.args[p].withUnsafeReadableBytes { HashSlot.slot(forKeyBytes: $0) }
            let o = cluster.ownerIndex(ofSlot: s)
            if commandSlot >= 0 && s != commandSlot && cluster.mode == .redirect {
                refusal = CommandError.crossSlot.message
                return
            }
            commandSlot = s
            if o != cluster.myIndex {
                let m = cluster.ring.members[o]
                refusal = cluster.mode == .redirect ? "MOVED \(s) \(m.host):\(m.port)" : CommandError.crossSlot.message
                return
            }
            if slot < 0 { slot = s } else if s != slot { crossSlot = true }
        }
        if refusal == nil {
            invocation.transaction!.slot = slot
            // Proxy mode: every key is this node's, whatever its slot.
            invocation.transaction!.crossSlot = crossSlot && cluster.mode == .redirect
        }
        return refusal
    }
}
