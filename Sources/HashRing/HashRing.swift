/// Placement of keys on nodes, shared by the server and the client.
///
/// A key maps to one of Redis Cluster's 16384 slots (`CRC16-XMODEM(key or its {hash tag}) mod 16384`);
/// slots map to members through a consistent-hash ring with virtual nodes. Everything here is a pure
/// function of its inputs and uses fixed hashes (never Swift's per-process-seeded `Hasher`), so every
/// process given the same member list computes the same slot table.
public enum HashSlot {
    /// The number of slots, as in Redis Cluster.
    public static let count = 16384

    /// CRC16 as Redis Cluster computes it: the XMODEM variant (polynomial 0x1021, initial value 0, no reflection).
    public static func crc16<Bytes: Collection>(_ bytes: Bytes) -> UInt16 where Bytes.Element == UInt8 {
        crcTable.withUnsafeBufferPointer { table in
            var crc: UInt16 = 0
            for byte in bytes {
                crc = (crc << 8) ^ table[Int((crc >> 8) ^ UInt16(byte)) & 0xFF]
            }
            return crc
        }
    }

    /// The slot of a key: only the part between the first `{` and the next `}` is hashed when that
    /// part is not empty (Redis Cluster's hash-tag rule), else the whole key.
    public static func slot<Bytes: Collection>(forKey key: Bytes) -> Int where Bytes.Element == UInt8 {
        if let s = key.withContiguousStorageIfAvailable({ slot(forKeyBytes: UnsafeRawBufferPointer($0)) }) { return s }
        return Array(key).withUnsafeBytes { slot(forKeyBytes: $0) }
    }

    /// The slot of a key given as raw bytes (non-generic: the fast path for servers).
    public static func slot(forKeyBytes key: UnsafeRawBufferPointer) -> Int {
        var hashed = key[...]
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
           let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close != open + 1 {
            hashed = key[(open + 1)..<close]
        }
        return Int(crc16(hashed) & 0x3FFF)
    }

    /// The slot of a key given as text (its UTF-8 bytes).
    public static func slot(forKey key: String) -> Int { slot(forKey: Array(key.utf8)) }

    private static let crcTable: [UInt16] = (0..<256).map { i in
        var crc = UInt16(i) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}

/// A fixed 64-bit hash (FNV-1a over the bytes, then a SplitMix64 finalizer for avalanche).
/// The same on every platform and in every process.
public enum StableHash {
    public static func hash64<Bytes: Sequence>(_ bytes: Bytes, seed: UInt64 = 0) -> UInt64 where Bytes.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return mix(h)
    }

    public static func hash64(_ text: String, seed: UInt64 = 0) -> UInt64 { hash64(text.utf8, seed: seed) }

    /// SplitMix64's finalizer: every input bit affects every output bit.
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One node of a cluster: where it listens and its 40-hex node ID.
public struct RingMember: Hashable, Sendable, CustomStringConvertible {
    public let host: String
    public let port: Int
    /// Redis Cluster style node ID: 40 lowercase hex digits.
    public let id: String

    /// `id` defaults to one derived from the address, so every process names a member the same way.
    public init(host: String, port: Int, id: String? = nil) {
        self.host = host
        self.port = port
        self.id = id ?? RingMember.derivedID(host: host, port: port)
    }

    /// Parses `host:port` (the last colon separates the port, so IPv6 literals without brackets work too).
    public init?(address: String, id: String? = nil) {
        var text = Substring(address)
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        text = text[..<colon]
        if text.hasPrefix("["), text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        guard !text.isEmpty else { return nil }
        self.init(host: String(text), port: port, id: id)
    }

    public var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    public var description: String { address }

