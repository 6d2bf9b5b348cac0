import CMalloc
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Redis's `maxmemory-policy` values.
public enum EvictionPolicy: Int, Sendable, CaseIterable {
    case noeviction, allkeysLRU, allkeysLFU, allkeysRandom, volatileLRU, volatileLFU, volatileRandom, volatileTTL

    /// The policy's name in `CONFIG` and `INFO`.
    public var name: String {
        switch self {
        case .noeviction: return "noeviction"
        case .allkeysLRU: return "allkeys-lru"
        case .allkeysLFU: return "allkeys-lfu"
        case .allkeysRandom: return "allkeys-random"
        case .volatileLRU: return "volatile-lru"
        case .volatileLFU: return "volatile-lfu"
        case .volatileRandom: return "volatile-random"
        case .volatileTTL: return "volatile-ttl"
        }
    }

    public init?(name: String) {
        guard let p = Self.allCases.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = p
    }

    /// Only keys with a TTL are candidates.
    public var volatileOnly: Bool { self == .volatileLRU || self == .volatileLFU || self == .volatileRandom || self == .volatileTTL }
    /// Access frequency (not recency) is tracked.
    public var usesLFU: Bool { self == .allkeysLFU || self == .volatileLFU }
}

/// One slot of a shard's open-addressing table: the key's hash with two flag bits folded into
/// its low bits, and the key's record (nil: empty).
///
/// The flags let the expiry sweep and eviction sampling skip keys without touching their records:
/// bit 0 = the key has a deadline, bit 1 = the key is a lock.
@usableFromInline
struct Slot {
    @usableFromInline var tag: UInt64
    @usableFromInline var record: UnsafeMutableRawPointer?

    @usableFromInline static let volatileBit: UInt64 = 1
    @usableFromInline static let lockBit: UInt64 = 2
    @usableFromInline static let hashMask: UInt64 = ~3

    /// The tag for a key with `hash`, with its flag bits.
    static func tag(_ hash: UInt64, expiring: Bool, lock: Bool) -> UInt64 {
        (hash & hashMask) | (expiring ? volatileBit : 0) | (lock ? lockBit : 0)
    }
}

/// One stored key seen in place: valid only while the shard's lock is held and the key is not
/// written (copy the value to keep it longer).
public struct Entry {
    @usableFromInline let record: Record

    @inlinable init(_ record: Record) { self.record = record }

    /// The value bytes.
    @inlinable public var value: ValueBytes { ValueBytes(record.valueBytes) }
    /// Expiry deadline on the keyspace clock, or 0 when the key does not expire.
    @inlinable public var deadline: Int64 { record.deadline }
    @inlinable public var hasDeadline: Bool { record.deadline != 0 }
    /// Written by `SET … NX` with a TTL: never evicted while `maxmemory-protect-locks` is on.
    @inlinable public var isLock: Bool { record.isLock }

    /// Bytes the key costs: its record as malloc sizes it, and its table slot (`MEMORY USAGE`).
    public var memoryUsage: Int { record.allocatedBytes + MemoryLayout<Slot>.stride }

    /// Milliseconds since the last access (meaningful while an LRU or no policy is in force).
    public func idleMilliseconds(now: Int64) -> Int64 {
        Int64(UInt32(truncatingIfNeeded: now) &- record.access)
    }

    /// The logarithmic access counter after decay (meaningful while an LFU policy is in force).
    public func frequency(now: Int64) -> Int {
        Int(LFU.decayed(record.access, now: now))
    }
}

/// Redis's LFU approximation: an 8-bit logarithmic counter and the minute it last decayed.
enum LFU {
    static let initialValue: UInt32 = 5
    static let logFactor = 10.0
    static let decayMinutes: UInt32 = 1

    @inline(__always)
    static func minutes(_ now: Int64) -> UInt32 { UInt32(truncatingIfNeeded: (now / 60_000) & 0xFFFF) }

    @inline(__always)
    static func fresh(now: Int64) -> UInt32 { minutes(now) << 8 | initialValue }

