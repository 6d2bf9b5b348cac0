import Synchronization

/// Runs `operation` but returns `fallback` if it has not finished within `timeout` (the operation is
/// cancelled and its late result dropped). Unlike a task group this returns at the deadline even
/// when the operation ignores cancellation (a request waiting on a stopped server).
func withDeadline<T: Sendable>(_ timeout: Duration, fallback: T, _ operation: @escaping @Sendable () async -> T) async -> T {
    let race = Race<T>()
    return await withTaskCancellationHandler {
        await withCheckedContinuation { continuation in
            race.start(continuation, timeout: timeout, fallback: fallback, operation)
        }
    } onCancel: {
        race.finish(fallback)
    }
}

/// The shared state of one `withDeadline`: whoever finishes first resumes the caller.
private final class Race<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, Never>?
        var early: T?
        var tasks: [Task<Void, Never>] = []
        var done = false
    }

    private let state = Mutex(State())

    func start(_ continuation: CheckedContinuation<T, Never>, timeout: Duration, fallback: T,
               _ operation: @escaping @Sendable () async -> T) {
        let alreadyDone = state.withLock { s -> Bool in
            if s.done { return true }
            s.continuation = continuation
            return false
        }
        if alreadyDone {
            continuation.resume(returning: fallback)
            return
        }
        let work = Task { self.finish(await operation()) }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.finish(fallback)
        }
        let cancelNow = state.withLock { s -> Bool in
            s.tasks = [work, timer]
            return s.done
        }
        if cancelNow { work.cancel(); timer.cancel() }
    }

    func finish(_ value: T) {
        let (continuation, tasks) = state.withLock { s -> (CheckedContinuation<T, Never>?, [Task<Void, Never>]) in
            if s.done { return (nil, []) }
            s.done = true
            let c = s.continuation
            s.continuation = nil
            return (c, s.tasks)
        }
        for t in tasks { t.cancel() }
        continuation?.resume(returning: value)
    }
}
