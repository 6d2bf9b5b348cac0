import Foundation
import NIOCore
import RESP
import StrongboxServer
import Testing
import TestSupport

/// Raw RESP in, exact bytes out, against a server on an ephemeral port.
@Suite("End to end", .serialized)
struct EndToEndTests {
    @Test("exact reply bytes for basic commands, multibulk and inline")
    func exactBytes() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        #expect(try c.callRaw("PING") == "+PONG\r\n")
        #expect(try c.callRaw("SET", "e2e:k", "v") == "+OK\r\n")
        #expect(try c.callRaw("GET", "e2e:k") == "$1\r\nv\r\n")
        #expect(try c.callRaw("GET", "e2e:missing") == "$-1\r\n")
        try c.send("GET e2e:k\r\n")
        #expect(String(decoding: try c.readReplyBytes().1, as: UTF8.self) == "$1\r\nv\r\n")
        #expect(try c.callRaw("HELLO", "3").hasPrefix("%7\r\n$6\r\nserver\r\n"))
        #expect(try c.callRaw("GET", "e2e:missing") == "_\r\n")
        #expect(try c.callRaw("INCR", "e2e:k") == "-ERR value is not an integer or out of range\r\n")
    }

    @Test("10,000 pipelined commands in one write come back in request order")
    func pipelineOrder() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        var batch: [UInt8] = []
        for i in 0..<10_000 {
            batch += RawClient.encode([Array("SET".utf8), Array("p:\(i)".utf8), Array("\(i)".utf8)])
            batch += RawClient.encode([Array("GET".utf8), Array("p:\(i)".utf8)])
        }
        try c.send(batch)
        for i in 0..<10_000 {
            #expect(try c.readReply() == .simpleString("OK"))
            #expect(try c.readReply() == .bulk("\(i)"))
        }
    }

    @Test("protocol errors reply with Redis's text, run what came before, then close", arguments: [
        ("*abc\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        ("*1\r\n$x\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        ("*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'\r\n"),
        ("SET a \"b\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"),
        ("*1\r\n$1073741824\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
    ])
    func protocolErrors(input: String, reply: String) async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        try c.send("PING\r\n" + input)
        let bytes = try c.readUntilClosed()
        #expect(String(decoding: bytes, as: UTF8.self) == "+PONG\r\n" + reply)
    }

    @Test("an inline request over 64 KB without a newline is refused and closed")
    func tooBigInline() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        try c.send(String(repeating: "a", count: 70 * 1024))
        #expect(String(decoding: try c.readUntilClosed(), as: UTF8.self) == "-ERR Protocol error: too big inline request\r\n")
    }

    @Test("a request over client-query-buffer-limit closes the connection")
    func queryBufferLimit() async throws {
        let server = try await InProcessServer(["client-query-buffer-limit": "1mb"])
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        try c.send("*3\r\n$3\r\nSET\r\n$1\r\nq\r\n$2000000\r\n")
        try? c.send([UInt8](repeating: 65, count: 1_100_000))
        _ = try c.readUntilClosed()
        #expect(c.closedByPeer)
        let d = try RawClient(port: server.port)
        #expect(try d.call("EXISTS", "q") == .integer(0))
    }

    @Test("a client that announces a 512 MB bulk and trickles bytes does not make the server allocate it")
    func tricklingBulk() throws {
        // A process of its own, so its RSS is the server's alone.
        let server = try StrongboxProcess()
        defer { server.stop() }
        let probe = try RawClient(port: server.port)
        #expect(try probe.call("PING") == .simpleString("PONG"))
        let before = server.residentBytes()
        let c = try RawClient(port: server.port)
        try c.send("*3\r\n$3\r\nSET\r\n$5\r\nbig:k\r\n$536870912\r\n")
        for _ in 0..<20 {
            try c.send([UInt8](repeating: 120, count: 4096))
            usleep(5_000)
        }
        #expect(try probe.call("PING") == .simpleString("PONG"))
        let growth = server.residentBytes() - before
        #expect(before > 0)
        #expect(growth < 32 * 1024 * 1024, "RSS grew by \(growth) bytes")
        #expect(try probe.call("EXISTS", "big:k") == .integer(0))
    }

    @Test("random garbage from hundreds of connections crashes nothing and changes no other client's data")
    func garbageFlood() async throws {
        let server = try await InProcessServer(threads: 2)
        defer { Task { await server.stop() } }
        let control = try RawClient(port: server.port)
        for i in 0..<100 { try control.call("SET", "safe:\(i)", "value-\(i)") }
        var generator = SplitMix(seed: 42)
        // Hundreds of connections open at once, each sending garbage, then all dropped together.
        var clients: [RawClient] = []
        for _ in 0..<300 { clients.append(try RawClient(port: server.port, timeoutSeconds: 2)) }
        for (round, c) in clients.enumerated() {
            var bytes = (0..<Int(generator.next() % 2048)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            // Some rounds look like RESP so the parser gets past the first byte.
            if round % 3 == 0 { bytes = Array("*3\r\n$3\r\nSET\r\n".utf8) + bytes }
            if round % 5 == 0 { bytes = Array("*2\r\n$3\r\nDEL\r\n$".utf8) + bytes }
            if round % 7 == 0 { bytes = Array("SET garbage:\(round) ".utf8) + bytes }
            try? c.send(bytes)
        }
        #expect(try control.call("PING") == .simpleString("PONG"))
        for c in clients { c.close() }
        clients.removeAll()
        for i in 0..<100 {
            #expect(try control.call("GET", "safe:\(i)") == .bulk("value-\(i)"))
        }
        #expect(try control.call("PING") == .simpleString("PONG"))
    }

    @Test("a client that never reads its replies neither stalls the others nor grows the server")
    func slowReader() throws {
        let server = try StrongboxProcess(["--threads", "1"])
        defer { server.stop() }
        let setup = try RawClient(port: server.port)
        try setup.call("SET", "slow:big", String(repeating: "x", count: 10_000_000))
        let before = server.residentBytes()
        let hog = try RawClient(port: server.port, timeoutSeconds: 1)
        var batch: [UInt8] = []
        for _ in 0..<200 { batch += Array("*2\r\n$3\r\nGET\r\n$8\r\nslow:big\r\n".utf8) }
        // 2 GB of replies asked for in 6 KB of requests (one read); the hog reads none of them.
        try? hog.send(batch)
        // Give the server time to chew on what it has read from the hog.
        usleep(500_000)
        let other = try RawClient(port: server.port, timeoutSeconds: 5)
        let start = Date()
        #expect(try other.call("PING") == .simpleString("PONG"))
        #expect(Date().timeIntervalSince(start) < 2)
        let growth = server.residentBytes() - before
        #expect(before > 0)
        #expect(growth < 128 * 1024 * 1024, "server RSS grew by \(growth) bytes for a client that does not read")
        hog.close()
    }

    @Test("requirepass: NOAUTH before AUTH, WRONGPASS on a bad password, then normal service")
    func requirePass() async throws {
        let server = try await InProcessServer(["requirepass": "s3cret"])
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        #expect(try c.callRaw("GET", "a") == "-NOAUTH Authentication required.\r\n")
        #expect(try c.callRaw("NOSUCH") == "-ERR unknown command 'NOSUCH', with args beginning with: \r\n")
        #expect(try c.callRaw("AUTH", "wrong") == "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        #expect(try c.callRaw("AUTH", "nobody", "s3cret") == "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        // User names are case-sensitive, as in Redis's ACL.
        #expect(try c.callRaw("AUTH", "DEFAULT", "s3cret") == "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        #expect(try c.callRaw("PING") == "-NOAUTH Authentication required.\r\n")
        #expect(try c.callRaw("AUTH", "s3cret") == "+OK\r\n")
        #expect(try c.callRaw("SET", "a", "1") == "+OK\r\n")
        let h = try RawClient(port: server.port)
        #expect(try h.callRaw("HELLO", "3").hasPrefix("-NOAUTH HELLO must be called with the client already authenticated"))
        #expect(try h.callRaw("HELLO", "3", "AUTH", "default", "s3cret").hasPrefix("%7\r\n"))
        #expect(try h.callRaw("GET", "a") == "$1\r\n1\r\n")
        let r = try RawClient(port: server.port)
        #expect(try r.callRaw("AUTH", "default", "s3cret") == "+OK\r\n")
        #expect(try r.callRaw("RESET") == "+RESET\r\n")
        #expect(try r.callRaw("GET", "a") == "-NOAUTH Authentication required.\r\n")
        // AUTH lifts the unauthenticated limits for the very next request of the same batch.
        let p = try RawClient(port: server.port)
        var batch = Array("AUTH s3cret\r\n".utf8)
        batch += RawClient.encode(["MSET", "a1", "1", "a2", "2", "a3", "3", "a4", "4", "a5", "5"].map { Array($0.utf8) })
        try p.send(batch)
        #expect(try p.readReply() == .simpleString("OK"))
        #expect(try p.readReply() == .simpleString("OK"))
        // Before AUTH, Redis's unauthenticated request limits apply.
        let u = try RawClient(port: server.port)
        try u.send("*11\r\n")
        #expect(String(decoding: try u.readUntilClosed(), as: UTF8.self) == "-ERR Protocol error: unauthenticated multibulk length\r\n")
    }

    @Test("maxclients refuses the connection over the limit with Redis's text")
    func maxClients() async throws {
        let server = try await InProcessServer(["maxclients": "2"])
        defer { Task { await server.stop() } }
        let a = try RawClient(port: server.port)
        let b = try RawClient(port: server.port)
        #expect(try a.call("PING") == .simpleString("PONG"))
        #expect(try b.call("PING") == .simpleString("PONG"))
        let c = try RawClient(port: server.port)
        #expect(String(decoding: try c.readUntilClosed(), as: UTF8.self) == "-ERR max number of clients reached\r\n")
        b.close()
        usleep(200_000)
        let d = try RawClient(port: server.port)
        #expect(try d.call("PING") == .simpleString("PONG"))
    }

    @Test("QUIT replies +OK and closes")
    func quit() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        try c.send("QUIT\r\nPING\r\n")
        #expect(String(decoding: try c.readUntilClosed(), as: UTF8.self) == "+OK\r\n")
    }

    @Test("CLIENT LIST shows every client with its name; CLIENT KILL ID closes one")
    func clientListAndKill() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let a = try RawClient(port: server.port)
        let b = try RawClient(port: server.port)
        try a.call("CLIENT", "SETNAME", "alpha")
        try b.call("CLIENT", "SETNAME", "beta")
        guard case .integer(let idB) = try b.call("CLIENT", "ID") else { Issue.record("no id"); return }
        guard case .bulkString(let list) = try a.call("CLIENT", "LIST") else { Issue.record("no list"); return }
        #expect(list.text.contains("name=alpha"))
        #expect(list.text.contains("name=beta"))
        #expect(list.text.split(separator: "\n").count == 2)
        #expect(try a.call("CLIENT", "KILL", "ID", "\(idB)") == .integer(1))
        _ = try b.readUntilClosed()
        #expect(b.closedByPeer)
        guard case .bulkString(let info) = try a.call("INFO", "clients") else { Issue.record("no info"); return }
        #expect(info.text.contains("connected_clients:1"))
    }

    @Test("timeout closes an idle client")
    func idleTimeout() async throws {
        let server = try await InProcessServer(["timeout": "1"])
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port, timeoutSeconds: 5)
        #expect(try c.call("PING") == .simpleString("PONG"))
        let start = Date()
        _ = try c.readUntilClosed()
        #expect(c.closedByPeer)
        #expect(Date().timeIntervalSince(start) < 4)
    }

    @Test("INFO carries the fields tools parse")
    func info() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        try c.call("SET", "i:1", "a")
        try c.call("SET", "i:2", "b", "EX", "100")
        try c.call("GET", "i:1")
        try c.call("GET", "i:none")
        guard case .bulkString(let text) = try c.call("INFO") else { Issue.record("INFO is not a bulk"); return }
        let info = text.text
        for field in ["redis_version:7.0.15", "tcp_port:\(server.port)", "connected_clients:1", "used_memory:", "used_memory_rss:",
                      "keyspace_hits:1", "keyspace_misses:1", "total_commands_processed:", "db0:keys=2,expires=1"] {
            #expect(info.contains(field), "INFO lacks \(field)")
        }
        guard case .bulkString(let one) = try c.call("INFO", "keyspace") else { return }
        #expect(!one.text.contains("# Server"))
        try c.send(command: ["HELLO", "3"])
        _ = try c.readReply()
        guard case .verbatim(let format, _) = try c.call("INFO", "server") else { Issue.record("RESP3 INFO is not verbatim"); return }
        #expect(format == "txt")
    }

    @Test("used_memory rises with data and falls after FLUSHALL")
    func memoryAccounting() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        func used() throws -> Int {
            guard case .bulkString(let b) = try c.call("INFO", "memory") else { return 0 }
            let line = b.text.split(separator: "\r\n").first { $0.hasPrefix("used_memory:") }
            return Int(line?.dropFirst("used_memory:".count) ?? "0") ?? 0
        }
        let empty = try used()
        for i in 0..<1000 { try c.call("SET", "mem:\(i)", String(repeating: "v", count: 100)) }
        let full = try used()
        #expect(full - empty >= 1000 * 100)
        try c.call("FLUSHALL")
        #expect(try used() == empty)
    }

    @Test("SHUTDOWN stops the server gracefully")
    func shutdownCommand() async throws {
        let server = try await InProcessServer()
        let c = try RawClient(port: server.port)
        try c.send("SHUTDOWN\r\n")
        _ = try c.readUntilClosed()
        await server.stop()
        #expect(throws: (any Error).self) { try RawClient(port: server.port) }
    }

    @Test("redis-benchmark's default tests ping, set, get, incr and mset run without errors")
    func redisBenchmark() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/redis-benchmark"), "redis-benchmark is not installed")
        let server = try await InProcessServer(threads: 2)
        defer { Task { await server.stop() } }
        let r = try runProgram("/usr/bin/redis-benchmark", ["-p", "\(server.port)", "-q", "-n", "20000", "-t", "ping,set,get,incr,mset"], timeout: 300)
        #expect(r.status == 0)
        let text = r.stdout + r.stderr
        #expect(!text.lowercased().contains("error"), "redis-benchmark said: \(text)")
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET (10 keys)"] {
            #expect(text.contains("\(test): "), "no result for \(test)")
        }
    }

    @Test("COMMAND DOCS and COMMAND INFO carry what redis-cli and client libraries read")
    func commandIntrospection() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        guard case .array(let docs) = try c.call("COMMAND", "DOCS", "set") else { Issue.record("COMMAND DOCS is not an array"); return }
        #expect(docs.first == .bulk("set"))
        guard case .array(let fields) = docs.last else { Issue.record("no doc map"); return }
        #expect(fields.contains(.bulk("summary")))
        #expect(fields.contains(.bulk("arguments")))
        guard case .array(let info) = try c.call("COMMAND", "INFO", "mset", "get") else { Issue.record("no info"); return }
        guard case .array(let mset) = info.first else { Issue.record("no mset info"); return }
        #expect(mset[0] == .bulk("mset"))
        #expect(mset[1] == .integer(-3))
        #expect(mset[3] == .integer(1))
        #expect(mset[4] == .integer(-1))
        #expect(mset[5] == .integer(2))
        guard case .integer(let count) = try c.call("COMMAND", "COUNT") else { Issue.record("no count"); return }
        guard case .array(let all) = try c.call("COMMAND") else { Issue.record("no COMMAND"); return }
        #expect(all.count == Int(count))
        guard case .array(let names) = try c.call("COMMAND", "LIST") else { Issue.record("no list"); return }
        #expect(names.contains(.bulk("getex")))
    }

    @Test("loopback detection for protected mode")
    func loopback() throws {
        #expect(StrongboxServer.isLoopback(try SocketAddress(ipAddress: "127.0.0.1", port: 1)))
        #expect(StrongboxServer.isLoopback(try SocketAddress(ipAddress: "127.5.6.7", port: 1)))
        #expect(StrongboxServer.isLoopback(try SocketAddress(ipAddress: "::1", port: 1)))
        #expect(!StrongboxServer.isLoopback(try SocketAddress(ipAddress: "10.0.0.1", port: 1)))
        #expect(!StrongboxServer.isLoopback(try SocketAddress(ipAddress: "2001:db8::1", port: 1)))
    }
}

/// A small deterministic generator, so a failing garbage run can be replayed.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
