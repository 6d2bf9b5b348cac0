import Foundation
import NIOCore
import NIOPosix
import RESP
import StrongboxClient
import Testing
import TestSupport

extension ClientIntegration {
    @Suite("StrongboxClient against real servers")
    struct ClientTests {
        @Test("every typed command", arguments: ServerKind.allCases)
        func typedCommands(kind: ServerKind) async throws {
            let node = try Node(kind)
            let client = StrongboxClient(endpoint: node.endpoint)
            defer { Task { await client.shutdown() } }

            #expect(try await client.send(.ping()) == "PONG")
            #expect(try await client.send(.ping("hi")) == "hi")
            #expect(try await client.send(.echo("echo")) == "echo")

            #expect(try await client.send(.set("s", "v1")))
            #expect(try await client.send(.get("s"))?.text == "v1")
            #expect(try await client.send(.set("s", "v2", condition: .ifNotExists)) == false)
            #expect(try await client.send(.set("s", "v3", condition: .ifExists)))
            #expect(try await client.send(.set("nx", "v", condition: .ifExists)) == false)
            #expect(try await client.send(.setGet("s", "v4"))?.text == "v3")
            #expect(try await client.send(.set("ex", "v", expiration: .milliseconds(50_000))))
            let pttl = try await client.send(.pttl("ex"))
            #expect(pttl > 40_000 && pttl <= 50_000)
            #expect(try await client.send(.set("ex", "w", expiration: .keepTTL)))
            #expect(try await client.send(.ttl("ex")) > 40)
            #expect(try await client.send(.setNX("s", "x")) == false)
            #expect(try await client.send(.getSet("s", "v5"))?.text == "v4")
            #expect(try await client.send(.getDel("s"))?.text == "v5")
            #expect(try await client.send(.get("s")) == nil)
            #expect(try await client.send(.getEx("ex", persist: true))?.text == "w")
            #expect(try await client.send(.ttl("ex")) == -1)
            #expect(try await client.send(.getEx("ex", expiration: .seconds(100)))?.text == "w")
            #expect(try await client.send(.ttl("ex")) == 100)

            try await client.send(.mset([(key: "m1", value: "a"), (key: "m2", value: "b")]))
            #expect(try await client.send(.mget(["m1", "nope", "m2"])).map { $0?.text } == ["a", nil, "b"])
            #expect(try await client.send(.msetNX([(key: "m1", value: "x"), (key: "m3", value: "y")])) == false)
            #expect(try await client.send(.append("m1", "bc")) == 3)
            #expect(try await client.send(.strlen("m1")) == 3)
            #expect(try await client.send(.getRange("m1", 1, -1)).text == "bc")
            #expect(try await client.send(.setRange("m1", offset: 1, "ZZ")) == 3)
            #expect(try await client.send(.get("m1"))?.text == "aZZ")

            #expect(try await client.send(.incr("n")) == 1)
            #expect(try await client.send(.incrBy("n", 10)) == 11)
            #expect(try await client.send(.decr("n")) == 10)
            #expect(try await client.send(.decrBy("n", 4)) == 6)
            #expect(try await client.send(.incrByFloat("n", 0.5)) == 6.5)

            #expect(try await client.send(.exists(["m1", "m2", "nope", "m1"])) == 3)
            #expect(try await client.send(.touch(["m1", "nope"])) == 1)
            #expect(try await client.send(.type("m1")) == "string")
            #expect(try await client.send(.type("nope")) == "none")
            try await client.send(.rename("m2", to: "m2b"))
            #expect(try await client.send(.renameNX("m2b", to: "m1")) == false)

            #expect(try await client.send(.expire("m1", seconds: 100)))
            #expect(try await client.send(.expire("m1", seconds: 50, .ifGreater)) == false)
            #expect(try await client.send(.pexpire("m1", milliseconds: 200_000, .ifGreater)))
            #expect(try await client.send(.expireTime("m1")) > 1_700_000_000)
            #expect(try await client.send(.pexpireTime("m1")) > 1_700_000_000_000)
            let future = Int(Date().timeIntervalSince1970) + 1000
            #expect(try await client.send(.expireAt("m1", unixSeconds: future)))
            #expect(try await client.send(.expireTime("m1")) == future)
            #expect(try await client.send(.pexpireAt("m1", unixMilliseconds: future * 1000 + 5)))
            #expect(try await client.send(.pexpireTime("m1")) == future * 1000 + 5)
            #expect(try await client.send(.persist("m1")))
            #expect(try await client.send(.ttl("m1")) == -1)
            #expect(try await client.send(.ttl("nope")) == -2)

            let keys = try await client.send(.keys("m*")).map(\.text).sorted()
            #expect(keys == ["m1", "m2b"])
            var cursor = "0", scanned: [String] = []
            repeat {
                let page = try await client.send(.scan(cursor: cursor, match: "m*", count: 10))
                scanned += page.keys.map(\.text)
                cursor = page.cursor
            } while cursor != "0"
            #expect(scanned.sorted() == ["m1", "m2b"])
            #expect(try await client.send(.unlink(["m2b"])) == 1)
            #expect(try await client.send(.del(["m1", "nope"])) == 1)
            #expect(try await client.send(.dbsize()) == 2)  // ex and n (MSETNX refused m3)
            try await client.send(.flushAll())
            #expect(try await client.send(.dbsize()) == 0)

            // Scripts: EVALSHA of an unknown script loads it and retries.
            let script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
            try await client.send(.raw(["SCRIPT", "FLUSH"]))
            #expect(try await client.send(.scriptExists([script.sha1])) == [false])
            #expect(try await client.send(.evalSHA(script, keys: ["counter"], arguments: [5])) == .integer(5))
            #expect(try await client.send(.scriptExists([script.sha1])) == [true])
            #expect(try await client.send(.scriptLoad(script.source)) == script.sha1)
            #expect(try await client.send(.eval("return ARGV[1]", arguments: ["x"], decode: ReplyDecoders.string)) == "x")

            if kind.hasLockCommands {
                #expect(try await client.send(.set("lock", "tok", condition: .ifNotExists, expiration: .milliseconds(10_000))))
                #expect(try await client.send(.pexpireIfEqual("lock", milliseconds: 20_000, token: "other")) == false)
                #expect(try await client.send(.pexpireIfEqual("lock", milliseconds: 20_000, token: "tok")))
                #expect(try await client.send(.pttl("lock")) > 10_000)
                #expect(try await client.send(.set("lock", "tok2", condition: .ifEqual("tok"))))
                #expect(try await client.send(.set("lock", "x", condition: .ifNotEqual("tok2"))) == false)
                #expect(try await client.send(.digest("lock"))?.count == 16)
                #expect(try await client.send(.digest("nope")) == nil)
                #expect(try await client.send(.delIfEqual("lock", "tok")) == false)
                #expect(try await client.send(.delIfEqual("lock", "tok2")))
                #expect(try await client.send(.compareAndDelete("lock", "x")) == -1)
                try await client.send(.set("cas", "old"))
                #expect(try await client.send(.compareAndSet("cas", expected: "nope", new: "new")) == 0)
                #expect(try await client.send(.compareAndSet("cas", expected: "old", new: "new", milliseconds: 5000)) == 1)
                #expect(try await client.send(.compareAndDelete("cas", "new")) == 1)
                try await client.send(.set("dx", "v"))
                #expect(try await client.send(.delEx("dx", condition: .ifEqual("w"))) == false)
                #expect(try await client.send(.delEx("dx", condition: .ifEqual("v"))))
            } else {
                // A typed error, with Redis's own text and the node it came from.
                let error = await #expect(throws: StrongboxError.self) { try await client.send(.delIfEqual("lock", "tok")) }
                #expect(error?.code == .err)
                #expect(error?.message.hasPrefix("ERR unknown command 'DELIFEQ'") == true)
                #expect(error?.node == node.endpoint.description)
            }
        }

