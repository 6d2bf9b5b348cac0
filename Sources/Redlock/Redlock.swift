import CoreMetrics
import StrongboxClient
import Synchronization

/// The Redlock algorithm over N independent nodes.
///
/// ```swift
/// let redlock = Redlock(nodes: ports.map { RedlockNode(endpoint: Endpoint(host: "127.0.0.1", port: $0)) })
/// let total = try await redlock.withLock("lock:order:42", ttl: .seconds(2)) { lease in
///     try await chargeCard(order: 42)     // cancelled at once if the lock is lost
/// }
/// ```
///
/// - Acquire: the same random 20-byte token is written with `SET name token NX PX ttl` on every node
///   in parallel, each node bounded by `nodeTimeoutFraction × ttl`. The lock is granted when a
///   quorum (N/2 + 1) stored it and the validity — TTL minus the time the attempt took minus the
///   drift allowance — is still positive. Otherwise whatever was taken is released on every node and
///   the attempt is retried after a jittered delay, up to `retryCount` or `acquireTimeout`.
/// - Release and extend are by token on every node (`DELIFEQ` / `PEXPIRE … IFEQ`, or the standard
///   Lua scripts where those are missing); an extension counts only when a quorum extended within
///   the lease's validity.
public final class Redlock: Sendable {
    public let nodes: [RedlockNode]
    public let configuration: RedlockConfiguration
    /// The local turns `withLock` takes first (with `localTurns`); usable around `acquire` too.
    public let turns = LocalTurns()
    private let metrics: Metrics

    /// Locks are granted by at least this many nodes.
    public var quorum: Int { nodes.count / 2 + 1 }

    public init(nodes: [RedlockNode], configuration: RedlockConfiguration = RedlockConfiguration()) {
        precondition(!nodes.isEmpty, "Redlock needs at least one node")
        self.nodes = nodes
        self.configuration = configuration
        self.metrics = Metrics(prefix: configuration.metricsPrefix, factory: configuration.metricsFactory ?? MetricsSystem.factory)
    }

    /// A Redlock over the servers at `endpoints`, one default client each.
    public convenience init(endpoints: [Endpoint], configuration: RedlockConfiguration = RedlockConfiguration()) {
        self.init(nodes: endpoints.map { RedlockNode(endpoint: $0) }, configuration: configuration)
    }

    // MARK: Acquire

    /// Acquires `name` for `ttl`. Throws `RedlockError` saying why not.
    public func acquire(_ name: String, ttl: Duration) async throws(RedlockError) -> LockLease {
        try await acquire([name], ttl: ttl)
    }

    /// Acquires several names together: on each node all of them or none count; the lock is granted
    /// when a quorum of nodes granted every name.
    public func acquire(_ names: [String], ttl: Duration) async throws(RedlockError) -> LockLease {
        let started = ContinuousClock.now
        return try await acquire(names, ttl: ttl, started: started, deadline: configuration.acquireTimeout.map { started + $0 })
    }

    private func acquire(_ names: [String], ttl: Duration, started: ContinuousClock.Instant,
                         deadline: ContinuousClock.Instant?) async throws(RedlockError) -> LockLease {
        precondition(!names.isEmpty, "lock at least one name")
        precondition(ttl >= .milliseconds(1), "a lock needs a TTL of at least 1 ms")
        var attempts = 0
        var lastOutcomes: [NodeOutcome] = []
        while true {
            if Task.isCancelled {
                metrics.failure("cancelled")
                throw .cancelled(names: names)
            }
            attempts += 1
            let token = Self.randomToken()
            let attemptStart = ContinuousClock.now
            let outcomes = await onEveryNode(timeout: nodeTimeout(ttl)) { node, timeout in
                await node.tryLock(names, token: token, ttlMilliseconds: Self.milliseconds(ttl), timeout: timeout)
            }
            lastOutcomes = outcomes
            let granted = outcomes.filter { $0.result == .granted }.map(\.node)
            let validUntil = attemptStart + ttl - drift(ttl)
            if granted.count >= quorum, ContinuousClock.now < validUntil {
                let lease = LockLease(names: names, token: token, validUntil: validUntil, grantedBy: granted,
                                      acquiredAt: attemptStart, ttl: ttl, extensions: 0)
                metrics.acquired(waited: ContinuousClock.now - started)
                return lease
            }
            // Not granted: undo whatever this attempt took, on every node (also those that timed out:
            // their SET may still land).
            _ = await onEveryNode(timeout: nodeTimeout(ttl)) { node, timeout in await node.release(names, token: token, timeout: timeout) }

            let held = outcomes.filter { $0.result == .heldByAnother }.map(\.node)
            let retriesLeft = configuration.retryCount.map { attempts <= $0 } ?? true
            let pause = configuration.retryDelay + .nanoseconds(Int64.random(in: 0...max(0, Self.nanoseconds(configuration.retryJitter))))
            if let deadline, ContinuousClock.now + pause >= deadline {
                metrics.failure("timeout")
                throw .timedOut(names: names, waited: ContinuousClock.now - started, lastOutcomes: lastOutcomes)
            }
            guard retriesLeft else {
                if held.count > nodes.count - quorum {
                    metrics.failure("held")
                    throw .held(names: names, byAnotherOwnerOn: held, attempts: attempts)
                }
                metrics.failure("no_quorum")
                throw .noQuorum(names: names, outcomes: lastOutcomes, attempts: attempts)
            }
            do {
                try await Task.sleep(for: pause)
            } catch {
                metrics.failure("cancelled")
                throw .cancelled(names: names)
            }
        }
    }

