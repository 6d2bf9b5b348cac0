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

/// What the engine needs from the server around it: the connection registry and the process.
/// Implemented by `StrongboxServer`; absent in engine-only tests.
public protocol EngineHost: AnyObject, Sendable {
    /// A snapshot of every connected client's session, in id order.
    func clientSessions() -> [Session]
    /// Closes the clients that `filter` selects. - Returns: how many.
    func killClients(_ filter: ClientKillFilter, requester: UInt64) -> Int
    /// Begins a graceful shutdown of the server.
    func requestShutdown()
    /// `INFO server` and `INFO clients` facts the engine does not own.
    func serverInfo() -> ServerInfo
    /// Zeroes the server's own counters (`CONFIG RESETSTAT`).
    func resetStats()
}

/// Which clients `CLIENT KILL` closes.
///
/// Every criterion given must hold (a filter with none matches every client but, with `SKIPME
/// yes`, the caller): Redis 7's `ID`, `TYPE`, `USER`, `ADDR`, `LADDR`, `SKIPME`, and `MAXAGE`.
public struct ClientKillFilter: Sendable {
    public var id: UInt64?
    public var address: String?
    public var localAddress: String?
    public var skipMe = true
    /// `TYPE master|replica|pubsub`: no client here is one (nor, for now, a subscriber).
    public var matchesNoClient = false
    /// `MAXAGE s`: clients connected at least this many seconds.
    public var maxAgeSeconds: Int64?
    /// The keyspace clock when the filter was made (for `MAXAGE`).
    public var now: Int64 = 0
    public init() {}

    /// Whether `session` is one to close. `requester` is the id of the client asking.
    public func matches(_ session: Session, requester: UInt64) -> Bool {
        if matchesNoClient { return false }
        if skipMe && session.id == requester { return false }
        if let id, id != session.id { return false }
        if let address, address != session.address { return false }
        if let localAddress, localAddress != session.localAddress { return false }
        // As Redis 7.4: clients older than the given age (strictly).
        if let maxAgeSeconds, (now - session.createdAt) / 1000 <= maxAgeSeconds { return false }
        return true
    }
}

/// Facts of the running server that `INFO` reports.
public struct ServerInfo: Sendable {
    public var tcpPort = 0
    public var processID = 0
    public var uptimeSeconds: Int64 = 0
    public var connectedClients = 0
    public var maxClients = 0
    public var totalConnections = 0
    public var rejectedConnections = 0
    public var commandsProcessed = 0
    public var threads = 1
    public var executable = ""
    public var configFile = ""
    public init() {}
}

/// Counters the engine keeps for `INFO stats`.
public final class EngineStats: Sendable {
    public let protocolErrors = Atomic<Int>(0)
    /// Lock-library scripts answered by native code instead of Lua (`INFO stats`).
    public let nativeScriptCalls = Atomic<Int>(0)
    public init() {}
}

/// Runs commands against a keyspace: the command table, argument checks, and every command.
///
/// `execute` is synchronous and runs on the connection's event loop; the keyspace locks it takes
/// are held only for the in-memory work.
public final class Engine: Sendable {
    public static let redisVersion = "7.0.15"
    /// `redis.REDIS_VERSION_NUM`: major << 16 | minor << 8 | patch.
    public static let redisVersionNumber = 7 << 16 | 0 << 8 | 15
    public static let strongboxVersion = "0.1.0"

    public let keyspace: Keyspace
    public let config: ConfigStore
    public let stats = EngineStats()
    public let table: CommandTable
    private let hostBox = Mutex<(any EngineHost)?>(nil)
    /// Lua scripting (`EVAL`, `SCRIPT`).
    public let scripts = ScriptEngine()
    /// Where `redis.log` lines go: (level 0…3, message).
    public let scriptLog: @Sendable (Int, String) -> Void
    /// Set when this node is one of a cluster (`--cluster-peers`).
    public let cluster: ClusterState?

