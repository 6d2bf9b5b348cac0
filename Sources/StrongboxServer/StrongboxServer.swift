import Engine
import Keyspace
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The network server: binds the configured addresses, accepts clients and runs their commands
/// on the engine. It is a `Service`: `run()` serves until graceful shutdown is requested, then
/// stops accepting, lets every connection flush what it has, and returns.
public final class StrongboxServer: Service, EngineHost, Sendable {
    public let engine: Engine
    private let group: MultiThreadedEventLoopGroup
    /// Accepts connections on a loop of its own, so a long script never stops new clients
    /// (one of whom may want to send `SCRIPT KILL`) from getting in.
    private let acceptGroup: MultiThreadedEventLoopGroup
    private let ownsGroup: Bool
    private let logger: Logger
    private let registry: ClientRegistry
    private let channels = Mutex<[any Channel]>([])
    /// Where graceful shutdown stands: `run()` waiting for it, or it requested (maybe before
    /// `run()` got to wait).
    private enum ShutdownState {
        case running
        case waiting(CheckedContinuation<Void, Never>)
        case requested
    }
    private let shutdown = Mutex(ShutdownState.running)
    private let started: Int64
    public let threads: Int
    public let configFile: String
    /// Links to the other cluster members (forwarding, health checks); nil outside a cluster.
    private let peers: PeerLinks?

    /// - Parameters:
    ///   - engine: the engine (and its configuration) to serve.
    ///   - threads: event loops; 0 means one per core.
    public init(engine: Engine, threads: Int = 0, configFile: String = "", logger: Logger = Logger(label: "strongbox")) {
        self.engine = engine
        self.threads = threads > 0 ? threads : System.coreCount
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        self.acceptGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.ownsGroup = true
        self.logger = logger
        self.registry = ClientRegistry(config: engine.config)
        self.started = engine.keyspace.clock.now()
        self.configFile = configFile
        self.peers = engine.cluster.map { PeerLinks(cluster: $0, password: { [config = engine.config] in config.peerSecret }, logger: logger) }
        engine.attach(host: self)
    }

    /// The addresses the server listens on, once `start()` has bound them.
    public var localAddresses: [SocketAddress] {
        channels.withLock { $0.compactMap(\.localAddress) }
    }

    /// The port bound (useful with `port 0`).
    public var port: Int { localAddresses.first?.port ?? 0 }

    /// Binds every `bind` address. An address prefixed with `-` is optional: failing to bind it
    /// (say, no IPv6) is not an error, as in Redis.
    public func start() async throws {
        let port = engine.config.integer("port")
        let backlog = engine.config.integer("tcp-backlog")
        let addresses = (engine.config.get("bind") ?? "127.0.0.1").split(separator: " ").map(String.init)
        let bootstrap = ServerBootstrap(group: acceptGroup, childGroup: group)
            .serverChannelOption(.backlog, value: Int32(clamping: backlog))
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelInitializer { [engine, registry, logger, peers] channel in
                channel.eventLoop.makeCompletedFuture {
                    try Self.initialize(channel: channel, engine: engine, registry: registry, logger: logger, peers: peers)
                }
            }
        var bound: [any Channel] = []
        var boundPort = port
        for raw in addresses {
            let optional = raw.hasPrefix("-")
            let host = optional ? String(raw.dropFirst()) : raw
            do {
                let channel = try await bootstrap.bind(host: host, port: boundPort).get()
                // With port 0 every address shares the port the first one got.
                if boundPort == 0, let p = channel.localAddress?.port { boundPort = p }
                bound.append(channel)
            } catch {
                if optional {
                    logger.debug("optional bind address unavailable", metadata: ["sb.address": "\(host)", "sb.error": "\(error)"])
                    continue
                }
                for c in bound { try? await c.close() }
                throw error
            }
        }
        channels.withLock { $0 = bound }
        logger.notice("ready to accept connections", metadata: ["sb.port": "\(boundPort)", "sb.threads": "\(threads)"])
    }

    private static func initialize(channel: any Channel, engine: Engine, registry: ClientRegistry, logger: Logger,
                                   peers: PeerLinks?) throws {
        let remote = channel.remoteAddress
        let address = remote.map(Self.describe) ?? ""
        let local = channel.localAddress.map(Self.describe) ?? ""
        let passwordRequired = engine.config.passwordRequired.load(ordering: .relaxed)
        let session = Session(
            id: registry.nextID(), authenticated: !passwordRequired,
            address: address, localAddress: local, createdAt: engine.keyspace.clock.now())
        let sync = channel.pipeline.syncOperations
        let timeout = engine.config.timeoutSeconds.load(ordering: .relaxed)
        if timeout > 0 {
            try sync.addHandler(IdleStateHandler(readTimeout: .seconds(Int64(timeout))))
        }
        if engine.config.protectedMode.load(ordering: .relaxed) && !passwordRequired && !(remote.map(isLoopback) ?? true) {
            try sync.addHandler(RefuseHandler(message: protectedModeMessage))
            return
        }
        try sync.addHandler(ConnectionHandler(engine: engine, registry: registry, session: session, allocator: channel.allocator,
                                              logger: logger, peers: engine.cluster?.mode == .proxy ? peers : nil))
    }

