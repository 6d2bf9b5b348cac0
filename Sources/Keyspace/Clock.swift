#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The time source of a keyspace: milliseconds on a clock that never goes backwards.
///
/// Deadlines are kept on this clock, so a wall-clock jump never expires a key early or late.
/// The clock is anchored to Unix time once (when it is created): its readings look like Unix
/// milliseconds, so absolute times from clients (`PXAT`, `EXPIREAT`) and replies (`PEXPIRETIME`)
/// convert at the edges with no drift, while the passage of time comes from the monotonic clock.
public protocol KeyspaceClock: Sendable {
    /// Milliseconds since the Unix epoch as of the anchor, advanced by the monotonic clock.
    func now() -> Int64
}

/// The production clock: `CLOCK_REALTIME` read once at creation, then `CLOCK_MONOTONIC` elapsed time.
public struct SystemClock: KeyspaceClock {
    private let anchorUnixNanos: Int64
    private let anchorMonotonicNanos: Int64
    private let monotonic: @Sendable () -> Int64

    public init() {
        self.init(realtimeNanos: { Self.read(CLOCK_REALTIME) }, monotonicNanos: { Self.read(CLOCK_MONOTONIC) })
    }

    /// A clock on given time sources (tests use this to jump the wall clock). The wall clock is
    /// read once, here; from then on only the monotonic source moves `now()`.
    public init(realtimeNanos: @Sendable () -> Int64, monotonicNanos: @escaping @Sendable () -> Int64) {
        anchorUnixNanos = realtimeNanos()
        anchorMonotonicNanos = monotonicNanos()
        monotonic = monotonicNanos
    }

    @inline(__always)
    private static func read(_ id: clockid_t) -> Int64 {
        var ts = timespec()
        clock_gettime(id, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    @inline(__always)
    public func now() -> Int64 {
        (anchorUnixNanos + (monotonic() - anchorMonotonicNanos)) / 1_000_000
    }
}

/// A clock that moves only when told to: for tests that must never sleep.
public final class ManualClock: KeyspaceClock {
    private let milliseconds: Atomic<Int64>

    public init(_ start: Int64 = 1_700_000_000_000) {
        milliseconds = Atomic(start)
    }

    public func now() -> Int64 { milliseconds.load(ordering: .relaxed) }

    public func advance(by ms: Int64) {
        milliseconds.add(ms, ordering: .relaxed)
    }

    public func set(_ ms: Int64) {
        milliseconds.store(ms, ordering: .relaxed)
    }
}
