import NIOCore

/// Decodes replies (every RESP2 and RESP3 type) from a byte stream: the client side of the codec.
///
/// `next(from:)` consumes one whole reply or nothing, so it can be called again as more bytes arrive.
public struct RESPValueDecoder: Sendable {
    public struct DecodingError: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
    }

    public var maxDepth = 64

    public init() {}

    /// The largest bulk length or element count a reply may announce (1 TiB; real ones are
    /// bounded by 4 GiB values and memory).
    public static let maxLength = 1 << 40

    /// The next whole reply in `buffer`, or nil (nothing consumed) when it is not all there yet.
    public func next(from buffer: inout ByteBuffer) throws(DecodingError) -> RESPValue? {
        var copy = buffer
        guard let value = try parse(&copy, depth: 0) else { return nil }
        buffer = copy
        return value
    }

    /// Like `next(from:)` but also returns the exact bytes the reply occupied.
    public func nextWithBytes(from buffer: inout ByteBuffer) throws(DecodingError) -> (RESPValue, ByteBuffer)? {
        let start = buffer.readerIndex
        var copy = buffer
        guard let value = try parse(&copy, depth: 0) else { return nil }
        let bytes = buffer.getSlice(at: start, length: copy.readerIndex - start)!
        buffer = copy
        return (value, bytes)
    }

    private func line(_ buffer: inout ByteBuffer) -> String? {
        let view = buffer.readableBytesView
        // The line ends at the first CRLF (a lone CR is part of it, as the frame scanner reads it).
        var search = view.startIndex
        var found: Int? = nil
        while let cr = view[search...].firstIndex(of: 13) {
            guard cr + 1 < view.endIndex else { return nil }
            if view[cr + 1] == 10 { found = cr; break }
            search = cr + 1
        }
        guard let cr = found else { return nil }
        let text = String(decoding: view[view.startIndex..<cr], as: UTF8.self)
        buffer.moveReaderIndex(forwardBy: cr - view.startIndex + 2)
        return text
    }

    private func count(_ buffer: inout ByteBuffer) throws(DecodingError) -> Int? {
        guard let text = line(&buffer) else { return nil }
        guard let n = Int(text) else { throw DecodingError(description: "bad length '\(text)'") }
        // Larger lengths are no real reply and would overflow `n + 2` or `n * 2`.
        guard n <= Self.maxLength else { throw DecodingError(description: "length out of range '\(text)'") }
        return n
    }

    private func blob(_ buffer: inout ByteBuffer) throws(DecodingError) -> ByteBuffer?? {
        guard let n = try count(&buffer) else { return nil }
        if n < 0 { return .some(nil) }
        guard buffer.readableBytes >= n + 2 else { return nil }
        let bytes = buffer.readSlice(length: n)!
        buffer.moveReaderIndex(forwardBy: 2)
        return .some(bytes)
    }

    private func items(_ buffer: inout ByteBuffer, _ n: Int, depth: Int) throws(DecodingError) -> [RESPValue]? {
        var result: [RESPValue] = []
        result.reserveCapacity(min(n, 1024))
        for _ in 0..<max(0, n) {
            guard let v = try parse(&buffer, depth: depth + 1) else { return nil }
            result.append(v)
        }
        return result
    }

    private func parse(_ buffer: inout ByteBuffer, depth: Int) throws(DecodingError) -> RESPValue? {
        if depth > maxDepth { throw DecodingError(description: "nesting too deep") }
        guard let marker = buffer.readInteger(as: UInt8.self) else { return nil }
        switch marker {
        case UInt8(ascii: "+"): return line(&buffer).map { .simpleString($0) }
        case UInt8(ascii: "-"): return line(&buffer).map { .error($0) }
        case UInt8(ascii: ":"):
            guard let text = line(&buffer) else { return nil }
            guard let n = Int64(text) else { throw DecodingError(description: "bad integer '\(text)'") }
            return .integer(n)
        case UInt8(ascii: "$"):
            guard let b = try blob(&buffer) else { return nil }
            return b.map { .bulkString($0) } ?? .null
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"):
            guard let n = try count(&buffer) else { return nil }
            if n < 0 {
                // Only an array has a null form (RESP2's `*-1`).
                guard marker == UInt8(ascii: "*") else { throw DecodingError(description: "bad length") }
                return .nullArray
            }
            guard let values = try items(&buffer, n, depth: depth) else { return nil }
            return marker == UInt8(ascii: "*") ? .array(values) : marker == UInt8(ascii: "~") ? .set(values) : .push(values)
        case UInt8(ascii: "%"), UInt8(ascii: "|"):
            guard let n = try count(&buffer) else { return nil }
            guard n >= 0 else { throw DecodingError(description: "bad length") }
            guard let values = try items(&buffer, n * 2, depth: depth) else { return nil }
            let pairs = stride(from: 0, to: values.count, by: 2).map { (values[$0], values[$0 + 1]) }
            if marker == UInt8(ascii: "|") {
                // An attribute precedes the reply it describes: return that reply.
                return try parse(&buffer, depth: depth + 1)
            }
            return .map(pairs)
        case UInt8(ascii: "_"):
            return line(&buffer).map { _ in .null }
        case UInt8(ascii: "#"):
            return line(&buffer).map { .boolean($0 == "t") }
        case UInt8(ascii: ","):
            guard let text = line(&buffer) else { return nil }
            switch text {
            case "inf": return .double(.infinity)
            case "-inf": return .double(-.infinity)
            case "nan": return .double(.nan)
            default:
                guard let d = Double(text) else { throw DecodingError(description: "bad double '\(text)'") }
                return .double(d)
            }
        case UInt8(ascii: "("):
            return line(&buffer).map { .bigNumber($0) }
        case UInt8(ascii: "="), UInt8(ascii: "!"):
            guard let b = try blob(&buffer) else { return nil }
            guard let bytes = b else { return .null }
            let text = String(decoding: bytes.readableBytesView, as: UTF8.self)
            if marker == UInt8(ascii: "!") { return .error(text) }
            let format = String(text.prefix(3))
            return .verbatim(format: format, text: String(text.dropFirst(4)))
        default:
            throw DecodingError(description: "unknown reply type byte \(marker)")
        }
    }
}
