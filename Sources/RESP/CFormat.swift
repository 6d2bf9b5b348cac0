#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// printf-style formatting through the C library, for the few replies whose exact digits
/// Redis takes from `snprintf` (`%.17g` doubles, `%.17Lf` long doubles).
public enum CFormat {
    public static func format(_ spec: String, _ args: any CVarArg...) -> String {
        withVaList(args) { list in
            var buffer = [CChar](repeating: 0, count: 512)
            let n = buffer.withUnsafeMutableBufferPointer { vsnprintf($0.baseAddress, 512, spec, list) }
            if n < 0 { return "" }
            if n >= 512 {
                // Rare: retry with room for everything.
                return withVaList(args) { list2 in
                    var big = [CChar](repeating: 0, count: Int(n) + 1)
                    _ = big.withUnsafeMutableBufferPointer { vsnprintf($0.baseAddress, Int(n) + 1, spec, list2) }
                    return String(decoding: big.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                }
            }
            return String(decoding: buffer.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}