    public init(keyspace: Keyspace = Keyspace(), config: ConfigStore = ConfigStore(), cluster: ClusterState? = nil,
                scriptLog: @escaping @Sendable (Int, String) -> Void = { _, _ in }) {
        self.cluster = cluster
        self.keyspace = keyspace
        self.config = config
        self.scriptLog = scriptLog
        self.table = CommandTable(Commands.all)
        keyspace.trackFrequency(config.evictionPolicy.usesLFU)
        config.observe { [keyspace] name, value in
            if name == "maxmemory-policy" { keyspace.trackFrequency(EvictionPolicy(name: value)?.usesLFU ?? false) }
        }
    }

    /// Under `maxmemory`, evicts by the configured policy until the keyspace fits, spending at
    /// most `budgetMilliseconds` (a command: 1; the background task: more).
    /// - Returns: false when it cannot fit (`noeviction`, or nothing the policy may take).
    @inline(__always)
    public func makeRoom(budgetMilliseconds: Int64 = 1) -> Bool {
        let limit = config.maxMemory.load(ordering: .relaxed)
        guard limit > 0 else { return true }
        // used_memory = keyspace bytes + the process baseline; shards report their share in
        // steps, so leave room for the steps not yet reported.
        let slack = ServerCommands.baselineBytes + keyspace.reportingSlack
        // A limit below what the process needs with no data at all (used_memory with an empty
        // keyspace) can never be met: as Redis, writes get -OOM once evicting cannot help.
        if limit <= ServerCommands.baselineBytes {
            _ = keyspace.evict(toFit: 0, policy: config.evictionPolicy, samples: config.maxMemorySamples.load(ordering: .relaxed),
                               protectLocks: config.protectLocks.load(ordering: .relaxed), budgetMilliseconds: budgetMilliseconds)
            return false
        }
        return keyspace.evict(toFit: max(0, limit - slack), policy: config.evictionPolicy,
                              samples: config.maxMemorySamples.load(ordering: .relaxed),
                              protectLocks: config.protectLocks.load(ordering: .relaxed),
                              budgetMilliseconds: budgetMilliseconds) != .impossible
    }

    /// Connects the engine to the server that hosts it (for `CLIENT`, `INFO`, `SHUTDOWN`).
    public func attach(host: any EngineHost) {
        hostBox.withLock { $0 = host }
    }

    public var host: (any EngineHost)? { hostBox.withLock { $0 } }

