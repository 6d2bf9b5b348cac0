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
        writeInteger(UInt8(ascii: "*"))
        writeString(String(arguments.count))
        writeStaticString("\r\n")
        for argument in arguments {
            writeInteger(UInt8(ascii: "$"))
            writeString(String(argument.readableBytes))
            writeStaticString("\r\n")
            writeImmutableBuffer(argument)
            writeStaticString("\r\n")
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
