import Redlock
import Synchronization
import Testing

/// A count shared by the tasks of a test.
final class SharedCount: Sendable {
    let value = Atomic<Int>(0)
}

/// What the tasks of a test saw.
final class TurnLog: Sendable {
    let order = Mutex<[Int]>([])
    let inside = Atomic<Int>(0)
    let most = Atomic<Int>(0)
}

@Suite("LocalTurns")
struct LocalTurnsTests {
    /// Waits (politely) until `condition` holds.
    static func eventually(_ condition: () -> Bool) async {
        for _ in 0..<2_000 where !condition() { try? await Task.sleep(for: .milliseconds(1)) }
    }

    @Test("one task at a time per key, turns handed on in the order they were asked for")
    func fifo() async throws {
        let turns = LocalTurns()
        let log = TurnLog()
        #expect(await turns.enter("k"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<20 {
                group.addTask {
                    try await turns.withTurn("k") {
                        let now = log.inside.add(1, ordering: .relaxed).newValue
                        _ = log.most.max(now, ordering: .relaxed)
                        log.order.withLock { $0.append(i) }
                        try await Task.sleep(for: .milliseconds(1))
                        log.inside.subtract(1, ordering: .relaxed)
                    }
                }
                // Queue them one after another, so the line's order is known.
                await Self.eventually { turns.waiting("k") == i + 1 }
            }
            #expect(turns.waiting("k") == 20)
            turns.leave("k")
            try await group.waitForAll()
        }
        #expect(log.order.withLock { $0 } == Array(0..<20))
        #expect(log.most.load(ordering: .relaxed) == 1)
        #expect(turns.waiting("k") == 0)
        // The line is gone once the last one left: the next enter goes straight in.
        #expect(await turns.enter("k"))
        turns.leave("k")
    }

    @Test("a cancelled waiter leaves the line; the turn goes on to the next")
    func cancellation() async throws {
        let turns = LocalTurns()
        #expect(await turns.enter("k"))
        let cancelled = Task { await turns.enter("k") }
        await Self.eventually { turns.waiting("k") == 1 }
        let next = Task { await turns.enter("k") }
        await Self.eventually { turns.waiting("k") == 2 }
        cancelled.cancel()
        #expect(await cancelled.value == false)
        #expect(turns.waiting("k") == 1)
        turns.leave("k")
        #expect(await next.value == true)
        turns.leave("k")
        // Cancelled before asking: no turn, nothing queued.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return await turns.enter("k")
        }
        #expect(await early.value == false)
        #expect(turns.waiting("k") == 0)
    }

    @Test("a deadline ends the wait without the turn; other keys are not held up")
    func deadline() async throws {
        let turns = LocalTurns()
        #expect(await turns.enter("a"))
        let start = ContinuousClock.now
        let got = await turns.enter("a", until: start + .milliseconds(50))
        #expect(!got)
        #expect(ContinuousClock.now - start >= .milliseconds(50))
        #expect(turns.waiting("a") == 0)
        #expect(await turns.enter("b", until: start + .milliseconds(50)))
        await #expect(throws: LocalTurns.TimedOut.self) {
            try await turns.withTurn("a", until: ContinuousClock.now + .milliseconds(10)) {}
        }
        turns.leave("b")
        turns.leave("a")
        #expect(await turns.enter("a"))
        turns.leave("a")
    }
}
