import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A key as a command names it: its bytes and a fixed 64-bit hash of them, computed once per command.
///
/// The hash picks the shard and the table slot, and a slot's stored hash is compared before any
/// key bytes. Keys of up to 24 bytes are copied inline (no reference to the request buffer);
/// a longer one is a view into the request. The keyspace keeps its own copy inside the
/// key's record (`Record`), never this value.
public struct Key: Equatable, Sendable {
    @usableFromInline
    enum Storage: Sendable {
        /// Zero-padded words and the length.
        case inline(UInt64, UInt64, UInt64, count: UInt8)
        case probe(ByteBuffer)
    }

    @usableFromInline let storage: Storage
    public let hash: UInt64

    /// Bytes kept inline, with no reference to the request's buffer.
    public static let inlineCapacity = 24

    @inline(__always)
    public init(_ bytes: ByteBuffer) {
        hash = KeyHash.hash(bytes)
        guard bytes.readableBytes <= Self.inlineCapacity else {
            storage = .probe(bytes)
            return
        }
        var words: (UInt64, UInt64, UInt64) = (0, 0, 0)
        bytes.withUnsafeReadableBytes { b in
            if b.count > 0 { Swift.withUnsafeMutableBytes(of: &words) { $0.baseAddress!.copyMemory(from: b.baseAddress!, byteCount: b.count) } }
        }
        storage = .inline(words.0, words.1, words.2, count: UInt8(bytes.readableBytes))
    }

    /// Length in bytes.
    @inlinable
    public var count: Int {
        switch storage {
        case .inline(_, _, _, let n): return Int(n)
        case .probe(let b): return b.readableBytes
        }
    }

    @inlinable
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        switch storage {
        case .inline(let a, let b, let c, let n):
            var words = (a, b, c)
            return Swift.withUnsafeBytes(of: &words) { body(UnsafeRawBufferPointer(rebasing: $0[0..<Int(n)])) }
        case .probe(let b):
            return b.withUnsafeReadableBytes(body)
        }
    }

    /// The bytes as a buffer of their own (for replies such as `KEYS`).
    public var buffer: ByteBuffer {
        withUnsafeBytes { ByteBuffer(bytes: $0) }
    }

    @inline(__always)
    public static func == (a: Key, b: Key) -> Bool {
        guard a.hash == b.hash else { return false }
        // Inline bytes are zero-padded, so comparing the words compares the bytes.
        if case .inline(let a0, let a1, let a2, let an) = a.storage, case .inline(let b0, let b1, let b2, let bn) = b.storage {
            return an == bn && a0 == b0 && a1 == b1 && a2 == b2
        }
        return a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in x.count == y.count && (x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0) }
        }
    }
}

/// A fast fixed 64-bit hash of bytes (in-process use: shard and table slot).
public enum KeyHash {
    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 33)) &* 0xff51_afd7_ed55_8ccd
        z = (z ^ (z >> 33)) &* 0xc4ce_b9fe_1a85_ec53
        return z ^ (z >> 33)
    }

    @inline(__always)
    public static func hash(_ buffer: ByteBuffer) -> UInt64 {
        buffer.withUnsafeReadableBytes { bytes -> UInt64 in
            var h: UInt64 = 0x9e37_79b9_7f4a_7c15 ^ UInt64(bytes.count)
            var i = 0
            let n = bytes.count
            while i + 8 <= n {
                let w = bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                h = (h ^ w) &* 0x9e37_79b9_7f4a_7c15
                h ^= h >> 29
                i += 8
            }
            if i < n {
                var tail: UInt64 = 0
                var shift: UInt64 = 0
                while i < n {
                    tail |= UInt64(bytes[i]) << shift
                    shift += 8
                    i += 1
                }
                h = (h ^ tail) &* 0x9e37_79b9_7f4a_7c15
            }
            return mix(h)
        }
    }
}

/// An identifier of the calling thread (nonzero).
@inline(__always)
func currentThreadID() -> UInt {
    #if canImport(Darwin)
    return UInt(bitPattern: pthread_self())
    #else
    return UInt(pthread_self())
    #endif
}

/// The data of the server: striped shards, each a dictionary behind its own lock.
///
/// Shards only need to outnumber the threads that contend for them: a script locks them all,
/// so more shards than that make every script slower without making commands faster.
///
/// A lock is held only for the in-memory work of one command, never across I/O. Multi-key
/// operations lock the shards they touch in index order (`withShards`), so they are atomic.
public final class Keyspace: @unchecked Sendable {
    private struct Slot {
        var mutex = pthread_mutex_t()
        var state = ShardState()
    }