    /// The counter with one step taken off per elapsed decay period.
    static func decayed(_ access: UInt32, now: Int64) -> UInt32 {
        // Masked: after a switch from LRU at run time the field still holds a timestamp.
        let last = (access >> 8) & 0xFFFF
        let counter = access & 0xFF
        let current = minutes(now)
        let elapsed = current >= last ? current - last : 65535 - last + current
        let periods = elapsed / decayMinutes
        return periods > counter ? 0 : counter - periods
    }

    /// After decay, increments the counter with probability 1 / ((counter − 5) · factor + 1).
    static func touched(_ access: UInt32, now: Int64, random: UInt64) -> UInt32 {
        var counter = decayed(access, now: now)
        if counter < 255 {
            let base = Double(counter > initialValue ? counter - initialValue : 0)
            let p = 1.0 / (base * logFactor + 1.0)
            let r = Double(random >> 11) * (1.0 / 9_007_199_254_740_992.0)
            if r < p { counter += 1 }
        }
        return minutes(now) << 8 | counter
    }
}

/// The keys of one shard in an open-addressing table (linear probing, backward-shift deletion,
/// power-of-two capacity, at most 3/4 full). Only ever touched with the shard's lock held.
///
/// Each key is one `Record`; the table holds its hash and pointer (16 bytes a slot). There is no
/// separate expiry structure: the active sweep walks the table and looks only at slots flagged
/// as having a deadline, and eviction samples random slots the same way.
public struct ShardState {
    @usableFromInline var slots: UnsafeMutablePointer<Slot>? = nil
    @usableFromInline var mask = -1
    public private(set) var count = 0
    /// Keys with a deadline.
    public private(set) var expiringCount = 0
    /// Keys marked as locks (`lockCount`), and those of them with a deadline.
    public private(set) var lockCount = 0
    private var expiringLockCount = 0
    /// Bytes the shard holds: its records as malloc sizes them, and its table.
    public private(set) var usedBytes = 0
    private var reportedBytes = 0
    /// The keyspace-wide estimate this shard adds its changes to (in steps, see `report`),
    /// followed by the highest value it has reached.
    var total: UnsafeMutablePointer<Atomic<Int>>? = nil
    public var hits = 0
    public var misses = 0
    public fileprivate(set) var expiredKeys = 0
    public var evictedKeys = 0
    public var evictedLocksSkipped = 0
    /// Track access frequency (LFU policies) instead of recency.
    @usableFromInline var tracksFrequency = false
    private var sweepCursor = 0
    @usableFromInline var randomState: UInt64 = 0x853c_49e6_748f_ea9b
    /// `WATCH`: the clients watching each key of this shard (see Watch.swift). Every write path
    /// checks `watchedKeys` first, so a shard nobody watches pays one compare per write.
    var watchers: [WatchedKey: [WatchToken]] = [:]
    @usableFromInline var watchedKeys = 0

    static let minimumCapacity = 8
    public static let reportStep = 4 * 1024

    public init() {}

    var capacity: Int { mask + 1 }

    // MARK: Lookup

    @inline(__always)
    @usableFromInline
    func home(_ tag: UInt64) -> Int { Int(truncatingIfNeeded: tag >> 2) & mask }

    /// The slot of `key`, or -1.
    @inlinable
    func find(_ key: Key) -> Int {
        guard count > 0, let slots else { return -1 }
        let wanted = key.hash & Slot.hashMask
        return key.withUnsafeBytes { bytes in
            var i = home(wanted)
            while true {
                let s = slots[i]
                guard let r = s.record else { return -1 }
                if s.tag & Slot.hashMask == wanted && Record(r).keyEquals(bytes) { return i }
                i = (i &+ 1) & mask
            }
        }
    }

    @inline(__always)
    @usableFromInline
    mutating func nextRandom() -> UInt64 {
        randomState &+= 0x9e37_79b9_7f4a_7c15
        return KeyHash.mix(randomState)
    }

    @inline(__always)
    @usableFromInline
    mutating func touch(_ r: Record, now: Int64) {
        if tracksFrequency {
            r.access = LFU.touched(r.access, now: now, random: nextRandom())
        } else {
            r.access = UInt32(truncatingIfNeeded: now)
        }
    }