    /// 40 hex digits from three seeded 64-bit hashes of `host:port`.
    public static func derivedID(host: String, port: Int) -> String {
        let key = "\(host):\(port)"
        var hex = ""
        for seed in UInt64(1)...3 {
            let h = StableHash.hash64(key, seed: seed &* 0x9E37_79B9_7F4A_7C15)
            let s = String(h, radix: 16)
            hex += String(repeating: "0", count: 16 - s.count) + s
        }
        return String(hex.prefix(40))
    }
}

/// Slots placed on members by a consistent-hash ring with virtual nodes.
///
/// Each member contributes `virtualNodes` points on a 64-bit ring (hash of its ID and the point's
/// index); each slot is hashed onto the ring and owned by the first point clockwise. Adding a member
/// moves only the slots its new points capture (about 1/N of them), all to the new member; removing
/// one moves only its slots.
public struct HashRing: Sendable, Equatable {
    /// The members, sorted by ID (so the order of the input list does not matter).
    public let members: [RingMember]
    public let virtualNodes: Int
    /// Slot -> index into `members`.
    private let owners: [UInt16]

    public static let defaultVirtualNodes = 256

    public init(members: [RingMember], virtualNodes: Int = HashRing.defaultVirtualNodes) {
        precondition(!members.isEmpty, "a ring needs at least one member")
        precondition(virtualNodes > 0, "a ring needs at least one virtual node per member")
        var unique: [String: RingMember] = [:]
        for m in members { unique[m.id] = m }
        let sorted = unique.values.sorted { $0.id < $1.id }
        self.members = sorted
        self.virtualNodes = virtualNodes

        var points: [(UInt64, UInt16)] = []
        points.reserveCapacity(sorted.count * virtualNodes)
        for (index, member) in sorted.enumerated() {
            for v in 0..<virtualNodes {
                points.append((StableHash.hash64("\(member.id)-\(v)"), UInt16(index)))
            }
        }
        // Ties (astronomically unlikely) are broken by member index, so the order is total.
        points.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        var owners = [UInt16](repeating: 0, count: HashSlot.count)
        for slot in 0..<HashSlot.count {
            // Slots sit in order around the ring (slot s at the middle of its 1/16384 arc), so each
            // arc between two points is a contiguous run of slots: few ranges in CLUSTER SLOTS.
            let position = UInt64(slot) << 50 | 1 << 49
            // First point at or after `position`, wrapping around.
            var lo = 0, hi = points.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if points[mid].0 < position { lo = mid + 1 } else { hi = mid }
            }
            owners[slot] = points[lo == points.count ? 0 : lo].1
        }
        self.owners = owners
    }

    /// The member that owns `slot` (0..<16384).
    public func owner(ofSlot slot: Int) -> RingMember { members[Int(owners[slot])] }

    /// The index into `members` of the member that owns `slot`.
    public func ownerIndex(ofSlot slot: Int) -> Int { Int(owners[slot]) }

    public func owner<Bytes: Collection>(ofKey key: Bytes) -> RingMember where Bytes.Element == UInt8 {
        owner(ofSlot: HashSlot.slot(forKey: key))
    }

    public func owner(ofKey key: String) -> RingMember { owner(ofSlot: HashSlot.slot(forKey: key)) }

    /// How many slots each member owns, in `members` order.
    public var slotCounts: [Int] {
        var counts = [Int](repeating: 0, count: members.count)
        for o in owners { counts[Int(o)] += 1 }
        return counts
    }

    /// The slots a member owns, as contiguous ranges in ascending order (the shape `CLUSTER SLOTS` reports).
    public func slotRanges(of member: RingMember) -> [ClosedRange<Int>] {
        guard let index = members.firstIndex(where: { $0.id == member.id }) else { return [] }
        return slotRanges(ofIndex: index)
    }

    public func slotRanges(ofIndex index: Int) -> [ClosedRange<Int>] {
        var ranges: [ClosedRange<Int>] = []
        var start: Int?
        for slot in 0...HashSlot.count {
            let mine = slot < HashSlot.count && Int(owners[slot]) == index
            if mine, start == nil { start = slot }
            if !mine, let s = start { ranges.append(s...(slot - 1)); start = nil }
        }
        return ranges
    }
}
