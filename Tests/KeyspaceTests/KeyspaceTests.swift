import Keyspace
import NIOCore
import Testing

@Suite("Keyspace")
struct KeyspaceTests {
    static func key(_ s: String) -> Key { Key(ByteBuffer(string: s)) }
    static func bytes(_ s: String) -> ByteBuffer { ByteBuffer(string: s) }

    @Test("a key past its deadline is never returned (lazy expiry)")
    func lazyExpiry() {
        let clock = ManualClock(1_000)
        let ks = Keyspace(shardCount: 4, clock: clock)
        let k = Self.key("lock")
        ks.withShard(for: k) { $0.set(k, value: Self.bytes("token"), deadline: 1_100) }
        #expect(ks.withShard(for: k) { $0.entry(k, now: clock.now()) }?.value == StoredBytes(Self.bytes("token")))
        clock.set(1_100)
        // At the deadline the key still lives (Redis expires when now > deadline).
        #expect(ks.withShard(for: k) { $0.entry(k, now: clock.now()) } != nil)
        clock.advance(by: 1)
        #expect(ks.withShard(for: k) { $0.entry(k, now: clock.now()) } == nil)
        #expect(ks.totals().keys == 0)
        #expect(ks.totals().expiredKeys == 1)
    }

    @Test("a wall-clock jump neither extends nor shortens a lock")
    func wallClockJump() {
        final class Sources: @unchecked Sendable {
            var wall: Int64 = 1_700_000_000_000_000_000
            var mono: Int64 = 5_000_000_000
        }
        let t = Sources()
        let clock = SystemClock(realtimeNanos: { t.wall }, monotonicNanos: { t.mono })
        let ks = Keyspace(shardCount: 1, clock: clock)
        let lock = Self.key("lock")
        let start = clock.now()
        ks.withShard(0) { $0.set(lock, value: Self.bytes("tok"), deadline: start + 30_000) }
        // The wall clock leaps an hour ahead, then two hours back; 10 s pass for real.
        t.wall += 3_600_000_000_000
        t.mono += 10_000_000_000
        #expect(clock.now() == start + 10_000)
        #expect(ks.withShard(0) { $0.entry(lock, now: clock.now()) } != nil)
        t.wall -= 7_200_000_000_000
        t.mono += 19_000_000_000
        #expect(ks.withShard(0) { $0.entry(lock, now: clock.now()) } != nil)
        t.mono += 1_001_000_000
        #expect(ks.withShard(0) { $0.entry(lock, now: clock.now()) } == nil)
    }

    @Test("the active sweep reclaims expired keys nobody reads")
    func activeSweep() {
        let clock = ManualClock(0)
        let ks = Keyspace(shardCount: 8, clock: clock)
        for i in 0..<1000 {
            let k = Self.key("k\(i)")
            ks.withShard(for: k) { $0.set(k, value: Self.bytes("v"), deadline: i < 900 ? 10 : 0) }
        }
        #expect(ks.totals().expires == 900)
        clock.set(11)
        var rounds = 0
        while ks.totals().expires > 0 && rounds < 100 {
            ks.sweepExpired()
            rounds += 1
        }
        let totals = ks.totals()
        #expect(totals.expires == 0)
        #expect(totals.keys == 100)
        #expect(totals.expiredKeys == 900)
    }

    @Test("the sweep leaves keys whose deadline has not passed")
    func sweepKeepsLiveKeys() {
        let clock = ManualClock(0)
        let ks = Keyspace(shardCount: 2, clock: clock)
        for i in 0..<100 {
            let k = Self.key("k\(i)")
            ks.withShard(for: k) { $0.set(k, value: Self.bytes("v"), deadline: 1_000) }
        }
        for _ in 0..<10 { ks.sweepExpired() }
        #expect(ks.totals().keys == 100)
    }

    @Test("setting, clearing and replacing deadlines keeps the expiry list exact")
    func deadlineBookkeeping() {
        let clock = ManualClock(0)
        let ks = Keyspace(shardCount: 1, clock: clock)
        let a = Self.key("a"), b = Self.key("b"), c = Self.key("c")
        ks.withShard(0) { s in
            s.set(a, value: Self.bytes("1"), deadline: 5)
            s.set(b, value: Self.bytes("2"), deadline: 6)
            s.set(c, value: Self.bytes("3"), deadline: 7)
            s.setDeadline(a, 0)          // PERSIST a
            s.set(b, value: Self.bytes("x"), deadline: 0)  // SET without KEEPTTL clears it
            s.set(c, value: Self.bytes("y"), deadline: 0, keepTTL: true)
            s.remove(c)
        }
        let totals = ks.totals()
        #expect(totals.keys == 2)
        #expect(totals.expires == 0)
        clock.set(100)
        #expect(ks.withShard(0) { $0.entry(a, now: 100) } != nil)
    }

    @Test("memory accounting tracks keys and values and returns to zero")
    func memoryAccounting() {
        let ks = Keyspace(shardCount: 4, clock: ManualClock())
        for i in 0..<100 {
            let k = Self.key("key:\(i)")
            ks.withShard(for: k) { $0.set(k, value: ByteBuffer(repeating: 0, count: 64), deadline: 0) }
        }
        let used = ks.totals().usedBytes
        #expect(used >= 100 * (64 + 5))
        #expect(used <= 100 * (64 + 6 + entryOverheadBytes))
        ks.flush()
        #expect(ks.totals().usedBytes == 0)
    }

    @Test("stored keys and values do not keep the network buffer they came from alive")
    func compactStorage() {
        let ks = Keyspace(shardCount: 1, clock: ManualClock())
        let big = ByteBuffer(repeating: 7, count: 1 << 20)
        let k = Key(big.getSlice(at: 0, length: 3)!)
        let v = big.getSlice(at: 10, length: 5)!
        ks.withShard(0) { $0.set(k, value: v, deadline: 0) }
        let stored = ks.withShard(0) { $0.entry(k, now: 0) }!
        // Short values live inline in the entry; longer ones in storage of their own size.
        #expect(stored.value == StoredBytes(v))
        #expect(stored.value.count == 5)
        let storedKey = ks.withShard(0) { $0.table.keys.first }
        #expect(storedKey == k)
        #expect(storedKey?.ownsItsBytes == true)
        // A long key from a request is a view until stored; the stored one owns a copy.
        let long = Key(big.getSlice(at: 100, length: 100)!)
        #expect(!long.ownsItsBytes)
        ks.withShard(0) { $0.set(long, value: v, deadline: 0) }
        let storedLong = ks.withShard(0) { s in s.table.keys.first { $0 == long } }
        #expect(storedLong?.ownsItsBytes == true)
    }

    @Test("stored bytes round-trip at and around the inline capacity", arguments: [0, 1, 23, 24, 25, 64, 100_000])
    func storedBytes(length: Int) {
        let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let stored = StoredBytes(ByteBuffer(bytes: bytes))
        #expect(stored.count == length)
        #expect(stored.withUnsafeBytes { Array($0) } == bytes)
        #expect(stored == StoredBytes(ByteBuffer(bytes: bytes)))
        if length > 0 { #expect(stored != StoredBytes(ByteBuffer(bytes: bytes.dropLast()))) }
    }

    @Test("multi-key locking covers every shard named, in order, once")
    func multiShard() {
        let ks = Keyspace(shardCount: 16, clock: ManualClock())
        let keys = (0..<50).map { Self.key("m\($0)") }
        ks.withShards(for: keys + keys) { set in
            for k in keys { set.withShard(for: k) { $0.set(k, value: k.buffer, deadline: 0) } }
        }
        #expect(ks.count == 50)
    }
}
