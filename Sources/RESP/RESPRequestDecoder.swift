import NIOCore

/// One request: the command name and its arguments, as views into the bytes that carried them.
public struct RESPCommand: Sendable, Equatable {
    /// `arguments[0]` is the command name; never empty.
    public var arguments: [ByteBuffer]

    public init(arguments: [ByteBuffer]) {
        self.arguments = arguments
    }

    public init(_ strings: String...) {
        self.arguments = strings.map { ByteBuffer(string: $0) }
    }
}

/// The limits a request decoder enforces while it parses, with Redis's defaults.
public struct RESPLimits: Sendable, Equatable {
    /// `proto-max-bulk-len`: the longest bulk string accepted (default 512 MB).
    public var maxBulkLength: Int
    /// The most arguments one multibulk request may announce (Redis: `INT_MAX`).
    public var maxMultibulkCount: Int
    /// The longest inline request or count line without a newline (Redis: 64 KB).
    public var maxInlineLength: Int
    /// `client-query-buffer-limit`: the most bytes one client's unprocessed request may hold (default 1 GB).
    public var queryBufferLimit: Int

    public init(
        maxBulkLength: Int = 512 * 1024 * 1024,
        maxMultibulkCount: Int = Int(Int32.max),
        maxInlineLength: Int = 64 * 1024,
        queryBufferLimit: Int = 1024 * 1024 * 1024
    ) {
        self.maxBulkLength = maxBulkLength
        self.maxMultibulkCount = maxMultibulkCount
        self.maxInlineLength = maxInlineLength
        self.queryBufferLimit = queryBufferLimit
    }
}

/// A request that breaks the protocol. The server replies `-ERR <message>` and closes the connection.
public struct RESPParsingError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case invalidMultibulkLength
        case invalidBulkLength
        case expectedDollar(UInt8)
        case unbalancedQuotes
        case tooBigInlineRequest
        case tooBigCountString(multibulk: Bool)
        case unauthenticatedMultibulkLength
        case unauthenticatedBulkLength
        /// The query buffer grew past `client-query-buffer-limit`; Redis closes without a reply.
        case queryBufferLimit
    }

    public let code: Code

    public init(_ code: Code) { self.code = code }

    /// The error text as Redis words it, without the leading `-`, or nil when Redis sends no reply.
    public var message: String? {
        switch code {
        case .invalidMultibulkLength: return "ERR Protocol error: invalid multibulk length"
        case .invalidBulkLength: return "ERR Protocol error: invalid bulk length"
        case .expectedDollar(let byte):
            return "ERR Protocol error: expected '$', got '\(String(decoding: [byte], as: UTF8.self))'"
        case .unbalancedQuotes: return "ERR Protocol error: unbalanced quotes in request"
        case .tooBigInlineRequest: return "ERR Protocol error: too big inline request"
        case .tooBigCountString(let multibulk):
            return multibulk ? "ERR Protocol error: too big mbulk count string" : "ERR Protocol error: too big bulk count string"
        case .unauthenticatedMultibulkLength: return "ERR Protocol error: unauthenticated multibulk length"
        case .unauthenticatedBulkLength: return "ERR Protocol error: unauthenticated bulk length"
        case .queryBufferLimit: return nil
        }
    }

    public var description: String { message ?? "query buffer limit reached" }
}

/// An incremental, resumable decoder for client requests: RESP multibulk (`*2\r\n$3\r\nGET\r\n…`)
/// and inline commands (`GET key\r\n`, as telnet and `redis-cli --pipe` send them).
///
/// Call `next(from:)` with the bytes received so far; it consumes whole requests (and the complete
/// arguments of a request still arriving) and returns nil when it needs more bytes. It never
/// allocates for a length a client merely announced: a bulk is sliced out of the buffer only
/// once all its bytes are there.
public struct RESPRequestDecoder: Sendable {
    public var limits: RESPLimits
    /// When true, the unauthenticated limits apply (at most 10 arguments, 16 KB bulks), as in Redis.
    public var unauthenticated: Bool = false

    /// Arguments still to come in the multibulk being parsed; 0 when between requests.
    private var remaining: Int = 0
    /// Length of the bulk being waited for, or -1 when its `$<len>` line has not been read.
    private var bulkLength: Int = -1
    /// Arguments of a request still arriving, for the `next(from:)` form.
    private var scratch: [ByteBuffer] = []
    /// Bytes held by `arguments` of a request still arriving (counted against the query buffer limit).
    public private(set) var retainedBytes: Int = 0

