import ArgumentParser
import Dispatch
import Engine
import HashRing
import Keyspace
import NIOCore
import Logging
import RESP
import ServiceLifecycle
import StrongboxServer
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `strongbox [config-file] [--option value ...]`, with redis-server's option names.
struct StrongboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strongbox",
        abstract: "A Redis-protocol lock and cache server.",
        discussion: """
            Options use redis-server's names and forms, and the optional config file uses redis.conf \
            syntax for the same names (command-line options win). Sizes accept redis's units: \
            1k = 1000, 1kb = 1024, 64mb, 1gb.

            Examples:
              strongbox
              strongbox /etc/strongbox.conf --port 7000
              strongbox --bind 127.0.0.1 -::1 --requirepass s3cret --maxclients 1000
            """,
        version: Engine.strongboxVersion
    )

    @Argument(help: "A config file in redis.conf syntax.")
    var configFile: String?

    @Option(parsing: .unconditional, help: "TCP port to listen on (0 picks a free one).")
    var port: String?

    @Option(parsing: .unconditionalSingleValue, help: ArgumentHelp("Addresses to listen on; a leading '-' makes one optional (default: 127.0.0.1 -::1).", valueName: "address"))
    var bind: [String] = []

    @Option(name: .customLong("protected-mode"), parsing: .unconditional, help: "yes|no: with no password, refuse clients not on loopback (default yes).")
    var protectedMode: String?

    @Option(parsing: .unconditional, help: "Password clients must AUTH with (default: none).")
    var requirepass: String?

    @Option(parsing: .unconditional, help: "Most clients connected at once (default 10000).")
    var maxclients: String?

    @Option(parsing: .unconditional, help: "Close a client idle this many seconds; 0 never (default 0).")
    var timeout: String?

    @Option(name: .customLong("proto-max-bulk-len"), parsing: .unconditional, help: "Largest bulk string accepted (default 512mb).")
    var protoMaxBulkLen: String?

    @Option(name: .customLong("client-query-buffer-limit"), parsing: .unconditional, help: "Most unprocessed request bytes per client (default 1gb).")
    var clientQueryBufferLimit: String?
    @Option(name: .customLong("client-output-buffer-limit"), parsing: .unconditional, help: "'<class> <hard> <soft> <seconds>' as Redis: a normal client past the hard limit, or over the soft limit that long, is closed (default 'normal 0 0 0': none).")
    var clientOutputBufferLimit: String?

    @Option(parsing: .unconditional, help: "debug|verbose|notice|warning|nothing (default notice).")
    var loglevel: String?

    @Option(parsing: .unconditional, help: "Log to this file; empty logs to standard output (default).")
    var logfile: String?

    @Option(parsing: .unconditional, help: "Event-loop threads (default: one per core).")
    var threads: String?

    @Option(parsing: .unconditional, help: "Active expiry rounds per second (default 10).")
    var hz: String?

    @Option(name: .customLong("busy-reply-threshold"), parsing: .unconditional, help: "Milliseconds a script may run before other clients get -BUSY (default 5000).")
    var busyReplyThreshold: String?

    @Option(parsing: .unconditional, help: "Memory limit for the data, with redis's units (100mb, 2gb); 0 means none (default 0).")
    var maxmemory: String?

    @Option(name: .customLong("maxmemory-policy"), parsing: .unconditional, help: "What to do at the limit: noeviction (writes get -OOM), allkeys-lru, allkeys-lfu, allkeys-random, volatile-lru, volatile-lfu, volatile-random, volatile-ttl (default noeviction).")
    var maxmemoryPolicy: String?

    @Option(name: .customLong("maxmemory-samples"), parsing: .unconditional, help: "Keys sampled per eviction (default 5; more is closer to exact LRU/LFU/TTL and slower).")
    var maxmemorySamples: String?

    @Option(name: .customLong("maxmemory-protect-locks"), parsing: .unconditional, help: "yes|no: never evict a lock (a key written by SET NX with a TTL); when only locks are left, writes get -OOM (default yes).")
    var maxmemoryProtectLocks: String?

    @Option(name: .customLong("cluster-peers"), parsing: .unconditional, help: "Every node of the cluster, this one included: host:port[@node-id],… (the same list on every node). Empty: no cluster.")
    var clusterPeers: String?

    @Option(name: .customLong("cluster-mode"), parsing: .unconditional, help: "proxy: a node forwards commands for keys other nodes own and relays the reply, so any client sees one keyspace; redirect: it answers -MOVED slot host:port, as Redis Cluster does (default proxy).")
    var clusterMode: String?

    @Option(name: .customLong("cluster-announce-ip"), parsing: .unconditional, help: "The host this node appears as in --cluster-peers (default: the first --bind address, else 127.0.0.1).")
    var clusterAnnounceIp: String?

    @Option(name: .customLong("cluster-auth"), parsing: .unconditional, help: "Secret the cluster members prove themselves with (AUTH strongbox-peer <secret>); the same on every node (default: requirepass).")
    var clusterAuth: String?

    @Option(name: .customLong("cluster-virtual-nodes"), parsing: .unconditional, help: "Ring points per member (default 256; must match on every node).")
    var clusterVirtualNodes: String?

    func directives() -> [(String, [String])] {
        var list: [(String, [String])] = []
        func add(_ name: String, _ value: String?) { if let value { list.append((name, [value])) } }
        add("port", port)
        if !bind.isEmpty { list.append(("bind", bind)) }
        add("protected-mode", protectedMode)
        add("requirepass", requirepass)
        add("maxclients", maxclients)
        add("timeout", timeout)
        add("proto-max-bulk-len", protoMaxBulkLen)
        add("client-query-buffer-limit", clientQueryBufferLimit)
        add("client-output-buffer-limit", clientOutputBufferLimit)
        add("loglevel", loglevel)
        add("logfile", logfile)
        add("threads", threads)
        add("hz", hz)
        add("busy-reply-threshold", busyReplyThreshold)
        add("maxmemory", maxmemory)
        add("maxmemory-policy", maxmemoryPolicy)
        add("maxmemory-samples", maxmemorySamples)
        add("maxmemory-protect-locks", maxmemoryProtectLocks)
        add("cluster-peers", clusterPeers)
        add("cluster-mode", clusterMode)
        add("cluster-announce-ip", clusterAnnounceIp)
        add("cluster-auth", clusterAuth)
        add("cluster-virtual-nodes", clusterVirtualNodes)
        return list
    }

    func run() async throws {
        let config = ConfigStore()
        do {
            if let configFile {
                for (line, name, args) in try ConfigFile.read(path: configFile) {
                    do {
                        try apply(name, args, to: config)
                    } catch {
                        throw StartupError("\(configFile):\(line): \(error)")
                    }
                }
            }
            for (name, args) in directives() {
                try apply(name, args, to: config)
            }
        }
        let logger = makeLogger(config)
        let threads = config.integer("threads") > 0 ? config.integer("threads") : System.coreCount
        let engine = Engine(keyspace: Keyspace(shardCount: max(16, 8 * threads)), config: config, cluster: try clusterState(config))
        let server = StrongboxServer(engine: engine, threads: config.integer("threads"), configFile: configFile ?? "", logger: logger)
        // From the moment the port accepts, SIGTERM/SIGINT mean a graceful shutdown, even before
        // the service group below installs its own handling (a signal in between would otherwise
        // kill the process with the default action).
        let earlySignals = [SIGTERM, SIGINT].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { server.requestShutdown() }
            source.resume()
            return source
        }
        defer { for s in earlySignals { s.cancel() } }
        do {
            try await server.start()
        } catch {
            throw StartupError("could not listen on \(config.get("bind") ?? "") port \(config.get("port") ?? ""): \(error)")
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: server, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
    }

    /// The cluster this node belongs to, from `cluster-peers` (nil when empty).
    private func clusterState(_ config: ConfigStore) throws -> ClusterState? {
        let peersText = config.get("cluster-peers") ?? ""
        guard !peersText.isEmpty else { return nil }
        do {
            let peers = try ClusterState.parsePeers(peersText)
            var host = config.get("cluster-announce-ip") ?? ""
            if host.isEmpty {
                let firstBind = (config.get("bind") ?? "").split(separator: " ").first.map { String($0.drop { $0 == "-" }) } ?? ""
                host = firstBind.isEmpty || firstBind == "0.0.0.0" || firstBind == "*" ? "127.0.0.1" : firstBind
            }
            let port = config.integer("port")
            let me = peers.first { $0.host == host && $0.port == port } ?? RingMember(host: host, port: port)
            let mode = ClusterState.Mode(rawValue: config.get("cluster-mode") ?? "proxy") ?? .proxy
            return try ClusterState(peers: peers, me: me, mode: mode, virtualNodes: config.integer("cluster-virtual-nodes"))
        } catch {
            throw StartupError("cluster: \(error)")
        }
    }

    private func apply(_ name: String, _ args: [String], to config: ConfigStore) throws {
        guard ConfigStore.parameter(named: name) != nil else {
            throw StartupError("Bad directive or wrong number of arguments: '\(name)'")
        }
        let value = name.lowercased() == "bind" || name.lowercased() == "save" ? args.joined(separator: " ") : (args.count == 1 ? args[0] : "")
        guard name.lowercased() == "bind" || name.lowercased() == "save" || args.count == 1 else {
            throw StartupError("wrong number of arguments for '\(name)'")
        }
        do {
            try config.set(name, value, startup: true)
        } catch {
            throw StartupError("invalid value '\(value)' for '\(error.parameter)': \(error.reason)")
        }
    }

    private func makeLogger(_ config: ConfigStore) -> Logger {
        let level: Logger.Level
        switch config.get("loglevel") ?? "notice" {
        case "debug": level = .debug
        case "verbose": level = .info
        case "warning": level = .warning
        case "nothing": level = .critical
        default: level = .notice
        }
        let path = config.get("logfile") ?? ""
        var logger = Logger(label: "strongbox") { label in
            if !path.isEmpty, let handler = FileLogHandler(path: path) { return handler }
            return StreamLogHandler.standardOutput(label: label)
        }
        logger.logLevel = level
        return logger
    }
}

