import Foundation
import HashRing
import NIOCore
import RESP
@testable import StrongboxClient
import Testing
import TestSupport

extension ClientIntegration {
    @Suite("Cluster client")
    struct ClusterClientTests {
        @Test("ring mode: keys land on their ring owner, multi-key commands split and merge, cross-node commands refused")
        func ringOverStandaloneNodes() async throws {
            let nodes = try startNodes(3)
            let cluster = StrongboxClusterClient(members: nodes.map(\.endpoint))
            defer { Task { await cluster.shutdown() } }
            let ring = HashRing(members: nodes.map { RingMember(host: "127.0.0.1", port: $0.port) })

            for i in 0..<1000 { try await cluster.send(.set("key:\(i)", "v\(i)")) }
            // Each key is on exactly its owner, checked with connections of their own.
            var perNode: [Int: Int] = [:]
            for i in stride(from: 0, to: 1000, by: 7) {
                let owner = ring.owner(ofKey: "key:\(i)")
                #expect(cluster.node(forKey: "key:\(i)") == Endpoint(host: owner.host, port: owner.port))
                for node in nodes {
                    let exists = try rawCall(node.port, "EXISTS", "key:\(i)").text
                    #expect(exists == (node.port == owner.port ? "1" : "0"))
                }
            }
            for node in nodes { perNode[node.port] = Int(try rawCall(node.port, "DBSIZE").text ?? "0") }
            #expect(perNode.values.reduce(0, +) == 1000)
            #expect(perNode.values.allSatisfy { $0 > 200 })

            let keys: [any RESPArgument] = (0..<50).map { "key:\($0)" } + ["missing"]
            let values = try await cluster.send(.mget(keys))
            #expect(values.map { $0?.text } == (0..<50).map { "v\($0)" } + [nil])
            #expect(try await cluster.send(.exists(keys)) == 50)
            try await cluster.send(.mset((0..<30).map { (key: "m:\($0)", value: "x\($0)") }))
            #expect(try await cluster.send(.mget((0..<30).map { "m:\($0)" })).map { $0?.text } == (0..<30).map { "x\($0)" })
            #expect(try await cluster.send(.del((0..<30).map { "m:\($0)" } + ["missing"])) == 30)
            #expect(try await cluster.send(.touch(["key:1", "key:2", "nope"])) == 2)
            #expect(try await cluster.send(.unlink(["key:1", "key:2"])) == 2)

            // A command that cannot be split is refused when its keys live apart …
            var a = 0, b = 1
            while ring.owner(ofKey: "r\(a)") == ring.owner(ofKey: "r\(b)") { b += 1 }
            let e = await #expect(throws: StrongboxError.self) { try await cluster.send(.rename("r\(a)", to: "r\(b)")) }
            #expect(e?.code == .crossSlot)
            a = 0
            // … and works when a hash tag keeps them together.
            try await cluster.send(.set("{user:7}.cart", "3 items"))
            try await cluster.send(.rename("{user:7}.cart", to: "{user:7}.saved"))
            #expect(try await cluster.send(.get("{user:7}.saved"))?.text == "3 items")

            let sizes = try await cluster.sendToAllNodes(.dbsize())
            #expect(sizes.count == 3)
            #expect(try sizes.reduce(0) { $0 + (try $1.1.get()) } == 999)  // 1000 − 2 unlinked + the renamed tagged key
        }