    public init(limits: RESPLimits = RESPLimits()) {
        self.limits = limits
    }

    /// True when no request is partly parsed.
    public var isBetweenRequests: Bool { remaining == 0 }

    /// Parses the next whole request from `buffer`, consuming what it used.
    /// - Returns: the request, or nil when `buffer` holds no whole request yet.
    /// - Throws: `RESPParsingError` when the bytes break the protocol; the connection must close.
    public mutating func next(from buffer: inout ByteBuffer) throws(RESPParsingError) -> RESPCommand? {
        var arguments = scratch
        scratch = []
        if try next(from: &buffer, into: &arguments) { return RESPCommand(arguments: arguments) }
        scratch = arguments
        return nil
    }

    /// The allocation-free form of `next(from:)`: parses into a caller-owned array that is reused
    /// from one request to the next (its capacity is kept).
    ///
    /// Pass the same array on every call: between calls it holds the arguments of a request still
    /// arriving. - Returns: true when `arguments` holds a whole request.
    public mutating func next(from buffer: inout ByteBuffer, into arguments: inout [ByteBuffer]) throws(RESPParsingError) -> Bool {
        if remaining == 0 && !unauthenticated, Self.wholeMultibulk(&buffer, into: &arguments, limits: limits) { return true }
        while true {
            if remaining == 0 {
                guard let first = buffer.readableBytesView.first else { return false }
                if first == UInt8(ascii: "*") {
                    switch try readMultibulkCount(&buffer) {
                    case .needMore: return false
                    case .empty: continue
                    case .started:
                        arguments.removeAll(keepingCapacity: true)
                        if arguments.capacity < min(remaining, 1024) { arguments.reserveCapacity(min(remaining, 1024)) }
                    }
                } else {
                    switch try readInline(&buffer) {
                    case .needMore: return false
                    case .empty: continue
                    case .command(let command):
                        arguments = command.arguments
                        return true
                    }
                }
            }
            // Inside a multibulk: read bulks until the request is whole.
            while remaining > 0 {
                if bulkLength < 0 {
                    guard try readBulkLength(&buffer) else { return false }
                }
                guard buffer.readableBytes >= bulkLength + 2 else {
                    if buffer.readableBytes + retainedBytes > limits.queryBufferLimit {
                        throw RESPParsingError(.queryBufferLimit)
                    }
                    return false
                }
                // Redis does not check the two bytes after a bulk; neither do we.
                let argument = buffer.readSlice(length: bulkLength)!
                buffer.moveReaderIndex(forwardBy: 2)
                arguments.append(argument)
                retainedBytes += bulkLength
                bulkLength = -1
                remaining -= 1
            }
            retainedBytes = 0
            return true
        }
    }

    /// The common case in one pass over raw bytes: a complete, well-formed multibulk request with
    /// plain lengths. Anything else (a request still arriving, a malformed one, a limit) is left
    /// untouched for the incremental parser, which also produces the exact errors.
    /// - Returns: true when `arguments` holds the request and `buffer` has moved past it.
    @inline(__always)
    private static func wholeMultibulk(_ buffer: inout ByteBuffer, into arguments: inout [ByteBuffer], limits: RESPLimits) -> Bool {
        let base = buffer.readerIndex
        let consumed: Int = buffer.withUnsafeReadableBytes { p -> Int in
            let end = p.count
            guard end > 3, p[0] == UInt8(ascii: "*") else { return 0 }
            var i = 1
            guard let count = decimal(p, &i, end), count > 0, count <= limits.maxMultibulkCount else { return 0 }
            arguments.removeAll(keepingCapacity: true)
            for _ in 0..<count {
                guard i < end, p[i] == UInt8(ascii: "$") else { break }
                i += 1
                guard let length = decimal(p, &i, end), length <= limits.maxBulkLength, i + length + 2 <= end,
                      let argument = buffer.getSlice(at: base + i, length: length) else { break }
                arguments.append(argument)
                i += length + 2
            }
            guard arguments.count == count else {
                arguments.removeAll(keepingCapacity: true)
                return 0
            }
            return i
        }
        guard consumed > 0 else { return false }
        buffer.moveReaderIndex(forwardBy: consumed)
        return true
    }