        @Test("errors are one typed error with the server's text and the node", arguments: ServerKind.allCases)
        func typedErrors(kind: ServerKind) async throws {
            let node = try Node(kind)
            let client = StrongboxClient(endpoint: node.endpoint)
            defer { Task { await client.shutdown() } }
            try await client.send(.set("k", "not a number"))
            let e = await #expect(throws: StrongboxError.self) { try await client.send(.incr("k")) }
            #expect(e?.code == .err)
            #expect(e?.message == "ERR value is not an integer or out of range")
            #expect(e?.node == "127.0.0.1:\(node.port)")
            #expect(e?.isServerError == true)
            let arity = await #expect(throws: StrongboxError.self) { try await client.send("GET") }
            #expect(arity?.message == "ERR wrong number of arguments for 'get' command")
            // The connection is still good afterwards.
            #expect(try await client.send(.get("k"))?.text == "not a number")
        }

        @Test("pipelining 10,000 requests in one write and 10,000 from concurrent tasks", arguments: ServerKind.allCases)
        func pipelining(kind: ServerKind) async throws {
            let node = try Node(kind)
            let connection = try await StrongboxConnection.connect(ConnectionConfiguration(endpoint: node.endpoint))
            defer { Task { await connection.close() } }
            let commands: [Command<RESPValue>] = (0..<10_000).map { _ in .raw(["INCR", "counter"]) }
            let replies = await connection.pipeline(commands)
            #expect(replies.count == 10_000)
            #expect(replies.enumerated().allSatisfy { i, r in (try? r.get()) == .integer(Int64(i + 1)) })

            // Many tasks on one connection: each reply reaches the request it answers (FIFO matching).
            let ok = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<10_000 {
                    group.addTask {
                        try await connection.send(.set("k\(i)", "v\(i)"))
                        return try await connection.send(.get("k\(i)"))?.text == "v\(i)"
                    }
                }
                var all = 0
                for try await r in group where r { all += 1 }
                return all
            }
            #expect(ok == 10_000)
        }

