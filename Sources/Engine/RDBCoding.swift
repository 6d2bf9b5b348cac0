/// The pieces of Redis's RDB serialization that payloads share (`FUNCTION DUMP`/`RESTORE` now,
/// `DUMP`/`RESTORE` and snapshots later): length and string encodings, LZF-compressed strings,
/// and the footer of a dump payload (RDB version, CRC-64).
enum RDB {
    /// The RDB version Redis 7.0 writes.
    static let version: UInt16 = 10
    static let opcodeFunction2: UInt8 = 245
    /// Redis 7.0's release candidates' function format, which 7.0 refuses.
    static let opcodeFunctionPreGA: UInt8 = 246

    struct Malformed: Error {}

    // MARK: Writing

    /// Redis's length encoding: 6, 14, 32 or 64 bits.
    static func appendLength(_ n: Int, to out: inout [UInt8]) {
        if n < 64 {
            out.append(UInt8(n))
        } else if n < 16384 {
            out.append(0x40 | UInt8(n >> 8))
            out.append(UInt8(n & 0xFF))
        } else if UInt64(n) <= UInt64(UInt32.max) {
            out.append(0x80)
            withUnsafeBytes(of: UInt32(n).bigEndian) { out.append(contentsOf: $0) }
        } else {
            out.append(0x81)
            withUnsafeBytes(of: UInt64(n).bigEndian) { out.append(contentsOf: $0) }
        }
    }

    /// A string as Redis writes it: LZF-compressed when longer than 20 bytes and compression
    /// saves at least 4 (`rdbcompression yes`), else raw.
    static func appendString(_ bytes: [UInt8], to out: inout [UInt8]) {
        if bytes.count > 20, let packed = LZF.compress(bytes, limit: bytes.count - 4) {
            out.append(0xC3)
            appendLength(packed.count, to: &out)
            appendLength(bytes.count, to: &out)
            out.append(contentsOf: packed)
            return
        }
        appendLength(bytes.count, to: &out)
        out.append(contentsOf: bytes)
    }

    /// Ends a dump payload: RDB version (little-endian) and the CRC-64 of everything before.
    static func appendFooter(to out: inout [UInt8]) {
        withUnsafeBytes(of: version.littleEndian) { out.append(contentsOf: $0) }
        let crc = CRC64.checksum(out)
        withUnsafeBytes(of: crc.littleEndian) { out.append(contentsOf: $0) }
    }

    // MARK: Reading

    /// The body of a dump payload whose footer is right (version not newer than ours, CRC-64
    /// matching), or nil.
    static func verifiedBody(_ payload: [UInt8]) -> ArraySlice<UInt8>? {
        guard payload.count >= 10 else { return nil }
        let footer = payload.count - 10
        let version = UInt16(payload[footer]) | UInt16(payload[footer + 1]) << 8
        guard version <= Self.version else { return nil }
        var crc: UInt64 = 0
        for i in 0..<8 { crc |= UInt64(payload[footer + 2 + i]) << (8 * UInt64(i)) }
        guard CRC64.checksum(payload[..<(footer + 2)]) == crc else { return nil }
        return payload[..<footer]
    }

    /// Reads RDB-encoded values from a byte slice; every read checks its bounds.
    struct Reader {
        var bytes: ArraySlice<UInt8>

        var isAtEnd: Bool { bytes.isEmpty }

        mutating func byte() throws(Malformed) -> UInt8 {
            guard let b = bytes.first else { throw Malformed() }
            bytes = bytes.dropFirst()
            return b
        }

        mutating func take(_ n: Int) throws(Malformed) -> ArraySlice<UInt8> {
            guard n >= 0, n <= bytes.count else { throw Malformed() }
            defer { bytes = bytes.dropFirst(n) }
            return bytes.prefix(n)
        }

        private mutating func bigEndian(_ count: Int) throws(Malformed) -> UInt64 {
            var v: UInt64 = 0
            for b in try take(count) { v = v << 8 | UInt64(b) }
            return v
        }

        /// A length, or (`encoded` true) the special string encoding number of a `11xxxxxx` byte.
        mutating func length() throws(Malformed) -> (value: Int, encoded: Bool) {
            let first = try byte()
            switch first >> 6 {
            case 0: return (Int(first & 0x3F), false)
            case 1: return (Int(first & 0x3F) << 8 | Int(try byte()), false)
            case 2:
                let v: UInt64
                switch first {
                case 0x80: v = try bigEndian(4)
                case 0x81: v = try bigEndian(8)
                default: throw Malformed()
                }
                guard v <= UInt64(Int.max) else { throw Malformed() }
                return (Int(v), false)
            default: return (Int(first & 0x3F), true)
            }
        }