    /// A length line's digits and its CRLF: no sign, no leading zero, at most 10 digits.
    @inline(__always)
    private static func decimal(_ p: UnsafeRawBufferPointer, _ i: inout Int, _ end: Int) -> Int? {
        let start = i
        var value = 0
        while i < end, p[i] >= 48, p[i] <= 57, i - start < 10 {
            value = value * 10 + Int(p[i] &- 48)
            i += 1
        }
        let digits = i - start
        guard digits > 0, !(digits > 1 && p[start] == 48), i + 1 < end, p[i] == 13, p[i + 1] == 10 else { return nil }
        i += 2
        return value
    }

    private enum MultibulkStart { case needMore, empty, started }
    private enum InlineResult { case needMore, empty, command(RESPCommand) }

    /// Finds the `\r` that ends a count line starting at the reader index, or nil (need more).
    private func countLineEnd(_ buffer: ByteBuffer, multibulk: Bool) throws(RESPParsingError) -> Int? {
        let view = buffer.readableBytesView
        guard let cr = view.firstIndex(of: UInt8(ascii: "\r")) else {
            if view.count > limits.maxInlineLength { throw RESPParsingError(.tooBigCountString(multibulk: multibulk)) }
            return nil
        }
        // The `\n` after the `\r` must be there too.
        guard cr + 1 < view.endIndex else { return nil }
        return cr - view.startIndex
    }

    private mutating func readMultibulkCount(_ buffer: inout ByteBuffer) throws(RESPParsingError) -> MultibulkStart {
        guard let lineLength = try countLineEnd(buffer, multibulk: true) else { return .needMore }
        let view = buffer.readableBytesView
        let digits = view[(view.startIndex + 1)..<(view.startIndex + lineLength)]
        guard let count = RedisInteger.parse(digits), count <= limits.maxMultibulkCount else {
            throw RESPParsingError(.invalidMultibulkLength)
        }
        if unauthenticated && count > 10 { throw RESPParsingError(.unauthenticatedMultibulkLength) }
        buffer.moveReaderIndex(forwardBy: lineLength + 2)
        if count <= 0 { return .empty }
        remaining = Int(count)
        bulkLength = -1
        return .started
    }

    private mutating func readBulkLength(_ buffer: inout ByteBuffer) throws(RESPParsingError) -> Bool {
        guard let lineLength = try countLineEnd(buffer, multibulk: false) else {
            if buffer.readableBytes + retainedBytes > limits.queryBufferLimit { throw RESPParsingError(.queryBufferLimit) }
            return false
        }
        let view = buffer.readableBytesView
        let marker = view[view.startIndex]
        guard marker == UInt8(ascii: "$") else { throw RESPParsingError(.expectedDollar(marker)) }
        let digits = view[(view.startIndex + 1)..<(view.startIndex + lineLength)]
        guard let length = RedisInteger.parse(digits), length >= 0, length <= limits.maxBulkLength else {
            throw RESPParsingError(.invalidBulkLength)
        }
        if unauthenticated && length > 16384 { throw RESPParsingError(.unauthenticatedBulkLength) }
        buffer.moveReaderIndex(forwardBy: lineLength + 2)
        bulkLength = Int(length)
        return true
    }

    private mutating func readInline(_ buffer: inout ByteBuffer) throws(RESPParsingError) -> InlineResult {
        let view = buffer.readableBytesView
        guard let lf = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > limits.maxInlineLength { throw RESPParsingError(.tooBigInlineRequest) }
            return .needMore
        }
        var end = lf
        if end > view.startIndex && view[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        let line = view[view.startIndex..<end]
        let arguments = try InlineSplitter.split(line)
        buffer.moveReaderIndex(forwardBy: lf - view.startIndex + 1)
        if arguments.isEmpty { return .empty }
        if unauthenticated && arguments.count > 10 { throw RESPParsingError(.unauthenticatedMultibulkLength) }
        return .command(RESPCommand(arguments: arguments))
    }
}

