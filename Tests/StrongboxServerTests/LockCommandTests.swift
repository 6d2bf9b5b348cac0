import Engine
import Foundation
import Keyspace
import NIOCore
import RESP
import Testing
import TestSupport

/// The native compare-and-delete / compare-and-extend commands, byte for byte in RESP2 and RESP3.
@Suite("Lock commands", .serialized)
struct LockCommandTests {
    /// Runs `steps` (command, expected RESP2 reply, expected RESP3 reply or nil for the same).
    static func run(_ steps: [([String], String, String?)]) async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        for resp3 in [false, true] {
            let c = try RawClient(port: server.port)
            _ = try c.call("FLUSHALL")
            if resp3 { _ = try c.call("HELLO", "3") }
            for (command, resp2Reply, resp3Reply) in steps {
                try c.send(command: command)
                let got = String(decoding: try c.readReplyBytes().1, as: UTF8.self)
                let want = resp3 ? (resp3Reply ?? resp2Reply) : resp2Reply
                #expect(got == want, "RESP\(resp3 ? 3 : 2) \(command.joined(separator: " "))")
            }
        }
    }

    static let null2 = "$-1\r\n", null3 = "_\r\n"

    @Test("XXH3-64 matches the reference vectors", arguments: [
        ("", "2d06800538d394c2"), ("a", "e6c632b61e964e1f"), ("abc", "78af5f94892f3950"),
        ("hello world", "d447b1ea40e6988b"), ("token-a", "f2c369a318423e95"),
        (String(repeating: "x", count: 1000), "c0a4877b962cba82"),
    ])
    func xxh3(input: String, hex: String) {
        #expect(Array(input.utf8).withUnsafeBytes { Digest.hex($0) } == hex)
    }

    @Test("XXH3-64 of every byte value 0…255")
    func xxh3AllBytes() {
        let bytes = (0..<256).map { UInt8($0) }
        #expect(bytes.withUnsafeBytes { Digest.hex($0) } == "9408a4433b952d71")
    }

    @Test("DELEX: no condition deletes; IFEQ, IFNE, IFDEQ, IFDNE compare first")
    func delex() async throws {
        try await Self.run([
            (["SET", "k", "token-a"], "+OK\r\n", nil),
            (["DELEX", "k", "IFEQ", "token-b"], ":0\r\n", nil),
            (["DELEX", "k", "IFNE", "token-a"], ":0\r\n", nil),
            (["DELEX", "k", "IFDEQ", "0000000000000000"], ":0\r\n", nil),
            (["DELEX", "k", "IFDNE", "f2c369a318423e95"], ":0\r\n", nil),
            (["DELEX", "k", "IFDEQ", "F2C369A318423E95"], ":1\r\n", nil),
            (["SET", "k", "token-a"], "+OK\r\n", nil),
            (["DELEX", "k", "IFEQ", "token-a"], ":1\r\n", nil),
            (["DELEX", "k", "IFEQ", "token-a"], ":0\r\n", nil),
            (["SET", "k", "v"], "+OK\r\n", nil),
            (["DELEX", "k", "IFNE", "other"], ":1\r\n", nil),
            (["SET", "k", "v"], "+OK\r\n", nil),
            (["DELEX", "k"], ":1\r\n", nil),
            (["DELEX", "k"], ":0\r\n", nil),
            (["DELEX", "k", "IFEQ"], "-ERR syntax error\r\n", nil),
            (["DELEX", "k", "BAD", "x"], "-ERR syntax error\r\n", nil),
            (["DELEX", "k", "IFEQ", "a", "IFNE", "b"], "-ERR syntax error\r\n", nil),
            (["DELEX"], "-ERR wrong number of arguments for 'delex' command\r\n", nil),
        ])
    }

    @Test("DIGEST: 16 lowercase hex digits, or null")
    func digest() async throws {
        try await Self.run([
            (["SET", "k", "hello world"], "+OK\r\n", nil),
            (["DIGEST", "k"], "$16\r\nd447b1ea40e6988b\r\n", nil),
            (["SET", "e", ""], "+OK\r\n", nil),
            (["DIGEST", "e"], "$16\r\n2d06800538d394c2\r\n", nil),
            (["DIGEST", "missing"], Self.null2, Self.null3),
            (["DIGEST"], "-ERR wrong number of arguments for 'digest' command\r\n", nil),
        ])
    }

    @Test("SET IFEQ/IFNE/IFDEQ/IFDNE: Redis 8.4's rules, with GET and expiry")
    func setConditions() async throws {
        try await Self.run([
            (["SET", "lock", "tok", "IFEQ", "tok"], Self.null2, Self.null3),   // IFEQ never creates
            (["EXISTS", "lock"], ":0\r\n", nil),
            (["SET", "lock", "tok", "IFNE", "other"], "+OK\r\n", nil),          // IFNE creates
            (["SET", "lock", "tok2", "IFEQ", "wrong", "PX", "5000"], Self.null2, Self.null3),
            (["GET", "lock"], "$3\r\ntok\r\n", nil),
            (["SET", "lock", "tok", "IFEQ", "tok", "PX", "50000"], "+OK\r\n", nil),  // extend a lock
            (["TTL", "lock"], ":50\r\n", nil),
            (["SET", "lock", "tok3", "IFEQ", "tok", "GET"], "$3\r\ntok\r\n", nil),
            (["SET", "lock", "tok4", "IFEQ", "nope", "GET"], "$4\r\ntok3\r\n", nil),
            (["GET", "lock"], "$4\r\ntok3\r\n", nil),
            (["SET", "lock", "x", "IFNE", "tok3"], Self.null2, Self.null3),
            (["SET", "lock", "y", "IFDEQ", "0000000000000000"], Self.null2, Self.null3),
            (["SET", "fresh", "y", "IFDNE", "0000000000000000"], "+OK\r\n", nil),
            (["SET", "lock", "v", "NX", "IFEQ", "tok3"], "-ERR syntax error\r\n", nil),
            (["SET", "lock", "v", "IFEQ", "tok3", "XX"], "-ERR syntax error\r\n", nil),
            (["SET", "lock", "v", "IFEQ", "a", "IFNE", "b"], "-ERR syntax error\r\n", nil),
            (["SET", "lock", "v", "IFEQ"], "-ERR syntax error\r\n", nil),
        ])
    }

    @Test("DELIFEQ, CAD and CAS")
    func valkeyAndTairForms() async throws {
        try await Self.run([
            (["SET", "k", "a"], "+OK\r\n", nil),
            (["DELIFEQ", "k", "b"], ":0\r\n", nil),
            (["DELIFEQ", "k", "a"], ":1\r\n", nil),
            (["DELIFEQ", "k", "a"], ":0\r\n", nil),
            (["CAD", "k", "a"], ":-1\r\n", nil),
            (["SET", "k", "a"], "+OK\r\n", nil),
            (["CAD", "k", "b"], ":0\r\n", nil),
            (["CAD", "k", "a"], ":1\r\n", nil),
            (["CAS", "k", "a", "b"], ":-1\r\n", nil),
            (["SET", "k", "a", "EX", "100"], "+OK\r\n", nil),
            (["CAS", "k", "x", "b"], ":0\r\n", nil),
            (["CAS", "k", "a", "b", "PX", "20000"], ":1\r\n", nil),
            (["TTL", "k"], ":20\r\n", nil),
            (["CAS", "k", "b", "c"], ":1\r\n", nil),
            (["TTL", "k"], ":-1\r\n", nil),           // without a TTL option the key loses its TTL
            (["GET", "k"], "$1\r\nc\r\n", nil),
            (["CAS", "k", "c", "d", "EX", "0"], "-ERR invalid expire time in 'cas' command\r\n", nil),
            (["CAS", "k", "c", "d", "KEEPTTL"], "-ERR syntax error\r\n", nil),
            (["CAS", "k", "c", "d", "EX"], "-ERR syntax error\r\n", nil),
            (["DELIFEQ", "k"], "-ERR wrong number of arguments for 'delifeq' command\r\n", nil),
        ])
    }

    @Test("EXPIRE/PEXPIRE … IFEQ: compare-and-extend")
    func compareAndExtend() async throws {
        try await Self.run([
            (["PEXPIRE", "lock", "30000", "IFEQ", "tok"], ":0\r\n", nil),
            (["SET", "lock", "tok", "PX", "1000"], "+OK\r\n", nil),
            (["PEXPIRE", "lock", "30000", "IFEQ", "other"], ":0\r\n", nil),
            (["PEXPIRE", "lock", "30000", "IFEQ", "tok"], ":1\r\n", nil),
            (["TTL", "lock"], ":30\r\n", nil),
            (["EXPIRE", "lock", "60", "IFEQ", "tok"], ":1\r\n", nil),
            (["TTL", "lock"], ":60\r\n", nil),
            (["EXPIRE", "lock", "10", "GT", "IFEQ", "tok"], ":0\r\n", nil),
            (["EXPIRE", "lock", "10", "IFEQ"], "-ERR Unsupported option IFEQ\r\n", nil),
        ])
    }

    @Test("lock libraries' unlock and extend scripts run natively, with the Lua's replies")
    func nativeScripts() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        func nativeCalls() throws -> String? {
            guard case .bulkString(let b) = try c.call("INFO", "stats") else { return nil }
            return b.text.split(separator: "\r\n").first { $0.hasPrefix("native_script_calls:") }.map(String.init)
        }
        let unlock = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
        #expect(try nativeCalls() == "native_script_calls:0")
        try c.call("SET", "lk", "tok")
        #expect(try c.call("EVAL", unlock, "1", "lk", "other") == .integer(0))
        #expect(try c.call("EVAL", unlock, "1", "lk", "tok") == .integer(1))
        #expect(try c.call("EXISTS", "lk") == .integer(0))
        #expect(try c.call("EVALSHA", "e9f69f2beb755be68b5e456ee2ce9aadfbc4ebf4", "1", "lk", "tok") == .integer(0))
        #expect(try nativeCalls() == "native_script_calls:3")
        // The script is cached as if Lua had run it; a flushed cache answers NOSCRIPT.
        #expect(try c.call("SCRIPT", "EXISTS", "e9f69f2beb755be68b5e456ee2ce9aadfbc4ebf4") == .array([.integer(1)]))
        try c.call("SCRIPT", "FLUSH")
        #expect(try c.call("EVALSHA", "e9f69f2beb755be68b5e456ee2ce9aadfbc4ebf4", "1", "lk", "tok")
            == .error("NOSCRIPT No matching script. Please use EVAL."))
        // Missing KEYS: the Lua runs (and fails as Redis's would).
        guard case .error(let e) = try c.call("EVAL", unlock, "0") else { Issue.record("no error"); return }
        #expect(e.hasPrefix("ERR Lua redis lib command arguments must be strings or integers"))
        #expect(try nativeCalls() == "native_script_calls:3")
    }

    @Test("a lock past its deadline is gone for every compare command, even before a sweep")
    func expiredLocks() async throws {
        let clock = ManualClock()
        let server = try await InProcessServer(clock: clock)
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        #expect(try c.call("SET", "lock", "tok", "NX", "PX", "1000") == .simpleString("OK"))
        clock.advance(by: 1001)
        #expect(try c.call("DELIFEQ", "lock", "tok") == .integer(0))
        #expect(try c.call("CAD", "lock", "tok") == .integer(-1))
        #expect(try c.call("PEXPIRE", "lock", "1000", "IFEQ", "tok") == .integer(0))
        #expect(try c.call("SET", "lock", "tok2", "NX", "PX", "1000") == .simpleString("OK"))
        clock.advance(by: 999)
        #expect(try c.call("SET", "lock", "tok3", "NX", "PX", "1000") == .null)
        #expect(try c.call("DELEX", "lock", "IFEQ", "tok2") == .integer(1))
    }
}

