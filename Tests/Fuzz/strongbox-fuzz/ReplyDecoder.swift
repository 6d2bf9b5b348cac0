import NIOCore
import RESP

/// libFuzzer target: the reply decoder and the frame scanner (peer links and the client library
/// read replies with them); both must agree on where a whole frame ends, and never trap.
enum ReplyDecoderTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        var buffer = ByteBuffer(bytes: data)
        let frame = try? RESPFrameScanner.frameLength(buffer)
        var copy = buffer
        let decoded = try? RESPValueDecoder().nextWithBytes(from: &copy)
        if let frame = frame ?? nil, let (value, bytes) = decoded ?? nil {
            precondition(frame == bytes.readableBytes, "scanner and decoder disagree")
            var out = ByteBuffer()
            out.writeRESP(value, version: .v3)
            out.writeRESP(value, version: .v2)
        }
        while case .some(.some) = try? RESPValueDecoder().next(from: &buffer) {}
    }
}
