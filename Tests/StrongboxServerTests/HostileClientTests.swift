import Foundation
import NIOCore
import RESP
import Testing
import TestSupport

/// A hostile client against the real `strongbox` process: every class of attack from the first
/// external review (issue 13), each checked for the answer and for a server that stays up and
/// keeps serving another client.
@Suite("hostile clients", .serialized)
struct HostileClientTests {
    static func expectAlive(_ server: StrongboxProcess) throws {
        let other = try RawClient(port: server.port)
        try other.send(command: ["PING"])
        #expect(try other.readReply() == .simpleString("PONG"))
    }

    static func reply(_ client: RawClient, _ args: [String]) throws -> RESPValue {
        try client.send(command: args)
        return try client.readReply()
    }

    static func errorText(_ value: RESPValue) -> String {
        if case .error(let e) = value { return e }
        return ""
    }

    @Test("a script's return value never runs Lua outside protection: raising and endless __index")
    func luaReplyMetamethods() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        #expect(try Self.reply(c, ["EVAL", "return _G", "0"]) == .array([]))
        #expect(try Self.reply(c, ["EVAL", "return setmetatable({}, {__index=function() error('boom') end})", "0"]) == .array([]))
        #expect(try Self.reply(c, ["EVAL", "return setmetatable({}, {__index=function() while true do end end})", "0"]) == .array([]))
        #expect(try Self.reply(c, ["EVAL", "return {err=setmetatable({}, {__index=function() error('x') end})}", "0"]) == .array([]))
        // Error objects Redis 7.0 itself crashes on: a clear error here.
        let tableError = Self.errorText(try Self.reply(c, ["EVAL", "error(setmetatable({}, {__tostring=function() while true do end end}))", "0"]))
        #expect(tableError.hasPrefix("ERR unknown error"))
        #expect(Self.errorText(try Self.reply(c, ["EVAL", "error({})", "0"])).hasPrefix("ERR unknown error"))
        try Self.expectAlive(server)
    }

    @Test("redis.log with NaN, huge and fractional levels answers Redis's error")
    func logLevels() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        for level in ["0/0", "1e300", "-1e300", "1/0", "4", "-1"] {
            let e = Self.errorText(try Self.reply(c, ["EVAL", "redis.log(\(level), 'x')", "0"]))
            #expect(e.hasPrefix("ERR Invalid debug level."), "level \(level): \(e)")
        }
        #expect(try Self.reply(c, ["EVAL", "redis.log(2.5, 'fine') return 1", "0"]) == .integer(1))
        try Self.expectAlive(server)
    }

    @Test("scripts cannot change what later scripts of other clients see")
    func noStateLeaks() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let a = try RawClient(port: server.port)
        let attacks = [
            "rawset(_G, 'KEYS', {'evil'})",
            "rawset(_G, 'redis', {call = function() return 'evil' end})",
            "rawset(redis, 'call', function() return 'evil' end)",
            "table.insert(_G, 'evil')",
            "getmetatable('').__index.upper = function() return 'evil' end",
            "getmetatable('').__index = {upper = function() return 'evil' end}",
            "string.upper = function() return 'evil' end",
            "setmetatable(_G, {})",
        ]
        for attack in attacks {
            let e = Self.errorText(try Self.reply(a, ["EVAL", attack, "0"]))
            #expect(!e.isEmpty, "\(attack) was allowed")
        }
        let b = try RawClient(port: server.port)
        let check = "return {KEYS[1], redis.call('ping'), ('x'):upper(), tostring(rawget(_G, 1)), tostring(string.x)}"
        #expect(try Self.reply(b, ["EVAL", check, "1", "k"]) == .array([.bulkString(ByteBuffer(string: "k")), .simpleString("PONG"),
                                                                        .bulkString(ByteBuffer(string: "X")), .bulkString(ByteBuffer(string: "nil")),
                                                                        .bulkString(ByteBuffer(string: "nil"))]))
        // SCRIPT FLUSH starts a new Lua state and forgets every script.
        let sha = try Self.reply(b, ["SCRIPT", "LOAD", "return 7"])
        #expect(try Self.reply(b, ["SCRIPT", "FLUSH"]) == .simpleString("OK"))
        if case .bulkString(let s) = sha {
            #expect(Self.errorText(try Self.reply(b, ["EVALSHA", String(buffer: s), "0"])).hasPrefix("NOSCRIPT"))
        }
        try Self.expectAlive(server)
    }

    @Test("precompiled Lua is refused everywhere: EVAL, SCRIPT LOAD, loadstring of string.dump")
    func binaryChunks() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        // A real Lua 5.1 binary chunk header, then junk.
        let chunk: [UInt8] = [0x1b, 0x4c, 0x75, 0x61, 0x51, 0x00, 0x01, 0x04, 0x08, 0x04, 0x08, 0x00] + Array(repeating: 0x41, count: 64)
        for command in [["EVAL"], ["SCRIPT", "LOAD"]] {
            var args = command.map { Array($0.utf8) }
            args.append(chunk)
            if command == ["EVAL"] { args.append(Array("0".utf8)) }
            try c.send(RawClient.encode(args))
            let e = Self.errorText(try c.readReply())
            #expect(e.contains("unexpected symbol near 'char(27)'"), "\(command): \(e)")
        }
        #expect(try Self.reply(c, ["EVAL", "return {loadstring(string.dump(function() return 1 end))}", "0"]) == .array([]))
        #expect(try Self.reply(c, ["EVAL", "return loadstring('return 1 + 1')()", "0"]) == .integer(2))
        try Self.expectAlive(server)
    }

    @Test("numbers at their edges: PXAT Int64.max with EXPIRETIME, the lock scripts' native paths")
    func numberEdges() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        #expect(try Self.reply(c, ["SET", "k", "v", "PXAT", "9223372036854775807"]) == .simpleString("OK"))
        #expect(try Self.reply(c, ["EXPIRETIME", "k"]) == .integer(9_223_372_036_854_776))
        #expect(try Self.reply(c, ["PEXPIRETIME", "k"]) == .integer(Int64.max))
        // redis-py's Lock.extend (additive) on that key, and Lock.reacquire with INT64_MIN.
        let extend = "\n        local token = redis.call('get', KEYS[1])\n        if not token or token ~= ARGV[1] then\n            return 0\n        end\n        local expiration = redis.call('pttl', KEYS[1])\n        if not expiration then\n            expiration = 0\n        end\n        if expiration < 0 then\n            return 0\n        end\n\n        local newttl = ARGV[2]\n        if ARGV[3] == \"0\" then\n            newttl = ARGV[2] + expiration\n        end\n        redis.call('pexpire', KEYS[1], newttl)\n        return 1\n    "
        let reacquire = "\n        local token = redis.call('get', KEYS[1])\n        if not token or token ~= ARGV[1] then\n            return 0\n        end\n        redis.call('pexpire', KEYS[1], ARGV[2])\n        return 1\n    "
        _ = try Self.reply(c, ["EVAL", extend, "1", "k", "v", "1000", "0"])
        #expect(try Self.reply(c, ["SET", "k", "v", "PX", "100000"]) == .simpleString("OK"))
        _ = try Self.reply(c, ["EVAL", reacquire, "1", "k", "v", "-9223372036854775808"])
        _ = try Self.reply(c, ["EVAL", extend, "1", "k", "v", "9223372036854775807", "0"])
        try Self.expectAlive(server)
    }

    @Test("CLIENT KILL with a filter that matches nobody kills nobody; unknown filters are errors")
    func clientKillFilters() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let a = try RawClient(port: server.port)
        let b = try RawClient(port: server.port)
        #expect(try Self.reply(b, ["PING"]) == .simpleString("PONG"))
        for type in ["pubsub", "master", "replica", "slave"] {
            #expect(try Self.reply(a, ["CLIENT", "KILL", "TYPE", type]) == .integer(0))
        }
        #expect(Self.errorText(try Self.reply(a, ["CLIENT", "KILL", "TYPE", "bogus"])) == "ERR Unknown client type 'bogus'")
        #expect(Self.errorText(try Self.reply(a, ["CLIENT", "KILL", "USER", "nosuch"])) == "ERR No such user 'nosuch'")
        #expect(Self.errorText(try Self.reply(a, ["CLIENT", "KILL", "BOGUS", "x"])) == "ERR syntax error")
        #expect(try Self.reply(a, ["CLIENT", "KILL", "MAXAGE", "1000000"]) == .integer(0))
        #expect(try Self.reply(b, ["PING"]) == .simpleString("PONG"), "an unrelated client was disconnected")
        // A filter that does match: every other client of the default user.
        #expect(try Self.reply(a, ["CLIENT", "KILL", "USER", "default", "SKIPME", "yes"]) == .integer(1))
        #expect(try Self.reply(a, ["PING"]) == .simpleString("PONG"))
    }

    @Test("CONFIG SET limits below Redis's minimums are refused; new limits reach open connections")
    func configLimits() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let a = try RawClient(port: server.port)
        let old = try RawClient(port: server.port)
        #expect(try Self.reply(old, ["PING"]) == .simpleString("PONG"))
        for name in ["proto-max-bulk-len", "client-query-buffer-limit"] {
            let e = Self.errorText(try Self.reply(a, ["CONFIG", "SET", name, "0"]))
            #expect(e == "ERR CONFIG SET failed (possibly related to argument '\(name)') - argument must be between 1048576 and 9223372036854775807 inclusive")
        }
        try Self.expectAlive(server)
        #expect(try Self.reply(a, ["CONFIG", "SET", "proto-max-bulk-len", "1mb"]) == .simpleString("OK"))
        // The connection opened before the change gets the new limit on its next request.
        try old.send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n")
        #expect(Self.errorText(try old.readReply()) == "ERR Protocol error: invalid bulk length")
        try Self.expectAlive(server)
    }

    @Test("bytes a client sends while its own script runs stay in the socket, not in server memory")
    func noReadingDuringScript() throws {
        let server = try StrongboxProcess(["--busy-reply-threshold", "100"])
        defer { server.stop() }
        let c = try RawClient(port: server.port, timeoutSeconds: 20)
        try c.send(command: ["EVAL", "while true do end", "0"])
        usleep(200_000)
        let before = server.residentBytes()
        // 64 MiB of requests the server must not read while the script runs.
        // Safety: the writer thread is the only user of the socket until it has sent everything
        // or failed; the test reads from it only after SCRIPT KILL (send and recv are independent).
        nonisolated(unsafe) let sender = c
        let writer = Thread {
            let c = sender
            let chunk = Array(repeating: UInt8(ascii: "x"), count: 1 << 20)
            var header = Array("*2\r\n$4\r\nECHO\r\n$\(64 << 20)\r\n".utf8)
            try? c.send(header)
            header = []
            for _ in 0..<64 { if (try? c.send(chunk)) == nil { break } }
        }
        writer.start()
        usleep(1_500_000)
        let during = server.residentBytes()
        #expect(during - before < 32 << 20, "RSS grew by \(during - before) bytes")
        let other = try RawClient(port: server.port)
        #expect(Self.errorText(try Self.reply(other, ["PING"])).hasPrefix("BUSY"))
        #expect(try Self.reply(other, ["SCRIPT", "KILL"]) == .simpleString("OK"))
        let killed = Self.errorText(try c.readReply())
        #expect(killed.contains("Script killed by user"))
        try Self.expectAlive(server)
    }

    @Test("a command waiting for another client's script does not hold its event loop: SCRIPT KILL gets through at once")
    func waitingDoesNotBlockTheLoop() throws {
        let server = try StrongboxProcess(["--threads", "1", "--busy-reply-threshold", "10000"])
        defer { server.stop() }
        let a = try RawClient(port: server.port), b = try RawClient(port: server.port), c = try RawClient(port: server.port)
        try a.send(command: ["EVAL", "while true do end", "0"])
        usleep(200_000)
        try b.send(command: ["INCR", "waited"])
        usleep(100_000)
        let start = Date()
        #expect(try Self.reply(c, ["SCRIPT", "KILL"]) == .simpleString("OK"))
        // Before, the waiting INCR spun the only event loop until busy-reply-threshold (10 s).
        #expect(Date().timeIntervalSince(start) < 3)
        #expect(Self.errorText(try a.readReply()).contains("Script killed by user"))
        #expect(try b.readReply() == .integer(1))
        try Self.expectAlive(server)
    }

    @Test("replies over 4 GiB (MGET of one 4 MiB value 1100 times, and the same from a script) arrive whole")
    func hugeReplies() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let c = try RawClient(port: server.port, timeoutSeconds: 60)
        let size = 4 << 20, times = 1100
        try c.send(RawClient.encode([Array("SET".utf8), Array("big".utf8), Array(repeating: UInt8(ascii: "v"), count: size)]))
        #expect(try c.readReply() == .simpleString("OK"))
        let element = "$\(size)\r\n".utf8.count + size + 2
        let expected = "*\(times)\r\n".utf8.count + times * element
        #expect(expected > Int(UInt32.max))
        try c.send(RawClient.encode([Array("MGET".utf8)] + Array(repeating: Array("big".utf8), count: times)))
        let (head, tail) = try c.readRaw(count: expected)
        #expect(head.starts(with: Array("*\(times)\r\n$\(size)\r\nvvvv".utf8)))
        #expect(tail.suffix(6) == Array("vvvv\r\n".utf8)[...])
        #expect(try c.call("PING") == .simpleString("PONG"), "the stream stayed in step")
        let script = "local v = redis.call('get', 'big') local t = {} for i = 1, \(times) do t[i] = v end return t"
        try c.send(command: ["EVAL", script, "0"])
        let (scriptHead, _) = try c.readRaw(count: expected)
        #expect(scriptHead.starts(with: Array("*\(times)\r\n$\(size)\r\n".utf8)))
        #expect(try c.call("PING") == .simpleString("PONG"))
        try Self.expectAlive(server)
    }

    @Test("what one script seeds (math.randomseed) does not decide another client's math.random")
    func randomSeedDoesNotLeak() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let seeder = try RawClient(port: server.port)
        let drawer = try RawClient(port: server.port)
        var draws: [RESPValue] = []
        for _ in 0..<4 {
            #expect(try Self.reply(seeder, ["EVAL", "math.randomseed(42) return 1", "0"]) == .integer(1))
            draws.append(try Self.reply(drawer, ["EVAL", "return math.random(1000000000)", "0"]))
        }
        // Seeded the same way each time, a leak would draw the same number four times.
        #expect(Set(draws.map { "\($0)" }).count > 1, "\(draws)")
        try Self.expectAlive(server)
    }

    @Test("SIGTERM stops the server while a script loops forever")
    func sigtermDuringScript() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let looper = try RawClient(port: server.port)
        try looper.send(command: ["EVAL", "while true do end", "0"])
        usleep(300_000)
        #expect(server.terminate(within: 5))
    }

    @Test("client-output-buffer-limit normal: a reply past the hard limit, or output over the soft limit too long, closes that client only")
    func outputBufferLimit() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let admin = try RawClient(port: server.port)
        let big = String(repeating: "x", count: 4 << 20)
        #expect(try Self.reply(admin, ["SET", "big", big]) == .simpleString("OK"))
        // The default (normal 0 0 0) lets a 20 MiB reply through.
        let unlimited = try RawClient(port: server.port)
        if case .array(let items) = try Self.reply(unlimited, ["MGET", "big", "big", "big", "big", "big"]) {
            #expect(items.count == 5)
        } else {
            Issue.record("MGET under no limit")
        }
        #expect(try Self.reply(admin, ["CONFIG", "SET", "client-output-buffer-limit", "normal 10mb 0 0"]) == .simpleString("OK"))
        // A reply that would pass it: the client is closed with no reply, before the reply is built whole.
        for command in [["MGET", "big", "big", "big", "big", "big"],
                        ["EVAL", "local v = redis.call('get', 'big') return {v, v, v, v}", "0"]] {
            let c = try RawClient(port: server.port)
            try c.send(command: command)
            #expect(try c.readUntilClosed().isEmpty, "\(command[0])")
        }
        // Under the limit all is as before, for this client and others.
        let fine = try RawClient(port: server.port)
        #expect(try Self.bytes(Self.reply(fine, ["GET", "big"]))?.count == 4 << 20)
        #expect(try Self.reply(fine, ["STRLEN", "big"]) == .integer(4 << 20))
        // As Redis, the first 16 KiB of a client's output do not count toward the limit.
        #expect(try Self.reply(admin, ["CONFIG", "SET", "client-output-buffer-limit", "normal 1kb 0 0"]) == .simpleString("OK"))
        _ = try Self.reply(admin, ["SET", "small", String(repeating: "y", count: 5000)])
        let modest = try RawClient(port: server.port)
        #expect(try Self.bytes(Self.reply(modest, ["GET", "small"]))?.count == 5000)
        // Soft limit: a client that reads nothing keeps this connection's unsent output over
        // 128 KiB for more than a second, and is closed.
        #expect(try Self.reply(admin, ["CONFIG", "SET", "client-output-buffer-limit", "normal 0 128kb 1"]) == .simpleString("OK"))
        let slow = try RawClient(port: server.port)
        for _ in 0..<20 { try slow.send(command: ["GET", "big"]) }
        usleep(2_500_000)
        let received = try slow.readUntilClosed()
        #expect(received.count < 20 * (4 << 20), "got \(received.count) bytes")
        #expect(try Self.reply(admin, ["CONFIG", "GET", "client-output-buffer-limit"])
                == .array([.bulkString(ByteBuffer(string: "client-output-buffer-limit")),
                           .bulkString(ByteBuffer(string: "normal 0 131072 1 slave 268435456 67108864 60 pubsub 33554432 8388608 60"))]))
        try Self.expectAlive(server)
    }

    static func bytes(_ value: RESPValue) -> [UInt8]? {
        if case .bulkString(let b) = value { return Array(b.readableBytesView) }
        return nil
    }

    @Test("bit.tohex with a digit count of -2^31 (LuaBitOp reads past its buffer: the fuzzer's find) answers, as -8")
    func tohexMinimum() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let c = try RawClient(port: server.port)
        for n in ["-2147483648", "'-2147483648'", "2^31", "-2^31 - 2^32"] {
            #expect(try Self.reply(c, ["EVAL", "return bit.tohex(255, \(n))", "0"]) == .bulkString(ByteBuffer(string: "000000FF")), "\(n)")
        }
        try Self.expectAlive(server)
    }

    @Test("string.rep of an empty string 2^63 times answers at once (Lua 5.1 loops in C: the fuzzer's find)")
    func emptyRep() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let c = try RawClient(port: server.port, timeoutSeconds: 5)
        for n in ["9223372036854775807", "4294967295", "1e300", "'1e18'"] {
            #expect(try Self.reply(c, ["EVAL", "return string.rep('', \(n))", "0"]) == .bulkString(ByteBuffer()), "\(n)")
        }
        #expect(try Self.reply(c, ["EVAL", "return ('x'):rep(3)", "0"]) == .bulkString(ByteBuffer(string: "xxx")))
        #expect(try Self.reply(c, ["EVAL", "return string.rep('', -1)", "0"]) == .bulkString(ByteBuffer()))
        try Self.expectAlive(server)
    }
}
