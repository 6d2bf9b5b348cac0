import Foundation
import HashRing
import NIOCore
import RESP
import Redlock
import StrongboxClient
import Synchronization

/// A value shared between tasks behind a lock.
final class Shared<T: Sendable>: Sendable {
    private let state: Mutex<T>
    init(_ value: T) { state = Mutex(value) }
    var value: T { state.withLock { $0 } }
    func update(_ body: (inout T) -> Void) { state.withLock { body(&$0) } }
}

/// When a run stops: after `duration`, after `ops` operations, whichever comes first.
public struct Bounds: Sendable {
    public var duration: Duration?
    public var ops: Int?
    public init(duration: Duration?, ops: Int?) {
        self.duration = duration
        self.ops = ops
    }
}

/// Shared stop flag: set when a bound is reached (or by the caller).
final class StopFlag: Sendable {
    private let state = Mutex((stopped: false, ops: 0))
    let limit: Int?
    let deadline: ContinuousClock.Instant?

    init(_ bounds: Bounds, start: ContinuousClock.Instant) {
        limit = bounds.ops
        deadline = bounds.duration.map { start + $0 }
    }

    /// Claims one more operation; false when the run is over.
    func claim() -> Bool {
        if let deadline, ContinuousClock.now >= deadline { return false }
        return state.withLock { s in
            if s.stopped { return false }
            if let limit, s.ops >= limit { s.stopped = true; return false }
            s.ops += 1
            return true
        }
    }

    func stop() { state.withLock { $0.stopped = true } }
}

func clients(for fleet: Fleet, connections: Int, timeout: Duration) -> [StrongboxClient] {
    fleet.members.map { m in
        var c = ConnectionConfiguration(endpoint: Endpoint(host: m.host, port: m.port))
        c.commandTimeout = timeout
        c.connectTimeout = timeout
        var pool = PoolConfiguration()
        pool.maximumConnections = max(1, connections)
        pool.leaseTimeout = timeout
        pool.reconnectBackoff = Backoff(initial: .milliseconds(10), maximum: .milliseconds(250))
        return StrongboxClient(c, pool: pool)
    }
}

func errorKind(_ error: StrongboxError) -> String { error.code.rawValue.lowercased() }

// MARK: - Lock

public struct LockSettings: Sendable {
    public var locks: Int
    public var workers: Int
    public var connections: Int
    public var ttl: Duration
    public var hold: Duration
    /// Release with a plain `DEL` (no token check): the unsafe pattern, to show the checker catches it.
    public var unsafePlainDel: Bool

    public init(locks: Int, workers: Int, connections: Int, ttl: Duration, hold: Duration, unsafePlainDel: Bool) {
        self.locks = locks
        self.workers = workers
        self.connections = connections
        self.ttl = ttl
        self.hold = hold
        self.unsafePlainDel = unsafePlainDel
    }
}

/// W workers contend for K lock names over the fleet (Redlock with quorum N/2+1; N = 1 is the
/// single-instance lock). Every holding is recorded for the checker.
public func runLockWorkload(fleet: Fleet, settings: LockSettings, bounds: Bounds, recorder: Recorder) async -> (records: [LockRecord], acquisitions: Int, contention: Int) {
    let nodeClients = clients(for: fleet, connections: settings.connections, timeout: max(settings.ttl, .milliseconds(200)))
    var configuration = RedlockConfiguration()
    configuration.retryCount = 0
    let redlock = Redlock(nodes: nodeClients.map { RedlockNode(client: $0) }, configuration: configuration)
    let stop = StopFlag(bounds, start: recorder.start)
    let history = Shared<[LockRecord]>([])
    let backoffCap = max(settings.hold, .milliseconds(2))

    await withTaskGroup(of: Void.self) { group in
        for worker in 0..<settings.workers {
            group.addTask {
                var local: [LockRecord] = []
                while stop.claim() {
                    let name = "stress:lock:\(Int.random(in: 0..<settings.locks))"
                    let t0 = ContinuousClock.now
                    let requested = recorder.now()
                    let lease: LockLease
                    do throws(RedlockError) {
                        lease = try await redlock.acquire(name, ttl: settings.ttl)
                    } catch {
                        switch error {
                        case .held: recorder.count("contention")
                        case .noQuorum(_, let outcomes, _):
                            if outcomes.filter({ $0.result == .heldByAnother }).count > 0 { recorder.count("contention") }
                            else { recorder.error("no_quorum") }
                        case .timedOut: recorder.error("timeout")
                        case .cancelled: return
                        default: recorder.error("lock_error")
                        }
                        let pause = Duration.nanoseconds(Int64.random(in: 0...max(1, Int64(backoffCap.seconds * 1e9))))
                        try? await Task.sleep(for: pause)
                        continue
                    }
                    let granted = recorder.now()
                    recorder.success(latency: ContinuousClock.now - t0)
                    recorder.count("acquisitions")
                    try? await Task.sleep(for: settings.hold)
                    let released = recorder.now()
                    var gone = false
                    if settings.unsafePlainDel {
                        var deleted = 0
                        for c in nodeClients {
                            if let n = try? await c.send(.del([name])) { deleted += n }
                        }
                        gone = deleted < redlock.quorum
                    } else {
                        gone = await redlock.release(lease) < redlock.quorum
                    }
                    local.append(LockRecord(
                        worker: worker, lock: name, token: lease.tokenHex, requested: requested, granted: granted,
                        released: released, validUntil: (lease.validUntil - recorder.start).microseconds, releaseFoundGone: gone))
                }
                let mine = local
                history.update { $0 += mine }
            }
        }
    }
    for c in nodeClients { await c.shutdown() }
    return (history.value, recorder.counter("acquisitions"), recorder.counter("contention"))
}

