import Histogram
import Synchronization

/// Collects what a run measured: latency (overall and per second), errors by kind, counters.
/// Shared by every worker task.
public final class Recorder: Sendable {
    struct Second {
        var ops = 0
        var errors = 0
        var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000)
    }

    struct State {
        var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000)
        var seconds: [Int: Second] = [:]
        var errors: [String: Int] = [:]
        var ops = 0
        var counters: [String: Int] = [:]
    }

    public let start: ContinuousClock.Instant
    private let state = Mutex(State())

    public init(start: ContinuousClock.Instant = .now) { self.start = start }

    /// µs since the run started.
    public func now() -> Int64 { (ContinuousClock.now - start).microseconds }

    /// A completed operation and how long it took.
    public func success(latency: Duration) {
        let us = UInt64(max(1, latency.microseconds))
        let second = Int((ContinuousClock.now - start).seconds)
        state.withLock { s in
            s.ops += 1
            _ = s.latency.record(us)
            s.seconds[second, default: Second()].ops += 1
            _ = s.seconds[second, default: Second()].latency.record(us)
        }
    }

    public func error(_ kind: String) {
        let second = Int((ContinuousClock.now - start).seconds)
        state.withLock { s in
            s.errors[kind, default: 0] += 1
            s.seconds[second, default: Second()].errors += 1
        }
    }

    public func count(_ name: String, by n: Int = 1) {
        state.withLock { $0.counters[name, default: 0] += n }
    }

    public var ops: Int { state.withLock { $0.ops } }
    public var errorCount: Int { state.withLock { $0.errors.values.reduce(0, +) } }
    public func counter(_ name: String) -> Int { state.withLock { $0.counters[name] ?? 0 } }

    /// ops/s, p99 (ms) and errors of the last complete second, for the progress line.
    public func lastSecond() -> (ops: Int, p99: Double, errors: Int) {
        let current = Int((ContinuousClock.now - start).seconds) - 1
        return state.withLock { s in
            guard let b = s.seconds[current] else { return (0, 0, 0) }
            return (b.ops, Double(b.latency.valueAtPercentile(99)) / 1000, b.errors)
        }
    }

    public func summary() -> LatencySummary {
        state.withLock { s in LatencySummary(s.latency) }
    }

    public func errorsByKind() -> [String: Int] { state.withLock { $0.errors } }

    /// One point per whole second of the run (a last, partial second is left out: it would read as a drop).
    public func timeline() -> [TimelinePoint] {
        let complete = Int((ContinuousClock.now - start).seconds)
        return state.withLock { s in
            guard let maxSecond = s.seconds.keys.max() else { return [] }
            let last = min(maxSecond, complete - 1)
            guard last >= 0 else { return [] }
            return (0...last).map { i in
                let b = s.seconds[i] ?? Second()
                return TimelinePoint(second: i, ops: b.ops, errors: b.errors,
                                     p99Milliseconds: b.ops > 0 ? Double(b.latency.valueAtPercentile(99)) / 1000 : 0)
            }
        }
    }
}

public struct LatencySummary: Codable, Sendable {
    public var p50Milliseconds: Double
    public var p90Milliseconds: Double
    public var p99Milliseconds: Double
    public var p999Milliseconds: Double
    public var maxMilliseconds: Double

    init(_ h: Histogram<UInt64>) {
        func ms(_ p: Double) -> Double { h.totalCount == 0 ? 0 : Double(h.valueAtPercentile(p)) / 1000 }
        p50Milliseconds = ms(50)
        p90Milliseconds = ms(90)
        p99Milliseconds = ms(99)
        p999Milliseconds = ms(99.9)
        maxMilliseconds = h.totalCount == 0 ? 0 : Double(h.max) / 1000
    }
}

public struct TimelinePoint: Codable, Sendable {
    public var second: Int
    public var ops: Int
    public var errors: Int
    public var p99Milliseconds: Double
}