        /// A string in any of Redis's encodings: raw, an integer, or LZF-compressed.
        mutating func string(maxLength: Int = 512 * 1024 * 1024) throws(Malformed) -> [UInt8] {
            let (n, encoded) = try length()
            guard encoded else {
                guard n <= maxLength else { throw Malformed() }
                return Array(try take(n))
            }
            switch n {
            case 0: return Array(String(Int8(bitPattern: try byte())).utf8)
            case 1:
                let raw = try take(2)
                return Array(String(Int16(bitPattern: UInt16(raw.first!) | UInt16(raw.last!) << 8)).utf8)
            case 2:
                var v: UInt32 = 0
                for (i, b) in try take(4).enumerated() { v |= UInt32(b) << (8 * UInt32(i)) }
                return Array(String(Int32(bitPattern: v)).utf8)
            case 3:
                let compressed = try length()
                let plain = try length()
                guard !compressed.encoded, !plain.encoded, plain.value <= maxLength else { throw Malformed() }
                return try LZF.decompress(try take(compressed.value), length: plain.value)
            default: throw Malformed()
            }
        }
    }
}

/// LZF (the format of Redis's compressed RDB strings): a greedy compressor of our own and a
/// decompressor bounds-checked throughout.
enum LZF {
    /// - Returns: the compressed bytes, or nil when they would be more than `limit`.
    static func compress(_ input: [UInt8], limit: Int) -> [UInt8]? {
        let n = input.count
        var out: [UInt8] = []
        out.reserveCapacity(min(limit, n))
        // Last position (+1; 0 is none) of each 3-byte sequence, hashed into 2^14 slots.
        var table = [Int](repeating: 0, count: 1 << 14)
        var literalStart = 0
        var i = 0
        func flushLiterals(upTo end: Int) {
            var start = literalStart
            while start < end {
                let run = min(32, end - start)
                out.append(UInt8(run - 1))
                out.append(contentsOf: input[start..<(start + run)])
                start += run
            }
        }
        while i + 2 < n {
            let word = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
            let h = Int((word &* 2_654_435_761) >> 18) & ((1 << 14) - 1)
            let candidate = table[h] - 1
            table[h] = i + 1
            let offset = i - candidate - 1
            if candidate >= 0, offset < 8192, input[candidate] == input[i], input[candidate + 1] == input[i + 1],
               input[candidate + 2] == input[i + 2] {
                var length = 3
                while length < 264, i + length < n, input[candidate + length] == input[i + length] { length += 1 }
                flushLiterals(upTo: i)
                let encoded = length - 2
                if encoded < 7 {
                    out.append(UInt8(encoded << 5 | offset >> 8))
                } else {
                    out.append(UInt8(7 << 5 | offset >> 8))
                    out.append(UInt8(encoded - 7))
                }
                out.append(UInt8(offset & 0xFF))
                i += length
                literalStart = i
            } else {
                i += 1
            }
            if out.count > limit { return nil }
        }
        flushLiterals(upTo: n)
        return out.count <= limit ? out : nil
    }

    static func decompress(_ input: ArraySlice<UInt8>, length: Int) throws(RDB.Malformed) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(length)
        var i = input.startIndex
        while i < input.endIndex {
            let control = Int(input[i])
            i += 1
            if control < 32 {
                // A literal run of control + 1 bytes.
                let run = control + 1
                guard input.endIndex - i >= run, out.count + run <= length else { throw RDB.Malformed() }
                out.append(contentsOf: input[i..<(i + run)])
                i += run
            } else {
                // A back reference: length (3 bits, or 7 + one more byte) and a 13-bit offset.
                var run = control >> 5
                if run == 7 {
                    guard i < input.endIndex else { throw RDB.Malformed() }
                    run += Int(input[i])
                    i += 1
                }
                guard i < input.endIndex else { throw RDB.Malformed() }
                let back = ((control & 0x1F) << 8) + Int(input[i]) + 1
                i += 1
                run += 2
                guard back <= out.count, out.count + run <= length else { throw RDB.Malformed() }
                var from = out.count - back
                for _ in 0..<run {
                    out.append(out[from])
                    from += 1
                }
            }
        }
        guard out.count == length else { throw RDB.Malformed() }
        return out
    }
}

/// CRC-64 as Redis computes it (Jones polynomial, reflected; check value of "123456789" is
/// 0xe9c6d914c4b8d9ca).
enum CRC64 {
    private static let table: [UInt64] = (0..<256).map { n in
        var crc = UInt64(n)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x95AC_9329_AC4B_C9B5 : crc >> 1 }
        return crc
    }

    static func checksum(_ bytes: some Sequence<UInt8>, initial: UInt64 = 0) -> UInt64 {
        var crc = initial
        for b in bytes { crc = table[Int((crc ^ UInt64(b)) & 0xFF)] ^ (crc >> 8) }
        return crc
    }
}