/// Scripts that misbehave, against a real process. Scripts run off the event loops, so even
/// with one loop, and from a connection made while the script runs, others get -BUSY and can
/// send SCRIPT KILL.
@Suite("Script safety", .serialized)
struct ScriptSafetyTests {
    @Test("a looping script makes others get -BUSY until SCRIPT KILL ends it", arguments: [1, 2])
    func busyAndKill(threads: Int) throws {
        let server = try StrongboxProcess(["--threads", "\(threads)", "--busy-reply-threshold", "300"])
        defer { server.stop() }
        let looper = try RawClient(port: server.port, timeoutSeconds: 10)
        try looper.send(command: ["EVAL", "while true do end", "0"])
        // Before the threshold a command waits for the script; past it, it gets -BUSY.
        usleep(100_000)
        let other = try RawClient(port: server.port, timeoutSeconds: 5)
        #expect(try other.call("GET", "x") == .error("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."))
        #expect(try other.call("PING") == .error("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."))
        #expect(try other.call("SCRIPT", "KILL") == .simpleString("OK"))
        let killed = try looper.readReply()
        #expect(killed == .error("ERR Script killed by user with SCRIPT KILL... script: 694a5fe1ddb97a4c6a1bf299d9537c7d3d0f84e7, on @user_script:1."))
        #expect(try other.call("SCRIPT", "KILL") == .error("NOTBUSY No scripts in execution right now."))
        #expect(try looper.call("SET", "x", "1") == .simpleString("OK"))
        #expect(try other.call("GET", "x") == .bulk("1"))
    }

