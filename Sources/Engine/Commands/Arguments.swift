import Keyspace
import NIOCore
import RESP
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension ByteBuffer {
    /// `$<len>\r\n<bytes>\r\n` from a stored value.
    @inline(__always)
    mutating func writeRESPBulk(_ value: ValueBytes) {
        value.withUnsafeBytes { writeRESPBulk(bytes: $0) }
    }

    /// Whether the readable bytes equal `word` ignoring ASCII case; `word` must be lowercase.
    @inline(__always)
    public func isToken(_ word: StaticString) -> Bool {
        guard readableBytes == word.utf8CodeUnitCount else { return false }
        return withUnsafeReadableBytes { bytes in
            let w = word.utf8Start
            for i in 0..<bytes.count {
                let c = bytes[i]
                let l = (c >= 65 && c <= 90) ? c | 0x20 : c
                if l != w[i] { return false }
            }
            return true
        }
    }

    /// The bytes as text (invalid UTF-8 replaced), for messages and rare commands.
    public var text: String { String(decoding: readableBytesView, as: UTF8.self) }
}

enum Arg {
    /// A Redis integer argument (`string2ll` syntax), or `ERR value is not an integer or out of range`.
    @inline(__always)
    static func integer(_ b: ByteBuffer, error: CommandError = .notInteger) throws(CommandError) -> Int64 {
        guard let v = RedisInteger.parse(b) else { throw error }
        return v
    }

    /// A long double the way Redis's `string2ld` reads one (for `INCRBYFLOAT`).
    static func longDouble(_ b: ByteBuffer) -> Float80? {
        longDouble(Array(b.readableBytesView))
    }

    static func longDouble(_ b: ValueBytes) -> Float80? {
        longDouble(b.withUnsafeBytes { Array($0) })
    }

    static func longDouble(_ input: [UInt8]) -> Float80? {
        let n = input.count
        guard n > 0 && n < 5 * 1024 else { return nil }
        var bytes = input
        if bytes.contains(0) { return nil }
        bytes.append(0)
        return bytes.withUnsafeBufferPointer { p -> Float80? in
            let s = UnsafeRawPointer(p.baseAddress!).assumingMemoryBound(to: CChar.self)
            let first = p[0]
            if first == 32 || (first >= 9 && first <= 13) { return nil }
            errno = 0
            var end: UnsafeMutablePointer<CChar>? = nil
            let value = strtold(s, &end)
            guard let end, end.pointee == 0 else { return nil }
            if errno == ERANGE && (value.isInfinite || value == 0) { return nil }
            if value.isNaN { return nil }
            return value
        }
    }

    /// Redis's human form of a long double (`ld2string` with `LD_STR_HUMAN`): `%.17Lf`, trailing zeros removed.
    static func humanLongDouble(_ value: Float80) -> String {
        var s = CFormat.format("%.17Lf", value)
        if s.contains(".") {
            while s.hasSuffix("0") { s.removeLast() }
            if s.hasSuffix(".") { s.removeLast() }
        }
        if s == "-0" { s = "0" }
        return s
    }
}
