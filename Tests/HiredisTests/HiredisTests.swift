import CHiredis
import Foundation
import Testing
import TestSupport

/// A reply as hiredis parsed it.
enum HiredisReply: Equatable {
    case string([UInt8]), status(String), error(String), integer(Int64), null, array([HiredisReply])

    init(_ raw: UnsafeMutablePointer<redisReply>) {
        let r = raw.pointee
        switch Int32(r.type) {
        case REDIS_REPLY_STRING:
            self = .string(r.str == nil ? [] : Array(UnsafeRawBufferPointer(start: r.str, count: Int(r.len)).bindMemory(to: UInt8.self)))
        case REDIS_REPLY_STATUS: self = .status(String(cString: r.str))
        case REDIS_REPLY_ERROR: self = .error(String(cString: r.str))
        case REDIS_REPLY_INTEGER: self = .integer(Int64(r.integer))
        case REDIS_REPLY_ARRAY:
            self = .array((0..<Int(r.elements)).map { HiredisReply(r.element[$0]!) })
        default: self = .null
        }
    }

    static func text(_ s: String) -> HiredisReply { .string(Array(s.utf8)) }
}

/// A hiredis connection (the C library real applications link), used only by these tests.
final class HiredisConnection {
    let context: UnsafeMutablePointer<redisContext>

    init(port: Int) throws {
        guard let c = redisConnect("127.0.0.1", Int32(port)), c.pointee.err == 0 else { throw TestError("hiredis connect failed") }
        context = c
    }

    deinit { redisFree(context) }

    /// Runs argv through `fn` with C pointers to each argument's bytes and lengths.
    private func withArgv<R>(_ args: [[UInt8]], _ fn: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
        let buffers = args.map { bytes -> UnsafeMutablePointer<CChar> in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
            bytes.withUnsafeBytes { UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(p), byteCount: bytes.count) }
            return p
        }
        defer { buffers.forEach { $0.deallocate() } }
        var argv: [UnsafePointer<CChar>?] = buffers.map { UnsafePointer($0) }
        let lengths = args.map(\.count)
        return argv.withUnsafeMutableBufferPointer { a in lengths.withUnsafeBufferPointer { l in fn(Int32(args.count), a.baseAddress!, l.baseAddress!) } }
    }

    func command(_ args: [UInt8]...) throws -> HiredisReply { try command(args) }

    func command(_ args: [[UInt8]]) throws -> HiredisReply {
        let raw = withArgv(args) { redisCommandArgv(context, $0, $1, $2) }
        guard let raw else { throw TestError("hiredis error \(context.pointee.err)") }
        defer { freeReplyObject(raw) }
        return HiredisReply(raw.assumingMemoryBound(to: redisReply.self))
    }

    func call(_ args: String...) throws -> HiredisReply { try command(args.map { Array($0.utf8) }) }

    func append(_ args: [String]) {
        _ = withArgv(args.map { Array($0.utf8) }) { redisAppendCommandArgv(context, $0, $1, $2) }
    }

    func nextReply() throws -> HiredisReply {
        var raw: UnsafeMutableRawPointer? = nil
        guard redisGetReply(context, &raw) == REDIS_OK, let raw else { throw TestError("hiredis read failed") }
        defer { freeReplyObject(raw) }
        return HiredisReply(raw.assumingMemoryBound(to: redisReply.self))
    }
}

@Suite("hiredis", .serialized)
struct HiredisTests {
    @Test("commands and replies through hiredis")
    func commands() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try HiredisConnection(port: server.port)
        #expect(try c.call("PING") == .status("PONG"))
        #expect(try c.call("SET", "h:k", "v") == .status("OK"))
        #expect(try c.call("GET", "h:k") == .text("v"))
        #expect(try c.call("GET", "h:none") == .null)
        #expect(try c.call("INCR", "h:n") == .integer(1))
        #expect(try c.call("MGET", "h:k", "h:none") == .array([.text("v"), .null]))
        #expect(try c.call("EXPIRE", "h:k", "100") == .integer(1))
        #expect(try c.call("TTL", "h:k") == .integer(100))
        #expect(try c.call("INCR", "h:k") == .error("ERR value is not an integer or out of range"))
        let binary: [UInt8] = [0, 1, 13, 10, 255, 0]
        #expect(try c.command(Array("SET".utf8), Array("h:bin".utf8), binary) == .status("OK"))
        #expect(try c.command(Array("GET".utf8), Array("h:bin".utf8)) == .string(binary))
        #expect(try c.call("DEL", "h:k", "h:bin", "h:none") == .integer(2))
    }

    @Test("10,000 pipelined commands")
    func pipeline() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try HiredisConnection(port: server.port)
        for i in 0..<10_000 { c.append(["SET", "hp:\(i)", "\(i)"]) }
        for _ in 0..<10_000 { #expect(try c.nextReply() == .status("OK")) }
        for i in 0..<10_000 { c.append(["GET", "hp:\(i)"]) }
        var mismatches = 0
        for i in 0..<10_000 where try c.nextReply() != .text("\(i)") { mismatches += 1 }
        #expect(mismatches == 0)
        #expect(try c.call("DBSIZE") == .integer(10_000))
    }

    @Test("the lock pattern: SET NX PX to acquire, check the token, release only our own")
    func lockPattern() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let a = try HiredisConnection(port: server.port)
        let b = try HiredisConnection(port: server.port)
        #expect(try a.call("SET", "lock:order:42", "token-a", "NX", "PX", "30000") == .status("OK"))
        #expect(try b.call("SET", "lock:order:42", "token-b", "NX", "PX", "30000") == .null)
        guard case .integer(let pttl) = try a.call("PTTL", "lock:order:42") else { Issue.record("no PTTL"); return }
        #expect(pttl > 29_000 && pttl <= 30_000)
        // b checks the token before releasing: it is not b's lock, so b must not delete it.
        #expect(try b.call("GET", "lock:order:42") == .text("token-a"))
        #expect(try a.call("GET", "lock:order:42") == .text("token-a"))
        #expect(try a.call("DEL", "lock:order:42") == .integer(1))
        #expect(try b.call("SET", "lock:order:42", "token-b", "NX", "PX", "50") == .status("OK"))
        usleep(120_000)
        // Expired: the next holder gets it.
        #expect(try a.call("SET", "lock:order:42", "token-a2", "NX", "PX", "30000") == .status("OK"))
    }
}
