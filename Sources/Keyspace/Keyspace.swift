import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A key: its bytes and a fixed 64-bit hash of them, computed once per command.
///
/// The hash picks the shard and is the dictionary's hash, and equality checks it first. Keys of
/// up to 24 bytes live inline, in the dictionary's own key array, so finding one touches no other
/// memory; a longer request key is looked up as a view into the request (no copy) and copied
/// into one allocation of its own only when stored.
public struct Key: Hashable, Sendable {
    @usableFromInline
    enum Storage: Sendable {
        case stored(StoredBytes)
        case probe(ByteBuffer)
    }

    @usableFromInline let storage: Storage
    public let hash: UInt64

    @inline(__always)
    public init(_ bytes: ByteBuffer) {
        hash = KeyHash.hash(bytes)
        storage = bytes.readableBytes <= StoredBytes.inlineCapacity ? .stored(StoredBytes(bytes)) : .probe(bytes)
    }

    @inline(__always)
    init(stored: StoredBytes, hash: UInt64) {
        self.storage = .stored(stored)
        self.hash = hash
    }

    /// Length in bytes.
    @inlinable
    public var count: Int {
        switch storage {
        case .stored(let s): return s.count
        case .probe(let b): return b.readableBytes
        }
    }

    /// Whether the key owns its bytes (true for every key the keyspace keeps).
    public var ownsItsBytes: Bool {
        if case .stored = storage { return true }
        return false
    }

    @inlinable
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        switch storage {
        case .stored(let s): return s.withUnsafeBytes(body)
        case .probe(let b): return b.withUnsafeReadableBytes(body)
        }
    }

    /// The bytes as a buffer of their own (for replies such as `KEYS`).
    public var buffer: ByteBuffer {
        withUnsafeBytes { ByteBuffer(bytes: $0) }
    }

    @inline(__always)
    public static func == (a: Key, b: Key) -> Bool {
        guard a.hash == b.hash else { return false }
        if case .stored(let x) = a.storage, case .stored(let y) = b.storage { return x == y }
        return a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in x.count == y.count && (x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0) }
        }
    }

    @inline(__always)
    public func hash(into hasher: inout Hasher) {
        hasher.combine(hash)
    }

    /// The dictionary's hash: the key's own 64-bit hash, already well mixed, folded with the
    /// table's seed, instead of running SipHash over it on every probe.
    @inline(__always)
    public func _rawHashValue(seed: Int) -> Int {
        Int(truncatingIfNeeded: KeyHash.mix(hash ^ UInt64(UInt(bitPattern: seed))))
    }

    /// The same key owning its bytes, for keeping in the keyspace.
    func compacted() -> Key {
        switch storage {
        case .stored: return self
        case .probe(let b): return Key(stored: StoredBytes(b), hash: hash)
        }
    }
}

/// A fast fixed 64-bit hash of bytes (in-process use: shard choice and dictionary hashing).
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

/// One stored key's value and metadata.
public struct Entry: Sendable {
    /// The string value, in storage of its own (never a view into a network buffer).
    public var value: StoredBytes
    /// Expiry deadline on the keyspace clock, or 0 when the key does not expire.
    public var deadline: Int64
    /// Position of the key in its shard's `expiring` list, or -1.
    fileprivate var expiryIndex: Int32

    public var hasDeadline: Bool { deadline != 0 }
}

/// Bytes an entry costs beyond its key and value bytes: dictionary slot, the two buffer
/// headers and their storage objects. Used by memory accounting.
public let entryOverheadBytes = 112

/// The keys and entries of one shard. Only ever touched with the shard's lock held.
public struct ShardState {
    public fileprivate(set) var table: [Key: Entry] = [:]
    /// Keys that carry a deadline, for the active expiry sweep to sample at random.
    fileprivate var expiring: [Key] = []
    /// Bytes the shard's keys and values hold (see `entryOverheadBytes`).
    public fileprivate(set) var usedBytes: Int = 0
    public var hits: Int = 0
    public var misses: Int = 0
    public fileprivate(set) var expiredKeys: Int = 0

    public var count: Int { table.count }
    public var expiringCount: Int { expiring.count }

    @inline(__always)
    static func cost(_ key: Key, _ value: StoredBytes) -> Int {
        key.count + value.count + entryOverheadBytes
    }

