import Foundation
import HashRing
import NIOCore
import RESP
@testable import StrongboxClient
import Testing
import TestSupport

/// Three `strongbox --cluster-peers …` processes on free loopback ports.
func startCluster(_ count: Int = 3, mode: String = "redirect", extra: [String] = []) throws -> [StrongboxProcess] {
    let ports = try (0..<count).map { _ in try freePort() }
    let peers = ports.map { "127.0.0.1:\($0)" }.joined(separator: ",")
    let nodes = try ports.map { try StrongboxProcess(["--cluster-peers", peers, "--cluster-mode", mode] + extra, port: $0) }
    // Nodes started one after another each see the later ones down at first (their health
    // checks fail until those listen); wait, as a deployment would, until every node sees all up.
    let deadline = Date().addingTimeInterval(10)
    for node in nodes {
        while Date() < deadline, !((try? rawCall(node.port, "CLUSTER", "INFO").text) ?? "").contains("cluster_state:ok\r\n") {
            usleep(50_000)
        }
    }
    return nodes
}

extension ClientIntegration {
    @Suite("Strongbox cluster, redirect mode")
    struct ClusterServerTests {
        @Test("CLUSTER INFO, MYID, KEYSLOT, SLOTS, SHARDS, NODES, COUNTKEYSINSLOT, GETKEYSINSLOT answer from the ring")
        func clusterCommands() throws {
            let nodes = try startCluster()
            let ring = HashRing(members: nodes.map { RingMember(host: "127.0.0.1", port: $0.port) })
            let info = try rawCall(nodes[0].port, "CLUSTER", "INFO").text ?? ""
            #expect(info.contains("cluster_state:ok\r\n") && info.contains("cluster_known_nodes:3\r\n") && info.contains("cluster_slots_assigned:16384\r\n"))
            for node in nodes {
                #expect(try rawCall(node.port, "CLUSTER", "MYID").text == RingMember.derivedID(host: "127.0.0.1", port: node.port))
            }
            #expect(try rawCall(nodes[1].port, "CLUSTER", "KEYSLOT", "somekey").text == "11058")

            // SLOTS and SHARDS describe exactly the ring (parsed by the client's own readers).
            let slots = try StrongboxClusterClient.parseSlots(try rawCall(nodes[2].port, "CLUSTER", "SLOTS").value, seedHost: "127.0.0.1")
            let shards = try StrongboxClusterClient.parseShards(try rawCall(nodes[2].port, "CLUSTER", "SHARDS").value, seedHost: "127.0.0.1")
            for slot in 0..<HashSlot.count {
                let owner = ring.owner(ofSlot: slot)
                #expect(slots.nodes[Int(slots.owners[slot])].port == owner.port)
                #expect(shards.nodes[Int(shards.owners[slot])].port == owner.port)
            }

            let lines = (try rawCall(nodes[0].port, "CLUSTER", "NODES").text ?? "").split(separator: "\n")
            #expect(lines.count == 3)
            #expect(lines.filter { $0.contains("myself,master") }.count == 1)
            #expect(lines.allSatisfy { $0.split(separator: " ").count > 8 && $0.contains(" connected ") })

            // Keys in one slot, counted and listed on their owner only.
            let slot = HashSlot.slot(forKey: "{tag}")
            let owner = nodes.first { $0.port == ring.owner(ofSlot: slot).port }!
            for i in 0..<5 { _ = try rawCall(owner.port, "SET", "{tag}:\(i)", "v") }
            #expect(try rawCall(owner.port, "CLUSTER", "COUNTKEYSINSLOT", "\(slot)").text == "5")
            let other = nodes.first { $0.port != owner.port }!
            #expect(try rawCall(other.port, "CLUSTER", "COUNTKEYSINSLOT", "\(slot)").text == "0")
            if case .array(let keys) = try rawCall(owner.port, "CLUSTER", "GETKEYSINSLOT", "\(slot)", "3").value {
                #expect(keys.count == 3)
            } else { Issue.record("GETKEYSINSLOT did not answer an array") }
            #expect(try rawCall(owner.port, "CLUSTER", "COUNTKEYSINSLOT", "16384").text == "ERR Invalid slot")
            #expect(try rawCall(owner.port, "CLUSTER", "GETKEYSINSLOT", "1", "-1").text == "ERR Invalid slot or number of keys")
            #expect(try rawCall(owner.port, "READONLY").text == "OK")
            #expect(try rawCall(owner.port, "ASKING").text == "OK")
        }