    public let shardCount: Int
    public let clock: any KeyspaceClock
    // Shard storage lives in one allocation reached through a pointer: no reference counting
    // and no dynamic exclusivity checks on the per-command path.
    private let slots: UnsafeMutablePointer<Slot>
    /// The thread holding every shard lock for an atomic script, or 0. Its own commands then
    /// run without locking (they already hold everything); every other thread locks as usual
    /// and so waits for the script to finish.
    private let exclusiveOwner = Atomic<UInt>(0)

    @inline(__always)
    private var holdsEverything: Bool {
        let owner = exclusiveOwner.load(ordering: .relaxed)
        return owner != 0 && owner == currentThreadID()
    }

    /// Two counters: the bytes held by all shards as they last reported (each within
    /// `ShardState.reportStep`), then the highest that total has reached.
    private let used: UnsafeMutablePointer<Atomic<Int>>
    private let evictionStart = Atomic<Int>(0)

    public init(shardCount: Int = 32, clock: any KeyspaceClock = SystemClock()) {
        self.shardCount = max(1, shardCount)
        self.clock = clock
        used = .allocate(capacity: 2)
        used.initialize(to: Atomic(0))
        (used + 1).initialize(to: Atomic(0))
        slots = .allocate(capacity: self.shardCount)
        slots.initialize(repeating: Slot(), count: self.shardCount)
        for i in 0..<self.shardCount {
            pthread_mutex_init(&slots[i].mutex, nil)
            slots[i].state.total = used
            slots[i].state.randomState = UInt64(i + 1) &* 0x2545_f491_4f6c_dd1d ^ UInt64.random(in: 0...UInt64.max)
        }
    }

    deinit {
        for i in 0..<shardCount {
            slots[i].state.removeAll()
            pthread_mutex_destroy(&slots[i].mutex)
        }
        slots.deinitialize(count: shardCount)
        slots.deallocate()
        used.deinitialize(count: 2)
        used.deallocate()
    }

    /// Bytes the keyspace holds, read without locking (each shard's share may lag by up to
    /// `ShardState.reportStep`).
    public var usedBytesEstimate: Int { used.pointee.load(ordering: .relaxed) }

    /// The highest `usedBytesEstimate` since start or `resetStats()`.
    public var peakUsedBytes: Int { (used + 1).pointee.load(ordering: .relaxed) }

    /// How far `usedBytesEstimate` may trail the exact total.
    public var reportingSlack: Int { shardCount * ShardState.reportStep }

    /// The shard that holds `key`.
    @inline(__always)
    public func shardIndex(for key: Key) -> Int {
        Int(truncatingIfNeeded: (key.hash >> 32) % UInt64(shardCount))
    }

    /// Runs `body` on shard `index` with its lock held.
    @inline(__always)
    public func withShard<R, E: Error>(_ index: Int, _ body: (inout ShardState) throws(E) -> R) throws(E) -> R {
        let slot = slots + index
        if holdsEverything { return try body(&slot.pointee.state) }
        pthread_mutex_lock(&slot.pointee.mutex)
        defer { pthread_mutex_unlock(&slot.pointee.mutex) }
        return try body(&slot.pointee.state)
    }

    /// Runs `body` on the shard of `key` with its lock held.
    @inline(__always)
    public func withShard<R, E: Error>(for key: Key, _ body: (inout ShardState) throws(E) -> R) throws(E) -> R {
        try withShard(shardIndex(for: key), body)
    }

    /// Locks the shards of all `keys` in index order, runs `body` with access to them, then unlocks.
    /// The `ShardSet` is valid only inside `body`.
    public func withShards<R, E: Error>(for keys: some Sequence<Key>, _ body: (inout ShardSet) throws(E) -> R) throws(E) -> R {
        if holdsEverything {
            var set = ShardSet(keyspace: self, slots: UnsafeMutableRawPointer(slots))
            return try body(&set)
        }
        var indices = Array(Set(keys.map { shardIndex(for: $0) }))
        indices.sort()
        for i in indices { pthread_mutex_lock(&slots[i].mutex) }
        defer { for i in indices.reversed() { pthread_mutex_unlock(&slots[i].mutex) } }
        var set = ShardSet(keyspace: self, slots: UnsafeMutableRawPointer(slots))
        return try body(&set)
    }