/// Splits an inline request into arguments with Redis's (and redis-cli's) quoting rules:
/// `"…"` with `\n \r \t \b \a \\ \"` and `\xHH` escapes, `'…'` with `\'`, and a closing quote
/// that must be followed by a space or the end of the line.
public enum InlineSplitter {
    public static func split<C: Collection>(_ line: C) throws(RESPParsingError) -> [ByteBuffer]
    where C.Element == UInt8, C.Index == Int {
        var result: [ByteBuffer] = []
        // A NUL ends the line, as it ends the C string Redis splits.
        let end = line.firstIndex(of: 0) ?? line.endIndex
        var p = line.startIndex
        func at(_ i: Int) -> UInt8 { i < end ? line[i] : 0 }
        func isSpace(_ c: UInt8) -> Bool { c == 32 || (c >= 9 && c <= 13) }
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        while true {
            while p < end && isSpace(line[p]) { p += 1 }
            if p >= end { return result }
            var current: [UInt8] = []
            var inDouble = false, inSingle = false, done = false
            /// A byte inside quotes: the closing quote must be followed by a space or the end.
            func quoted(_ c: UInt8, closing: UInt8) throws(RESPParsingError) {
                if c == closing {
                    if at(p + 1) != 0 && !isSpace(at(p + 1)) { throw RESPParsingError(.unbalancedQuotes) }
                    done = true
                } else if c == 0 {
                    throw RESPParsingError(.unbalancedQuotes)
                } else {
                    current.append(c)
                }
            }
            while !done {
                let c = at(p)
                if inDouble {
                    if c == UInt8(ascii: "\\") && at(p + 1) == UInt8(ascii: "x"), let h = hex(at(p + 2)), let l = hex(at(p + 3)) {
                        current.append(h * 16 + l)
                        p += 3
                    } else if c == UInt8(ascii: "\\") && at(p + 1) != 0 {
                        p += 1
                        switch at(p) {
                        case UInt8(ascii: "n"): current.append(10)
                        case UInt8(ascii: "r"): current.append(13)
                        case UInt8(ascii: "t"): current.append(9)
                        case UInt8(ascii: "b"): current.append(8)
                        case UInt8(ascii: "a"): current.append(7)
                        default: current.append(at(p))
                        }
                    } else {
                        try quoted(c, closing: UInt8(ascii: "\""))
                    }
                } else if inSingle {
                    if c == UInt8(ascii: "\\") && at(p + 1) == UInt8(ascii: "'") {
                        p += 1
                        current.append(UInt8(ascii: "'"))
                    } else {
                        try quoted(c, closing: UInt8(ascii: "'"))
                    }
                } else {
                    switch c {
                    case 32, 10, 13, 9, 0: done = true
                    case UInt8(ascii: "\""): inDouble = true
                    case UInt8(ascii: "'"): inSingle = true
                    default: current.append(c)
                    }
                }
                if p < end { p += 1 }
            }
            result.append(ByteBuffer(bytes: current))
        }
    }
}

/// Redis's strict integer syntax (`string2ll`): an optional `-`, no leading zeros, no `+`,
/// no spaces, within `Int64`.
public enum RedisInteger {
    @inlinable
    public static func parse<C: Collection>(_ bytes: C) -> Int64? where C.Element == UInt8 {
        var it = bytes.makeIterator()
        guard var c = it.next() else { return nil }
        let negative = c == UInt8(ascii: "-")
        if negative {
            guard let n = it.next() else { return nil }
            c = n
        }
        if c == UInt8(ascii: "0") {
            // Only a lone "0" may start with zero.
            return (!negative && it.next() == nil) ? 0 : nil
        }
        guard c >= 49 && c <= 57 else { return nil }
        var value = UInt64(c - 48)
        while let d = it.next() {
            guard d >= 48 && d <= 57 else { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(d - 48))
            if o1 || o2 { return nil }
            value = s
        }
        if negative {
            if value > UInt64(Int64.max) + 1 { return nil }
            return value == UInt64(Int64.max) + 1 ? Int64.min : -Int64(value)
        }
        return value > UInt64(Int64.max) ? nil : Int64(value)
    }

    /// Parses the readable bytes of `buffer`.
    @inlinable
    public static func parse(_ buffer: ByteBuffer) -> Int64? {
        parse(buffer.readableBytesView)
    }
}

/// `RESPRequestDecoder` as a NIO `ByteToMessageDecoder`, for pipelines and for NIO's decoder verifier.
public struct RESPCommandDecoder: ByteToMessageDecoder {
    public typealias InboundOut = RESPCommand
    private var decoder: RESPRequestDecoder

    public init(limits: RESPLimits = RESPLimits()) {
        self.decoder = RESPRequestDecoder(limits: limits)
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let command = try decoder.next(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(command))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}