struct StartupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// redis.conf syntax: one directive a line, `#` comments, arguments split with redis's quoting rules.
enum ConfigFile {
    static func read(path: String) throws -> [(Int, String, [String])] {
        guard let file = fopen(path, "r") else { throw StartupError("can't open config file '\(path)'") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = fread(&buffer, 1, buffer.count, file)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        do {
            return try ConfigStore.parseConfigText(bytes)
        } catch {
            throw StartupError("\(path):\(error.line): unbalanced quotes in configuration line")
        }
    }
}

/// Appends log lines to a file (`logfile`).
struct FileLogHandler: LogHandler {
    private final class Sink: @unchecked Sendable {
        let file: UnsafeMutablePointer<FILE>
        init(file: UnsafeMutablePointer<FILE>) { self.file = file }
    }
    private let sink: Sink
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    init?(path: String) {
        guard let f = fopen(path, "a") else { return nil }
        sink = Sink(file: f)
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        let meta = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let line = "\(getpid()):M \(ts.tv_sec).\(ts.tv_nsec / 1_000_000) \(event.level) \(event.message)\(meta)\n"
        fputs(line, sink.file)
        fflush(sink.file)
    }
}

/// redis-server accepts `--bind a b c`: spread such lists into repeated options for the parser.
func normalizeArguments(_ args: [String]) -> [String] {
    var result: [String] = []
    var i = 0
    while i < args.count {
        let a = args[i]
        if a == "--bind" {
            i += 1
            var values: [String] = []
            while i < args.count && !args[i].hasPrefix("--") {
                values.append(args[i])
                i += 1
            }
            if values.isEmpty { result.append("--bind") }
            for v in values { result += ["--bind", v] }
            continue
        }
        result.append(a)
        i += 1
    }
    return result
}

// Before any other thread exists: glibc fixes the number of arenas when a second thread first allocates.
ProcessAllocator.useSingleArena()
let arguments = normalizeArguments(Array(CommandLine.arguments.dropFirst()))
do {
    let parsed = try StrongboxCommand.parseAsRoot(arguments)
    guard let command = parsed as? StrongboxCommand else {
        var other = parsed
        try other.run()
        exit(0)
    }
    try await command.run()
    exit(0)
} catch {
    let code = StrongboxCommand.exitCode(for: error)
    if code == .success {
        print(StrongboxCommand.fullMessage(for: error))
        exit(0)
    }
    let message = error is StartupError ? "\(error)" : StrongboxCommand.fullMessage(for: error)
    let line = Array("strongbox: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(1)
}
