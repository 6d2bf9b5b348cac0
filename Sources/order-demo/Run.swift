import Foundation
import Histogram
import Redlock
import StressKit
import StrongboxClient
import Synchronization

/// Order latency, shared by the buyers.
final class Latencies: Sendable {
    private let state = Mutex(Histogram<UInt64>(highestTrackableValue: 600_000_000))
    func record(_ d: Duration) { _ = state.withLock { $0.record(UInt64(max(1, d.microseconds))) } }
    func percentile(_ p: Double) -> Double { state.withLock { $0.totalCount == 0 ? 0 : Double($0.valueAtPercentile(p)) / 1000 } }
}

struct DemoReport: Codable {
    var db: String
    var lockNodes: [String]
    var cacheNodes: [String]
    var locks: Bool
    var durationSeconds: Double
    var buyers: Int
    var attempted: Int
    var paid: Int
    var cancelled: Int
    var rejectedNoStock: Int
    var lockUnavailable: Int
    var failed: Int
    var crashed: Int
    var retries: Int
    var duplicatesPrevented: Int
    var recoveredCompleted: Int
    var recoveredCancelled: Int
    var cacheHitRatio: Double
    var staleReads: Int
    var p50Milliseconds: Double
    var p99Milliseconds: Double
    var counters: [String: Int]
    var chaos: [String]
    var invariants: [Store.Invariant]
    var passed: Bool { invariants.allSatisfy(\.holds) }

    func text() -> String {
        var lines = ["order-demo run: \(passed ? "every invariant holds" : "INVARIANT VIOLATED")\(locks ? "" : " (--no-locks)")"]
        func row(_ k: String, _ v: String) { lines.append("  " + k.padding(toLength: 30, withPad: " ", startingAt: 0) + v) }
        row("database", db)
        row("lock nodes", lockNodes.joined(separator: ", "))
        row("cache nodes", cacheNodes.joined(separator: ", "))
        row("buyers / duration", "\(buyers) / \(String(format: "%.1f s", durationSeconds))")
        row("orders attempted", "\(attempted)")
        row("deliveries (restocks)", "\(counters["restocks"] ?? 0)")
        row("paid", "\(paid)")
        row("cancelled (payment failed)", "\(cancelled)")
        row("rejected, no stock", "\(rejectedNoStock)")
        row("lock unavailable", "\(lockUnavailable)")
        row("crashed between phases", "\(crashed) (recovered: \(recoveredCompleted) completed, \(recoveredCancelled) cancelled)")
        row("failed", "\(failed)")
        row("client retries", "\(retries)")
        row("duplicate orders prevented", "\(duplicatesPrevented) (Strongbox \(counters["duplicates_prevented_by_strongbox"] ?? 0), database \(counters["duplicates_prevented_by_database"] ?? 0))")
        row("cache hit ratio", String(format: "%.3f (%d stale price reads)", cacheHitRatio, staleReads))
        row("order latency", String(format: "p50 %.2f ms, p99 %.2f ms", p50Milliseconds, p99Milliseconds))
        row("chaos", chaos.isEmpty ? "none" : chaos.joined(separator: "; "))
        lines.append("  invariants:")
        for i in invariants { lines.append("    [\(i.holds ? "ok" : "FAIL")] \(i.name): \(i.detail)") }
        lines.append("    [\(staleReads == 0 ? "ok" : "FAIL")] no stale price served after its invalidation: \(staleReads) stale reads")
        return lines.joined(separator: "\n")
    }
}

struct RunSettings: Sendable {
    var buyers: Int
    var duration: Duration
    var hot: Int
    var retryRate: Double
    var priceChangeEvery: Duration
    var chaos: Bool
    var quiet: Bool
    var recover: Bool
    var restockUnits: Int
    var restockEvery: Duration
}