        @Test("keys owned elsewhere get -MOVED exactly as Redis Cluster sends it; keys of several slots -CROSSSLOT")
        func movedAndCrossSlot() throws {
            let nodes = try startCluster()
            let ring = HashRing(members: nodes.map { RingMember(host: "127.0.0.1", port: $0.port) })
            let slot = HashSlot.slot(forKey: "foo")
            let owner = ring.owner(ofSlot: slot)
            let other = nodes.first { $0.port != owner.port }!
            let client = try RawClient(port: other.port)
            defer { client.close() }
            #expect(try client.callRaw("GET", "foo") == "-MOVED \(slot) 127.0.0.1:\(owner.port)\r\n")
            #expect(try client.callRaw("MGET", "a", "b") == "-CROSSSLOT Keys in request don't hash to the same slot\r\n")
            #expect(try client.callRaw("EVAL", "return 1", "2", "a", "b") == "-CROSSSLOT Keys in request don't hash to the same slot\r\n")
            // Errors that come before routing in Redis come first here too.
            #expect(try client.callRaw("GET") == "-ERR wrong number of arguments for 'get' command\r\n")
            #expect(try client.callRaw("PING") == "+PONG\r\n")
        }

        @Test("redis-cli -c writes through one node and reads through the others")
        func redisCLIFollowsRedirects() throws {
            let nodes = try startCluster()
            for i in 0..<20 {
                let set = try runProgram("/usr/bin/redis-cli", ["-c", "-p", "\(nodes[0].port)", "SET", "user:\(i)", "name-\(i)"])
                #expect(set.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "OK")
            }
            for i in 0..<20 {
                let get = try runProgram("/usr/bin/redis-cli", ["-c", "-p", "\(nodes[(i % 2) + 1].port)", "GET", "user:\(i)"])
                #expect(get.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "name-\(i)")
            }
            let total = try nodes.reduce(0) { $0 + (Int(try rawCall($1.port, "DBSIZE").text ?? "0") ?? 0) }
            #expect(total == 20)
        }

        @Test("redis-py RedisCluster works against a redirect-mode cluster")
        func redisPyCluster() throws {
            let nodes = try startCluster()
            let script = """
                from redis.cluster import RedisCluster
                rc = RedisCluster(host="127.0.0.1", port=\(nodes[1].port))
                for i in range(500):
                    rc.set(f"k{i}", f"v{i}")
                ok = sum(1 for i in range(500) if rc.get(f"k{i}") == f"v{i}".encode())
                assert ok == 500, ok
                assert rc.mget_nonatomic(["k1", "k2", "nope"]) == [b"v1", b"v2", None]
                assert len(rc.get_nodes()) == 3
                print("ok", ok)
                """
            let run = try runProgram("/usr/bin/env", ["python3", "-c", script], timeout: 60)
            #expect(run.status == 0, "\(run.stderr)")
            #expect(run.stdout.contains("ok 500"))
        }

        @Test("StrongboxClusterClient discovers the cluster and 10,000 keys land on their owners")
        func clientDiscovery() async throws {
            let nodes = try startCluster()
            let cluster = StrongboxClusterClient(seeds: [Endpoint(host: "127.0.0.1", port: nodes[0].port)])
            defer { Task { await cluster.shutdown() } }
            try await cluster.refreshTopology()
            #expect(Set(cluster.nodes.map(\.port)) == Set(nodes.map(\.port)))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for t in 0..<10 {
                    group.addTask {
                        for i in stride(from: t, to: 10_000, by: 10) { try await cluster.send(.set("key:\(i)", "\(i)")) }
                    }
                }
                try await group.waitForAll()
            }
            let ring = HashRing(members: nodes.map { RingMember(host: "127.0.0.1", port: $0.port) })
            var expected: [Int: Int] = [:]
            for i in 0..<10_000 { expected[ring.owner(ofKey: "key:\(i)").port, default: 0] += 1 }
            for node in nodes {
                #expect(Int(try rawCall(node.port, "DBSIZE").text ?? "") == expected[node.port])
            }
            let values = try await cluster.send(.mget((0..<100).map { "key:\($0)" }))
            #expect(values.map { $0?.text } == (0..<100).map { "\($0)" })
        }

        @Test("a node not in --cluster-peers refuses to start; without --cluster-peers CLUSTER is disabled as in Redis")
        func configuration() throws {
            let exe = try strongboxExecutable()
            let port = try freePort()
            let bad = try runProgram(exe, ["--port", "\(port)", "--cluster-peers", "127.0.0.1:1,127.0.0.1:2"], timeout: 20)
            #expect(bad.status == 1)
            #expect(bad.stderr.contains("is not in --cluster-peers"))
            let badID = try runProgram(exe, ["--port", "\(port)", "--cluster-peers", "127.0.0.1:\(port)@xyz"], timeout: 20)
            #expect(badID.status == 1)
            #expect(badID.stderr.contains("is not 40 lowercase hex digits"))
            let single = try StrongboxProcess()
            #expect(try rawCall(single.port, "CLUSTER", "INFO").text == "ERR This instance has cluster support disabled")
            #expect(try rawCall(single.port, "READONLY").text == "ERR This instance has cluster support disabled")
        }
    }
}