    /// Locks the shards of the keys at argument positions `first`, `first + step`, … of `args`
    /// in index order, runs `body`, then unlocks: a multi-key command is atomic (no other client
    /// sees part of it) without allocating (the shards held are one bit set when there are at
    /// most 64 of them).
    public func withShards<R, E: Error>(ofKeysIn args: [ByteBuffer], from first: Int, step: Int = 1,
                                        _ body: (inout ShardSet) throws(E) -> R) throws(E) -> R {
        var set = ShardSet(keyspace: self, slots: UnsafeMutableRawPointer(slots))
        if holdsEverything { return try body(&set) }
        guard shardCount <= 64 else {
            return try withShards(for: stride(from: first, to: args.count, by: step).map { Key(args[$0]) }, body)
        }
        var mask: UInt64 = 0
        var p = first
        while p < args.count {
            let hash = KeyHash.hash(args[p])
            mask |= 1 << ((hash >> 32) % UInt64(shardCount))
            p += step
        }
        var m = mask
        while m != 0 {
            let i = m.trailingZeroBitCount
            pthread_mutex_lock(&slots[i].mutex)
            m &= m - 1
        }
        defer {
            var m = mask
            while m != 0 {
                let i = 63 - m.leadingZeroBitCount
                pthread_mutex_unlock(&slots[i].mutex)
                m &= ~(1 << UInt64(i))
            }
        }
        return try body(&set)
    }

    /// Locks every shard in order (for whole-keyspace atomic work such as `FLUSHALL`).
    public func withAllShards<R>(_ body: (inout ShardSet) -> R) -> R {
        withShards(indices: Array(0..<shardCount), body)
    }