        @Test("discovered mode against a real Redis Cluster: CLUSTER SHARDS, per-slot split, MOVED and ASK followed")
        func realRedisCluster() async throws {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sb-cluster-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let ports = try (0..<3).map { _ in try freePort() }
            let servers = try ports.map { port in
                try Node(.redis, arguments: ["--cluster-enabled", "yes", "--cluster-config-file", dir.appendingPathComponent("nodes-\(port).conf").path,
                                             "--cluster-node-timeout", "2000", "--dir", dir.path,
                                             "--cluster-port", "\(try freePort())"], port: port)
            }
            let create = try runProgram("/usr/bin/redis-cli", ["--cluster", "create"] + ports.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", "0", "--cluster-yes"])
            #expect(create.status == 0, "\(create.stdout) \(create.stderr)")
            // Wait for every node to agree the cluster is up.
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                let states = try ports.map { try rawCall($0, "CLUSTER", "INFO").text ?? "" }
                if states.allSatisfy({ $0.contains("cluster_state:ok") }) { break }
                try await Task.sleep(for: .milliseconds(100))
            }

            let cluster = StrongboxClusterClient(seeds: [servers[0].endpoint])
            defer { Task { await cluster.shutdown() } }
            try await cluster.refreshTopology()
            #expect(Set(cluster.nodes.map(\.port)) == Set(ports))
            // CLUSTER SLOTS (what servers without SHARDS answer) gives the same table.
            let shards = try StrongboxClusterClient.parseShards(try rawCall(ports[1], "CLUSTER", "SHARDS").value, seedHost: "127.0.0.1")
            let slots = try StrongboxClusterClient.parseSlots(try rawCall(ports[1], "CLUSTER", "SLOTS").value, seedHost: "127.0.0.1")
            for slot in stride(from: 0, to: HashSlot.count, by: 61) {
                #expect(shards.nodes[Int(shards.owners[slot])] == slots.nodes[Int(slots.owners[slot])])
                #expect(shards.nodes[Int(shards.owners[slot])] == cluster.node(forSlot: slot))
            }

            for i in 0..<300 { try await cluster.send(.set("key:\(i)", "v\(i)")) }
            let values = try await cluster.send(.mget((0..<300).map { "key:\($0)" }))
            #expect(values.map { $0?.text } == (0..<300).map { "v\($0)" })
            #expect(try await cluster.send(.del((0..<100).map { "key:\($0)" })) == 100)

            // MOVED: reassign an empty slot behind the client's back; the client follows and learns.
            let slot = HashSlot.slot(forKey: "moving-key")
            let source = cluster.node(forSlot: slot)!
            let target = cluster.nodes.first { $0 != source }!
            let targetID = try rawCall(target.port, "CLUSTER", "MYID").text!
            for port in ports { _ = try rawCall(port, "CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID) }
            try await cluster.send(.set("moving-key", "here"))
            #expect(cluster.node(forSlot: slot) == target)
            #expect(try rawCall(target.port, "GET", "moving-key").text == "here")

            // ASK: a slot in migration; a key not yet on the source is redirected to the importing node.
            let askSlot = HashSlot.slot(forKey: "asked-key")
            let askSource = cluster.node(forSlot: askSlot)!
            let askTarget = cluster.nodes.first { $0 != askSource }!
            let sourceID = try rawCall(askSource.port, "CLUSTER", "MYID").text!
            let askTargetID = try rawCall(askTarget.port, "CLUSTER", "MYID").text!
            _ = try rawCall(askTarget.port, "CLUSTER", "SETSLOT", "\(askSlot)", "IMPORTING", sourceID)
            _ = try rawCall(askSource.port, "CLUSTER", "SETSLOT", "\(askSlot)", "MIGRATING", askTargetID)
            try await cluster.send(.set("asked-key", "imported"))
            let direct = try RawClient(port: askTarget.port)
            defer { direct.close() }
            #expect(try direct.call("ASKING") == .simpleString("OK"))
            #expect(try direct.call("GET", "asked-key") == .bulk("imported"))
            #expect(cluster.node(forSlot: askSlot) == askSource)  // ASK does not change the table

            // Keys of different slots in one unsplittable command are refused before sending.
            let e = await #expect(throws: StrongboxError.self) { try await cluster.send(.rename("a", to: "b")) }
            #expect(e?.code == .crossSlot)
            _ = servers
        }
    }
}