    /// The live entry for `key`, removing it first if its deadline has passed (lazy expiry).
    @inlinable
    public mutating func entry(_ key: Key, now: Int64) -> Entry? {
        guard let entry = table[key] else { return nil }
        if entry.deadline != 0 && now > entry.deadline {
            expire(key)
            return nil
        }
        return entry
    }

    /// Whether `key` exists and is live, counting a hit or a miss.
    @inlinable
    public mutating func lookupForRead(_ key: Key, now: Int64) -> Entry? {
        if let e = entry(key, now: now) {
            hits &+= 1
            return e
        }
        misses &+= 1
        return nil
    }

    @usableFromInline
    mutating func expire(_ key: Key) {
        _ = remove(key)
        expiredKeys &+= 1
    }

    /// Stores `value` under `key`. The deadline is `deadline` (0 for none), or the existing one when `keepTTL`.
    public mutating func set(_ key: Key, value: ByteBuffer, deadline: Int64, keepTTL: Bool = false) {
        set(key, value: StoredBytes(value), deadline: deadline, keepTTL: keepTTL)
    }

    /// Stores `stored` under `key`. The deadline is `deadline` (0 for none), or the existing one when `keepTTL`.
    public mutating func set(_ key: Key, value stored: StoredBytes, deadline: Int64, keepTTL: Bool = false) {
        if let index = table.index(forKey: key) {
            let oldDeadline = table.values[index].deadline
            usedBytes += stored.count - table.values[index].value.count
            table.values[index].value = stored
            let newDeadline = keepTTL ? oldDeadline : deadline
            if newDeadline != oldDeadline { setDeadline(at: index, newDeadline) }
            return
        }
        let ownKey = key.compacted()
        usedBytes += Self.cost(ownKey, stored)
        var entry = Entry(value: stored, deadline: deadline, expiryIndex: -1)
        if deadline != 0 {
            entry.expiryIndex = Int32(expiring.count)
            expiring.append(ownKey)
        }
        table[ownKey] = entry
    }

    /// Replaces the value of an existing live key, keeping its deadline.
    public mutating func replaceValue(_ key: Key, with value: ByteBuffer) {
        replaceValue(key, with: StoredBytes(value))
    }

    /// Replaces the value of an existing live key, keeping its deadline.
    public mutating func replaceValue(_ key: Key, with value: StoredBytes) {
        guard let index = table.index(forKey: key) else { return }
        usedBytes += value.count - table.values[index].value.count
        table.values[index].value = value
    }

    /// Removes `key`. - Returns: the entry it held, or nil.
    @discardableResult
    public mutating func remove(_ key: Key) -> Entry? {
        guard let (storedKey, entry) = table.removeValue(forKeyReturningKey: key) else { return nil }
        if entry.expiryIndex >= 0 { removeFromExpiring(at: Int(entry.expiryIndex)) }
        usedBytes -= Self.cost(storedKey, entry.value)
        return entry
    }

    /// Sets or clears (0) the deadline of an existing key.
    public mutating func setDeadline(_ key: Key, _ deadline: Int64) {
        guard let index = table.index(forKey: key) else { return }
        setDeadline(at: index, deadline)
    }

    private mutating func setDeadline(at index: Dictionary<Key, Entry>.Index, _ deadline: Int64) {
        let storedKey = table.keys[index]
        var entry = table.values[index]
        if deadline == 0 {
            if entry.expiryIndex >= 0 {
                removeFromExpiring(at: Int(entry.expiryIndex))
                entry = table.values[index]
                entry.expiryIndex = -1
            }
        } else if entry.expiryIndex < 0 {
            entry.expiryIndex = Int32(expiring.count)
            expiring.append(storedKey)
        }
        entry.deadline = deadline
        table.values[index] = entry
    }

    private mutating func removeFromExpiring(at position: Int) {
        let last = expiring.count - 1
        if position != last {
            let moved = expiring[last]
            expiring[position] = moved
            table[moved]?.expiryIndex = Int32(position)
        }
        expiring.removeLast()
    }

    /// Removes every key.
    public mutating func removeAll() {
        table = [:]
        expiring = []
        usedBytes = 0
    }