        @Test("RESP3, AUTH and a client name in the handshake", arguments: ServerKind.allCases)
        func handshake(kind: ServerKind) async throws {
            let node = try Node(kind, arguments: ["--requirepass", "s3cret"])
            var configuration = ConnectionConfiguration(endpoint: node.endpoint)
            configuration.protocolVersion = .v3
            configuration.password = "s3cret"
            configuration.clientName = "checkout-service"
            let connection = try await StrongboxConnection.connect(configuration)
            defer { Task { await connection.close() } }
            #expect(try await connection.send(.raw(["CLIENT", "GETNAME"])) == .bulk("checkout-service"))
            // A RESP3 map reply (HELLO) and typed commands decode the same as in RESP2.
            if case .map = try await connection.send(.raw(["HELLO", "3"])) {} else { Issue.record("HELLO 3 did not answer a map") }
            #expect(try await connection.send(.set("a", "1")))
            #expect(try await connection.send(.incrByFloat("a", 1.5)) == 2.5)
            #expect(try await connection.send(.mget(["a", "b"])).map { $0?.text } == ["2.5", nil])

            var resp2 = ConnectionConfiguration(endpoint: node.endpoint)
            resp2.password = "s3cret"
            resp2.clientName = "resp2-client"
            let second = try await StrongboxConnection.connect(resp2)
            #expect(try await second.send(.raw(["CLIENT", "GETNAME"])) == .bulk("resp2-client"))
            await second.close()

            var wrong = ConnectionConfiguration(endpoint: node.endpoint)
            wrong.password = "nope"
            let e = await #expect(throws: StrongboxError.self) { try await StrongboxConnection.connect(wrong) }
            #expect(e?.code == .wrongPass)
        }

        @Test("a request that times out fails alone; the ones behind it still get their own replies")
        func commandTimeout() async throws {
            let node = try Node(.strongbox)
            var configuration = ConnectionConfiguration(endpoint: node.endpoint)
            configuration.commandTimeout = .milliseconds(300)
            let connection = try await StrongboxConnection.connect(configuration)
            defer { Task { await connection.close() } }
            node.pause()
            let start = ContinuousClock.now
            let e = await #expect(throws: StrongboxError.self) { try await connection.send(.set("k", "first")) }
            let waited = ContinuousClock.now - start
            #expect(e?.code == .timeout)
            #expect(waited >= .milliseconds(290) && waited < .seconds(3))
            node.resume()
            // The late reply to the timed-out SET is dropped; the next request gets its own reply.
            #expect(try await connection.send(.get("k"))?.text == "first")
            #expect(try await connection.send(.incr("n")) == 1)
        }