    // MARK: Release and extend

    /// Deletes the lock on every node where it still holds the lease's token. Returns how many nodes
    /// released it (a node where it had expired, or never was, does not count).
    @discardableResult
    public func release(_ lease: LockLease) async -> Int {
        let outcomes = await onEveryNode(timeout: nodeTimeout(lease.ttl)) { node, timeout in
            await node.release(lease.names, token: lease.token, timeout: timeout)
        }
        metrics.held(ContinuousClock.now - lease.acquiredAt)
        return outcomes.filter { $0.result == .granted }.count
    }

    /// Extends the lock to `ttl` from now (the lease's own TTL by default). Succeeds only when a
    /// quorum extended it and the lease was still valid when they had; returns the new lease.
    public func extend(_ lease: LockLease, ttl: Duration? = nil) async throws(RedlockError) -> LockLease {
        let ttl = ttl ?? lease.ttl
        guard lease.extensions < configuration.maximumExtensions else { throw .extensionLimitReached(lease) }
        let start = ContinuousClock.now
        let outcomes = await onEveryNode(timeout: nodeTimeout(ttl)) { node, timeout in
            await node.extend(lease.names, token: lease.token, ttlMilliseconds: Self.milliseconds(ttl), timeout: timeout)
        }
        let extended = outcomes.filter { $0.result == .granted }.map(\.node)
        let now = ContinuousClock.now
        guard extended.count >= quorum, now < lease.validUntil else { throw .notExtended(lease, outcomes: outcomes) }
        metrics.extensions.increment()
        return lease.extended(validUntil: start + ttl - drift(ttl), grantedBy: extended, ttl: ttl)
    }

    // MARK: withLock

    /// Acquires `name`, runs `body` while a watchdog extends the lock, then releases it.
    ///
    /// The watchdog extends every third of the TTL. When an extension cannot reach a quorum before the
    /// lease's validity passes (or a quorum says the token is gone, or the extension limit is reached
    /// and validity passes), the body's task is **cancelled** and `withLock` throws
    /// `RedlockError.lockLost`: the holder learns at once, instead of writing after its lock is gone.
    /// The body receives the lease as acquired. With `localTurns`, tasks of this process wanting the
    /// same names first take turns in `turns` (the wait counts against `acquireTimeout`).
    public func withLock<T: Sendable>(
        _ name: String, ttl: Duration, body: @escaping @Sendable (LockLease) async throws -> T
    ) async throws -> T {
        try await withLock([name], ttl: ttl, body: body)
    }

    /// `withLock` over several names acquired together.
    public func withLock<T: Sendable>(
        _ names: [String], ttl: Duration, body: @escaping @Sendable (LockLease) async throws -> T
    ) async throws -> T {
        let started = ContinuousClock.now
        let deadline = configuration.acquireTimeout.map { started + $0 }
        let turn = names.sorted().joined(separator: "\u{0}")
        if configuration.localTurns {
            guard await turns.enter(turn, until: deadline) else {
                if Task.isCancelled {
                    metrics.failure("cancelled")
                    throw RedlockError.cancelled(names: names)
                }
                metrics.failure("timeout")
                throw RedlockError.timedOut(names: names, waited: ContinuousClock.now - started, lastOutcomes: [])
            }
        }
        defer { if configuration.localTurns { turns.leave(turn) } }
        let lease = try await acquire(names, ttl: ttl, started: started, deadline: deadline)
        let current = LeaseBox(lease)
        let outcome: Result<T, any Error>
        do {
            let finished = try await withThrowingTaskGroup(of: Finished<T>.self) { group in
                group.addTask { .body(try await body(lease)) }
                group.addTask { .lost(await self.watch(current)) }
                defer { group.cancelAll() }
                return try await group.next()!
            }
            switch finished {
            case .body(let value): outcome = .success(value)
            case .lost(nil):
                outcome = .failure(CancellationError())
            case .lost(let reason?):
                metrics.lost.increment()
                outcome = .failure(RedlockError.lockLost(current.lease, reason: reason))
            }
        } catch {
            outcome = .failure(error)
        }
        await release(current.lease)
        return try outcome.get()
    }