/// The flash sale: buyers, a merchant changing prices, optional chaos; then recovery and the invariants.
func runSale(store: Store, lockFleet: Fleet, cacheFleet: Fleet, shopSettings: ShopSettings, run: RunSettings) async throws -> DemoReport {
    let tally = Tally()
    let latencies = Latencies()
    let endpoints = { (fleet: Fleet) in fleet.members.map { Endpoint(host: $0.host, port: $0.port) } }
    var cacheConfig = ConnectionConfiguration(endpoint: endpoints(cacheFleet)[0])
    cacheConfig.commandTimeout = .milliseconds(250)
    cacheConfig.connectTimeout = .milliseconds(250)
    var pool = PoolConfiguration()
    pool.maximumConnections = 16
    pool.leaseTimeout = .milliseconds(500)
    let cache = StrongboxClusterClient(members: endpoints(cacheFleet), configuration: cacheConfig, pool: pool)
    let catalog = Catalog(cache: cache, store: store, ttl: .seconds(30), tally: tally)
    var redlock: Redlock?
    if shopSettings.useLocks {
        var configuration = RedlockConfiguration()
        configuration.retryCount = nil
        configuration.acquireTimeout = .seconds(5)
        configuration.retryDelay = .milliseconds(1)
        configuration.retryJitter = .milliseconds(4)
        let nodes = endpoints(lockFleet).map { e -> RedlockNode in
            var c = ConnectionConfiguration(endpoint: e)
            c.commandTimeout = .milliseconds(500)
            c.connectTimeout = .milliseconds(500)
            var p = PoolConfiguration()
            p.maximumConnections = 32
            p.leaseTimeout = .seconds(1)
            return RedlockNode(client: StrongboxClient(c, pool: p))
        }
        redlock = Redlock(nodes: nodes, configuration: configuration)
    }
    let shop = Shop(store: store, catalog: catalog, redlock: redlock, idempotency: cache, settings: shopSettings, tally: tally)
    let products = store.productCount
    let hot = Array(1...max(1, min(run.hot, products)))
    let start = ContinuousClock.now
    let end = start + run.duration
    let chaosLog = Mutex<[String]>([])
    func note(_ text: String) {
        let line = String(format: "%.1fs %@", (ContinuousClock.now - start).seconds, text)
        chaosLog.withLock { $0.append(line) }
    }

    let merchant = Task {
        while ContinuousClock.now < end {
            try? await Task.sleep(for: run.priceChangeEvery)
            let id = hot.randomElement()!
            if let version = try? await store.changePrice(id, cents: Int.random(in: 500...9999)) {
                await catalog.invalidate(id, version: version)
                tally.add("price_changes")
            }
        }
    }
    // Deliveries keep the sale going for the whole run (so the faults hit a live sale).
    let deliveries = Task {
        while ContinuousClock.now < end, run.restockUnits > 0 {
            try? await Task.sleep(for: run.restockEvery)
            if (try? await shop.restock(hot.randomElement()!, units: run.restockUnits)) == true { tally.add("restocks") }
        }
    }
    let chaos = Task {
        guard run.chaos else { return }
        try? await Task.sleep(until: start + run.duration * 0.3, clock: .continuous)
        let lockVictim = Int.random(in: 0..<lockFleet.members.count)
        lockFleet.stop(lockVictim)
        let killedAt = ContinuousClock.now
        note("killed lock node \(lockFleet.members[lockVictim].address)")
        try? await Task.sleep(until: start + run.duration * 0.5, clock: .continuous)
        let cacheVictim = Int.random(in: 0..<cacheFleet.members.count)
        cacheFleet.pause(cacheVictim)
        note("paused cache node \(cacheFleet.members[cacheVictim].address)")
        try? await Task.sleep(until: start + run.duration * 0.65, clock: .continuous)
        cacheFleet.resume(cacheVictim)
        note("resumed cache node \(cacheFleet.members[cacheVictim].address)")
        // A lock node comes back only after the lock TTL has passed (it restarts empty).
        try? await Task.sleep(until: killedAt + shopSettings.lockTTL + .milliseconds(200), clock: .continuous)
        try? lockFleet.restart(lockVictim)
        note("restarted lock node \(lockFleet.members[lockVictim].address) (empty, after more than the lock TTL)")
    }
    let interactive = isatty(STDOUT_FILENO) != 0 && !run.quiet
    let progress = Task {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            guard interactive, !Task.isCancelled else { continue }
            let line = String(format: "\r[%4.0fs] orders %6d  paid %5d  no-stock %6d  duplicates prevented %4d  p99 %7.2f ms   ",
                              (ContinuousClock.now - start).seconds, tally["attempted"], tally["paid"], tally["rejectedNoStock"],
                              tally["duplicates_prevented_by_strongbox"] + tally["duplicates_prevented_by_database"], latencies.percentile(99))
            FileHandle.standardOutput.write(line.data(using: .utf8)!)
        }
    }

    await withTaskGroup(of: Void.self) { group in
        for _ in 0..<run.buyers {
            group.addTask {
                while ContinuousClock.now < end {
                    let request = OrderRequest(idempotencyKey: UUID().uuidString, productID: hot.randomElement()!, quantity: 1)
                    let t0 = ContinuousClock.now
                    let outcome: OrderOutcome
                    if Double.random(in: 0..<1) < run.retryRate {
                        // The client gives up waiting and sends the same request again while the first is in flight.
                        async let first = shop.place(request)
                        try? await Task.sleep(for: .microseconds(Int64.random(in: 0...2000)))
                        tally.add("retries")
                        async let second = shop.place(request)
                        let (a, b) = await (first, second)
                        outcome = a == .duplicate ? b : a
                    } else {
                        outcome = await shop.place(request)
                    }
                    latencies.record(ContinuousClock.now - t0)
                    tally.add("attempted")
                    tally.add(outcome.rawValue)
                    try? await Task.sleep(for: .milliseconds(Int64.random(in: 1...10)))
                }
            }
        }
    }
    merchant.cancel()
    await merchant.value
    deliveries.cancel()
    await deliveries.value
    await chaos.value
    progress.cancel()
    if interactive { print("") }
    let elapsed = ContinuousClock.now - start

    let recovered = run.recover ? try store.recover() : (completed: 0, cancelled: 0)
    let hits = tally["cache_hits"], misses = tally["cache_misses"]
    await cache.shutdown()
    if let redlock { for n in redlock.nodes { await n.client.shutdown() } }
    return DemoReport(
        db: store.path, lockNodes: lockFleet.members.map(\.address), cacheNodes: cacheFleet.members.map(\.address),
        locks: shopSettings.useLocks, durationSeconds: elapsed.seconds, buyers: run.buyers, attempted: tally["attempted"],
        paid: tally["paid"], cancelled: tally["cancelled"], rejectedNoStock: tally["rejectedNoStock"],
        lockUnavailable: tally["lockUnavailable"], failed: tally["failed"], crashed: tally["crashed"], retries: tally["retries"],
        duplicatesPrevented: tally["duplicates_prevented_by_strongbox"] + tally["duplicates_prevented_by_database"],
        recoveredCompleted: recovered.completed, recoveredCancelled: recovered.cancelled,
        cacheHitRatio: hits + misses > 0 ? Double(hits) / Double(hits + misses) : 0, staleReads: tally["stale_price_reads"],
        p50Milliseconds: latencies.percentile(50), p99Milliseconds: latencies.percentile(99), counters: tally.all,
        chaos: chaosLog.withLock { $0 }, invariants: try store.invariants())
}