    /// Runs `body` holding every shard lock, so nothing else touches the keyspace meanwhile
    /// (scripts). Commands `body` runs on this thread go ahead without locking.
    public func withExclusiveAccess<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        if holdsEverything { return try body() }
        for i in 0..<shardCount { pthread_mutex_lock(&slots[i].mutex) }
        exclusiveOwner.store(currentThreadID(), ordering: .relaxed)
        defer {
            exclusiveOwner.store(0, ordering: .relaxed)
            for i in (0..<shardCount).reversed() { pthread_mutex_unlock(&slots[i].mutex) }
        }
        return try body()
    }

    private func withShards<R>(indices: [Int], _ body: (inout ShardSet) -> R) -> R {
        if holdsEverything {
            var set = ShardSet(keyspace: self, slots: UnsafeMutableRawPointer(slots))
            return body(&set)
        }
        for i in indices { pthread_mutex_lock(&slots[i].mutex) }
        defer { for i in indices.reversed() { pthread_mutex_unlock(&slots[i].mutex) } }
        var set = ShardSet(keyspace: self, slots: UnsafeMutableRawPointer(slots))
        return body(&set)
    }

    /// Access to several locked shards; see `Keyspace.withShards(for:_:)`.
    public struct ShardSet {
        let keyspace: Keyspace
        fileprivate let slots: UnsafeMutableRawPointer

        /// The shard of `key`. Its lock must be among those held.
        public func withShard<R>(for key: Key, _ body: (inout ShardState) -> R) -> R {
            let slot = slots.assumingMemoryBound(to: Slot.self) + keyspace.shardIndex(for: key)
            return body(&slot.pointee.state)
        }

        public func withShard<R>(_ index: Int, _ body: (inout ShardState) -> R) -> R {
            let slot = slots.assumingMemoryBound(to: Slot.self) + index
            return body(&slot.pointee.state)
        }
    }

    // MARK: Whole-keyspace views

    /// Live keys (expired ones removed on the way).
    public var count: Int {
        withAllShards { set in
            var total = 0
            for i in 0..<shardCount { total += set.withShard(i) { $0.count } }
            return total
        }
    }

    public struct Totals: Sendable {
        public var keys = 0, expires = 0, locks = 0, usedBytes = 0, hits = 0, misses = 0, expiredKeys = 0
        public var evictedKeys = 0, evictedLocksSkipped = 0
    }

    /// Counters summed over all shards, for `INFO` and `DBSIZE`.
    public func totals() -> Totals {
        var t = Totals()
        for i in 0..<shardCount {
            withShard(i) { s in
                t.keys += s.count
                t.expires += s.expiringCount
                t.locks += s.lockCount
                t.usedBytes += s.usedBytes
                t.evictedKeys += s.evictedKeys
                t.evictedLocksSkipped += s.evictedLocksSkipped
                t.hits += s.hits
                t.misses += s.misses
                t.expiredKeys += s.expiredKeys
            }
        }
        return t
    }

    /// Zeroes the hit, miss, expired and evicted counters and restarts the peak (`CONFIG RESETSTAT`).
    public func resetStats() {
        (used + 1).pointee.store(usedBytesEstimate, ordering: .relaxed)
        for i in 0..<shardCount {
            withShard(i) { s in
                s.hits = 0
                s.misses = 0
                s.resetExpiredCount()
                s.evictedKeys = 0
                s.evictedLocksSkipped = 0
            }
        }
    }

    /// Removes every key atomically and hands the freed memory back to the system.
    /// - Returns: how many were removed.
    @discardableResult
    public func flush() -> Int {
        let removed = withAllShards { set in
            var removed = 0
            for i in 0..<shardCount {
                set.withShard(i) { s in
                    removed += s.count
                    s.removeAll()
                }
            }
            return removed
        }
        ProcessAllocator.releaseFreeMemory()
        return removed
    }

    /// One round of active expiry over all shards in the spirit of Redis's adaptive cycle: walk
    /// `slotsPerRound` table slots of each shard, and walk that shard again while more than a
    /// quarter of the keys with a deadline seen had expired, up to `maxRoundsPerShard`.
    /// - Returns: how many keys were removed.
    @discardableResult
    public func sweepExpired(slotsPerRound: Int = 512, maxRoundsPerShard: Int = 16) -> Int {
        var removed = 0
        for i in 0..<shardCount {
            var rounds = 0
            while rounds < maxRoundsPerShard {
                rounds += 1
                let now = clock.now()
                let (seen, expired) = withShard(i) { $0.sweepExpired(now: now, budget: slotsPerRound) }
                removed += expired
                if seen == 0 || expired * 4 <= seen { break }
            }
        }
        return removed
    }

    // MARK: Eviction

    /// Switches every shard between recency (LRU) and frequency (LFU) tracking.
    public func trackFrequency(_ on: Bool) {
        for i in 0..<shardCount { withShard(i) { $0.tracksFrequency = on } }
    }

    public enum EvictionOutcome: Sendable, Equatable {
        /// The keyspace fits the limit.
        case fits
        /// Still over the limit when the time budget ran out; eviction goes on later.
        case inProgress
        /// Cannot fit: the policy is `noeviction`, or nothing left may be evicted (with
        /// `protectLocks`, only locks).
        case impossible
    }

    /// Evicts keys by `policy` until the keyspace holds no more than `limit` bytes, for at most
    /// `budgetMilliseconds` (nil: no limit). Shards are visited round-robin from a moving start,
    /// one key each, so the load spreads and the sampling approximates sampling the whole keyspace.
    ///
    /// The budget keeps one command from stalling its event loop when the limit drops far below
    /// what is held (`CONFIG SET maxmemory`): like Redis, the command then goes ahead and the
    /// server's background task carries on evicting.
    public func evict(toFit limit: Int, policy: EvictionPolicy, samples: Int, protectLocks: Bool,
                      budgetMilliseconds: Int64? = nil) -> EvictionOutcome {
        guard usedBytesEstimate > limit else { return .fits }
        guard policy != .noeviction else { return .impossible }
        var shard = evictionStart.wrappingAdd(1, ordering: .relaxed).oldValue % shardCount
        var fruitless = 0
        let start = clock.now()
        var evicted = 0
        while usedBytesEstimate > limit {
            let now = clock.now()
            if let budget = budgetMilliseconds, evicted > 0, now - start > budget { return .inProgress }
            let removed = withShard(shard) { $0.evictOne(policy: policy, samples: samples, protectLocks: protectLocks, now: now) }
            if removed {
                fruitless = 0
                evicted += 1
            } else {
                fruitless += 1
                if fruitless >= shardCount { return .impossible }
            }
            shard = (shard + 1) % shardCount
        }
        return .fits
    }

    /// Visits the live keys of shard `index` (for `KEYS` and `SCAN`).
    public func forEachKey(inShard index: Int, now: Int64, _ body: (ByteBuffer, Entry) -> Void) {
        withShard(index) { s in
            s.forEach(now: now) { key, entry in body(ByteBuffer(bytes: key), entry) }
        }
    }

    /// A random live key, or nil when the keyspace is empty.
    public func randomKey() -> ByteBuffer? {
        let now = clock.now()
        let start = Int.random(in: 0..<shardCount)
        for offset in 0..<shardCount {
            let i = (start + offset) % shardCount
            if let key = withShard(i, { $0.randomKey(now: now) }) { return key }
        }
        return nil
    }
}
