import NIOCore
import Synchronization

/// One client's `WATCH`: set when any key it watches is written, deleted, expired, evicted or
/// flushed, by anyone (the client itself included), until its `EXEC`, `DISCARD` or `UNWATCH`.
public final class WatchToken: Sendable {
    private let touched = Atomic<Bool>(false)

    public init() {}

    /// Whether a watched key has changed since it was watched.
    public var isDirty: Bool { touched.load(ordering: .acquiring) }

    func markDirty() { touched.store(true, ordering: .releasing) }
}

/// A watched key's bytes, owned (the registry outlives the request that named the key).
struct WatchedKey: Hashable {
    let bytes: [UInt8]

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = Array(bytes) }
}

extension ShardState {
    /// Registrations of watched keys in this shard (tests: none is left behind).
    public var watchedKeyCount: Int { watchedKeys }

    /// Marks every client watching `key` (called by each write path while `watchedKeys > 0`).
    mutating func touchWatched(_ key: Key) {
        key.withUnsafeBytes { touchWatched(bytes: $0) }
    }

    mutating func touchWatched(bytes: UnsafeRawBufferPointer) {
        guard let tokens = watchers[WatchedKey(bytes)] else { return }
        for t in tokens { t.markDirty() }
    }

    /// `FLUSHALL`/`FLUSHDB`: marks the clients watching keys that exist (as Redis, a watched key
    /// that is absent is not changed by emptying the database).
    mutating func touchAllWatchedPresent() {
        for (key, tokens) in watchers {
            let present = key.bytes.withUnsafeBytes { b in find(Key(ByteBuffer(bytes: b))) >= 0 }
            if present { for t in tokens { t.markDirty() } }
        }
    }

    /// Registers `token` as watching `key`. A key already past its deadline is removed first, so
    /// only a key that was live when watched counts as changed by its expiry.
    public mutating func watch(_ key: Key, token: WatchToken, now: Int64) {
        _ = peek(key, now: now)
        let k = key.withUnsafeBytes { WatchedKey($0) }
        watchers[k, default: []].append(token)
        watchedKeys += 1
    }

    /// Removes `token`'s registration for `key`.
    public mutating func unwatch(_ key: Key, token: WatchToken) {
        let k = key.withUnsafeBytes { WatchedKey($0) }
        guard var tokens = watchers[k], let i = tokens.firstIndex(where: { $0 === token }) else { return }
        tokens.remove(at: i)
        watchedKeys -= 1
        watchers[k] = tokens.isEmpty ? nil : tokens
    }
}
