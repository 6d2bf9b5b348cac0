// A tour of StrongboxClient and Redlock, compiled with the package and run by its tests.
// Usage: withlock-example host:port,host:port,...   (e.g. five standalone `strongbox --port N` nodes)
import Redlock
import StrongboxClient

let addresses = CommandLine.arguments.dropFirst().first ?? "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003,127.0.0.1:7004"
let endpoints = addresses.split(separator: ",").compactMap { Endpoint(String($0)) }

// Connect to one node: a pool of pipelining connections.
let client = StrongboxClient(endpoint: endpoints[0])

// Get and set, typed: `.get` replies ByteBuffer?, `.incr` an Int, `.set` a Bool (false when NX/XX said no).
try await client.send(.set("price:sku-1", "19.99", expiration: .seconds(60)))
let price = try await client.get("price:sku-1")                       // "19.99"
let views = try await client.send(.incr("views:sku-1"))                // 1, 2, …

// Pipeline: one write, replies in order, each its own Result.
let replies = try await client.pipeline([.raw(["SET", "a", "1"]), .raw(["INCR", "a"]), .raw(["GET", "a"])])

// Cluster client: keys placed on the consistent-hash ring of all nodes (as a Strongbox cluster places them);
// MGET is split by node and merged back in order.
let cluster = StrongboxClusterClient(members: endpoints)
try await cluster.send(.mset([(key: "user:1", value: "ada"), (key: "user:2", value: "grace")]))
let users = try await cluster.send(.mget(["user:1", "user:2"]))

// withLock over five independent nodes: granted by a quorum (3 of 5), extended while the body runs,
// released afterwards; if the lock is lost the body is cancelled at once.
let redlock = Redlock(endpoints: endpoints)
let receipt = try await redlock.withLock("lock:order:42", ttl: .seconds(2)) { lease in
    try await Task.sleep(for: .milliseconds(100))    // charge the card, write the order…
    return "order 42 charged under lock \(lease.tokenHex.prefix(8)) granted by \(lease.grantedBy.count) nodes"
}

print("price \(price ?? "-"), views \(views), pipeline \(replies.count) replies, users \(users.compactMap { $0?.text })")
print(receipt)
