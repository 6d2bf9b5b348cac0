import NIOCore
import NIOPosix
import Synchronization

/// How a pool waits between failed connect attempts: exponential, capped, with jitter.
public struct Backoff: Sendable {
    public var initial: Duration = .milliseconds(10)
    public var maximum: Duration = .seconds(1)
    public var multiplier: Double = 2

    public init(initial: Duration = .milliseconds(10), maximum: Duration = .seconds(1), multiplier: Double = 2) {
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
    }

    /// The wait before attempt `failures + 1`, jittered to 50–100 % of the nominal value.
    func delay(afterFailures failures: Int) -> Duration {
        let cap = Double(maximum.nanoseconds)
        var nominal = Double(initial.nanoseconds)
        for _ in 1..<max(1, failures) where nominal < cap { nominal *= multiplier }
        let capped = min(nominal, cap)
        return .nanoseconds(Int64(capped * Double.random(in: 0.5...1.0)))
    }
}

/// How a pool behaves.
public struct PoolConfiguration: Sendable {
    /// At most this many connections are open at once.
    public var maximumConnections: Int = 8
    /// How long `withConnection` waits for a free connection before failing with `.poolExhausted`.
    public var leaseTimeout: Duration = .seconds(5)
    /// A connection idle for longer than this is checked with `PING` before it is handed out.
    public var healthCheckInterval: Duration = .seconds(10)
    public var reconnectBackoff = Backoff()

    public init() {}
}

/// A bounded pool of connections to one server, handed out one task at a time.
///
/// Connections are made on demand up to `maximumConnections`; a task that finds none free waits (FIFO)
/// until one is returned or `leaseTimeout` passes. A connection that has closed is dropped when it
/// comes back; one idle for longer than `healthCheckInterval` answers a `PING` before reuse. After a
/// failed connect, later attempts wait an exponentially growing, jittered delay until one succeeds.
public final class ConnectionPool: Sendable {
    public let configuration: ConnectionConfiguration
    public let poolConfiguration: PoolConfiguration
    let eventLoopGroup: any EventLoopGroup

