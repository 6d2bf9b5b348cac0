import Keyspace
import NIOCore
import Testing

@Suite("Eviction")
struct EvictionTests {
    static func key(_ s: String) -> Key { Key(ByteBuffer(string: s)) }
    static let value = ByteBuffer(repeating: 0x61, count: 100)

    /// Writes `name` and evicts until the keyspace fits `limit` again.
    static func write(_ ks: Keyspace, _ name: String, deadline: Int64 = 0, lock: Bool = false,
                      limit: Int, policy: EvictionPolicy, samples: Int = 5) -> Bool {
        let k = key(name)
        let now = ks.clock.now()
        ks.withShard(for: k) { $0.set(k, value: value, deadline: deadline, lock: lock, now: now) }
        return ks.evict(toFit: limit, policy: policy, samples: samples, protectLocks: true) == .fits
    }

    static func exists(_ ks: Keyspace, _ name: String) -> Bool {
        let k = key(name)
        let now = ks.clock.now()
        return ks.withShard(for: k) { $0.peek(k, now: now) != nil }
    }

    /// 20,000 keys, then a hot tenth of them touched while three times the limit is written anew.
    static func hotSetSurvival(policy: EvictionPolicy, retouch: Bool) -> (survived: Int, evicted: Int) {
        let clock = ManualClock(1_000_000)
        let ks = Keyspace(shardCount: 8, clock: clock)
        ks.trackFrequency(policy.usesLFU)
        for i in 0..<20_000 {
            let k = key("old:\(i)")
            ks.withShard(for: k) { $0.set(k, value: value, deadline: 0, now: clock.now()) }
            if i % 100 == 0 { clock.advance(by: 1) }
        }
        let limit = ks.totals().usedBytes
        func touchHot() {
            for i in 0..<2_000 {
                let k = key("old:\(i)")
                _ = ks.withShard(for: k) { $0.entry(k, now: clock.now()) }
            }
        }
        if !retouch { for _ in 0..<50 { touchHot() } }
        for i in 0..<60_000 {
            if retouch && i % 1_000 == 0 {
                clock.advance(by: 10)
                touchHot()
            }
            if i % 100 == 0 { clock.advance(by: 1) }
            _ = write(ks, "new:\(i)", limit: limit, policy: policy)
        }
        let survived = (0..<2_000).filter { exists(ks, "old:\($0)") }.count
        return (survived, ks.totals().evictedKeys)
    }

    @Test("allkeys-lru keeps a hot set: keys touched repeatedly survive three times the limit written anew")
    func lruKeepsHotSet() {
        let (survived, evicted) = Self.hotSetSurvival(policy: .allkeysLRU, retouch: true)
        #expect(evicted >= 55_000)
        #expect(survived >= 1_800, "only \(survived) of 2000 hot keys survived")
    }

    @Test("allkeys-lfu keeps keys used often, even when they are not the most recent")
    func lfuKeepsFrequentKeys() {
        let (survived, evicted) = Self.hotSetSurvival(policy: .allkeysLFU, retouch: false)
        #expect(evicted >= 55_000)
        #expect(survived >= 1_800, "only \(survived) of 2000 frequent keys survived")
    }

    @Test("allkeys-random takes hot and cold keys alike")
    func randomIgnoresAccess() {
        let (survived, evicted) = Self.hotSetSurvival(policy: .allkeysRandom, retouch: true)
        #expect(evicted >= 55_000)
        // Three times the keyspace written anew: about e^-3 of any old key survives.
        #expect(survived < 400, "\(survived) of 2000 hot keys survived random eviction")
    }

    @Test("the limit holds after every write under each evicting policy",
          arguments: EvictionPolicy.allCases.filter { $0 != .noeviction })
    func limitHolds(policy: EvictionPolicy) {
        let ks = Keyspace(shardCount: 8, clock: ManualClock())
        ks.trackFrequency(policy.usesLFU)
        let limit = 1 << 20
        for i in 0..<30_000 {
            #expect(Self.write(ks, "k\(i)", deadline: 5_000_000_000_000 + Int64(i), limit: limit, policy: policy))
            #expect(ks.usedBytesEstimate <= limit)
        }
        #expect(ks.totals().usedBytes <= limit + ks.reportingSlack)
        #expect(ks.totals().evictedKeys > 15_000)
    }

    @Test("volatile-ttl evicts the keys closest to expiring first")
    func volatileTTLOrder() {
        let clock = ManualClock(0)
        let ks = Keyspace(shardCount: 8, clock: clock)
        // Deadlines in a shuffled order, so the table's layout says nothing about them.
        let order = (0..<10_000).shuffled()
        for i in order {
            let k = Self.key("t:\(i)")
            ks.withShard(for: k) { $0.set(k, value: Self.value, deadline: 1_000_000 + Int64(i), now: 0) }
        }
        let limit = ks.totals().usedBytes * 8 / 10
        #expect(ks.evict(toFit: limit, policy: .volatileTTL, samples: 5, protectLocks: true) == .fits)
        let gone = (0..<10_000).filter { !Self.exists(ks, "t:\($0)") }
        #expect(gone.count >= 1_500)
        let early = gone.filter { $0 < 5_000 }.count
        #expect(Double(early) >= 0.9 * Double(gone.count), "\(early) of \(gone.count) evicted keys were in the earlier half")
    }

