import NIOCore

/// Finds where one whole reply ends without building it: for relaying replies byte for byte.
public enum RESPFrameScanner {
    /// The length in bytes of the reply at the start of `buffer`'s readable bytes, or nil when it
    /// is not all there yet. Throws on bytes that are not RESP.
    public static func frameLength(_ buffer: ByteBuffer) throws(RESPValueDecoder.DecodingError) -> Int? {
        try buffer.withUnsafeReadableBytes { bytes throws(RESPValueDecoder.DecodingError) -> Int? in
            var i = 0
            return try scan(bytes, &i, depth: 0) ? i : nil
        }
    }

    /// Position just after the next CRLF at or after `i`, or nil.
    @inline(__always)
    private static func lineEnd(_ b: UnsafeRawBufferPointer, _ i: Int) -> Int? {
        var j = i
        while j + 1 < b.count {
            if b[j] == 13 && b[j + 1] == 10 { return j + 2 }
            j += 1
        }
        return nil
    }

    /// The signed decimal between `start` and the CR before `end`.
    private static func number(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws(RESPValueDecoder.DecodingError) -> Int {
        var i = start, negative = false, n = 0
        if i < end - 2, b[i] == UInt8(ascii: "-") { negative = true; i += 1 }
        guard i < end - 2 else { throw RESPValueDecoder.DecodingError(description: "missing length") }
        while i < end - 2 {
            let d = b[i]
            guard d >= 48 && d <= 57 else { throw RESPValueDecoder.DecodingError(description: "bad length") }
            n = n &* 10 &+ Int(d - 48)
            // A length past this can be no real reply, and would overflow the arithmetic below.
            guard n <= RESPValueDecoder.maxLength else { throw RESPValueDecoder.DecodingError(description: "length out of range") }
            i += 1
        }
        return negative ? -n : n
    }

    private static func scan(_ b: UnsafeRawBufferPointer, _ i: inout Int, depth: Int) throws(RESPValueDecoder.DecodingError) -> Bool {
        guard depth < 64 else { throw RESPValueDecoder.DecodingError(description: "nesting too deep") }
        guard i < b.count else { return false }
        let marker = b[i]
        guard let end = lineEnd(b, i + 1) else { return false }
        switch marker {
        case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "_"), UInt8(ascii: "#"),
             UInt8(ascii: ","), UInt8(ascii: "("):
            i = end
            return true
        case UInt8(ascii: "$"), UInt8(ascii: "="), UInt8(ascii: "!"):
            let n = try number(b, i + 1, end)
            if n < 0 { i = end; return true }
            guard end + n + 2 <= b.count else { return false }
            i = end + n + 2
            return true
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
            var n = try number(b, i + 1, end)
            i = end
            if n < 0 {
                // Only an array has a null form (RESP2's `*-1`); a negative set, push, map or
                // attribute length is no reply (the decoder refuses it alike).
                guard marker == UInt8(ascii: "*") else { throw RESPValueDecoder.DecodingError(description: "bad length") }
                return true
            }
            if marker == UInt8(ascii: "%") || marker == UInt8(ascii: "|") { n *= 2 }
            for _ in 0..<n {
                guard try scan(b, &i, depth: depth + 1) else { return false }
            }
            // An attribute is followed by the reply it describes.
            if marker == UInt8(ascii: "|") { return try scan(b, &i, depth: depth + 1) }
            return true
        default:
            throw RESPValueDecoder.DecodingError(description: "unknown reply type byte \(marker)")
        }
    }
}