    private struct Idle {
        let connection: StrongboxConnection
        let since: ContinuousClock.Instant
    }

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<StrongboxConnection?, Never>
    }

    private struct State {
        var idle: [Idle] = []
        var open = 0
        var waiters: [Waiter] = []
        var nextWaiterID: UInt64 = 0
        var failures = 0
        var notBefore: ContinuousClock.Instant?
        var lastError: StrongboxError?
        var shutdown = false
    }

    private let state = Mutex(State())

    public init(configuration: ConnectionConfiguration, pool: PoolConfiguration = PoolConfiguration(),
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.configuration = configuration
        self.poolConfiguration = pool
        self.eventLoopGroup = eventLoopGroup
    }

    /// Runs `body` with a connection of its own, then returns the connection to the pool.
    public func withConnection<T>(_ body: (StrongboxConnection) async throws -> T) async throws -> T {
        let connection = try await lease()
        defer { release(connection) }
        return try await body(connection)
    }

    /// Typed-error variant for the client's own commands.
    func withConnectionTyped<T>(timeout: Duration? = nil, _ body: (StrongboxConnection) async throws(StrongboxError) -> T) async throws(StrongboxError) -> T {
        let connection = try await lease(timeout: timeout)
        defer { release(connection) }
        return try await body(connection)
    }

    private enum Step {
        case use(StrongboxConnection, check: Bool)
        case connect(wait: Duration?)
        case wait
        case shutdown
    }

    /// - Parameter timeout: wait at most this long (and at most `leaseTimeout`), connecting included.
    func lease(timeout: Duration? = nil) async throws(StrongboxError) -> StrongboxConnection {
        let limit = timeout.map { min($0, poolConfiguration.leaseTimeout) } ?? poolConfiguration.leaseTimeout
        let deadline = ContinuousClock.now + limit
        let node = configuration.endpoint.description
        while true {
            let now = ContinuousClock.now
            if Task.isCancelled { throw StrongboxError(code: .timeout, message: "cancelled while waiting for a connection", node: node) }
            if now >= deadline {
                throw StrongboxError(code: limit < poolConfiguration.leaseTimeout ? .timeout : .poolExhausted,
                                     message: "no connection free within \(limit)", node: node)
            }
            let step: Step = state.withLock { s in
                if s.shutdown { return .shutdown }
                while let idle = s.idle.popLast() {
                    if idle.connection.isConnected {
                        return .use(idle.connection, check: now - idle.since > poolConfiguration.healthCheckInterval)
                    }
                    s.open -= 1
                }
                if s.open < poolConfiguration.maximumConnections {
                    s.open += 1
                    if let nb = s.notBefore, nb > now { return .connect(wait: nb - now) }
                    return .connect(wait: nil)
                }
                return .wait
            }
            switch step {
            case .shutdown:
                throw StrongboxError(code: .shutdown, message: "the pool is shut down", node: node)
            case .use(let connection, let check):
                if !check { return connection }
                if (try? await connection.send(.ping())) != nil { return connection }
                await connection.close()
                state.withLock { $0.open -= 1 }
            case .connect(let wait):
                if let wait {
                    // Backing off after failed connects: fail fast rather than pile up behind a dead server.
                    state.withLock { $0.open -= 1 }
                    wakeOne()
                    let last = state.withLock { $0.lastError }
                    throw StrongboxError(code: .connectFailed,
                                         message: "reconnecting (next attempt in \(wait)); last error: \(last?.message ?? "none")",
                                         node: node)
                }
                do {
                    var c = configuration
                    c.connectTimeout = min(c.connectTimeout, max(.milliseconds(1), deadline - ContinuousClock.now))
                    let connection = try await StrongboxConnection.connect(c, eventLoopGroup: eventLoopGroup)
                    state.withLock { $0.failures = 0; $0.notBefore = nil; $0.lastError = nil }
                    return connection
                } catch {
                    state.withLock { s in
                        s.open -= 1
                        s.failures += 1
                        s.lastError = error
                        s.notBefore = ContinuousClock.now + poolConfiguration.reconnectBackoff.delay(afterFailures: s.failures)
                    }
                    wakeOne()
                    throw error
                }
            case .wait:
                let remaining = deadline - ContinuousClock.now
                if let connection = await waitForRelease(timeout: remaining) { return connection }
            }
        }
    }

    /// Waits until a connection is handed over or a slot frees up (nil), or the timeout passes (nil).
    private func waitForRelease(timeout: Duration) async -> StrongboxConnection? {
        let id = state.withLock { s -> UInt64 in s.nextWaiterID += 1; return s.nextWaiterID }
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            self?.resumeWaiter(id, with: nil)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            let shutdown = state.withLock { s -> Bool in
                if s.shutdown { return true }
                s.waiters.append(Waiter(id: id, continuation: continuation))
                return false
            }
            if shutdown { continuation.resume(returning: nil) }
        }
    }

    private func resumeWaiter(_ id: UInt64, with connection: StrongboxConnection?) {
        let waiter = state.withLock { s -> Waiter? in
            guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiters.remove(at: i)
        }
        waiter?.continuation.resume(returning: connection)
    }

    /// Wakes the oldest waiter without a connection (a slot freed up: it may connect itself).
    private func wakeOne() {
        let waiter = state.withLock { s in s.waiters.isEmpty ? nil : s.waiters.removeFirst() }
        waiter?.continuation.resume(returning: nil)
    }

    func release(_ connection: StrongboxConnection) {
        enum Next { case handOver(Waiter), wake(Waiter?), close }
        let next: Next = state.withLock { s in
            if s.shutdown { s.open -= 1; return .close }
            guard connection.isConnected else {
                s.open -= 1
                return .wake(s.waiters.isEmpty ? nil : s.waiters.removeFirst())
            }
            if !s.waiters.isEmpty { return .handOver(s.waiters.removeFirst()) }
            s.idle.append(Idle(connection: connection, since: .now))
            return .wake(nil)
        }
        switch next {
        case .handOver(let w): w.continuation.resume(returning: connection)
        case .wake(let w): w?.continuation.resume(returning: nil)
        case .close: Task { await connection.close() }
        }
    }

    /// Open connections (idle or in use).
    public var openConnections: Int { state.withLock { $0.open } }

    /// Closes idle connections and refuses new leases; connections in use close when returned.
    public func shutdown() async {
        let (idle, waiters) = state.withLock { s -> ([Idle], [Waiter]) in
            s.shutdown = true
            let r = (s.idle, s.waiters)
            s.open -= s.idle.count
            s.idle = []
            s.waiters = []
            return r
        }
        for w in waiters { w.continuation.resume(returning: nil) }
        for i in idle { await i.connection.close() }
    }
}
