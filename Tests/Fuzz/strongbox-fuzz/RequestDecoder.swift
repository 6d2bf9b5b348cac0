import NIOCore
import RESP

/// libFuzzer target: the client request decoder (multibulk and inline), fed the input whole and
/// again split at a point the input chooses, under small limits so every limit is reachable.
/// Built with `Tools/fuzz`; without `-DFUZZING` it replays files given as arguments.
enum RequestDecoderTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        guard !data.isEmpty else { return }
        let split = Int(data[0]) * data.count / 256
        let bytes = UnsafeRawBufferPointer(rebasing: data.dropFirst())
        var limits = RESPLimits(maxBulkLength: 4096, maxMultibulkCount: 64, maxInlineLength: 512, queryBufferLimit: 8192)
        limits.maxBulkLength = 1 + Int(data[0]) * 16
        for unauthenticated in [false, true] {
            var decoder = RESPRequestDecoder(limits: limits)
            decoder.unauthenticated = unauthenticated
            var args: [ByteBuffer] = []
            var buffer = ByteBuffer(bytes: bytes.prefix(min(split, bytes.count)))
            var rest = ByteBuffer(bytes: bytes.dropFirst(min(split, bytes.count)))
            do {
                while try decoder.next(from: &buffer, into: &args) {
                    // Every argument view must lie inside what was read.
                    for a in args { precondition(a.readableBytes <= bytes.count) }
                }
                buffer.writeBuffer(&rest)
                while try decoder.next(from: &buffer, into: &args) {
                    for a in args { precondition(a.readableBytes <= bytes.count) }
                }
            } catch {
                _ = error.message
            }
        }
    }
}
