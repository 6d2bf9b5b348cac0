import Engine
import Foundation
import Keyspace
import NIOCore
import RESP
import Testing
import TestSupport

/// Transactions and multi-key commands are atomic across shards; real libraries that use them.
@Suite("Transactions", .serialized)
struct TransactionTests {
    /// Two key names whose shards differ in `keyspace`.
    static func keysInDifferentShards(_ keyspace: Keyspace) -> (String, String) {
        let a = "atomic:a"
        let shardA = keyspace.shardIndex(for: Key(ByteBuffer(string: a)))
        for i in 0..<1000 {
            let b = "atomic:b\(i)"
            if keyspace.shardIndex(for: Key(ByteBuffer(string: b))) != shardA { return (a, b) }
        }
        return (a, "atomic:b")
    }

    @Test("no reader ever sees half of MULTI INCR a INCR b EXEC or MSET a x b x (keys in different shards)")
    func atomicAcrossShards() async throws {
        let server = try await InProcessServer(threads: 2)
        defer { Task { await server.stop() } }
        let (a, b) = Self.keysInDifferentShards(server.engine.keyspace)
        let setup = try RawClient(port: server.port)
        #expect(try setup.call("MSET", a, "0", b, "0") == .simpleString("OK"))
        let port = server.port
        let torn = ManagedAtomicCounter()
        let failures = ManagedAtomicCounter()
        let reads = ManagedAtomicCounter()
        let stop = ManagedAtomicCounter()
        var threads: [Thread] = []
        for w in 0..<8 {
            threads.append(Thread {
                do {
                    let c = try RawClient(port: port)
                    for i in 0..<400 {
                        if w % 2 == 0 {
                            try c.send("*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$\(a.utf8.count)\r\n\(a)\r\n*2\r\n$4\r\nINCR\r\n$\(b.utf8.count)\r\n\(b)\r\n*1\r\n$4\r\nEXEC\r\n")
                            for _ in 0..<3 { _ = try c.readReply() }
                            guard case .array(let r) = try c.readReply(), r.count == 2 else { failures.add(); continue }
                        } else {
                            let v = "\(w)-\(i)"
                            guard try c.call("MSET", a, v, b, v) == .simpleString("OK") else { failures.add(); continue }
                        }
                    }
                } catch { failures.add() }
            })
        }
        for _ in 0..<8 {
            threads.append(Thread {
                do {
                    let c = try RawClient(port: port)
                    while stop.value == 0 {
                        guard case .array(let r) = try c.call("MGET", a, b), r.count == 2 else { failures.add(); continue }
                        reads.add()
                        if r[0] != r[1] { torn.add() }
                    }
                } catch { failures.add() }
            })
        }
        let writers = threads.prefix(8)
        for t in threads { t.start() }
        // Wait for the writers (they finish), then stop the readers.
        let deadline = Date().addingTimeInterval(120)
        while writers.contains(where: { !$0.isFinished }) && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        stop.add()
        while threads.contains(where: { !$0.isFinished }) && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(failures.value == 0)
        #expect(reads.value > 100, "readers ran \(reads.value) MGETs")
        #expect(torn.value == 0, "\(torn.value) of \(reads.value) MGETs saw a ≠ b")
    }

    @Test("DEL and EXISTS over keys in different shards are atomic against MSET")
    func multiKeyAtomic() async throws {
        let server = try await InProcessServer(threads: 2)
        defer { Task { await server.stop() } }
        let (a, b) = Self.keysInDifferentShards(server.engine.keyspace)
        let port = server.port
        let odd = ManagedAtomicCounter(), failures = ManagedAtomicCounter()
        let writer = Thread {
            do {
                let c = try RawClient(port: port)
                for _ in 0..<1500 {
                    _ = try c.call("MSET", a, "1", b, "1")
                    _ = try c.call("DEL", a, b)
                }
            } catch { failures.add() }
        }
        let reader = Thread {
            do {
                let c = try RawClient(port: port)
                for _ in 0..<3000 {
                    guard case .integer(let n) = try c.call("EXISTS", a, b) else { failures.add(); continue }
                    if n == 1 { odd.add() }
                }
            } catch { failures.add() }
        }
        writer.start()
        reader.start()
        let deadline = Date().addingTimeInterval(120)
        while (!writer.isFinished || !reader.isFinished) && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(failures.value == 0)
        #expect(odd.value == 0, "EXISTS saw one of the two keys \(odd.value) times")
    }

    /// WATCH registrations still in the keyspace, once they stop going away (10 s at most).
    static func watchRegistrationsLeft(_ server: InProcessServer) async throws -> Int {
        let keyspace = server.engine.keyspace
        let deadline = Date().addingTimeInterval(10)
        var left = 1
        while Date() < deadline {
            left = (0..<keyspace.shardCount).reduce(0) { n, i in n + keyspace.withShard(i) { $0.watchedKeyCount } }
            if left == 0 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        return left
    }

    @Test("a client that disconnects while watching leaves no registration behind (also after a script ran)")
    func watchCleanup() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        do {
            let c = try RawClient(port: server.port)
            #expect(try c.call("WATCH", "w1", "w2", "w3", "w2") == .simpleString("OK"))
            #expect(try c.call("MULTI") == .simpleString("OK"))
            c.close()
            // A script runs off the event loop: the WATCH goes with it and comes back.
            let d = try RawClient(port: server.port)
            #expect(try d.call("WATCH", "w4") == .simpleString("OK"))
            #expect(try d.call("EVAL", "return 1", "0") == .integer(1))
            d.close()
        }
        let left = try await Self.watchRegistrationsLeft(server)
        #expect(left == 0)
        // The keys stay writable and a new client's WATCH works.
        let d = try RawClient(port: server.port)
        #expect(try d.call("SET", "w1", "x") == .simpleString("OK"))
        #expect(try d.call("WATCH", "w1") == .simpleString("OK"))
        #expect(try d.call("MULTI") == .simpleString("OK"))
        #expect(try d.call("GET", "w1") == .simpleString("QUEUED"))
        #expect(try d.call("EXEC") == .array([.bulk("x")]))
    }

