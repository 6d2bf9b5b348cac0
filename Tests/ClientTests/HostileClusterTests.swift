import Foundation
import HashRing
import RESP
import Testing
import TestSupport

extension ClientIntegration {
    /// Attacks on the cluster boundary (issue 13): a client posing as a peer, routing before arity.
    @Suite("Strongbox cluster under hostile clients")
    struct HostileClusterTests {
        /// Keys owned by `node` of `nodes`, as the ring places them.
        static func keys(ownedBy node: Int, _ nodes: [StrongboxProcess], count: Int) -> [String] {
            let ring = HashRing(members: nodes.map { RingMember(host: "127.0.0.1", port: $0.port) })
            var found: [String] = []
            var i = 0
            while found.count < count {
                let key = "k\(i)"
                if ring.owner(ofSlot: HashSlot.slot(forKey: key)).port == nodes[node].port { found.append(key) }
                i += 1
            }
            return found
        }

        /// A plain client that names itself as a peer link does.
        static func posingAsPeer(_ node: StrongboxProcess) throws -> RawClient {
            let client = try RawClient(port: node.port)
            try client.send(command: ["CLIENT", "SETNAME", "strongbox-peer"])
            #expect(try client.readReply() == .simpleString("OK"))
            return client
        }

        @Test("with --cluster-auth, naming a connection strongbox-peer grants nothing: writes are still routed")
        func namedPeerIsRouted() throws {
            let nodes = try startCluster(2, mode: "proxy", extra: ["--cluster-auth", "s3cret"])
            defer { nodes.forEach { $0.stop() } }
            let spoof = try Self.posingAsPeer(nodes[0])
            let foreign = Self.keys(ownedBy: 1, nodes, count: 20)
            for key in foreign {
                try spoof.send(command: ["SET", key, "v-\(key)"])
                #expect(try spoof.readReply() == .simpleString("OK"))
            }
            // Every write reached its owner: readable there, directly.
            for key in foreign {
                #expect(try rawCall(nodes[1].port, "GET", key).text == "v-\(key)")
            }
            // A wrong secret is refused; the right one makes a peer link, which still may not store
            // a key this node does not own.
            #expect(try rawCall(nodes[0].port, "AUTH", "strongbox-peer", "wrong").value == .error("WRONGPASS invalid username-password pair or user is disabled."))
            let peer = try RawClient(port: nodes[0].port)
            try peer.send(command: ["AUTH", "strongbox-peer", "s3cret"])
            #expect(try peer.readReply() == .simpleString("OK"))
            try peer.send(command: ["SET", foreign[0], "lost?"])
            guard case .error(let moved) = try peer.readReply() else { Issue.record("a foreign key was stored"); return }
            #expect(moved.hasPrefix("MOVED "))
            #expect(try rawCall(nodes[1].port, "GET", foreign[0]).text == "v-\(foreign[0])")
        }

        @Test("without a secret a client posing as a peer still cannot store a key on the wrong node")
        func spoofedPeerWithoutSecret() throws {
            let nodes = try startCluster(2, mode: "proxy")
            defer { nodes.forEach { $0.stop() } }
            let spoof = try Self.posingAsPeer(nodes[0])
            let foreign = Self.keys(ownedBy: 1, nodes, count: 5)
            for key in foreign {
                try spoof.send(command: ["SET", key, "x"])
                guard case .error(let e) = try spoof.readReply() else { Issue.record("\(key) stored on the wrong node"); continue }
                #expect(e.hasPrefix("MOVED "))
            }
            // The node's own keys still run there.
            let own = Self.keys(ownedBy: 0, nodes, count: 1)[0]
            try spoof.send(command: ["SET", own, "mine"])
            #expect(try spoof.readReply() == .simpleString("OK"))
        }

        @Test("MSET with an odd number of arguments over keys of different members is an arity error, not a crash")
        func oddMsetInProxyMode() throws {
            let nodes = try startCluster(2, mode: "proxy")
            defer { nodes.forEach { $0.stop() } }
            let a = Self.keys(ownedBy: 0, nodes, count: 1)[0], b = Self.keys(ownedBy: 1, nodes, count: 1)[0]
            for args in [["MSET", a, "v", b], ["MSET", b, "v", a], ["MSETNX", a, "v", b]] {
                let client = try RawClient(port: nodes[0].port)
                try client.send(command: args)
                #expect(try client.readReply() == .error("ERR wrong number of arguments for '\(args[0].lowercased())' command"))
            }
            #expect(try rawCall(nodes[0].port, "PING").text == "PONG")
            #expect(try rawCall(nodes[0].port, "MSET", a, "1", b, "2").text == "OK")
            #expect(try rawCall(nodes[1].port, "GET", b).text == "2")
        }
    }
}
