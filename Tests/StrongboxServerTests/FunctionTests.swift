import Foundation
import NIOCore
import RESP
import Testing
import TestSupport

/// Redis 7 functions against the real process, where the byte-for-byte corpus cannot reach:
/// `FUNCTION DUMP` payloads moved between redis-server and Strongbox both ways (Redis's are
/// LZF-compressed), restore policies, busy functions and `FUNCTION KILL`, the load time limit.
@Suite("functions", .serialized)
struct FunctionTests {
    static func reply(_ client: RawClient, _ args: [[UInt8]]) throws -> RESPValue {
        try client.send(RawClient.encode(args))
        return try client.readReply()
    }

    static func reply(_ client: RawClient, _ args: [String]) throws -> RESPValue {
        try HostileClientTests.reply(client, args)
    }

    // Long enough that redis-server compresses it in its dump.
    static let alpha = "#!lua name=alpha\nredis.register_function('af', function(k, a) return 'alpha ' .. (a[1] or '') end)\n"
        + String(repeating: "-- padding padding padding padding padding\n", count: 8)
    static let beta = "#!lua name=beta\nredis.register_function{function_name='bf', callback=function() return 2 end, flags={'no-writes'}}"

    @Test("FUNCTION DUMP payloads restore across redis-server and Strongbox, both ways")
    func dumpRestoreAcross() throws {
        try #require(RedisServerProcess.isAvailable, "redis-server is not installed")
        let redis = try RedisServerProcess()
        defer { redis.stop() }
        let server = try StrongboxProcess()
        defer { server.stop() }
        let r = try RawClient(port: redis.port)
        let s = try RawClient(port: server.port)
        for c in [r, s] {
            #expect(try Self.reply(c, ["FUNCTION", "LOAD", Self.alpha]) == .bulkString(ByteBuffer(string: "alpha")))
            #expect(try Self.reply(c, ["FUNCTION", "LOAD", Self.beta]) == .bulkString(ByteBuffer(string: "beta")))
        }
        let fromRedis = try #require(HostileClientTests.bytes(try Self.reply(r, ["FUNCTION", "DUMP"])))
        let fromStrongbox = try #require(HostileClientTests.bytes(try Self.reply(s, ["FUNCTION", "DUMP"])))
        // Both compress alpha's code (LZF), each its own way: the payloads differ, and each side reads the other's.
        #expect(fromRedis != fromStrongbox)
        for (c, payload) in [(r, fromStrongbox), (s, fromRedis)] {
            #expect(try Self.reply(c, ["FUNCTION", "FLUSH"]) == .simpleString("OK"))
            #expect(try Self.reply(c, [Array("FUNCTION".utf8), Array("RESTORE".utf8), payload]) == .simpleString("OK"))
            #expect(try Self.reply(c, ["FCALL", "af", "0", "x"]) == .bulkString(ByteBuffer(string: "alpha x")))
            #expect(try Self.reply(c, ["FCALL_RO", "bf", "0"]) == .integer(2))
            let listed = try Self.reply(c, ["FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "alpha"])
            guard case .array(let libraries) = listed, case .array(let fields) = libraries.first else {
                Issue.record("FUNCTION LIST: \(listed)")
                continue
            }
            #expect(fields.last == .bulkString(ByteBuffer(string: Self.alpha)))
        }
        // A corrupted payload is refused and changes nothing.
        var broken = fromRedis
        broken[3] ^= 0x20
        #expect(try Self.reply(s, [Array("FUNCTION".utf8), Array("RESTORE".utf8), broken, Array("FLUSH".utf8)])
                == .error("ERR DUMP payload version or checksum are wrong"))
        #expect(try Self.reply(s, ["FCALL", "af", "0", "y"]) == .bulkString(ByteBuffer(string: "alpha y")))
    }

    @Test("FUNCTION RESTORE policies: APPEND aborts on a clash, REPLACE replaces, FLUSH starts over; all or nothing")
    func restorePolicies() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        _ = try Self.reply(c, ["FUNCTION", "LOAD", Self.alpha])
        _ = try Self.reply(c, ["FUNCTION", "LOAD", Self.beta])
        let payload = try #require(HostileClientTests.bytes(try Self.reply(c, ["FUNCTION", "DUMP"])))
        let restore: (String?) throws -> RESPValue = { policy in
            var args = [Array("FUNCTION".utf8), Array("RESTORE".utf8), payload]
            if let policy { args.append(Array(policy.utf8)) }
            return try Self.reply(c, args)
        }
        #expect(try restore(nil) == .error("ERR Library alpha already exists"))
        #expect(try restore("APPEND") == .error("ERR Library alpha already exists"))
        // Replace alpha by a library whose function clashes with the payload's: REPLACE may
        // replace libraries, not take a function from another one.
        _ = try Self.reply(c, ["FUNCTION", "DELETE", "alpha"])
        _ = try Self.reply(c, ["FUNCTION", "LOAD", "#!lua name=gamma\nredis.register_function('af', function() return 'gamma' end)"])
        #expect(try restore("REPLACE") == .error("ERR Function af already exists"))
        // Nothing of the payload landed: alpha is still gone, gamma still answers.
        #expect(try Self.reply(c, ["FCALL", "af", "0"]) == .bulkString(ByteBuffer(string: "gamma")))
        #expect(try Self.reply(c, ["FUNCTION", "LIST", "LIBRARYNAME", "alpha"]) == .array([]))
        #expect(try restore("FLUSH") == .simpleString("OK"))
        #expect(try Self.reply(c, ["FCALL", "af", "0", "z"]) == .bulkString(ByteBuffer(string: "alpha z")))
        #expect(try Self.reply(c, ["FUNCTION", "LIST", "LIBRARYNAME", "gamma"]) == .array([]))
        #expect(try restore("REPLACE") == .simpleString("OK"))
        #expect(try Self.reply(c, ["FCALL_RO", "bf", "0"]) == .integer(2))
    }