    @inline(__always)
    func freshAccess(now: Int64) -> UInt32 {
        tracksFrequency ? LFU.fresh(now: now) : UInt32(truncatingIfNeeded: now)
    }

    /// The live entry for `key` (an access: its LRU/LFU data is updated), removing it first if
    /// its deadline has passed (lazy expiry).
    @inlinable
    public mutating func entry(_ key: Key, now: Int64) -> Entry? {
        guard let e = peek(key, now: now) else { return nil }
        touch(e.record, now: now)
        return e
    }

    /// The live entry for `key` without counting an access (`OBJECT`), removing it first if its
    /// deadline has passed.
    @inlinable
    public mutating func peek(_ key: Key, now: Int64) -> Entry? {
        let i = find(key)
        guard i >= 0 else { return nil }
        let r = Record(slots![i].record!)
        let deadline = r.deadline
        if deadline != 0 && now > deadline {
            expire(at: i)
            return nil
        }
        return Entry(r)
    }

    /// The live entry for `key`, counting a hit or a miss.
    @inlinable
    public mutating func lookupForRead(_ key: Key, now: Int64) -> Entry? {
        if let e = entry(key, now: now) {
            hits &+= 1
            return e
        }
        misses &+= 1
        return nil
    }

    mutating func resetExpiredCount() { expiredKeys = 0 }

    @usableFromInline
    mutating func expire(at i: Int) {
        removeSlot(i)
        expiredKeys &+= 1
        shrinkIfSparse()
    }

    // MARK: Writes

    /// Stores `value` under `key`, as of `now` (for LRU/LFU). The deadline is `deadline` (0 for
    /// none), or the existing one when `keepTTL`; `lock` marks the key as a lock (SET NX with a TTL).
    public mutating func set(_ key: Key, value: ByteBuffer, deadline: Int64, keepTTL: Bool = false, lock: Bool = false, now: Int64) {
        value.withUnsafeReadableBytes { set(key, bytes: $0, deadline: deadline, keepTTL: keepTTL, lock: lock, now: now) }
    }

    public mutating func set(_ key: Key, bytes value: UnsafeRawBufferPointer, deadline: Int64, keepTTL: Bool = false, lock: Bool = false, now: Int64) {
        if watchedKeys != 0 { touchWatched(key) }
        let i = find(key)
        let flags: UInt32 = lock ? Record.lockFlag : 0
        if i >= 0 {
            var r = Record(slots![i].record!)
            // A KEEPTTL write to a key that has already expired keeps no deadline.
            let old = r.deadline != 0 && now > r.deadline ? 0 : r.deadline
            let newDeadline = keepTTL ? old : deadline
            r = replacing(at: i, r, value: value)
            r.deadline = newDeadline
            r.flags = flags
            r.access = freshAccess(now: now)
            setSlotFlags(i, expiring: newDeadline != 0, lock: lock)
        } else {
            let r = key.withUnsafeBytes { Record.make(key: $0, value: value, deadline: deadline, access: freshAccess(now: now), flags: flags) }
            usedBytes += r.allocatedBytes
            insertNew(Slot(tag: Slot.tag(key.hash, expiring: deadline != 0, lock: lock), record: r.base))
        }
        report()
    }

    /// Replaces the value of an existing live key, keeping its deadline and lock mark.
    public mutating func replaceValue(_ key: Key, with value: ByteBuffer) {
        value.withUnsafeReadableBytes { replaceValue(key, bytes: $0) }
    }

    public mutating func replaceValue(_ key: Key, bytes value: UnsafeRawBufferPointer) {
        let i = find(key)
        guard i >= 0 else { return }
        if watchedKeys != 0 { touchWatched(key) }
        _ = replacing(at: i, Record(slots![i].record!), value: value)
        report()
    }

    /// Appends `suffix` to the value of an existing key (see `overwrite`).
    /// - Returns: the new length, or nil when the key is not there.
    public mutating func append(_ key: Key, _ suffix: UnsafeRawBufferPointer) -> Int? {
        let i = find(key)
        guard i >= 0 else { return nil }
        return overwrite(at: i, offset: Record(slots![i].record!).valueCount, suffix)
    }

