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
        ks.withShard(for: k) { $0.set(k, value: Self.bytes("token"), deadline: 1_100, now: 1_000) }
        #expect(ks.withShard(for: k) { $0.entry(k, now: clock.now())?.value.buffer } == Self.bytes("token"))
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
        ks.withShard(0) { $0.set(lock, value: Self.bytes("tok"), deadline: start + 30_000, now: start) }
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
            ks.withShard(for: k) { $0.set(k, value: Self.bytes("v"), deadline: i < 900 ? 10 : 0, now: 0) }
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
            ks.withShard(for: k) { $0.set(k, value: Self.bytes("v"), deadline: 1_000, now: 0) }
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
            s.set(a, value: Self.bytes("1"), deadline: 5, now: 0)
            s.set(b, value: Self.bytes("2"), deadline: 6, now: 0)
            s.set(c, value: Self.bytes("3"), deadline: 7, now: 0)
            s.setDeadline(a, 0)          // PERSIST a
            s.set(b, value: Self.bytes("x"), deadline: 0, now: 0)  // SET without KEEPTTL clears it
            s.set(c, value: Self.bytes("y"), deadline: 0, keepTTL: true, now: 0)
            s.remove(c)
        }
        let totals = ks.totals()
        #expect(totals.keys == 2)
        #expect(totals.expires == 0)
        clock.set(100)
        #expect(ks.withShard(0) { $0.entry(a, now: 100) } != nil)
    }

    @Test("memory accounting counts what malloc hands out, and returns to zero")
    func memoryAccounting() {
        let ks = Keyspace(shardCount: 4, clock: ManualClock())
        for i in 0..<100 {
            let k = Self.key("key:\(i)")
            ks.withShard(for: k) { $0.set(k, value: ByteBuffer(repeating: 0, count: 64), deadline: 0, now: 0) }
        }
        let used = ks.totals().usedBytes
        // Each key is one record: 24-byte header + key + value, rounded up to malloc's chunk
        // (at most 16 bytes more, plus its 8-byte header), and a 16-byte table slot per
        // capacity slot (tables at most 3/4 full after growing, 8 slots at least).
        #expect(used >= 100 * (24 + 5 + 64 + 8) + 100 * 16)
        #expect(used <= 100 * (24 + 6 + 64 + 8 + 16) + 4 * 64 * 16)
        #expect(abs(ks.usedBytesEstimate - used) <= ks.reportingSlack)
        ks.flush()
        #expect(ks.totals().usedBytes == 0)
        #expect(ks.usedBytesEstimate == 0)
    }

    @Test("a key and value stored from slices of a large request buffer cost only their own bytes")
    func compactStorage() {
        let ks = Keyspace(shardCount: 1, clock: ManualClock())
        let big = ByteBuffer(repeating: 7, count: 1 << 20)
        let k = Key(big.getSlice(at: 100, length: 100)!)
        let v = big.getSlice(at: 10, length: 5)!
        ks.withShard(0) { $0.set(k, value: v, deadline: 0, now: 0) }
        #expect(ks.withShard(0) { $0.entry(k, now: 0)?.value.buffer } == v)
        #expect(ks.totals().usedBytes < 24 + 105 + 32 + 8 * 16)
    }

    @Test("the table agrees with a dictionary through random inserts, overwrites, deadlines and deletes")
    func tableAgainstModel() {
        let ks = Keyspace(shardCount: 2, clock: ManualClock())
        var model: [String: (value: String, deadline: Int64, lock: Bool)] = [:]
        var rng = SystemRandomNumberGenerator()
        for step in 0..<40_000 {
            let name = "k\(Int.random(in: 0..<3000, using: &rng))"
            let k = Self.key(name)
            switch Int.random(in: 0..<12, using: &rng) {
            case 0..<4:
                let value = String(repeating: "v", count: Int.random(in: 0..<40, using: &rng))
                let deadline: Int64 = Bool.random() ? 0 : Int64(step + 1_000_000)
                let lock = deadline != 0 && Bool.random()
                ks.withShard(for: k) { $0.set(k, value: Self.bytes(value), deadline: deadline, lock: lock, now: 0) }
                model[name] = (value, deadline, lock)
            case 4..<7:
                let removed = ks.withShard(for: k) { $0.remove(k) }
                #expect(removed == (model.removeValue(forKey: name) != nil))
            case 7:
                ks.withShard(for: k) { $0.setDeadline(k, 0) }
                if model[name] != nil { model[name]!.deadline = 0 }
            case 9:
                let offset = Int.random(in: 0..<60, using: &rng)
                let patch = String(repeating: "p", count: Int.random(in: 0..<20, using: &rng))
                let length = Array(patch.utf8).withUnsafeBytes { bytes in ks.withShard(for: k) { $0.setRange(k, offset: offset, bytes) } }
                if var m = model[name] {
                    var v = Array(m.value.utf8)
                    if v.count < offset + patch.utf8.count { v += [UInt8](repeating: 0, count: offset + patch.utf8.count - v.count) }
                    v.replaceSubrange(offset..<offset + patch.utf8.count, with: Array(patch.utf8))
                    m.value = String(decoding: v, as: UTF8.self)
                    model[name] = m
                }
                #expect(length == model[name].map { $0.value.utf8.count })
            case 8:
                let suffix = String(repeating: "a", count: Int.random(in: 0..<300, using: &rng))
                let length = Array(suffix.utf8).withUnsafeBytes { bytes in ks.withShard(for: k) { $0.append(k, bytes) } }
                if model[name] != nil { model[name]!.value += suffix }
                #expect(length == model[name].map { $0.value.utf8.count })
            default:
                let got = ks.withShard(for: k) { s in s.entry(k, now: 0).map { ($0.value.buffer, $0.deadline, $0.isLock) } }
                let want = model[name]
                #expect(got?.0 == want.map { Self.bytes($0.value) })
                #expect(got?.1 == want?.deadline)
                #expect(got?.2 == want?.lock)
            }
        }
        let t = ks.totals()
        for shard in 0..<ks.shardCount {
            ks.withShard(shard) { #expect($0.usedBytes == $0.recountedBytes()) }
        }
        #expect(t.keys == model.count)
        #expect(t.expires == model.values.filter { $0.deadline != 0 }.count)
        #expect(t.locks == model.values.filter { $0.lock }.count)
        var seen = 0
        for shard in 0..<ks.shardCount {
            ks.forEachKey(inShard: shard, now: 0) { key, entry in
                seen += 1
                #expect(model[String(buffer: key)].map { Self.bytes($0.value) } == entry.value.buffer)
            }
        }
        #expect(seen == model.count)
    }

    @Test("appending grows a value in place with room to spare, and the accounting follows")
    func appendInPlace() {
        let ks = Keyspace(shardCount: 1, clock: ManualClock())
        let k = Self.key("log")
        ks.withShard(0) { $0.set(k, value: Self.bytes("start:"), deadline: 0, now: 0) }
        var expected = Array("start:".utf8)
        let piece = Array("0123456789".utf8)
        for _ in 0..<20_000 {
            let n = piece.withUnsafeBytes { bytes in ks.withShard(0) { $0.append(k, bytes) } }
            expected += piece
            #expect(n == expected.count)
        }
        #expect(ks.withShard(0) { $0.entry(k, now: 0)?.value.buffer } == ByteBuffer(bytes: expected))
        let (used, recounted) = ks.withShard(0) { ($0.usedBytes, $0.recountedBytes()) }
        #expect(used == recounted)
        // Room to spare is at most the value's size again.
        #expect(used < 2 * expected.count + 1024)
        #expect(Self.bytes("x").withUnsafeReadableBytes { bytes in ks.withShard(0) { $0.append(Self.key("missing"), bytes) } } == nil)
    }

    @Test("keys round-trip at and around the inline capacity, and are stored and found by their bytes",
          arguments: [0, 1, 23, 24, 25, 64, 100_000])
    func keyBytes(length: Int) {
        let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let key = Key(ByteBuffer(bytes: bytes))
        #expect(key.count == length)
        #expect(key.withUnsafeBytes { Array($0) } == bytes)
        #expect(key == Key(ByteBuffer(bytes: bytes)))
        if length > 0 {
            #expect(key != Key(ByteBuffer(bytes: bytes.dropLast())))
            var other = bytes
            other[length - 1] &+= 1
            #expect(key != Key(ByteBuffer(bytes: other)))
        }
        let ks = Keyspace(shardCount: 1, clock: ManualClock())
        ks.withShard(0) { $0.set(key, value: ByteBuffer(string: "v"), deadline: 0, now: 0) }
        // Found again through a key made from another buffer holding the same bytes.
        #expect(ks.withShard(0) { $0.entry(Key(ByteBuffer(bytes: bytes)), now: 0)?.value.buffer } == ByteBuffer(string: "v"))
        var keys: [ByteBuffer] = []
        ks.forEachKey(inShard: 0, now: 0) { k, _ in keys.append(k) }
        #expect(keys == [ByteBuffer(bytes: bytes)])
    }

    @Test("multi-key locking covers every shard named, in order, once")
    func multiShard() {
        let ks = Keyspace(shardCount: 16, clock: ManualClock())
        let keys = (0..<50).map { Self.key("m\($0)") }
        ks.withShards(for: keys + keys) { set in
            for k in keys { set.withShard(for: k) { $0.set(k, value: k.buffer, deadline: 0, now: 0) } }
        }
        #expect(ks.count == 50)
    }
}
