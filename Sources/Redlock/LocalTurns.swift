import Synchronization

/// Keyed FIFO turns for the tasks of one process: tasks that want the same key wait in line
/// locally, one at a time goes ahead.
///
/// Put in front of a distributed lock it keeps contention where it is cheap. Without it, dozens
/// of tasks of one process wanting the same lock all send `SET NX` to every node at once and split
/// the votes (each wins a different node, nobody a quorum, all back off and retry); with it, one
/// task per process competes and the others take the lock as it is handed on. `Redlock.withLock`
/// uses the Redlock's own `turns` when `RedlockConfiguration.localTurns` is on (the default).
///
/// Waiting ends early on cancellation and at an optional deadline.
public final class LocalTurns: Sendable {
    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct Line {
        var held = false
        var waiters: [Waiter] = []
    }

    private struct State {
        var lines: [String: Line] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    /// Raised by `withTurn` when the deadline passes before the turn comes.
    public struct TimedOut: Error, Sendable {}

    public init() {}

    /// Waits for `key`'s turn, until `deadline` (nil: as long as it takes).
    /// - Returns: true with the turn held (give it back with `leave`); false when the task was
    ///   cancelled or the deadline passed first (no turn is held then).
    public func enter(_ key: String, until deadline: ContinuousClock.Instant? = nil) async -> Bool {
        let id = state.withLock { s -> UInt64 in
            s.nextID &+= 1
            return s.nextID
        }
        let expiry = ExpiryTimer()
        let granted = await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                // Checked under the lock that `abandon` takes: a cancellation either is seen here
                // or finds the waiter queued.
                let now: Bool? = state.withLock { s in
                    if Task.isCancelled { return false }
                    if s.lines[key, default: Line()].held {
                        s.lines[key]!.waiters.append(Waiter(id: id, continuation: c))
                        return nil
                    }
                    s.lines[key, default: Line()].held = true
                    return true
                }
                if let now {
                    c.resume(returning: now)
                } else if let deadline {
                    expiry.start { [self] in
                        try? await Task.sleep(until: deadline, clock: .continuous)
                        if !Task.isCancelled { abandon(key, id) }
                    }
                }
            }
        } onCancel: {
            abandon(key, id)
        }
        expiry.cancel()
        return granted
    }

    /// Gives `key`'s turn to the next waiter, or frees it.
    public func leave(_ key: String) {
        let next = state.withLock { s -> Waiter? in
            guard var line = s.lines[key] else { return nil }
            guard !line.waiters.isEmpty else {
                s.lines[key] = nil
                return nil
            }
            let first = line.waiters.removeFirst()
            s.lines[key] = line  // still held: handed to the next in line
            return first
        }
        next?.continuation.resume(returning: true)
    }

    /// Runs `body` in `key`'s turn. Throws `CancellationError` when cancelled while waiting and
    /// `LocalTurns.TimedOut` when `deadline` passes first; the turn is given back however `body` ends.
    public func withTurn<T>(_ key: String, until deadline: ContinuousClock.Instant? = nil,
                            _ body: () async throws -> T) async throws -> T {
        guard await enter(key, until: deadline) else {
            if Task.isCancelled { throw CancellationError() }
            throw TimedOut()
        }
        defer { leave(key) }
        return try await body()
    }

    /// Tasks waiting for `key` (not counting the one holding it).
    public func waiting(_ key: String) -> Int {
        state.withLock { $0.lines[key]?.waiters.count ?? 0 }
    }

    /// The task that ends one wait at its deadline.
    private final class ExpiryTimer: Sendable {
        private let task = Mutex<Task<Void, Never>?>(nil)
        func start(_ body: @escaping @Sendable () async -> Void) { task.withLock { $0 = Task(operation: body) } }
        func cancel() { task.withLock { $0?.cancel() } }
    }

    /// A waiter that gave up (cancelled or past its deadline) leaves the line, told false.
    private func abandon(_ key: String, _ id: UInt64) {
        let gone = state.withLock { s -> Waiter? in
            guard let i = s.lines[key]?.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.lines[key]!.waiters.remove(at: i)
        }
        gone?.continuation.resume(returning: false)
    }
}