    /// Writes `patch` into the value of an existing key at `offset`, zero-filling any gap past
    /// the end (`SETRANGE`). - Returns: the new length, or nil when the key is not there.
    public mutating func setRange(_ key: Key, offset: Int, _ patch: UnsafeRawBufferPointer) -> Int? {
        let i = find(key)
        guard i >= 0 else { return nil }
        return overwrite(at: i, offset: offset, patch)
    }

    /// Writes `bytes` at `offset` of slot `i`'s value, in place when its allocation has room. A
    /// record that must grow gets room to spare (double the value up to 1 MiB, then 1 MiB more),
    /// as Redis's strings do, so a key built by many appends costs amortized O(1) each.
    private mutating func overwrite(at i: Int, offset: Int, _ bytes: UnsafeRawBufferPointer) -> Int {
        var r = Record(slots![i].record!)
        if watchedKeys != 0 { touchWatched(bytes: r.keyBytes) }
        let oldCount = r.valueCount
        let newCount = max(oldCount, offset + bytes.count)
        let needed = Record.headerSize + r.keyCount + newCount
        if malloc_usable_size(r.base) < needed {
            let spare = newCount < 1 << 20 ? newCount : 1 << 20
            let before = r.allocatedBytes
            guard let moved = realloc(r.base, needed + spare) else { fatalError("out of memory growing a value to \(newCount) bytes") }
            r = Record(moved)
            slots![i].record = moved
            usedBytes += r.allocatedBytes - before
        }
        let value = r.base + Record.headerSize + r.keyCount
        if offset > oldCount { (value + oldCount).initializeMemory(as: UInt8.self, repeating: 0, count: offset - oldCount) }
        if bytes.count > 0 { (value + offset).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        r.valueCount = newCount
        report()
        return newCount
    }

    /// The record at slot `i` holding `value`: the same one overwritten when the length is
    /// unchanged, otherwise a new one (header and key copied) that takes the old one's slot.
    private mutating func replacing(at i: Int, _ r: Record, value: UnsafeRawBufferPointer) -> Record {
        if r.valueCount == value.count {
            r.overwriteValue(value)
            return r
        }
        let made = Record.make(key: r.keyBytes, value: value, deadline: r.deadline, access: r.access, flags: r.flags)
        usedBytes += made.allocatedBytes - r.allocatedBytes
        r.free()
        slots![i].record = made.base
        return made
    }

    /// Removes `key`. - Returns: whether it was there (expired or not).
    @discardableResult
    public mutating func remove(_ key: Key) -> Bool {
        let i = find(key)
        guard i >= 0 else { return false }
        removeSlot(i)
        shrinkIfSparse()
        report()
        return true
    }

    /// Sets or clears (0) the deadline of an existing key.
    public mutating func setDeadline(_ key: Key, _ deadline: Int64) {
        let i = find(key)
        guard i >= 0 else { return }
        if watchedKeys != 0 { touchWatched(key) }
        let r = Record(slots![i].record!)
        r.deadline = deadline
        setSlotFlags(i, expiring: deadline != 0, lock: r.isLock)
    }

    /// Removes every key and gives the memory back.
    public mutating func removeAll() {
        if watchedKeys != 0 { touchAllWatchedPresent() }
        if let slots {
            for i in 0..<capacity {
                if let r = slots[i].record { Record(r).free() }
            }
            slots.deallocate()
        }
        slots = nil
        mask = -1
        count = 0
        expiringCount = 0
        lockCount = 0
        expiringLockCount = 0
        usedBytes = 0
        sweepCursor = 0
        flushReport()
    }

    // MARK: Table mechanics

    /// Adds `delta` to the counts of the flags `tag` carries.
    private mutating func countFlags(of tag: UInt64, _ delta: Int) {
        if tag & Slot.volatileBit != 0 { expiringCount += delta }
        if tag & Slot.lockBit != 0 { lockCount += delta }
        if tag & 3 == 3 { expiringLockCount += delta }
    }

    private mutating func setSlotFlags(_ i: Int, expiring: Bool, lock: Bool) {
        let tag = Slot.tag(slots![i].tag, expiring: expiring, lock: lock)
        countFlags(of: slots![i].tag, -1)
        countFlags(of: tag, 1)
        slots![i].tag = tag
    }

    private mutating func insertNew(_ slot: Slot) {
        if (count + 1) * 4 > capacity * 3 { resize(to: max(Self.minimumCapacity, capacity * 2)) }
        place(slot)
        count += 1
        countFlags(of: slot.tag, 1)
    }

    private func place(_ slot: Slot) {
        var i = home(slot.tag)
        while slots![i].record != nil { i = (i &+ 1) & mask }
        slots![i] = slot
    }

    private mutating func resize(to newCapacity: Int) {
        let old = slots, oldCapacity = capacity
        let fresh = UnsafeMutablePointer<Slot>.allocate(capacity: newCapacity)
        fresh.initialize(repeating: Slot(tag: 0, record: nil), count: newCapacity)
        slots = fresh
        mask = newCapacity - 1
        if let old {
            for i in 0..<oldCapacity where old[i].record != nil { place(old[i]) }
            old.deallocate()
        }
        usedBytes += (newCapacity - oldCapacity) * MemoryLayout<Slot>.stride
        sweepCursor = 0
    }

    /// Halves the table (past 64 slots) while it is less than 1/8 full, and frees it once empty.
    private mutating func shrinkIfSparse() {
        guard capacity > 64, count * 8 < capacity else { return }
        var target = capacity / 2
        while target > 64 && count * 8 < target { target /= 2 }
        if count == 0 {
            slots?.deallocate()
            slots = nil
            usedBytes -= capacity * MemoryLayout<Slot>.stride
            mask = -1
            sweepCursor = 0
            return
        }
        resize(to: target)
    }

    /// Frees the record in slot `i` and closes the gap (backward shift: every later key of the
    /// same run that may move closer to its home slot does).
    @usableFromInline
    mutating func removeSlot(_ i: Int) {
        let slots = self.slots!
        let removed = slots[i]
        let r = Record(removed.record!)
        if watchedKeys != 0 { touchWatched(bytes: r.keyBytes) }
        usedBytes -= r.allocatedBytes
        r.free()
        count -= 1
        countFlags(of: removed.tag, -1)
        var hole = i
        var j = i
        while true {
            j = (j &+ 1) & mask
            guard slots[j].record != nil else { break }
            let h = home(slots[j].tag)
            let staysPut = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j)
            if !staysPut {
                slots[hole] = slots[j]
                hole = j
            }
        }
        slots[hole] = Slot(tag: 0, record: nil)
    }