    @Test("a busy function: FUNCTION STATS names it, SCRIPT KILL refuses, FUNCTION KILL stops it, others get -BUSY")
    func busyFunction() throws {
        let server = try StrongboxProcess(["--busy-reply-threshold", "50"])
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        _ = try Self.reply(c, ["FUNCTION", "LOAD", "#!lua name=busy\nredis.register_function('spin', function() while true do end end)"])
        let spinner = try RawClient(port: server.port)
        try spinner.send(command: ["FCALL", "spin", "0"])
        usleep(200_000)
        let stats = try Self.reply(c, ["FUNCTION", "STATS"])
        guard case .array(let fields) = stats, fields.count == 4, case .array(let running) = fields[1] else {
            Issue.record("FUNCTION STATS: \(stats)")
            return
        }
        #expect(Array(running.prefix(2)) == [RESPValue.bulkString(ByteBuffer(string: "name")), .bulkString(ByteBuffer(string: "spin"))])
        let busy = "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
        #expect(try Self.reply(c, ["GET", "k"]) == .error(busy))
        #expect(try Self.reply(c, ["SCRIPT", "KILL"]) == .error(busy))
        #expect(try Self.reply(c, ["FUNCTION", "KILL"]) == .simpleString("OK"))
        let killed = try spinner.readReply()
        #expect(killed == .error("ERR Script killed by user with SCRIPT KILL... script: spin, on @user_function:2."))
        #expect(try Self.reply(c, ["FUNCTION", "KILL"]) == .error("NOTBUSY No scripts in execution right now."))
        #expect(try Self.reply(c, ["PING"]) == .simpleString("PONG"))
    }

