import NIOCore
import NIOPosix
import RESP

/// A client for one server (Strongbox or any Redis-protocol server): a pool of pipelining connections.
///
/// ```swift
/// let client = StrongboxClient(endpoint: Endpoint(host: "127.0.0.1", port: 6379))
/// try await client.send(.set("greeting", "hello", expiration: .seconds(60)))
/// let value = try await client.send(.get("greeting"))      // ByteBuffer?
/// let n = try await client.send(.incr("visits"))            // Int
/// ```
///
/// Every command is sent on a connection leased from the pool for its duration; `pipeline` sends
/// several in one write; `withConnection` gives a connection of your own for a sequence of commands.
public final class StrongboxClient: Sendable {
    public let pool: ConnectionPool
    public var endpoint: Endpoint { pool.configuration.endpoint }

    public init(_ configuration: ConnectionConfiguration, pool: PoolConfiguration = PoolConfiguration(),
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.pool = ConnectionPool(configuration: configuration, pool: pool, eventLoopGroup: eventLoopGroup)
    }

    /// A client with default settings for `endpoint`.
    public convenience init(endpoint: Endpoint) {
        self.init(ConnectionConfiguration(endpoint: endpoint))
    }

    /// Sends one typed command and returns its decoded reply.
    @discardableResult
    public func send<Reply>(_ command: Command<Reply>) async throws(StrongboxError) -> Reply {
        try await pool.withConnectionTyped { connection throws(StrongboxError) in try await connection.send(command) }
    }

    /// Sends any command given as its words; the reply as a RESP value.
    @discardableResult
    public func send(_ arguments: any RESPArgument...) async throws(StrongboxError) -> RESPValue {
        try await send(.raw(arguments))
    }

    /// Sends the commands in one write on one connection; each reply (or error) in order.
    /// - Parameter timeout: bounds the whole call — waiting for a pooled connection (or connecting)
    ///   and each reply — instead of the configured lease and command timeouts.
    public func pipeline(_ commands: [Command<RESPValue>], timeout: Duration? = nil) async throws(StrongboxError) -> [Result<RESPValue, StrongboxError>] {
        let start = ContinuousClock.now
        return try await pool.withConnectionTyped(timeout: timeout) { connection in
            await connection.pipeline(commands, timeout: timeout.map { $0 - (ContinuousClock.now - start) })
        }
    }

    /// Runs `body` with a pooled connection of its own.
    public func withConnection<T>(_ body: (StrongboxConnection) async throws -> T) async throws -> T {
        try await pool.withConnection(body)
    }

    /// Closes the pool's connections.
    public func shutdown() async { await pool.shutdown() }

    // MARK: Conveniences for the most common commands

    /// `GET key` as UTF-8 text.
    public func get(_ key: some RESPArgument) async throws(StrongboxError) -> String? {
        try await send(.get(key)).map { $0.text }
    }

    /// `SET key value [condition] [expiration]`: true when written.
    @discardableResult
    public func set(_ key: some RESPArgument, _ value: some RESPArgument, condition: SetCondition = .always,
                    expiration: Expiration? = nil) async throws(StrongboxError) -> Bool {
        try await send(.set(key, value, condition: condition, expiration: expiration))
    }

    /// `DEL key [key …]`.
    @discardableResult
    public func del(_ keys: any RESPArgument...) async throws(StrongboxError) -> Int {
        try await send(.del(keys))
    }
}