    /// Keeps the lease alive; returns the reason when it is lost, nil when cancelled (the body ended).
    private func watch(_ current: LeaseBox) async -> String? {
        while true {
            let lease = current.lease
            let extendAt = lease.validUntil - lease.ttl * (2.0 / 3.0)
            do {
                try await Task.sleep(until: extendAt, clock: .continuous)
            } catch {
                return nil  // the body finished (or the caller was cancelled)
            }
            // Try until the lease's validity passes; an attempt still in flight at that instant loses.
            while true {
                if Task.isCancelled { return nil }
                let remaining = lease.validUntil - ContinuousClock.now
                if remaining <= .zero { return "validity passed while extending" }
                let attempt: Result<LockLease, RedlockError>? = await withDeadline(remaining, fallback: nil) {
                    do throws(RedlockError) { return .success(try await self.extend(lease)) } catch { return .failure(error) }
                }
                switch attempt {
                case .none:
                    return "validity passed while extending"
                case .success(let next)?:
                    current.lease = next
                case .failure(.extensionLimitReached)?:
                    try? await Task.sleep(until: lease.validUntil, clock: .continuous)
                    return "extension limit (\(configuration.maximumExtensions)) reached and validity passed"
                case .failure(.notExtended(_, let outcomes))?:
                    let gone = outcomes.filter { $0.result == .heldByAnother }.count
                    if gone > nodes.count - quorum {
                        return "the token is gone on \(gone) of \(nodes.count) nodes"
                    }
                case .failure?:
                    break
                }
                if case .success? = attempt { break }
                let now = ContinuousClock.now
                if now >= lease.validUntil { return "no quorum extended it before validity passed" }
                let pause = min(lease.ttl / 10, lease.validUntil - now)
                do { try await Task.sleep(for: pause) } catch { return nil }
            }
        }
    }

    // MARK: Helpers

    /// Runs `operation` on every node in parallel, each bounded by `timeout` (the node's client
    /// enforces it: lease, connect and replies); outcomes in node order.
    private func onEveryNode(
        timeout: Duration, _ operation: @escaping @Sendable (RedlockNode, Duration) async -> NodeOutcome.Result
    ) async -> [NodeOutcome] {
        if nodes.count == 1 {
            return [NodeOutcome(node: nodes[0].endpoint, result: await operation(nodes[0], timeout))]
        }
        return await withTaskGroup(of: (Int, NodeOutcome.Result).self) { group in
            for (i, node) in nodes.enumerated() {
                group.addTask { (i, await operation(node, timeout)) }
            }
            var results = [NodeOutcome.Result](repeating: .timedOut, count: nodes.count)
            for await (i, r) in group { results[i] = r }
            return zip(nodes, results).map { NodeOutcome(node: $0.endpoint, result: $1) }
        }
    }

    func nodeTimeout(_ ttl: Duration) -> Duration {
        max(.milliseconds(1), ttl * configuration.nodeTimeoutFraction)
    }

    func drift(_ ttl: Duration) -> Duration {
        ttl * configuration.driftFactor + configuration.driftConstant
    }

    static func randomToken() -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<20).map { _ in UInt8.random(in: 0...255, using: &g) }
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        let (s, atto) = d.components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }

    static func milliseconds(_ d: Duration) -> Int {
        max(1, Int(nanoseconds(d) / 1_000_000))
    }
}

private enum Finished<T: Sendable>: Sendable {
    case body(T)
    case lost(String?)
}

/// The current lease of a `withLock`, replaced by each extension.
private final class LeaseBox: Sendable {
    private let state: Mutex<LockLease>
    init(_ lease: LockLease) { state = Mutex(lease) }
    var lease: LockLease {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }
}

/// The metrics Redlock reports (labels `<prefix>_…`).
struct Metrics: Sendable {
    let acquisitions: Counter
    let extensions: Counter
    let lost: Counter
    let waitTime: Timer
    let holdTime: Timer
    let prefix: String
    let factory: any MetricsFactory

    init(prefix: String, factory: any MetricsFactory) {
        self.prefix = prefix
        self.factory = factory
        acquisitions = Counter(label: "\(prefix)_acquisitions_total", factory: factory)
        extensions = Counter(label: "\(prefix)_extensions_total", factory: factory)
        lost = Counter(label: "\(prefix)_locks_lost_total", factory: factory)
        waitTime = Timer(label: "\(prefix)_acquire_wait_seconds", factory: factory)
        holdTime = Timer(label: "\(prefix)_hold_seconds", factory: factory)
    }

    func acquired(waited: Duration) {
        acquisitions.increment()
        waitTime.recordNanoseconds(Redlock.nanoseconds(waited))
    }

    func failure(_ reason: String) {
        Counter(label: "\(prefix)_acquire_failures_total", dimensions: [("reason", reason)], factory: factory).increment()
    }

    func held(_ duration: Duration) {
        holdTime.recordNanoseconds(Redlock.nanoseconds(duration))
    }
}