    /// `ip:port` as Redis prints client addresses.
    static func describe(_ address: SocketAddress) -> String {
        "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    }

    /// Whether a client address is on the loopback interface (127.0.0.0/8 or ::1).
    public static func isLoopback(_ address: SocketAddress) -> Bool {
        guard let ip = address.ipAddress else { return true }  // Unix sockets are local.
        return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }

    static let protectedModeMessage = "DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to Redis you may adopt one of the following solutions: 1) Just disable protected mode sending the command 'CONFIG SET protected-mode no' from the loopback interface by connecting to Redis from the same host the server is running, however MAKE SURE Redis is not publicly accessible from internet if you do so. Use CONFIG REWRITE to make this change permanent. 2) Alternatively you can just disable the protected mode by editing the Redis configuration file, and setting the protected mode option to 'no', and then restarting the server. 3) If you started the server manually just for testing, restart it with the '--protected-mode no' option. 4) Setup a an authentication password for the default user. NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside."

    /// Serves until graceful shutdown (or `SHUTDOWN`), then drains and returns.
    public func run() async throws {
        if channels.withLock({ $0.isEmpty }) { try await start() }
        let sweeper = Task { [engine] in
            // Active expiry: `hz` rounds a second, each sampling every shard.
            while !Task.isCancelled {
                engine.keyspace.sweepExpired()
                // Eviction a command left unfinished (its budget is 1 ms), up to 20 ms a tick.
                _ = engine.makeRoom(budgetMilliseconds: 20)
                let hz = max(1, engine.config.integer("hz"))
                try? await Task.sleep(nanoseconds: UInt64(1_000_000_000 / hz))
            }
        }
        defer { sweeper.cancel() }
        let health = Task { [peers] in await peers?.runHealthChecks() }
        defer { health.cancel() }
        await withGracefulShutdownHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let alreadyRequested: Bool = shutdown.withLock { state in
                    if case .requested = state { return true }
                    state = .waiting(continuation)
                    return false
                }
                if alreadyRequested { continuation.resume() }
            }
        } onGracefulShutdown: { [self] in
            self.requestShutdown()
        }
        await drain()
    }

    /// Stops accepting, closes every client after its replies are flushed, and stops the event loops.
    private func drain() async {
        let listening = channels.withLock { c in defer { c = [] }; return c }
        for channel in listening { try? await channel.close() }
        for future in registry.closeAll() { try? await future.get() }
        logger.notice("server stopped")
        if ownsGroup {
            try? await acceptGroup.shutdownGracefully()
            try? await group.shutdownGracefully()
        }
    }

    // MARK: EngineHost

    public func requestShutdown() {
        // The first request resumes `run()`, or is remembered until `run()` waits; later ones do nothing.
        let waiting: CheckedContinuation<Void, Never>? = shutdown.withLock { state in
            switch state {
            case .waiting(let continuation):
                state = .requested
                return continuation
            case .running:
                state = .requested
                return nil
            case .requested:
                return nil
            }
        }
        waiting?.resume()
    }

    public func clientSessions() -> [Session] { registry.sessions() }

    public func resetStats() { registry.resetStats() }

    public func killClients(_ filter: ClientKillFilter, requester: UInt64) -> Int {
        registry.kill(filter, requester: requester)
    }

    public func serverInfo() -> ServerInfo {
        var info = ServerInfo()
        info.tcpPort = port
        info.processID = Int(getpid())
        info.uptimeSeconds = (engine.keyspace.clock.now() - started) / 1000
        info.connectedClients = registry.count
        info.maxClients = engine.config.maxClients.load(ordering: .relaxed)
        let (total, rejected) = registry.counters
        info.totalConnections = total
        info.rejectedConnections = rejected
        info.commandsProcessed = registry.commandsProcessed
        info.threads = threads
        info.executable = CommandLine.arguments.first ?? ""
        info.configFile = configFile
        return info
    }
}

/// Sends one error line to a connection it will not serve, then closes it.
final class RefuseHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let message: String

    init(message: String) { self.message = message }

    func channelActive(context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: message.utf8.count + 3)
        buffer.writeRESPError(message)
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