    /// Adds this shard's change in bytes to the keyspace-wide estimate once it passes a step.
    @inline(__always)
    private mutating func report() {
        let delta = usedBytes - reportedBytes
        if delta > Self.reportStep || delta < -Self.reportStep { flushReport() }
    }

    mutating func flushReport() {
        let delta = usedBytes - reportedBytes
        if delta != 0, let total {
            let now = total.pointee.add(delta, ordering: .relaxed).newValue
            reportedBytes = usedBytes
            if delta > 0 {
                let peak = total + 1
                var seen = peak.pointee.load(ordering: .relaxed)
                while now > seen {
                    let (done, current) = peak.pointee.compareExchange(expected: seen, desired: now, ordering: .relaxed)
                    if done { break }
                    seen = current
                }
            }
        }
    }

    // MARK: Expiry, eviction, iteration

    /// Walks up to `budget` slots from where the last walk stopped and removes the keys whose
    /// deadline has passed. - Returns: (keys with a deadline looked at, removed).
    public mutating func sweepExpired(now: Int64, budget: Int) -> (seen: Int, expired: Int) {
        guard expiringCount > 0, let slots else { return (0, 0) }
        var seen = 0, expired = 0, steps = 0
        var i = sweepCursor & mask
        let limit = min(budget, capacity)
        while steps < limit && expiringCount > 0 {
            steps += 1
            let s = slots[i]
            if let r = s.record, s.tag & Slot.volatileBit != 0 {
                seen += 1
                if now > Record(r).deadline {
                    removeSlot(i)
                    expiredKeys &+= 1
                    expired += 1
                    continue  // slot i now holds the next key of the run, if any
                }
            }
            i = (i &+ 1) & mask
        }
        sweepCursor = i
        shrinkIfSparse()
        flushReport()
        return (seen, expired)
    }

