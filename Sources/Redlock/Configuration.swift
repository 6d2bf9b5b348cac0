import CoreMetrics

/// How `Redlock` acquires, retries and extends.
public struct RedlockConfiguration: Sendable {
    /// Clock drift allowance: validity = TTL − elapsed − (TTL × driftFactor + driftConstant).
    public var driftFactor: Double = 0.01
    public var driftConstant: Duration = .milliseconds(2)
    /// Each node gets this fraction of the TTL to answer, so one stopped node cannot eat the validity.
    public var nodeTimeoutFraction: Double = 0.1
    /// Attempts after the first one; nil retries until `acquireTimeout`.
    public var retryCount: Int? = 3
    /// Wait between attempts: `retryDelay` plus a random 0…`retryJitter`.
    public var retryDelay: Duration = .milliseconds(50)
    public var retryJitter: Duration = .milliseconds(50)
    /// Give up acquiring after this long (nil: only `retryCount` bounds it).
    public var acquireTimeout: Duration?
    /// `withLock`: tasks of this process that want the same names take turns locally
    /// (`Redlock.turns`) before going to the nodes, so they do not split the nodes' votes among
    /// themselves. The wait counts against `acquireTimeout`.
    public var localTurns = true
    /// At most this many extensions per lease (`withLock`'s watchdog stops extending there).
    public var maximumExtensions: Int = 1000
    /// Where metrics go; nil uses `MetricsSystem.factory`.
    public var metricsFactory: (any MetricsFactory)?
    /// Label prefix of the metrics.
    public var metricsPrefix = "redlock"

    public init() {}
}