    @Test("a script that has written cannot be killed")
    func unkillable() throws {
        let server = try StrongboxProcess(["--threads", "1", "--busy-reply-threshold", "100"])
        defer { server.stop() }
        let looper = try RawClient(port: server.port, timeoutSeconds: 2)
        try looper.send(command: ["EVAL", "redis.call('set', 'w', '1') while true do end", "0"])
        usleep(300_000)
        let other = try RawClient(port: server.port, timeoutSeconds: 5)
        guard case .error(let text) = try other.call("SCRIPT", "KILL") else { Issue.record("SCRIPT KILL did not refuse"); return }
        #expect(text.hasPrefix("UNKILLABLE Sorry the script already executed write commands"))
    }

    @Test("a pipeline with a script in the middle keeps its reply order")
    func pipelineOrder() async throws {
        let server = try await InProcessServer(threads: 1)
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        var batch: [UInt8] = []
        for i in 0..<50 {
            batch += RawClient.encode([Array("SET".utf8), Array("po:\(i)".utf8), Array("\(i)".utf8)])
            batch += RawClient.encode(["EVAL", "return redis.call('get', KEYS[1]) .. '!'", "1", "po:\(i)"].map { Array($0.utf8) })
            batch += RawClient.encode([Array("GET".utf8), Array("po:\(i)".utf8)])
        }
        try c.send(batch)
        for i in 0..<50 {
            #expect(try c.readReply() == .simpleString("OK"))
            #expect(try c.readReply() == .bulk("\(i)!"))
            #expect(try c.readReply() == .bulk("\(i)"))
        }
    }
}