    /// Samples up to `samples` keys with a deadline and removes those that have passed.
    /// - Returns: (sampled, expired).
    public mutating func sampleExpired(now: Int64, samples: Int) -> (sampled: Int, expired: Int) {
        var sampled = 0, expired = 0
        while sampled < samples && !expiring.isEmpty {
            sampled += 1
            let key = expiring[Int.random(in: 0..<expiring.count)]
            if let entry = table[key], now > entry.deadline {
                expire(key)
                expired += 1
            }
        }
        return (sampled, expired)
    }

    /// A random live key, or nil.
    public mutating func randomKey(now: Int64) -> ByteBuffer? {
        for _ in 0..<100 {
            guard let (key, entry) = table.randomElement() else { return nil }
            if entry.deadline != 0 && now > entry.deadline {
                expire(key)
                continue
            }
            return key.buffer
        }
        return nil
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

extension Dictionary {
    /// Removes `key` and returns the stored key with its value (the stored key is the one to account for).
    fileprivate mutating func removeValue(forKeyReturningKey key: Key) -> (Key, Value)? {
        guard let index = index(forKey: key) else { return nil }
        let removed = remove(at: index)
        return (removed.key, removed.value)
    }
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

    public init(shardCount: Int = 32, clock: any KeyspaceClock = SystemClock()) {
        self.shardCount = max(1, shardCount)
        self.clock = clock
        slots = .allocate(capacity: self.shardCount)
        slots.initialize(repeating: Slot(), count: self.shardCount)
        for i in 0..<self.shardCount {
            pthread_mutex_init(&slots[i].mutex, nil)
        }
    }

    deinit {
        for i in 0..<shardCount { pthread_mutex_destroy(&slots[i].mutex) }
        slots.deinitialize(count: shardCount)
        slots.deallocate()
    }

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
        var total = 0
        for i in 0..<shardCount { total += withShard(i) { $0.count } }
        return total
    }

    public struct Totals: Sendable {
        public var keys = 0, expires = 0, usedBytes = 0, hits = 0, misses = 0, expiredKeys = 0
    }

    /// Counters summed over all shards, for `INFO` and `DBSIZE`.
    public func totals() -> Totals {
        var t = Totals()
        for i in 0..<shardCount {
            withShard(i) { s in
                t.keys += s.count
                t.expires += s.expiringCount
                t.usedBytes += s.usedBytes
                t.hits += s.hits
                t.misses += s.misses
                t.expiredKeys += s.expiredKeys
            }
        }
        return t
    }

    /// Zeroes the hit, miss and expired counters (`CONFIG RESETSTAT`).
    public func resetStats() {
        for i in 0..<shardCount {
            withShard(i) { s in
                s.hits = 0
                s.misses = 0
                s.expiredKeys = 0
            }
        }
    }

    /// Removes every key atomically. - Returns: how many were removed.
    @discardableResult
    public func flush() -> Int {
        withAllShards { set in
            var removed = 0
            for i in 0..<shardCount {
                set.withShard(i) { s in
                    removed += s.count
                    s.removeAll()
                }
            }
            return removed
        }
    }

    /// One round of active expiry over all shards in the spirit of Redis's adaptive sampling:
    /// sample 20 keys with a deadline per shard, and sample that shard again while more than a
    /// quarter of the sample had expired, up to `maxRoundsPerShard`.
    /// - Returns: how many keys were removed.
    @discardableResult
    public func sweepExpired(samplesPerRound: Int = 20, maxRoundsPerShard: Int = 16) -> Int {
        var removed = 0
        for i in 0..<shardCount {
            var rounds = 0
            while rounds < maxRoundsPerShard {
                rounds += 1
                let now = clock.now()
                let (sampled, expired) = withShard(i) { $0.sampleExpired(now: now, samples: samplesPerRound) }
                removed += expired
                if sampled == 0 || expired * 4 <= sampled { break }
            }
        }
        return removed
    }

    /// Visits the live keys of shard `index` (for `KEYS` and `SCAN`).
    public func forEachKey(inShard index: Int, now: Int64, _ body: (ByteBuffer, Entry) -> Void) {
        withShard(index) { s in
            for (key, entry) in s.table where entry.deadline == 0 || now <= entry.deadline {
                body(key.buffer, entry)
            }
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