        @Test("connect timeout against a server that never accepts")
        func connectTimeout() async throws {
            // A listener with a full accept queue: further SYNs go unanswered.
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
            }
            listen(fd, 0)
            let port = Int(UInt16(bigEndian: addr.sin_port))
            // Non-blocking connects fill the queue without waiting for it.
            var fillers: [Int32] = []
            defer { fillers.forEach { close($0) } }
            for _ in 0..<4 {
                let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                _ = fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK)
                var target = addr
                _ = withUnsafePointer(to: &target) { p in
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                fillers.append(s)
            }
            try await Task.sleep(for: .milliseconds(100))

            var configuration = ConnectionConfiguration(endpoint: Endpoint(host: "127.0.0.1", port: port))
            configuration.connectTimeout = .milliseconds(300)
            let start = ContinuousClock.now
            let e = await #expect(throws: StrongboxError.self) { try await StrongboxConnection.connect(configuration) }
            let waited = ContinuousClock.now - start
            #expect(e?.code == .timeout)
            #expect(waited < .seconds(5))
        }

        @Test("every pending request fails with connectionClosed when the connection drops")
        func dropFailsPending() async throws {
            let node = try Node(.strongbox)
            var configuration = ConnectionConfiguration(endpoint: node.endpoint)
            configuration.commandTimeout = nil
            let connection = try await StrongboxConnection.connect(configuration)
            node.pause()
            let pending = (0..<20).map { i in Task { try await connection.send(.set("k\(i)", "v")) } }
            try await Task.sleep(for: .milliseconds(200))
            node.stop()
            for task in pending {
                let e = await #expect(throws: StrongboxError.self) { try await task.value }
                #expect(e?.code == .connectionClosed)
            }
            #expect(connection.isConnected == false)
            let after = await #expect(throws: StrongboxError.self) { try await connection.send(.ping()) }
            #expect(after?.code == .connectionClosed)
        }

        @Test("the pool reconnects after the server restarts (with backoff) and stays within its bound")
        func reconnect() async throws {
            let node = try Node(.strongbox)
            var pool = PoolConfiguration()
            pool.maximumConnections = 4
            pool.reconnectBackoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(200))
            let client = StrongboxClient(ConnectionConfiguration(endpoint: node.endpoint), pool: pool)
            defer { Task { await client.shutdown() } }

            // 64 concurrent users, at most 4 connections.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<64 { group.addTask { try await client.send(.set("k\(i)", "v")) } }
                try await group.waitForAll()
            }
            #expect(client.pool.openConnections <= 4)
            let clients = try rawCall(node.port, "CLIENT", "LIST").text ?? ""
            #expect(clients.split(separator: "\n").count <= 5)

            node.stop()
            let down = await #expect(throws: StrongboxError.self) { try await client.send(.ping()) }
            #expect(down?.code == .connectionClosed || down?.code == .connectFailed)
            // Pooled connections the client has not yet seen close fail as closed; once they are
            // gone the pool tries to connect and says so.
            var sawConnectFailed = false
            for _ in 0..<50 where !sawConnectFailed {
                let again = await #expect(throws: StrongboxError.self) { try await client.send(.ping()) }
                #expect(again?.code == .connectionClosed || again?.code == .connectFailed)
                sawConnectFailed = again?.code == .connectFailed
                if !sawConnectFailed { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(sawConnectFailed)

            try node.restart()
            let start = ContinuousClock.now
            var answered = false
            while ContinuousClock.now - start < .seconds(5) {
                if (try? await client.send(.ping())) == "PONG" { answered = true; break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(answered)
            #expect(try await client.send(.get("k1")) == nil)  // a new, empty server
        }

        @Test("a pooled connection killed by the server is replaced, not handed out")
        func healthCheck() async throws {
            let node = try Node(.strongbox)
            var pool = PoolConfiguration()
            pool.maximumConnections = 1
            pool.healthCheckInterval = .zero
            let client = StrongboxClient(ConnectionConfiguration(endpoint: node.endpoint), pool: pool)
            defer { Task { await client.shutdown() } }
            try await client.send(.raw(["CLIENT", "SETNAME", "victim"]))
            _ = try rawCall(node.port, "CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
            try await Task.sleep(for: .milliseconds(100))
            #expect(try await client.send(.ping()) == "PONG")
            #expect(try await client.send(.raw(["CLIENT", "GETNAME"])) == .null)
            #expect(client.pool.openConnections == 1)
        }
    }
}
