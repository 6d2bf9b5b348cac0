import Synchronization

/// A keyed FIFO async mutex: tasks of this process that want the same key take turns locally.
///
/// Put in front of a distributed lock it keeps contention where it is cheap: only one task per
/// process competes for a product's Redlock at a time, instead of dozens sending `SET NX` to every
/// node and splitting the votes (each winning a different node, nobody a quorum).
final class LocalGate: Sendable {
    private struct Entry {
        var held = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex([String: Entry]())

    /// Runs `body` in `key`'s turn; with `enabled` false it runs at once (no coordination at all).
    func withTurn<T>(_ key: String, enabled: Bool = true, _ body: () async throws -> T) async rethrows -> T {
        guard enabled else { return try await body() }
        await enter(key)
        defer { leave(key) }
        return try await body()
    }

    private func enter(_ key: String) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s[key, default: Entry()].held {
                    s[key]!.waiters.append(c)
                    return false
                }
                s[key, default: Entry()].held = true
                return true
            }
            if now { c.resume() }
        }
    }

    private func leave(_ key: String) {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard var e = s[key] else { return nil }
            if e.waiters.isEmpty {
                s[key] = nil
                return nil
            }
            let n = e.waiters.removeFirst()
            s[key] = e  // stays held: handed to the next waiter
            _ = e
            return n
        }
        next?.resume()
    }
}