@Suite("Scripts across servers")
struct ScriptIsolationTests {
    @Test("scripts on several servers in one process never touch each other's data")
    func isolation() async throws {
        let servers = [try await InProcessServer(), try await InProcessServer(), try await InProcessServer()]
        defer { for s in servers { Task { await s.stop() } } }
        let script = "redis.call('set', KEYS[1], ARGV[1]) return redis.call('get', KEYS[1])"
        // Each server's clients run scripts at the same time as the others'.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (n, server) in servers.enumerated() {
                let port = server.port
                group.addTask {
                    let c = try RawClient(port: port)
                    for i in 0..<300 {
                        let reply = try c.call("EVAL", script, "1", "iso:\(n):\(i)", "server-\(n)")
                        #expect(reply == .bulk("server-\(n)"))
                    }
                }
            }
            try await group.waitForAll()
        }
        for (n, server) in servers.enumerated() {
            let c = try RawClient(port: server.port)
            #expect(try c.call("DBSIZE") == .integer(300), "server \(n)")
            guard case .array(let keys) = try c.call("KEYS", "iso:*") else { Issue.record("no keys"); continue }
            let own = keys.filter { key in
                if case .bulkString(let b) = key { return b.text.hasPrefix("iso:\(n):") }
                return false
            }
            #expect(own.count == keys.count, "server \(n) holds keys written through another server")
        }
    }
}