extension ClientIntegration {
    @Suite("Strongbox cluster, proxy mode")
    struct ProxyClusterTests {
        @Test("10,000 keys written through one node are readable through every node and lie on their owners")
        func oneKeyspace() throws {
            let nodes = try startCluster(mode: "proxy")
            let writer = try RawClient(port: nodes[0].port)
            defer { writer.close() }
            // One pipeline of 10,000 SETs, most of them forwarded.
            var batch: [UInt8] = []
            for i in 0..<10_000 { batch += RawClient.encode([Array("SET".utf8), Array("key:\(i)".utf8), Array("v\(i)".utf8)]) }
            try writer.send(batch)
            for _ in 0..<10_000 { #expect(try writer.readReply() == .simpleString("OK")) }
            let ring = HashRing(members: nodes.map { RingMember(host: "127.0.0.1", port: $0.port) })
            var expected: [Int: Int] = [:]
            for i in 0..<10_000 { expected[ring.owner(ofKey: "key:\(i)").port, default: 0] += 1 }
            for node in nodes {
                // DBSIZE covers the cluster in proxy mode; each node's own share is the sum of its slots.
                #expect(try rawCall(node.port, "DBSIZE").text == "10000")
                // INFO keyspace is this node's own count.
                let info = try rawCall(node.port, "INFO", "keyspace").text ?? ""
                #expect(info.contains("db0:keys=\(expected[node.port]!),"), "\(info)")
            }
            for i in stride(from: 0, to: 10_000, by: 997) {
                let slot = HashSlot.slot(forKey: "key:\(i)")
                for node in nodes {
                    let n = Int(try rawCall(node.port, "CLUSTER", "COUNTKEYSINSLOT", "\(slot)").text ?? "") ?? -1
                    if node.port == ring.owner(ofSlot: slot).port { #expect(n > 0) } else { #expect(n == 0) }
                }
            }
            for node in nodes {
                let reader = try RawClient(port: node.port)
                defer { reader.close() }
                var reads: [UInt8] = []
                for i in stride(from: 0, to: 10_000, by: 7) { reads += RawClient.encode([Array("GET".utf8), Array("key:\(i)".utf8)]) }
                try reader.send(reads)
                for i in stride(from: 0, to: 10_000, by: 7) { #expect(try reader.readReply() == .bulk("v\(i)")) }
            }
        }

        @Test("a cluster node answers byte for byte what a single node answers, pipelines mixing local and remote keys included")
        func sameAnswersAsOneNode() throws {
            let nodes = try startCluster(mode: "proxy")
            let single = try StrongboxProcess()
            let script: [[String]] = [
                ["SET", "a", "1"], ["SET", "b", "2"], ["INCR", "c"], ["MSET", "d", "4", "e", "5", "f", "6", "g", "7"],
                ["MGET", "a", "b", "c", "nope", "d", "e", "f", "g"], ["EXISTS", "a", "b", "nope", "a"], ["TOUCH", "a", "x", "g"],
                ["APPEND", "a", "xyz"], ["GET", "a"], ["DEL", "a", "b", "nope"], ["UNLINK", "c", "d"], ["DBSIZE"],
                ["SET", "lock:1", "tok", "NX", "PX", "30000"], ["SET", "lock:1", "tok", "NX", "PX", "30000"], ["DELIFEQ", "lock:1", "tok"],
                ["EVAL", "return redis.call('GET', KEYS[1])", "1", "e"], ["GET", "missing"], ["INCR", "e"], ["INCRBYFLOAT", "f", "0.5"],
                ["HELLO", "3"], ["MGET", "e", "nope", "f"], ["GET", "g"], ["GET", "a"], ["GET", "b"], ["GET", "c"], ["GET", "nope"],
                ["EXISTS", "e", "f", "g"], ["SET", "z", "1", "NX"], ["SET", "z", "1", "NX"], ["DBSIZE"], ["FLUSHALL"], ["DBSIZE"],
            ]
            var bytes: [UInt8] = []
            for c in script { bytes += RawClient.encode(c.map { Array($0.utf8) }) }
            func replies(_ port: Int) throws -> [String] {
                let c = try RawClient(port: port)
                defer { c.close() }
                try c.send(bytes)
                return try script.map { _ in String(decoding: try c.readReplyBytes().1, as: UTF8.self) }
            }
            let expected = try replies(single.port)
            for node in nodes {
                let got = try replies(node.port)
                for (i, (g, e)) in zip(got, expected).enumerated() where !script[i].contains("HELLO") {
                    #expect(g == e, "\(script[i]) on \(node.port)")
                }
            }
        }

        @Test("scripts whose keys live on different nodes get -CROSSSLOT; KEYS covers the cluster; redis-py RedisCluster works")
        func scriptsKeysAndRedisPy() throws {
            let nodes = try startCluster(mode: "proxy")
            let ring = HashRing(members: nodes.map { RingMember(host: "127.0.0.1", port: $0.port) })
            var b = 1
            while ring.owner(ofKey: "k0") == ring.owner(ofKey: "k\(b)") { b += 1 }
            let c = try RawClient(port: nodes[0].port)
            defer { c.close() }
            #expect(try c.callRaw("EVAL", "return 1", "2", "k0", "k\(b)") == "-CROSSSLOT Keys in request don't hash to the same slot\r\n")
            #expect(try c.callRaw("RENAME", "k0", "k\(b)") == "-CROSSSLOT Keys in request don't hash to the same slot\r\n")
            for i in 0..<30 { _ = try c.call("SET", "k\(i)", "\(i)") }
            if case .array(let keys) = try c.call("KEYS", "k*") { #expect(keys.count == 30) } else { Issue.record("KEYS") }
            let script = """
                from redis.cluster import RedisCluster
                rc = RedisCluster(host="127.0.0.1", port=\(nodes[2].port))
                for i in range(300):
                    rc.set(f"p{i}", i)
                assert all(rc.get(f"p{i}") == str(i).encode() for i in range(300))
                print("ok")
                """
            let run = try runProgram("/usr/bin/env", ["python3", "-c", script], timeout: 60)
            #expect(run.status == 0, "\(run.stderr)")
            #expect(try c.call("DBSIZE") == .integer(330))
            // SCAN walks every member in turn: each key once.
            var cursor = "0", seen: [String] = []
            repeat {
                guard case .array(let page) = try c.call("SCAN", cursor, "COUNT", "50"), page.count == 2,
                      case .bulkString(let next) = page[0], case .array(let keys) = page[1] else { Issue.record("SCAN"); break }
                cursor = String(buffer: next)
                for k in keys { if case .bulkString(let b) = k { seen.append(String(buffer: b)) } }
            } while cursor != "0"
            #expect(seen.count == 330)
            #expect(Set(seen).count == 330)
            // A plain redis-cli on any node sees the one keyspace.
            for node in nodes {
                let get = try runProgram("/usr/bin/redis-cli", ["-p", "\(node.port)", "GET", "k\(b)"])
                #expect(get.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "\(b)")
                let size = try runProgram("/usr/bin/redis-cli", ["-p", "\(node.port)", "DBSIZE"])
                #expect(size.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "330")
            }
        }

        @Test("FUNCTION LOAD through one node reaches every node: FCALL works for keys anywhere; FUNCTION DELETE too")
        func functionsEverywhere() throws {
            let nodes = try startCluster(mode: "proxy")
            let c = try RawClient(port: nodes[0].port)
            defer { c.close() }
            let library = "#!lua name=shop\nredis.register_function('stock', function(k, a) return redis.call('incrby', k[1], a[1]) end)"
            #expect(try c.call("FUNCTION", "LOAD", library) == .bulkString(ByteBuffer(string: "shop")))
            for i in 0..<12 { #expect(try c.call("FCALL", "stock", "1", "sku\(i)", "5") == .integer(5)) }
            for node in nodes {
                let other = try RawClient(port: node.port)
                #expect(try other.call("FCALL", "stock", "1", "sku0", "1") != .error("ERR Function not found"))
                other.close()
            }
            #expect(try c.callRaw("FUNCTION", "LOAD", library) == "-ERR Library 'shop' already exists\r\n")
            #expect(try c.call("FUNCTION", "DELETE", "shop") == .simpleString("OK"))
            for node in nodes {
                let other = try RawClient(port: node.port)
                #expect(try other.call("FUNCTION", "LIST") == .array([]))
                other.close()
            }
        }

        @Test("transactions in a cluster: local keys run; keys elsewhere are refused while queuing, and EXEC aborts")
        func transactionsInCluster() throws {
            for mode in ["proxy", "redirect"] {
                let nodes = try startCluster(mode: mode)
                let ring = HashRing(members: nodes.map { RingMember(host: "127.0.0.1", port: $0.port) })
                let c = try RawClient(port: nodes[0].port)
                defer { c.close() }
                let keys = (0..<200).map { "tx\($0)" }
                let mine = keys.filter { ring.owner(ofKey: $0).port == nodes[0].port }
                let theirs = keys.filter { ring.owner(ofKey: $0).port != nodes[0].port }
                // Keys of one slot (redirect mode) or of this node (proxy mode) run as one transaction.
                let local = mode == "redirect" ? ["{t}a", "{t}b"] : [mine[0], mine[1]]
                let home = nodes.first { $0.port == ring.owner(ofKey: local[0]).port }!
                let h = try RawClient(port: home.port)
                #expect(try h.call("WATCH", local[0]) == .simpleString("OK"))
                #expect(try h.call("MULTI") == .simpleString("OK"))
                #expect(try h.call("SET", local[0], "1") == .simpleString("QUEUED"))
                #expect(try h.call("INCR", local[1]) == .simpleString("QUEUED"))
                #expect(try h.call("EXEC") == .array([.simpleString("OK"), .integer(1)]), "\(mode)")
                h.close()
                // A key owned elsewhere dooms the transaction while queuing; nothing runs.
                #expect(try c.call("MULTI") == .simpleString("OK"))
                #expect(try c.call("SET", mine[2], "x") == .simpleString("QUEUED"))
                let refusal = try c.callRaw("SET", theirs[0], "x")
                #expect(refusal.hasPrefix(mode == "redirect" ? "-MOVED " : "-CROSSSLOT "), "\(mode): \(refusal)")
                #expect(try c.callRaw("EXEC") == "-EXECABORT Transaction discarded because of previous errors.\r\n")
                #expect(try c.call("EXISTS", mine[2]) == .integer(0))
                if mode == "proxy" {
                    // WATCH of a key another member owns would land on a shared peer link: refused.
                    #expect(try c.callRaw("WATCH", theirs[0]).hasPrefix("-CROSSSLOT "))
                    #expect(try c.call("WATCH", mine[0]) == .simpleString("OK"))
                    #expect(try c.call("UNWATCH") == .simpleString("OK"))
                }
                if mode == "redirect" {
                    // Keys of two slots on this node: EXEC answers -CROSSSLOT and discards.
                    let h2 = try RawClient(port: nodes[0].port)
                    #expect(try h2.call("MULTI") == .simpleString("OK"))
                    #expect(try h2.call("SET", mine[0], "1") == .simpleString("QUEUED"))
                    #expect(try h2.call("SET", mine.first { HashSlot.slot(forKey: $0) != HashSlot.slot(forKey: mine[0]) }!, "1") == .simpleString("QUEUED"))
                    #expect(try h2.callRaw("EXEC") == "-CROSSSLOT Keys in request don't hash to the same slot\r\n")
                    #expect(try h2.callRaw("EXEC") == "-ERR EXEC without MULTI\r\n")
                    h2.close()
                }
                for n in nodes { n.stop() }
            }
        }

        @Test("a stopped (SIGSTOP) peer does not hold up commands for the other nodes; its own keys fail within 2 s")
        func slowPeer() async throws {
            let nodes = try startCluster(mode: "proxy")
            let ring = HashRing(members: nodes.map { RingMember(host: "127.0.0.1", port: $0.port) })
            let victim = nodes[1]
            let keys = (0..<40).map { "s\($0)" }
            for k in keys { _ = try rawCall(nodes[0].port, "SET", k, "v") }
            let lost = keys.first { ring.owner(ofKey: $0).port == victim.port }!
            let kept = keys.filter { ring.owner(ofKey: $0).port != victim.port }
            kill(victim.pid, SIGSTOP)
            defer { kill(victim.pid, SIGCONT) }
            // One client waits on the stopped node's key …
            let waiting = Task { try rawCall(nodes[0].port, "GET", lost).text ?? "" }
            try await Task.sleep(for: .milliseconds(50))
            // … while another gets every other key at once.
            let start = ContinuousClock.now
            for k in kept { #expect(try rawCall(nodes[0].port, "GET", k).text == "v") }
            #expect(ContinuousClock.now - start < .seconds(1))
            let answer = try await waiting.value
            #expect(answer.hasPrefix("CLUSTERDOWN") || answer.hasPrefix("TRYAGAIN"), "\(answer)")
            #expect(ContinuousClock.now - start < .seconds(2))
        }

        @Test("a killed node's keys get -CLUSTERDOWN within 2 s while the rest work; a restarted node is routed to again")
        func nodeFailure() async throws {
            var nodes = try startCluster(mode: "proxy")
            let ring = HashRing(members: nodes.map { RingMember(host: "127.0.0.1", port: $0.port) })
            let victim = nodes[2]
            let keys = (0..<60).map { "f\($0)" }
            let c = try RawClient(port: nodes[0].port)
            defer { c.close() }
            for k in keys { _ = try c.call("SET", k, "v") }
            victim.stop()
            let killedAt = ContinuousClock.now
            let lost = keys.filter { ring.owner(ofKey: $0).port == victim.port }
            let kept = keys.filter { ring.owner(ofKey: $0).port != victim.port }
            #expect(!lost.isEmpty && !kept.isEmpty)
            var down = false
            while ContinuousClock.now - killedAt < .seconds(2) {
                if try c.callRaw("GET", lost[0]) == "-CLUSTERDOWN The cluster is down\r\n" { down = true; break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(down, "the dead node's keys did not turn into CLUSTERDOWN within 2 s")
            for k in lost { #expect(try c.callRaw("GET", k) == "-CLUSTERDOWN The cluster is down\r\n") }
            for k in kept { #expect(try c.call("GET", k) == .bulk("v")) }
            let nodesText = try c.call("CLUSTER", "NODES")
            if case .bulkString(let b) = nodesText {
                let line = String(buffer: b).split(separator: "\n").first { $0.contains(":\(victim.port)@") } ?? ""
                #expect(line.contains("fail"))
            }
            // Back on its port (empty: there is no replication): routing resumes without restarting anything else.
            nodes[2] = try StrongboxProcess(["--cluster-peers", nodes.map { "127.0.0.1:\($0.port)" }.joined(separator: ","), "--cluster-mode", "proxy"],
                                            port: victim.port)
            var back = false
            let restartedAt = ContinuousClock.now
            while ContinuousClock.now - restartedAt < .seconds(3) {
                if try c.call("GET", lost[0]) == .null { back = true; break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(back)
            #expect(try c.call("SET", lost[0], "again") == .simpleString("OK"))
            #expect(try c.call("GET", lost[0]) == .bulk("again"))
        }
    }
}

extension ClientIntegration {
    @Suite("Tools/cluster")
    struct ToolsClusterTests {
        @Test("start N nodes, status, stop exactly those processes")
        func startStatusStop() throws {
            var root = URL(fileURLWithPath: #filePath)
            for _ in 0..<3 { root.deleteLastPathComponent() }
            let tool = root.appendingPathComponent("Tools/cluster").path
            // Three consecutive free ports below the ephemeral range (where client sockets of other
            // tests come and go), checked by binding them.
            var base = 0
            for _ in 0..<200 {
                let p = Int.random(in: 20000..<32000)
                if (p..<(p + 3)).allSatisfy(canBind) { base = p; break }
            }
            #expect(base > 0)
            let start = try runProgram(tool, ["start", "3", "--base-port", "\(base)", "--no-build", "--binary", try strongboxExecutable()], timeout: 60)
            #expect(start.status == 0, "\(start.stdout) \(start.stderr)")
            #expect(start.stdout.contains("3-node Strongbox cluster (proxy mode)"))
            _ = try rawCall(base, "SET", "through-tools", "1")
            #expect(try rawCall(base + 2, "GET", "through-tools").text == "1")
            let status = try runProgram(tool, ["status"])
            #expect(status.stdout.components(separatedBy: "cluster_state:ok").count - 1 == 3)
            let stop = try runProgram(tool, ["stop"])
            #expect(stop.stdout.contains("stopped 3 nodes"))
            #expect((try? RawClient(port: base, timeoutSeconds: 1)) == nil)
            #expect(try runProgram(tool, ["status"]).stdout.contains("no cluster started"))
        }
    }
}
