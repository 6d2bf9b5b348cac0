import StrongboxClient

/// A granted lock: immutable facts about one acquisition (or extension).
///
/// There is deliberately no `isValid()`: all a client can know is the instant up to which the lock
/// is safe by the Redlock argument (`validUntil`, already shortened by the clock-drift allowance).
/// Compare it with `ContinuousClock.now` right before acting on the protected resource, or better,
/// let `Redlock.withLock` do it and cancel the work when the lock is lost.
public struct LockLease: Sendable, Hashable, CustomStringConvertible {
    /// The names (keys) locked together; one for an ordinary lock.
    public let names: [String]
    /// The random 20-byte token stored under every name on every node that granted the lock.
    public let token: [UInt8]
    /// When the lock stops being safe to rely on (client's monotonic clock).
    public let validUntil: ContinuousClock.Instant
    /// The nodes that granted (or, after an extension, extended) the lock.
    public let grantedBy: [Endpoint]
    /// When it was first acquired.
    public let acquiredAt: ContinuousClock.Instant
    /// The TTL it was taken (or last extended) with.
    public let ttl: Duration
    /// How many times it has been extended.
    public let extensions: Int

    /// The first (usually only) name.
    public var name: String { names[0] }

    /// The token as 40 hex digits (what `redis-cli GET name` shows, escaped).
    public var tokenHex: String {
        token.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined()
    }

    public var description: String {
        "LockLease(\(names.joined(separator: ",")), token \(tokenHex.prefix(8))…, nodes \(grantedBy.count), extensions \(extensions))"
    }

    func extended(validUntil: ContinuousClock.Instant, grantedBy: [Endpoint], ttl: Duration) -> LockLease {
        LockLease(names: names, token: token, validUntil: validUntil, grantedBy: grantedBy, acquiredAt: acquiredAt,
                  ttl: ttl, extensions: extensions + 1)
    }
}

/// What one node answered to one lock request.
public struct NodeOutcome: Sendable, Hashable, CustomStringConvertible {
    public enum Result: Sendable, Hashable {
        /// The node stored our token (for every name).
        case granted
        /// Another owner's token is there (for at least one name).
        case heldByAnother
        /// No answer within the per-node timeout.
        case timedOut
        /// The node answered with an error or could not be reached.
        case failed(StrongboxError)
    }

    public let node: Endpoint
    public let result: Result

    public var description: String {
        switch result {
        case .granted: return "\(node): granted"
        case .heldByAnother: return "\(node): held by another owner"
        case .timedOut: return "\(node): timed out"
        case .failed(let e): return "\(node): \(e)"
        }
    }
}

/// Why a lock operation failed.
public enum RedlockError: Error, Sendable, CustomStringConvertible {
    /// Too many nodes hold another owner's token for a quorum to be possible.
    case held(names: [String], byAnotherOwnerOn: [Endpoint], attempts: Int)
    /// Fewer than a quorum granted the lock (or validity ran out); why, per node.
    case noQuorum(names: [String], outcomes: [NodeOutcome], attempts: Int)
    /// The acquire deadline passed before a quorum granted the lock.
    case timedOut(names: [String], waited: Duration, lastOutcomes: [NodeOutcome])
    /// The task was cancelled while acquiring (anything partly acquired was released).
    case cancelled(names: [String])
    /// An extension did not reach a quorum within the lease's validity.
    case notExtended(LockLease, outcomes: [NodeOutcome])
    /// The lease has been extended as often as the configuration allows.
    case extensionLimitReached(LockLease)
    /// `withLock`: the lock was lost while the body ran (extension failed or validity passed); the body was cancelled.
    case lockLost(LockLease, reason: String)

    public var description: String {
        switch self {
        case let .held(names, nodes, attempts):
            return "lock \(names.joined(separator: ",")) is held by another owner on \(nodes.map(\.description).joined(separator: ", ")) (\(attempts) attempts)"
        case let .noQuorum(names, outcomes, attempts):
            return "lock \(names.joined(separator: ",")): no quorum after \(attempts) attempts: \(outcomes.map(\.description).joined(separator: "; "))"
        case let .timedOut(names, waited, outcomes):
            return "lock \(names.joined(separator: ",")): not acquired within \(waited): \(outcomes.map(\.description).joined(separator: "; "))"
        case let .cancelled(names):
            return "lock \(names.joined(separator: ",")): cancelled while acquiring"
        case let .notExtended(lease, outcomes):
            return "\(lease): extension failed: \(outcomes.map(\.description).joined(separator: "; "))"
        case let .extensionLimitReached(lease):
            return "\(lease): extension limit reached"
        case let .lockLost(lease, reason):
            return "\(lease): lost: \(reason)"
        }
    }
}
