/// One lock holding as the worker saw it, on the client's monotonic clock (µs since the run started).
public struct LockRecord: Codable, Sendable, Equatable {
    public var worker: Int
    public var lock: String
    public var token: String
    public var requested: Int64
    public var granted: Int64
    /// When the worker left its critical section and sent the release.
    public var released: Int64
    /// Until when the lease was valid (Redlock's validity).
    public var validUntil: Int64
    /// The release found the lock already gone (expired, or deleted by someone else) on enough nodes.
    public var releaseFoundGone: Bool

    public init(worker: Int, lock: String, token: String, requested: Int64, granted: Int64, released: Int64,
                validUntil: Int64, releaseFoundGone: Bool = false) {
        self.worker = worker
        self.lock = lock
        self.token = token
        self.requested = requested
        self.granted = granted
        self.released = released
        self.validUntil = validUntil
        self.releaseFoundGone = releaseFoundGone
    }
}

/// Two holders of one lock whose critical sections overlapped.
public struct Violation: Codable, Sendable, Equatable {
    public var lock: String
    public var first: LockRecord
    public var second: LockRecord
    /// How long both were inside, in µs.
    public var overlapMicroseconds: Int64
}

/// What the checker found in a lock history.
public struct CheckResult: Codable, Sendable, Equatable {
    /// Pairs of holders of the same lock inside their critical sections at the same time.
    public var violations: [Violation]
    /// Of those, pairs whose *validity* intervals overlapped too: the lock service itself granted
    /// the lock twice (as opposed to a holder outliving its lease).
    public var validityViolations: Int
    /// Critical sections that ran past their lease's validity.
    public var outlivedValidity: Int
    /// Releases that found the lock already gone.
    public var releasesFoundGone: Int
    public var holdings: Int
}

/// Proves mutual exclusion from a history: for each lock, sorts the holdings by grant time and
/// checks that each one's critical section `[granted, released)` ends before the next begins.
/// Touching intervals (one ends exactly when the next begins) do not overlap.
public func checkMutualExclusion(_ records: [LockRecord]) -> CheckResult {
    var violations: [Violation] = []
    var validityViolations = 0
    let byLock = Dictionary(grouping: records, by: \.lock)
    for (lock, holdings) in byLock.sorted(by: { $0.key < $1.key }) {
        let sorted = holdings.sorted { ($0.granted, $0.released) < ($1.granted, $1.released) }
        // Compare each holding with every earlier one still open (a sweep over the latest end).
        var open: [LockRecord] = []
        for h in sorted {
            open.removeAll { $0.released <= h.granted }
            for o in open {
                let overlap = min(o.released, h.released) - h.granted
                violations.append(Violation(lock: lock, first: o, second: h, overlapMicroseconds: overlap))
                if min(o.validUntil, o.released) > h.granted { validityViolations += 1 }
            }
            open.append(h)
        }
    }
    return CheckResult(
        violations: violations,
        validityViolations: validityViolations,
        outlivedValidity: records.filter { $0.released > $0.validUntil }.count,
        releasesFoundGone: records.filter(\.releaseFoundGone).count,
        holdings: records.count)
}