    /// Removes one key chosen by `policy` from `samples` random candidates (a key found expired
    /// on the way is removed instead). Locks are never candidates while `protectLocks`.
    /// - Returns: whether anything was removed (false: nothing here may be evicted).
    public mutating func evictOne(policy: EvictionPolicy, samples: Int, protectLocks: Bool, now: Int64) -> Bool {
        guard policy != .noeviction, let slots else { return false }
        let volatileOnly = policy.volatileOnly
        let candidates = volatileOnly
            ? expiringCount - (protectLocks ? expiringLockCount : 0)
            : count - (protectLocks ? lockCount : 0)
        guard candidates > 0 else { return false }
        var best = -1
        var bestScore: UInt64 = 0
        for _ in 0..<max(1, min(samples, count)) {
            var i = Int(truncatingIfNeeded: nextRandom()) & mask
            // The counts above say a candidate exists; the walk is bounded all the same.
            var walked = 0
            while walked <= mask {
                let s = slots[i]
                if s.record != nil && (!volatileOnly || s.tag & Slot.volatileBit != 0) {
                    if !(protectLocks && s.tag & Slot.lockBit != 0) { break }
                    evictedLocksSkipped &+= 1
                }
                i = (i &+ 1) & mask
                walked += 1
            }
            if walked > mask { break }
            let r = Record(slots[i].record!)
            if r.deadline != 0 && now > r.deadline {
                removeSlot(i)
                expiredKeys &+= 1
                flushReport()
                return true
            }
            let score: UInt64
            switch policy {
            case .allkeysLRU, .volatileLRU: score = UInt64(UInt32(truncatingIfNeeded: now) &- r.access)
            case .allkeysLFU, .volatileLFU: score = UInt64(255 - LFU.decayed(r.access, now: now))
            case .volatileTTL: score = UInt64(bitPattern: Int64.max - r.deadline)
            case .allkeysRandom, .volatileRandom, .noeviction: score = 0
            }
            if best < 0 || score > bestScore {
                best = i
                bestScore = score
            }
            if policy == .allkeysRandom || policy == .volatileRandom { break }
        }
        guard best >= 0 else { return false }
        removeSlot(best)
        evictedKeys &+= 1
        shrinkIfSparse()
        flushReport()
        return true
    }

    /// Calls `body` with every live key's bytes and entry. `body` must not change the shard.
    public func forEach(now: Int64, _ body: (UnsafeRawBufferPointer, Entry) -> Void) {
        guard let slots else { return }
        for i in 0..<capacity {
            guard let p = slots[i].record else { continue }
            let r = Record(p)
            if r.deadline == 0 || now <= r.deadline { body(r.keyBytes, Entry(r)) }
        }
    }

    /// The bytes held, counted afresh from every record and the table (tests compare it with
    /// `usedBytes`, which is kept incrementally).
    public func recountedBytes() -> Int {
        guard let slots else { return 0 }
        var total = capacity * MemoryLayout<Slot>.stride
        for i in 0..<capacity {
            if let p = slots[i].record { total += Record(p).allocatedBytes }
        }
        return total
    }

    /// A random live key, or nil.
    public mutating func randomKey(now: Int64) -> ByteBuffer? {
        for _ in 0..<100 {
            guard count > 0, let slots else { return nil }
            var i = Int(truncatingIfNeeded: nextRandom()) & mask
            while slots[i].record == nil { i = (i &+ 1) & mask }
            let r = Record(slots[i].record!)
            if r.deadline != 0 && now > r.deadline {
                expire(at: i)
                continue
            }
            return ByteBuffer(bytes: r.keyBytes)
        }
        return nil
    }
}
