import NIOCore

/// The protocol version a connection speaks: RESP2 (the default) or RESP3 (after `HELLO 3`).
public enum RESPVersion: Int, Sendable, Equatable {
    case v2 = 2
    case v3 = 3
}

/// One reply value, in every type RESP2 and RESP3 know.
///
/// The value is protocol-neutral: how a map, a null or a boolean goes on the wire is decided
/// only when it is written (`ByteBuffer.writeRESP(_:version:)`), so command code never branches
/// on the protocol version. Hot commands skip this type and call the direct writers.
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    /// An error line without the leading `-`, e.g. `ERR syntax error`.
    case error(String)
    case integer(Int64)
    case bulkString(ByteBuffer)
    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    case null
    /// The null array: `*-1` in RESP2, `_` in RESP3.
    case nullArray
    case array([RESPValue])
    /// A map: `%` in RESP3, a flat array of key, value, key, value… in RESP2.
    case map([(RESPValue, RESPValue)])
    /// A set: `~` in RESP3, an array in RESP2.
    case set([RESPValue])
    /// A double: `,` in RESP3, a bulk string in RESP2.
    case double(Double)
    /// A boolean: `#t`/`#f` in RESP3, the integer 1/0 in RESP2.
    case boolean(Bool)
    /// A big number given as its decimal digits: `(` in RESP3, a bulk string in RESP2.
    case bigNumber(String)
    /// A verbatim string with its three-letter format (`txt`, `mkd`): `=` in RESP3, a bulk string in RESP2.
    case verbatim(format: String, text: String)
    /// An out-of-band push: `>` in RESP3, an array in RESP2.
    case push([RESPValue])

    /// A bulk string from text.
    public static func bulk(_ string: String) -> RESPValue {
        .bulkString(ByteBuffer(string: string))
    }

    public static func == (lhs: RESPValue, rhs: RESPValue) -> Bool {
        switch (lhs, rhs) {
        case let (.simpleString(a), .simpleString(b)): return a == b
        case let (.error(a), .error(b)): return a == b
        case let (.integer(a), .integer(b)): return a == b
        case let (.bulkString(a), .bulkString(b)): return a == b
        case (.null, .null), (.nullArray, .nullArray): return true
        case let (.array(a), .array(b)), let (.set(a), .set(b)), let (.push(a), .push(b)): return a == b
        case let (.map(a), .map(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        case let (.double(a), .double(b)): return a == b || (a.isNaN && b.isNaN)
        case let (.boolean(a), .boolean(b)): return a == b
        case let (.bigNumber(a), .bigNumber(b)): return a == b
        case let (.verbatim(f1, t1), .verbatim(f2, t2)): return f1 == f2 && t1 == t2
        default: return false
        }
    }
}

extension ByteBuffer {
    /// Writes `value` as `version` encodes it.
    public mutating func writeRESP(_ value: RESPValue, version: RESPVersion) {
        switch value {
        case .simpleString(let s): writeRESPSimpleString(s)
        case .error(let e): writeRESPError(e)
        case .integer(let i): writeRESPInteger(i)
        case .bulkString(let b): writeRESPBulk(b)
        case .null: writeRESPNull(version: version)
        case .nullArray: writeRESPNullArray(version: version)
        case .array(let items):
            writeRESPArrayHeader(items.count)
            for item in items { writeRESP(item, version: version) }
        case .map(let pairs):
            writeRESPMapHeader(pairs.count, version: version)
            for (k, v) in pairs {
                writeRESP(k, version: version)
                writeRESP(v, version: version)
            }
        case .set(let items):
            writeRESPAggregateHeader(version == .v3 ? UInt8(ascii: "~") : UInt8(ascii: "*"), items.count)
            for item in items { writeRESP(item, version: version) }
        case .push(let items):
            writeRESPAggregateHeader(version == .v3 ? UInt8(ascii: ">") : UInt8(ascii: "*"), items.count)
            for item in items { writeRESP(item, version: version) }
        case .double(let d): writeRESPDouble(d, version: version)
        case .boolean(let b):
            if version == .v3 {
                writeStaticString(b ? "#t\r\n" : "#f\r\n")
            } else {
                writeRESPInteger(b ? 1 : 0)
            }
        case .bigNumber(let digits):
            if version == .v3 {
                writeInteger(UInt8(ascii: "("))
                writeString(digits)
                writeStaticString("\r\n")
            } else {
                writeRESPBulk(string: digits)
            }
        case .verbatim(let format, let text):
            writeRESPVerbatim(format: format, text: text, version: version)
        }
    }

    /// `+OK\r\n`
    @inlinable
    public mutating func writeRESPOK() { writeStaticString("+OK\r\n") }

    /// `+<s>\r\n` for a constant reply (`PONG`, `string`); `s` must not contain CR or LF.
    @inlinable
    public mutating func writeRESPSimpleString(_ s: StaticString) {
        writeInteger(UInt8(ascii: "+"))
        writeStaticString(s)
        writeStaticString("\r\n")
    }

    /// `$0\r\n\r\n`: the empty bulk string.
    @inlinable
    public mutating func writeRESPEmptyBulk() { writeStaticString("$0\r\n\r\n") }

    /// `+<s>\r\n`; `s` must not contain CR or LF.
    public mutating func writeRESPSimpleString(_ s: String) {
        writeInteger(UInt8(ascii: "+"))
        writeString(s)
        writeStaticString("\r\n")
    }

    /// `-<message>\r\n`, with CR and LF in the message replaced by spaces as Redis does.
    public mutating func writeRESPError(_ message: String) {
        writeInteger(UInt8(ascii: "-"))
        if message.utf8.contains(where: { $0 == 13 || $0 == 10 }) {
            writeBytes(message.utf8.map { $0 == 13 || $0 == 10 ? 32 : $0 })
        } else {
            writeString(message)
        }
        writeStaticString("\r\n")
    }

    /// `:<n>\r\n`
    @inlinable
    public mutating func writeRESPInteger(_ value: Int64) {
        writeInteger(UInt8(ascii: ":"))
        writeDecimal(value)
        writeStaticString("\r\n")
    }

    /// `$<len>\r\n<bytes>\r\n`
    @inlinable
    public mutating func writeRESPBulk(_ bytes: ByteBuffer) {
        writeInteger(UInt8(ascii: "$"))
        writeDecimal(Int64(bytes.readableBytes))
        writeStaticString("\r\n")
        writeImmutableBuffer(bytes)
        writeStaticString("\r\n")
    }

    /// `$<len>\r\n<bytes>\r\n` from raw bytes.
    @inlinable
    public mutating func writeRESPBulk(bytes: UnsafeRawBufferPointer) {
        writeInteger(UInt8(ascii: "$"))
        writeDecimal(Int64(bytes.count))
        writeStaticString("\r\n")
        writeBytes(bytes)
        writeStaticString("\r\n")
    }

    /// A bulk string from text.
    public mutating func writeRESPBulk(string: String) {
        writeInteger(UInt8(ascii: "$"))
        writeDecimal(Int64(string.utf8.count))
        writeStaticString("\r\n")
        writeString(string)
        writeStaticString("\r\n")
    }

    /// The null bulk reply: `$-1\r\n` (RESP2) or `_\r\n` (RESP3).
    @inlinable
    public mutating func writeRESPNull(version: RESPVersion) {
        writeStaticString(version == .v3 ? "_\r\n" : "$-1\r\n")
    }

    /// The null array reply: `*-1\r\n` (RESP2) or `_\r\n` (RESP3).
    @inlinable
    public mutating func writeRESPNullArray(version: RESPVersion) {
        writeStaticString(version == .v3 ? "_\r\n" : "*-1\r\n")
    }

    /// `*<count>\r\n`
    @inlinable
    public mutating func writeRESPArrayHeader(_ count: Int) {
        writeRESPAggregateHeader(UInt8(ascii: "*"), count)
    }

    /// `%<count>\r\n` (RESP3) or `*<2·count>\r\n` (RESP2).
    @inlinable
    public mutating func writeRESPMapHeader(_ count: Int, version: RESPVersion) {
        if version == .v3 {
            writeRESPAggregateHeader(UInt8(ascii: "%"), count)
        } else {
            writeRESPAggregateHeader(UInt8(ascii: "*"), count * 2)
        }
    }

    /// `~<count>\r\n` (RESP3) or `*<count>\r\n` (RESP2).
    @inlinable
    public mutating func writeRESPSetHeader(_ count: Int, version: RESPVersion) {
        writeRESPAggregateHeader(version == .v3 ? UInt8(ascii: "~") : UInt8(ascii: "*"), count)
    }

    @inlinable
    mutating func writeRESPAggregateHeader(_ marker: UInt8, _ count: Int) {
        writeInteger(marker)
        writeDecimal(Int64(count))
        writeStaticString("\r\n")
    }

    /// A double: `,<repr>\r\n` in RESP3, a bulk string in RESP2, formatted as Redis does
    /// (`inf`, `-inf`, `nan`, integers without a fraction, otherwise 17 significant digits).
    public mutating func writeRESPDouble(_ value: Double, version: RESPVersion) {
        let text = RESPDoubleFormat.string(value)
        if version == .v3 {
            writeInteger(UInt8(ascii: ","))
            writeString(text)
            writeStaticString("\r\n")
        } else {
            writeRESPBulk(string: text)
        }
    }

    /// A verbatim string: `=<len>\r\n<fmt>:<text>\r\n` in RESP3, a bulk string of the text in RESP2.
    public mutating func writeRESPVerbatim(format: String, text: String, version: RESPVersion) {
        if version == .v3 {
            writeInteger(UInt8(ascii: "="))
            writeDecimal(Int64(text.utf8.count + 4))
            writeStaticString("\r\n")
            writeString(format)
            writeInteger(UInt8(ascii: ":"))
            writeString(text)
            writeStaticString("\r\n")
        } else {
            writeRESPBulk(string: text)
        }
    }

    /// Writes the decimal digits of `value` without going through `String`.
    @inlinable
    public mutating func writeDecimal(_ value: Int64) {
        if value >= 0 && value < 10 {
            writeInteger(UInt8(truncatingIfNeeded: value) &+ 48)
            return
        }
        var magnitude = value.magnitude
        // 20 digits hold UInt64.max; one more for the sign.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 21) { digits in
            var i = 21
            repeat {
                i -= 1
                digits[i] = UInt8(truncatingIfNeeded: magnitude % 10) &+ 48
                magnitude /= 10
            } while magnitude != 0
            if value < 0 {
                i -= 1
                digits[i] = UInt8(ascii: "-")
            }
            _ = writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(digits)[i..<21]))
        }
    }
}

/// Redis's text form of a double reply (`addReplyDouble`): `inf`, `-inf`, `nan`, else `%.17g`.
public enum RESPDoubleFormat {
    public static func string(_ value: Double) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value > 0 ? "inf" : "-inf" }
        return CFormat.format("%.17g", value)
    }
}