    @Test("volatile policies never evict a key without a TTL; at the limit with none left they fail",
          arguments: [EvictionPolicy.volatileLRU, .volatileLFU, .volatileRandom, .volatileTTL])
    func volatileSparesPersistentKeys(policy: EvictionPolicy) {
        let ks = Keyspace(shardCount: 8, clock: ManualClock(0))
        ks.trackFrequency(policy.usesLFU)
        for i in 0..<2_000 {
            let k = Self.key("k\(i)")
            ks.withShard(for: k) { $0.set(k, value: Self.value, deadline: i % 2 == 0 ? 0 : 9_000_000, now: 0) }
        }
        #expect(ks.evict(toFit: 0, policy: policy, samples: 5, protectLocks: true) == .impossible)
        let t = ks.totals()
        #expect(t.keys == 1_000)
        #expect(t.expires == 0)
        #expect((0..<2_000).filter { $0 % 2 == 0 }.allSatisfy { Self.exists(ks, "k\($0)") })
    }

    @Test("locks are never evicted; with only locks left, eviction fails",
          arguments: EvictionPolicy.allCases.filter { $0 != .noeviction })
    func locksSurvive(policy: EvictionPolicy) {
        let ks = Keyspace(shardCount: 8, clock: ManualClock(0))
        ks.trackFrequency(policy.usesLFU)
        for i in 0..<3_000 {
            let k = Self.key("k\(i)")
            let isLock = i % 6 == 0
            let deadline: Int64 = isLock || i % 2 == 1 ? 9_000_000 : 0
            ks.withShard(for: k) { $0.set(k, value: Self.value, deadline: deadline, lock: isLock, now: 0) }
        }
        #expect(ks.evict(toFit: 0, policy: policy, samples: 5, protectLocks: true) == .impossible)
        let t = ks.totals()
        #expect(t.locks == 500)
        #expect((0..<3_000).filter { $0 % 6 == 0 }.allSatisfy { Self.exists(ks, "k\($0)") })
        #expect(t.evictedLocksSkipped > 0)
        // Left: the 500 locks, and under a volatile policy the 1,000 keys without a TTL.
        #expect(t.keys == (policy.volatileOnly ? 1_500 : 500))
    }

    @Test("with lock protection off, a lock is an ordinary victim")
    func locksUnprotected() {
        let ks = Keyspace(shardCount: 4, clock: ManualClock(0))
        for i in 0..<500 {
            let k = Self.key("lock:\(i)")
            ks.withShard(for: k) { $0.set(k, value: Self.value, deadline: 9_000_000, lock: true, now: 0) }
        }
        #expect(ks.evict(toFit: 0, policy: .allkeysLRU, samples: 5, protectLocks: false) == .impossible)
        #expect(ks.totals().keys == 0)
    }

    @Test("noeviction removes nothing")
    func noEviction() {
        let ks = Keyspace(shardCount: 4, clock: ManualClock(0))
        for i in 0..<1_000 {
            let k = Self.key("k\(i)")
            ks.withShard(for: k) { $0.set(k, value: Self.value, deadline: 0, now: 0) }
        }
        #expect(ks.evict(toFit: 1_000, policy: .noeviction, samples: 5, protectLocks: true) == .impossible)
        #expect(ks.totals().keys == 1_000)
        #expect(ks.totals().evictedKeys == 0)
    }

    @Test("LFU counters grow logarithmically with use and decay with idle minutes")
    func lfuCounter() {
        let clock = ManualClock(60_000 * 100)
        let ks = Keyspace(shardCount: 1, clock: clock)
        ks.trackFrequency(true)
        let k = Self.key("k")
        ks.withShard(0) { $0.set(k, value: Self.value, deadline: 0, now: clock.now()) }
        #expect(ks.withShard(0) { $0.peek(k, now: clock.now())?.frequency(now: clock.now()) } == 5)
        for _ in 0..<1_000 { _ = ks.withShard(0) { $0.entry(k, now: clock.now()) } }
        let hot = ks.withShard(0) { $0.peek(k, now: clock.now())?.frequency(now: clock.now()) } ?? 0
        #expect(hot > 8 && hot < 40)
        clock.advance(by: 3 * 60_000)
        #expect(ks.withShard(0) { $0.peek(k, now: clock.now())?.frequency(now: clock.now()) } == hot - 3)
    }
}
