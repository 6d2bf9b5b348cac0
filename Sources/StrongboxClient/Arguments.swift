import NIOCore

/// A value that can be one argument of a command: sent as a RESP bulk string.
public protocol RESPArgument: Sendable {
    func write(into buffer: inout ByteBuffer)
}

extension String: RESPArgument {
    public func write(into buffer: inout ByteBuffer) { buffer.writeString(self) }
}

extension Substring: RESPArgument {
    public func write(into buffer: inout ByteBuffer) { buffer.writeString(String(self)) }
}

extension ByteBuffer: RESPArgument {
    public func write(into buffer: inout ByteBuffer) { buffer.writeImmutableBuffer(self) }
}

extension Array: RESPArgument where Element == UInt8 {
    public func write(into buffer: inout ByteBuffer) { buffer.writeBytes(self) }
}

extension Int: RESPArgument {
    public func write(into buffer: inout ByteBuffer) { buffer.writeString(String(self)) }
}

extension Int64: RESPArgument {
    public func write(into buffer: inout ByteBuffer) { buffer.writeString(String(self)) }
}

extension Double: RESPArgument {
    public func write(into buffer: inout ByteBuffer) { buffer.writeString(String(self)) }
}

extension ByteBuffer {
    /// One request as a RESP array of bulk strings.
    mutating func writeRequest(_ arguments: [ByteBuffer]) {
        // Room for every header (at most 1 + 20 + 2 bytes each) and every argument, then one
        // pass of raw stores: a request costs one capacity check, not one per piece.
        var size = 23
        for i in arguments.indices { size &+= arguments[i].readableBytes &+ 25 }
        writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            var at = 0
            @inline(__always) func header(_ marker: UInt8, _ n: Int) {
                out[at] = marker
                at &+= 1
                var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
                let written = withUnsafeMutableBytes(of: &digits) { d -> Int in
                    var v = UInt(n)
                    var i = 24
                    repeat {
                        i &-= 1
                        d[i] = UInt8(truncatingIfNeeded: v % 10) &+ 48
                        v /= 10
                    } while v != 0
                    let count = 24 &- i
                    (out.baseAddress! + at).copyMemory(from: d.baseAddress! + i, byteCount: count)
                    return count
                }
                at &+= written
                out[at] = 13
                out[at &+ 1] = 10
                at &+= 2
            }
            header(UInt8(ascii: "*"), arguments.count)
            for i in arguments.indices {
                let n = arguments[i].readableBytes
                header(UInt8(ascii: "$"), n)
                if n > 0 {
                    arguments[i].withUnsafeReadableBytes { (out.baseAddress! + at).copyMemory(from: $0.baseAddress!, byteCount: n) }
                }
                at &+= n
                out[at] = 13
                out[at &+ 1] = 10
                at &+= 2
            }
            return at
        }
    }

    /// The readable bytes as UTF-8 text.
    public var text: String { String(buffer: self) }
}

/// Turns arguments into the byte buffers a request is made of.
@inlinable
func encodeArguments(_ arguments: [any RESPArgument]) -> [ByteBuffer] {
    arguments.map { argument in
        if let b = argument as? ByteBuffer { return b }
        var buffer = ByteBuffer()
        argument.write(into: &buffer)
        return buffer
    }
}