// MARK: - Cache

public struct CacheSettings: Sendable {
    public var keys: Int
    public var distribution: KeyDistribution
    public var readRatio: Double
    public var valueSize: Int
    public var ttl: Duration?
    public var pipeline: Int
    public var workers: Int
    public var connections: Int

    public init(keys: Int, distribution: KeyDistribution, readRatio: Double, valueSize: Int, ttl: Duration?,
                pipeline: Int, workers: Int, connections: Int) {
        self.keys = keys
        self.distribution = distribution
        self.readRatio = readRatio
        self.valueSize = valueSize
        self.ttl = ttl
        self.pipeline = pipeline
        self.workers = workers
        self.connections = connections
    }
}

/// A read/write mix over a key distribution, in pipelined batches; with several nodes keys are
/// placed with the same `HashRing` a Strongbox cluster uses.
public func runCacheWorkload(fleet: Fleet, settings: CacheSettings, bounds: Bounds, recorder: Recorder) async -> RunReport.CacheFindings {
    let nodeClients = clients(for: fleet, connections: settings.connections, timeout: .seconds(2))
    let ring = HashRing(members: fleet.members.map { RingMember(host: $0.host, port: $0.port) })
    let clientIndex: [Int] = ring.members.map { m in fleet.members.firstIndex { $0.host == m.host && $0.port == m.port }! }
    let sampler = KeySampler(settings.distribution, keys: settings.keys)
    let stop = StopFlag(bounds, start: recorder.start)
    let value = ByteBuffer(repeating: UInt8(ascii: "x"), count: settings.valueSize)
    let ttlArgs: [any RESPArgument] = settings.ttl.map { ["PX", max(1, Int($0.seconds * 1000))] } ?? []

    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<settings.workers {
            group.addTask {
                var g = SystemRandomNumberGenerator()
                while true {
                    var batch: [(node: Int, read: Bool, command: Command<RESPValue>)] = []
                    for _ in 0..<settings.pipeline {
                        guard stop.claim() else { break }
                        let key = "stress:cache:\(sampler.next(using: &g))"
                        let node = nodeClients.count == 1 ? 0 : clientIndex[ring.ownerIndex(ofSlot: HashSlot.slot(forKey: key))]
                        if Double.random(in: 0..<1, using: &g) < settings.readRatio {
                            batch.append((node, true, .raw(["GET", key])))
                        } else {
                            batch.append((node, false, .raw(["SET", key, value] + ttlArgs)))
                        }
                    }
                    if batch.isEmpty { return }
                    let sent = batch
                    let byNode = Dictionary(grouping: batch.indices, by: { batch[$0].node })
                    await withTaskGroup(of: Void.self) { sub in
                        for (node, indices) in byNode {
                            sub.addTask {
                                let t0 = ContinuousClock.now
                                do throws(StrongboxError) {
                                    let replies = try await nodeClients[node].pipeline(indices.map { sent[$0].command })
                                    let elapsed = ContinuousClock.now - t0
                                    for (i, reply) in zip(indices, replies) {
                                        switch reply {
                                        case .success(let v):
                                            recorder.success(latency: elapsed)
                                            if sent[i].read {
                                                recorder.count("reads")
                                                if case .null = v { recorder.count("misses") } else { recorder.count("hits") }
                                            } else {
                                                recorder.count("writes")
                                            }
                                        case .failure(let e): recorder.error(errorKind(e))
                                        }
                                    }
                                } catch {
                                    for _ in indices { recorder.error(errorKind(error)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for c in nodeClients { await c.shutdown() }
    let hits = recorder.counter("hits"), misses = recorder.counter("misses")
    return RunReport.CacheFindings(reads: recorder.counter("reads"), writes: recorder.counter("writes"), hits: hits, misses: misses,
                                   hitRatio: hits + misses > 0 ? Double(hits) / Double(hits + misses) : 0)
}
