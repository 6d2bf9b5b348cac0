import CXXHash
import Keyspace
import NIOCore

/// Value digests for `DIGEST` and the IFDEQ/IFDNE conditions: XXH3-64 (Debian's libxxhash),
/// written as 16 lowercase hex digits.
public enum Digest {
    public static func xxh3(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        UInt64(XXH3_64bits(bytes.baseAddress, bytes.count))
    }

    public static func hex(_ value: ValueBytes) -> String {
        hex(value.withUnsafeBytes { xxh3($0) })
    }

    public static func hex(_ bytes: UnsafeRawBufferPointer) -> String {
        hex(xxh3(bytes))
    }

    public static func hex(_ digest: UInt64) -> String {
        let digits = String(digest, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// Whether `value`'s digest equals the digest a client gave (hex, any case).
    static func matches(_ value: ValueBytes, _ given: ByteBuffer) -> Bool {
        guard given.readableBytes == 16, let parsed = UInt64(given.text, radix: 16) else { return false }
        return parsed == value.withUnsafeBytes { xxh3($0) }
    }
}
