import ArgumentParser
import Histogram
import Redlock
import StrongboxClient

/// Uncontended Redlock acquire + release against running nodes: what `Tools/bench` runs for its
/// Redlock rows. Prints one JSON object.
@main
struct RedlockBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redlock-bench",
        abstract: "Measure uncontended Redlock acquire+release (ops/s, p50/p99 latency) against running nodes.")

    @Option(help: "Comma-separated host:port of the lock nodes (1 node: single-instance lock; N: Redlock with quorum N/2+1).")
    var nodes: String

    @Option(help: "Acquire+release cycles to measure (after a warm-up of 200).")
    var ops: Int = 5000

    @Option(help: "Concurrent tasks, each locking its own names (no contention).")
    var concurrency: Int = 1

    @Option(help: "Lock TTL in milliseconds.")
    var ttl: Int = 10_000

    mutating func run() async throws {
        let endpoints = nodes.split(separator: ",").compactMap { Endpoint(String($0)) }
        guard !endpoints.isEmpty else { throw ValidationError("--nodes needs host:port entries") }
        let redlock = Redlock(endpoints: endpoints)
        let ttl = Duration.milliseconds(self.ttl)
        let (ops, concurrency) = (self.ops, self.concurrency)

        for i in 0..<200 {
            let lease = try await redlock.acquire("bench:warmup:\(i)", ttl: ttl)
            await redlock.release(lease)
        }
        let start = ContinuousClock.now
        let histograms = try await withThrowingTaskGroup(of: Histogram<UInt64>.self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    var h = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
                    var i = worker
                    while i < ops {
                        let t0 = ContinuousClock.now
                        let lease = try await redlock.acquire("bench:lock:\(worker):\(i % 1000)", ttl: ttl)
                        await redlock.release(lease)
                        let d = ContinuousClock.now - t0
                        let (s, atto) = d.components
                        _ = h.record(UInt64(s) * 1_000_000_000 + UInt64(atto / 1_000_000_000))
                        i += concurrency
                    }
                    return h
                }
            }
            var all: [Histogram<UInt64>] = []
            for try await h in group { all.append(h) }
            return all
        }
        let elapsed = ContinuousClock.now - start
        var merged = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
        for h in histograms { merged.add(h) }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        func ms(_ p: Double) -> String { String(Double(merged.valueAtPercentile(p)) / 1e6) }
        print("{\"nodes\": \(endpoints.count), \"ops\": \(ops), \"concurrency\": \(concurrency), \"ops_per_sec\": \(Double(ops) / seconds), \"p50_ms\": \(ms(50)), \"p99_ms\": \(ms(99)), \"max_ms\": \(Double(merged.max) / 1e6)}")
        for node in redlock.nodes { await node.client.shutdown() }
    }
}