    @Test("a transaction with a script runs off the event loop and keeps the session's changes")
    func scriptInTransaction() async throws {
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let c = try RawClient(port: server.port)
        #expect(try c.call("MULTI") == .simpleString("OK"))
        #expect(try c.call("CLIENT", "SETNAME", "tx-client") == .simpleString("QUEUED"))
        #expect(try c.call("EVAL", "return redis.call('incr', KEYS[1])", "1", "sc") == .simpleString("QUEUED"))
        #expect(try c.call("EXEC") == .array([.simpleString("OK"), .integer(1)]))
        #expect(try c.call("CLIENT", "GETNAME") == .bulk("tx-client"))
        // Pipelined after the EXEC: answered in order.
        try c.send("*1\r\n$5\r\nMULTI\r\n*3\r\n$4\r\nEVAL\r\n$8\r\nreturn 7\r\n$1\r\n0\r\n*1\r\n$4\r\nEXEC\r\n*2\r\n$3\r\nGET\r\n$2\r\nsc\r\n")
        #expect(try c.readReply() == .simpleString("OK"))
        #expect(try c.readReply() == .simpleString("QUEUED"))
        #expect(try c.readReply() == .array([.integer(7)]))
        #expect(try c.readReply() == .bulk("1"))
        // CLIENT LIST shows the transaction as Redis does: flags=x, multi=<queued>.
        #expect(try c.call("MULTI") == .simpleString("OK"))
        #expect(try c.call("SET", "cl", "1") == .simpleString("QUEUED"))
        #expect(try c.call("CLIENT", "LIST") == .simpleString("QUEUED"))
        guard case .array(let replies) = try c.call("EXEC"), replies.count == 2, case .bulkString(let line) = replies[1] else {
            Issue.record("EXEC did not answer two replies")
            return
        }
        let text = String(buffer: line)
        #expect(text.contains(" flags=x ") && text.contains(" multi=2 "), "CLIENT LIST: \(text)")
        guard case .bulkString(let after) = try c.call("CLIENT", "LIST") else { return }
        #expect(String(buffer: after).contains(" flags=N ") && String(buffer: after).contains(" multi=-1 "))
    }

    @Test("redis-py pipelines and WATCH loops, dogpile.cache, aiocache, Django's RedisCache and django-redis")
    func pythonLibraries() async throws {
        let probe = try runProgram("/usr/bin/env", ["python3", "-c", "import redis, dogpile.cache, aiocache, django, django_redis"])
        try #require(probe.status == 0, "python3 modules redis, dogpile.cache, aiocache, django, django_redis are not installed (Tools/deps installs them)")
        let check = try #require(Bundle.module.url(forResource: "Corpus/transactions_check", withExtension: "py"))
        let server = try await InProcessServer(threads: 2)
        defer { Task { await server.stop() } }
        let r = try runProgram("/usr/bin/env", ["python3", check.path, "\(server.port)"], timeout: 300)
        #expect(r.status == 0 && r.stdout.contains("all checks passed"), "\(r.stdout)\(r.stderr)")
    }
}

/// A counter threads share (tests only).
final class ManagedAtomicCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}

extension TransactionTests {
    @Test("during a busy script: WATCH, queued commands and a watcher's disconnect never block the event loop; -BUSY dooms the transaction")
    func busyScript() async throws {
        let server = try await InProcessServer(["busy-reply-threshold": "100"], threads: 1)
        defer { Task { await server.stop() } }
        let watcher = try RawClient(port: server.port)
        #expect(try watcher.call("WATCH", "gone") == .simpleString("OK"))
        let queuer = try RawClient(port: server.port)
        #expect(try queuer.call("MULTI") == .simpleString("OK"))
        let looper = try RawClient(port: server.port)
        try looper.send(command: ["EVAL", "while true do end", "0"])
        try await Task.sleep(for: .milliseconds(50))
        // A watcher vanishing while the script holds every shard: its clean-up must not wait.
        watcher.close()
        let other = try RawClient(port: server.port)
        let busy = try other.callRaw("WATCH", "k")
        #expect(busy.hasPrefix("-BUSY "), "WATCH during a busy script: \(busy)")
        // A command refused -BUSY while queuing dooms the transaction, as in Redis.
        #expect(try queuer.callRaw("SET", "k", "v").hasPrefix("-BUSY "))
        #expect(try other.call("SCRIPT", "KILL") == .simpleString("OK"))
        _ = try looper.readReply()
        #expect(try queuer.callRaw("EXEC") == "-EXECABORT Transaction discarded because of previous errors.\r\n")
        #expect(try queuer.call("EXISTS", "k") == .integer(0))
        let left = try await Self.watchRegistrationsLeft(server)
        #expect(left == 0, "the vanished watcher's registration is gone once the script ends")
        #expect(try other.call("WATCH", "k") == .simpleString("OK"))
    }
}