    @Test("a library's code that never ends is stopped at the load limit; the server goes on")
    func loadTimeout() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        #expect(try Self.reply(c, ["FUNCTION", "LOAD", "#!lua name=forever\nwhile true do end"])
                == .error("ERR Error registering functions: ERR FUNCTION LOAD timeout"))
        #expect(try Self.reply(c, ["FUNCTION", "LOAD", "#!lua name=counting\nlocal n = 0\nwhile true do n = n + 1 end"])
                == .error("ERR Error registering functions: ERR FUNCTION LOAD timeout"))
        #expect(try Self.reply(c, ["FUNCTION", "LOAD", "#!lua name=fine\nredis.register_function('f', function() return 1 end)"])
                == .bulkString(ByteBuffer(string: "fine")))
        #expect(try Self.reply(c, ["FCALL", "f", "0"]) == .integer(1))
        // Binary chunks are refused as library code too.
        let binary = HostileClientTests.errorText(try Self.reply(c, [Array("FUNCTION".utf8), Array("LOAD".utf8), Array("#!lua name=bin\n\u{1b}Lua".utf8) + [0x51, 0, 1, 4]]))
        #expect(binary.hasPrefix("ERR Error compiling function"))
    }


    /// Redis's CRC-64 (Jones, reflected), written again here so payloads are made independently.
    static let crcTable: [UInt64] = (0..<256).map { n in
        var crc = UInt64(n)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x95AC_9329_AC4B_C9B5 : crc >> 1 }
        return crc
    }

    static func crc64(_ bytes: [UInt8]) -> UInt64 {
        var crc: UInt64 = 0
        bytes.withUnsafeBufferPointer { p in
            for b in p { crc = crcTable[Int((crc ^ UInt64(b)) & 0xFF)] ^ (crc >> 8) }
        }
        return crc
    }

    static func payload(_ body: [UInt8]) -> [UInt8] {
        var p = body + [10, 0]
        let crc = crc64(p)
        for i in 0..<8 { p.append(UInt8(truncatingIfNeeded: crc >> (8 * UInt64(i)))) }
        return p
    }

    static func library(_ name: String) -> [UInt8] {
        let code = Array("#!lua name=\(name)\nredis.register_function('\(name)', function() return 1 end)".utf8)
        // RDB's 6- or 14-bit length.
        let length: [UInt8] = code.count < 64 ? [UInt8(code.count)] : [0x40 | UInt8(code.count >> 8), UInt8(code.count & 0xFF)]
        return [245] + length + code
    }

    @Test("hostile FUNCTION RESTORE payloads (valid footer) answer as redis-server answers and change nothing")
    func hostilePayloads() throws {
        try #require(RedisServerProcess.isAvailable, "redis-server is not installed")
        let redis = try RedisServerProcess()
        defer { redis.stop() }
        let server = try StrongboxProcess()
        defer { server.stop() }
        let bodies: [[UInt8]] = [
            [245, 0x40, 0x40] + Array("abc".utf8),                       // string longer than what is left
            [245, 0x81, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],   // 64-bit length
            [245, 0x80, 0xFF, 0xFF, 0xFF, 0xFF],                         // 32-bit length
            [0] + Self.library("zero").dropFirst(),                           // not a function
            [245, 0xC3, 4, 40, 0x20, 0xFF, 0x01, 0x02] + [UInt8](repeating: 0, count: 12), // LZF reference before the start
            [245, 0xC4] + [UInt8](repeating: 0, count: 12),              // no such string encoding
            [245, 0xC0, 5] + [UInt8](repeating: 0, count: 12),           // an integer as code
            Self.library("dup") + Self.library("dup"),                             // the same library twice
            [245, 12] + Array("#!lua name=c\n".utf8) + [0] + [UInt8](repeating: 0, count: 12),  // code that does not compile
            Self.library("good") + [0] + [UInt8](repeating: 0, count: 12),   // a good library, then junk
        ]
        let r = try RawClient(port: redis.port)
        let s = try RawClient(port: server.port)
        for (i, body) in bodies.enumerated() {
            let args = [Array("FUNCTION".utf8), Array("RESTORE".utf8), Self.payload(body)]
            let expected = try Self.reply(r, args)
            let got = try Self.reply(s, args)
            #expect(got == expected, "payload \(i)")
        }
        #expect(try Self.reply(s, ["FUNCTION", "LIST"]) == .array([]))
        #expect(try Self.reply(s, ["PING"]) == .simpleString("PONG"))
    }

    @Test("a loop of long C calls (string.rep) is stopped at the load limit, and by SCRIPT KILL in a script")
    func longCallsAreInterrupted() throws {
        let server = try StrongboxProcess(["--busy-reply-threshold", "100"])
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        let start = Date()
        #expect(try Self.reply(c, ["FUNCTION", "LOAD", "#!lua name=w\nfor i = 1, 1e6 do local s = ('x'):rep(5e7) end"])
                == .error("ERR Error registering functions: ERR FUNCTION LOAD timeout"))
        #expect(Date().timeIntervalSince(start) < 5)
        let looper = try RawClient(port: server.port)
        try looper.send(command: ["EVAL", "for i = 1, 1e6 do local s = string.rep('x', 5e7) end", "0"])
        usleep(300_000)
        #expect(try Self.reply(c, ["SCRIPT", "KILL"]) == .simpleString("OK"))
        #expect(HostileClientTests.errorText(try looper.readReply()).hasPrefix("ERR Script killed by user with SCRIPT KILL..."))
        #expect(try Self.reply(c, ["PING"]) == .simpleString("PONG"))
    }

    @Test("20,000 libraries restore, list and call without a scan per library (the server stays responsive)")
    func manyLibraries() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        var body: [UInt8] = []
        for i in 0..<20_000 { body += Self.library("l\(i)") }
        let c = try RawClient(port: server.port)
        #expect(try Self.reply(c, [Array("FUNCTION".utf8), Array("RESTORE".utf8), Self.payload(body)]) == .simpleString("OK"))
        #expect(try Self.reply(c, ["FCALL", "l19999", "0"]) == .integer(1))
        if case .array(let listed) = try Self.reply(c, ["FUNCTION", "LIST", "LIBRARYNAME", "l1999?"]) { #expect(listed.count == 10) } else { Issue.record("LIST") }
        let stats = try Self.reply(c, ["FUNCTION", "STATS"])
        #expect("\(stats)".contains("20000"), "\(stats)")
        #expect(try Self.reply(c, ["FUNCTION", "DELETE", "l0"]) == .simpleString("OK"))
        #expect(try Self.reply(c, ["FCALL", "l0", "0"]) == .error("ERR Function not found"))
    }
}
