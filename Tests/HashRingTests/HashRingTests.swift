import HashRing
import Testing

@Suite struct HashSlotTests {
    @Test func crc16KnownVectors() {
        // The XMODEM check value and the example in Redis Cluster's specification.
        #expect(HashSlot.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(HashSlot.crc16([UInt8]()) == 0)
        #expect(HashSlot.crc16(Array("A".utf8)) == 0x58E5)
    }

    @Test func redisKeySlotExamples() {
        // Values printed by `CLUSTER KEYSLOT` on Redis 7 and in its documentation.
        #expect(HashSlot.slot(forKey: "somekey") == 11058)
        #expect(HashSlot.slot(forKey: "foo") == 12182)
        #expect(HashSlot.slot(forKey: "hello") == 866)
        #expect(HashSlot.slot(forKey: "bar") == 5061)
        #expect(HashSlot.slot(forKey: "") == 0)
    }

    @Test func hashTags() {
        let tag = HashSlot.slot(forKey: "user1000")
        #expect(HashSlot.slot(forKey: "{user1000}.following") == tag)
        #expect(HashSlot.slot(forKey: "{user1000}.followers") == tag)
        // Only the first {...} with at least one character counts.
        #expect(HashSlot.slot(forKey: "foo{bar}{zap}") == HashSlot.slot(forKey: "bar"))
        #expect(HashSlot.slot(forKey: "foo{}{bar}") == Int(HashSlot.crc16(Array("foo{}{bar}".utf8)) & 0x3FFF))
        #expect(HashSlot.slot(forKey: "foo{{bar}}zap") == HashSlot.slot(forKey: "{bar"))
        #expect(HashSlot.slot(forKey: "foo{bar") == Int(HashSlot.crc16(Array("foo{bar".utf8)) & 0x3FFF))
        #expect(HashSlot.slot(forKey: Array("{a}b".utf8)[...]) == HashSlot.slot(forKey: "a"))
        // A non-contiguous collection takes the copying path to the same answer.
        #expect(HashSlot.slot(forKey: Array("{user1000}.x".utf8).lazy.map { $0 }) == tag)
    }
}

@Suite struct HashRingTests {
    static func members(_ n: Int, basePort: Int = 7000) -> [RingMember] {
        (0..<n).map { RingMember(host: "127.0.0.1", port: basePort + $0) }
    }

    @Test func nodeIDsAreStableHex() {
        let a = RingMember(host: "127.0.0.1", port: 7000)
        #expect(a.id.count == 40)
        #expect(a.id.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(a.id == RingMember(address: "127.0.0.1:7000")!.id)
        #expect(a.id != RingMember(host: "127.0.0.1", port: 7001).id)
        #expect(RingMember(address: "nope") == nil)
        #expect(RingMember(address: "[::1]:7000")?.host == "::1")
    }

    @Test func sameTableWhateverTheInputOrder() {
        let m = Self.members(5)
        let a = HashRing(members: m)
        let b = HashRing(members: m.reversed())
        #expect(a == b)
        for slot in stride(from: 0, to: HashSlot.count, by: 97) {
            #expect(a.owner(ofSlot: slot) == b.owner(ofSlot: slot))
        }
    }

    @Test(arguments: [3, 5, 10])
    func balance(memberCount: Int) {
        let ring = HashRing(members: Self.members(memberCount))
        let counts = ring.slotCounts
        let fair = Double(HashSlot.count) / Double(memberCount)
        let worst = Double(counts.max()!) / fair
        print("ring balance: \(memberCount) members, 256 vnodes: slots per member \(counts), max/fair = \(worst)")
        #expect(counts.reduce(0, +) == HashSlot.count)
        #expect(worst <= 1.15)
    }

    @Test func addingAFourthMemberMovesAboutAQuarterAllToIt() {
        let three = HashRing(members: Self.members(3))
        let newcomer = RingMember(host: "127.0.0.1", port: 7003)
        let four = HashRing(members: Self.members(3) + [newcomer])
        var moved = 0
        for slot in 0..<HashSlot.count where three.owner(ofSlot: slot) != four.owner(ofSlot: slot) {
            moved += 1
            #expect(four.owner(ofSlot: slot) == newcomer)
        }
        let fraction = Double(moved) / Double(HashSlot.count)
        print("ring movement: adding a 4th member to 3 moved \(moved) slots (\(fraction))")
        #expect(fraction >= 0.20 && fraction <= 0.30)
    }

    @Test func removingAMemberMovesOnlyItsSlots() {
        let five = HashRing(members: Self.members(5))
        let leaving = Self.members(5)[2]
        let four = HashRing(members: Self.members(5).filter { $0 != leaving })
        var moved = 0
        for slot in 0..<HashSlot.count {
            if five.owner(ofSlot: slot) == leaving {
                moved += 1
                #expect(four.owner(ofSlot: slot) != leaving)
            } else {
                #expect(four.owner(ofSlot: slot) == five.owner(ofSlot: slot))
            }
        }
        print("ring movement: removing 1 of 5 members moved \(moved) slots, all of them its own")
        #expect(moved == five.slotCounts[five.members.firstIndex(of: leaving)!])
    }

    @Test func slotRangesCoverEverySlotOnce() {
        let ring = HashRing(members: Self.members(3))
        var seen = [Bool](repeating: false, count: HashSlot.count)
        for member in ring.members {
            for range in ring.slotRanges(of: member) {
                for s in range {
                    #expect(!seen[s])
                    seen[s] = true
                    #expect(ring.owner(ofSlot: s) == member)
                }
            }
        }
        #expect(seen.allSatisfy { $0 })
        // Slots lie in order on the ring: at most one contiguous range per point (+1 for the wrap).
        let ranges = ring.members.reduce(0) { $0 + ring.slotRanges(of: $1).count }
        #expect(ranges <= 3 * HashRing.defaultVirtualNodes + 1)
    }

    @Test func virtualNodesAreConfigurable() {
        let coarse = HashRing(members: Self.members(3), virtualNodes: 4)
        let fine = HashRing(members: Self.members(3), virtualNodes: 512)
        #expect(coarse.virtualNodes == 4)
        #expect(coarse != fine)
        #expect(fine.slotCounts.reduce(0, +) == HashSlot.count)
    }
}