    /// Runs the command in `invocation.args` and appends its reply to `invocation.out`.
    ///
    /// The unknown-command, arity and auth checks happen here, once, before any command code.
    public func execute(_ invocation: inout Invocation, fromScript: Bool = false) {
        guard let name = invocation.args.first else { return }
        guard var spec: CommandSpec = table.lookup(name) else {
            reject(&invocation, Self.unknownCommandMessage(invocation.args))
            return
        }
        if !spec.subcommands.isEmpty, invocation.args.count >= 2 {
            guard let sub = spec.subcommand(named: invocation.args[1]) else {
                let container = String(decoding: name.readableBytesView, as: UTF8.self).uppercased()
                let arg = String(decoding: invocation.args[1].readableBytesView.prefix(128), as: UTF8.self)
                reject(&invocation, "ERR unknown subcommand '\(arg)'. Try \(container) HELP.")
                return
            }
            spec = sub
        }
        guard spec.acceptsArgumentCount(invocation.args.count) else {
            if spec.name == "exec" {
                abortExec(&invocation, "wrong number of arguments for 'exec' command")
            } else {
                reject(&invocation, CommandError.arity(spec.name).message)
            }
            return
        }
        if !invocation.session.authenticated && !spec.allowedWithoutAuth {
            if spec.name == "exec" {
                abortExec(&invocation, CommandError.noAuth.message)
            } else {
                reject(&invocation, CommandError.noAuth.message)
            }
            return
        }
        // While a script holds the keyspace, a command waits (allow_busy ones answer at once,
        // unless they must lock shards for WATCH registrations).
        if !fromScript && scripts.busySince != 0
            && (!spec.flags.contains("allow_busy") || (spec.touchesWatches && (invocation.watching != nil || spec.name == "watch"))) {
            guard waitForScript(&invocation) else {
                if !invocation.waitingOnScript {
                    if spec.name == "exec" { abortExec(&invocation, scripts.busyMessage) } else { reject(&invocation, scripts.busyMessage) }
                }
                return
            }
        }
        if invocation.transaction != nil && !fromScript && !spec.runsInsideMulti {
            queue(spec, &invocation)
            return
        }
        if let cluster, !fromScript {
            if invocation.session.isPeer {
                // A member forwards only keys it believes are ours; never store one that is not.
                if let refusal = refusalForPeer(cluster, spec, invocation.args) {
                    invocation.out.writeRESPError(refusal)
                    return
                }
            } else if routed(cluster, spec, &invocation) {
                return
            }
        }
        invocation.session.lastCommand = spec.name
        invocation.session.commandsSinceFlush &+= 1
        // Scripts and transactions run on one frozen "now" (set by their caller), as Redis 7.
        if !fromScript { invocation.now = keyspace.clock.now() }
        guard let handler = spec.handler else { return }
        // Inside EXEC the memory check was made for the whole transaction, as Redis does.
        if spec.makesRoomFirst && !invocation.runningTransaction && !makeRoom() && spec.denyOOM {
            invocation.out.writeRESPError(CommandError.outOfMemory.message)
            return
        }
        let replyStart = invocation.out.writerIndex
        do {
            try handler(self, &invocation)
        } catch {
            if invocation.replyTooLarge {
                // Never half a reply: what was written of it goes.
                invocation.replyTooLarge = false
                invocation.out.moveWriterIndex(to: replyStart)
            }
            invocation.out.writeRESPError(error.message)
        }
    }

    /// While another client's script runs, a command waits (as in Redis, nothing else runs).
    /// A connection's command is parked (`waitingOnScript`) and its event loop goes on, able to
    /// answer `-BUSY` and take `SCRIPT KILL` once the script passes `busy-reply-threshold`; a
    /// caller that cannot park (a cluster split's local part) gets `-BUSY` at once.
    /// - Returns: true when the command may run now; false when it parked or must get `-BUSY`.
    private func waitForScript(_ invocation: inout Invocation) -> Bool {
        let since = scripts.busySince
        if since == 0 { return true }
        let threshold = config.busyReplyThreshold.load(ordering: .relaxed)
        let elapsed = keyspace.clock.now() - since
        if elapsed >= threshold { return false }
        if invocation.mayDeferScripts {
            invocation.waitingOnScript = true
            return false
        }
        // A caller that cannot park (a cluster split's local part) answers -BUSY rather than
        // block its event loop for as long as the script runs.
        return false
    }

    /// Milliseconds until the running script passes `busy-reply-threshold` (0: none runs or it has).
    public func millisecondsUntilBusy() -> Int64 {
        let since = scripts.busySince
        guard since != 0 else { return 0 }
        return max(0, config.busyReplyThreshold.load(ordering: .relaxed) - (keyspace.clock.now() - since))
    }

    @inline(__always)
    static func lower(_ c: UInt8) -> UInt8 { (c >= 65 && c <= 90) ? c | 0x20 : c }

    /// `ERR unknown command 'x', with args beginning with: 'a' 'b' ` exactly as Redis 7 builds it.
    static func unknownCommandMessage(_ args: [ByteBuffer]) -> String {
        var list = ""
        var i = 1
        while i < args.count && list.utf8.count < 128 {
            let room = 128 - list.utf8.count
            let arg = String(decoding: args[i].readableBytesView.prefix(room), as: UTF8.self)
            list += "'\(arg)' "
            i += 1
        }
        let name = String(decoding: args[0].readableBytesView.prefix(128), as: UTF8.self)
        return "ERR unknown command '\(name)', with args beginning with: \(list)"
    }
}
