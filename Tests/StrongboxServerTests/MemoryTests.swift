import Foundation
import NIOCore
import RESP
import Testing
import TestSupport

/// `maxmemory` on the real process: eviction under load, the RSS it keeps, locks spared,
/// `noeviction`'s OOM (byte for byte as redis-server sends it), accounting against RSS.
@Suite("Memory limit and eviction", .serialized)
struct MemoryTests {
    static func info(_ client: RawClient, _ section: String, _ field: String) throws -> Int {
        guard case .bulkString(let b) = try client.call("INFO", section) else { throw TestError("INFO \(section)") }
        for line in String(buffer: b).split(separator: "\r\n") where line.hasPrefix(field + ":") {
            if let n = Int(line.dropFirst(field.count + 1)) { return n }
        }
        throw TestError("no \(field) in INFO \(section)")
    }

    /// Peak resident set of a process (VmHWM), in bytes.
    static func peakResident(_ pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return (line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0) * 1024
        }
        return 0
    }

    /// 500 MB of 1000-byte values under random keys, pipelined, through redis-benchmark.
    /// redis-benchmark stops at the first error reply; `refusalExpected` is for `noeviction`.
    static func writeHalfAGigabyte(port: Int, withTTL: Bool, refusalExpected: Bool = false) throws {
        let value = String(repeating: "v", count: 1000)
        let command = withTTL ? ["SET", "key:__rand_int__", value, "EX", "100000"] : ["-t", "set", "-d", "1000"]
        let run = try runProgram("/usr/bin/redis-benchmark",
                                 ["-p", "\(port)", "-n", "500000", "-r", "100000000", "-P", "16", "-c", "20", "-q"] + command,
                                 timeout: 300)
        if refusalExpected {
            #expect((run.stdout + run.stderr).contains("OOM command not allowed when used memory > 'maxmemory'."), "\(run.stdout) \(run.stderr)")
        } else {
            #expect(run.status == 0, "redis-benchmark: \(run.stderr)")
        }
    }

    static func takeLocks(_ client: RawClient, count: Int) throws {
        for i in 0..<count {
            #expect(try client.call("SET", "lock:order:\(i)", "token-\(i)", "NX", "PX", "600000") == .simpleString("OK"))
        }
    }

    static func expectLocksHeld(_ client: RawClient, count: Int, _ comment: String) throws {
        for i in 0..<count {
            #expect(try client.call("GET", "lock:order:\(i)") == .bulkString(ByteBuffer(string: "token-\(i)")), "\(comment): lock \(i) lost")
        }
    }

    @Test("--maxmemory 64mb allkeys-lru: 500 MB written keep RSS under 100 MB, used_memory under the limit, locks held, server answering")
    func limitUnderLoad() throws {
        let server = try StrongboxProcess(["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"])
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        try Self.takeLocks(client, count: 20)
        try Self.writeHalfAGigabyte(port: server.port, withTTL: false)
        let peak = Self.peakResident(server.pid)
        #expect(peak > 64 << 20, "the load never filled the limit (peak RSS \(peak))")
        #expect(peak < 100 << 20, "peak RSS \(peak >> 20) MiB")
        #expect(try Self.info(client, "memory", "used_memory") <= 64 << 20)
        #expect(try Self.info(client, "stats", "evicted_keys") > 100_000)
        #expect(try Self.info(client, "stats", "evicted_locks_skipped") > 0)
        let start = Date()
        #expect(try client.call("PING") == .simpleString("PONG"))
        #expect(Date().timeIntervalSince(start) < 1)
        try Self.expectLocksHeld(client, count: 20, "allkeys-lru")
        #expect(try client.call("SET", "after", "load") == .simpleString("OK"))
        #expect(try client.call("GET", "after") == .bulkString(ByteBuffer(string: "load")))
    }

    @Test("held locks survive 500 MB of writes with a TTL under every policy",
          arguments: ["noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"])
    func locksSurviveEveryPolicy(policy: String) throws {
        let server = try StrongboxProcess(["--maxmemory", "64mb", "--maxmemory-policy", policy])
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        try Self.takeLocks(client, count: 20)
        try Self.writeHalfAGigabyte(port: server.port, withTTL: true, refusalExpected: policy == "noeviction")
        try Self.expectLocksHeld(client, count: 20, policy)
        #expect(try Self.info(client, "memory", "used_memory") <= 64 << 20)
        #expect(Self.peakResident(server.pid) < 100 << 20)
        if policy != "noeviction" { #expect(try Self.info(client, "stats", "evicted_keys") > 100_000) }
        // The lock is still a lock: its owner releases it with the token, nobody else can.
        #expect(try client.call("DELIFEQ", "lock:order:0", "someone-else") == .integer(0))
        #expect(try client.call("DELIFEQ", "lock:order:0", "token-0") == .integer(1))
    }

    /// Writes `value` under fresh keys until the server refuses one. - Returns: the keys stored
    /// and the raw bytes of the refusal.
    static func fillUntilRefused(_ client: RawClient, value: String) throws -> (stored: Int, refusal: [UInt8]) {
        for i in 0..<1_000_000 {
            try client.send(command: ["SET", "fill:\(i)", value])
            let (reply, bytes) = try client.readReplyBytes()
            if case .error = reply { return (i, bytes) }
        }
        throw TestError("never refused")
    }

    @Test("noeviction: writes get Redis's OOM error byte for byte, nothing stored is lost, reads and deletes still work")
    func noevictionRefuses() throws {
        let value = String(repeating: "n", count: 1000)
        let redis = try RedisServerProcess(extraArguments: ["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
        defer { redis.stop() }
        let reference = try Self.fillUntilRefused(try RawClient(port: redis.port), value: value)

        let server = try StrongboxProcess(["--maxmemory", "4mb"])
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        let (stored, refusal) = try Self.fillUntilRefused(client, value: value)
        #expect(refusal == reference.refusal)
        #expect(String(decoding: refusal, as: UTF8.self) == "-OOM command not allowed when used memory > 'maxmemory'.\r\n")
        #expect(stored > 1_000)
        #expect(try client.call("DBSIZE") == .integer(Int64(stored)))
        for i in stride(from: 0, to: stored, by: 97) {
            #expect(try client.call("GET", "fill:\(i)") == .bulkString(ByteBuffer(string: value)))
        }
        // Commands that add nothing still run; a delete makes room again.
        #expect(try client.call("INCR", "fill:new") == .error("OOM command not allowed when used memory > 'maxmemory'."))
        #expect(try client.call("EXISTS", "fill:0") == .integer(1))
        for i in 0..<200 { _ = try client.call("DEL", "fill:\(i)") }
        #expect(try client.call("SET", "fill:new", "fits") == .simpleString("OK"))
        #expect(try Self.info(client, "stats", "evicted_keys") == 0)
    }

    @Test("with only locks left, writes get -OOM instead of evicting one; with protection off, locks are evicted like any key")
    func onlyLocksLeft() throws {
        let server = try StrongboxProcess(["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"])
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        let token = String(repeating: "t", count: 1000)
        var held = 0
        while held < 100_000 {
            let reply = try client.call("SET", "lock:\(held)", token, "NX", "PX", "600000")
            if reply != .simpleString("OK") {
                #expect(reply == .error("OOM command not allowed when used memory > 'maxmemory'."))
                break
            }
            held += 1
        }
        #expect(held > 1_000)
        #expect(try client.call("SET", "plain", "value") == .error("OOM command not allowed when used memory > 'maxmemory'."))
        #expect(try client.call("DBSIZE") == .integer(Int64(held)))
        #expect(try Self.info(client, "stats", "evicted_keys") == 0)
        #expect(try client.call("GET", "lock:0") == .bulkString(ByteBuffer(string: token)))
        #expect(try client.call("CONFIG", "SET", "maxmemory-protect-locks", "no") == .simpleString("OK"))
        #expect(try client.call("SET", "plain", "value") == .simpleString("OK"))
        #expect(try Self.info(client, "stats", "evicted_keys") > 0)
    }

    @Test("CONFIG SET maxmemory, policy and samples take effect at once; OBJECT FREQ follows an LFU policy")
    func configAtRunTime() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        let value = String(repeating: "c", count: 1000)
        for i in 0..<20_000 { try client.send(command: ["SET", "k:\(i)", value]) }
        for _ in 0..<20_000 { _ = try client.readReply() }
        #expect(try Self.info(client, "memory", "used_memory") > 20 << 20)
        #expect(try client.call("CONFIG", "SET", "maxmemory", "8mb", "maxmemory-policy", "allkeys-lfu", "maxmemory-samples", "10") == .simpleString("OK"))
        #expect(try client.call("CONFIG", "GET", "maxmemory-samples") == .array([.bulkString(ByteBuffer(string: "maxmemory-samples")), .bulkString(ByteBuffer(string: "10"))]))
        // The write goes ahead after at most a millisecond of eviction; the server's background
        // task finishes the job within a few of its ticks.
        #expect(try client.call("SET", "trigger", "x") == .simpleString("OK"))
        let deadline = Date().addingTimeInterval(5)
        while try Self.info(client, "memory", "used_memory") > 8 << 20 && Date() < deadline { usleep(50_000) }
        #expect(try Self.info(client, "memory", "used_memory") <= 8 << 20)
        #expect(try Self.info(client, "stats", "evicted_keys") > 10_000)
        guard case .bulkString(let policyInfo) = try client.call("INFO", "memory") else { throw TestError("INFO") }
        #expect(String(buffer: policyInfo).contains("maxmemory_policy:allkeys-lfu"))
        _ = try client.call("SET", "hot", "v")
        #expect(try client.call("OBJECT", "FREQ", "hot") == .integer(5))
        for _ in 0..<200 { _ = try client.call("GET", "hot") }
        guard case .integer(let freq) = try client.call("OBJECT", "FREQ", "hot") else { throw TestError("OBJECT FREQ") }
        #expect(freq > 6)
        #expect(try client.call("CONFIG", "SET", "maxmemory", "0") == .simpleString("OK"))
        for i in 0..<5_000 { try client.send(command: ["SET", "more:\(i)", value]) }
        for _ in 0..<5_000 { _ = try client.readReply() }
        #expect(try Self.info(client, "memory", "used_memory") > 8 << 20)
    }

    @Test("used_memory grows with the data within 10% of RSS, and FLUSHALL hands the memory back")
    func accountingMatchesResidentSet() throws {
        let server = try StrongboxProcess()
        defer { server.stop() }
        let client = try RawClient(port: server.port)
        usleep(300_000)
        let rss0 = server.residentBytes()
        let used0 = try Self.info(client, "memory", "used_memory")
        let value = String(repeating: "m", count: 64)
        let batch = 10_000
        for start in stride(from: 0, to: 300_000, by: batch) {
            var bytes: [UInt8] = []
            for i in start..<start + batch {
                bytes += RawClient.encode([Array("SET".utf8), Array("key:\(String(format: "%012d", i))".utf8), Array(value.utf8)])
            }
            try client.send(bytes)
            for _ in 0..<batch { _ = try client.readReply() }
        }
        usleep(300_000)
        let rssGrowth = server.residentBytes() - rss0
        let usedGrowth = try Self.info(client, "memory", "used_memory") - used0
        #expect(usedGrowth > 300_000 * 100)
        // One key: a 24-byte header, 16 + 64 bytes, malloc's rounding and header, a 16-byte slot.
        guard case .integer(let one) = try client.call("MEMORY", "USAGE", "key:000000000042") else { throw TestError("MEMORY USAGE") }
        #expect(one >= 24 + 16 + 64 + 8 + 16 && one <= 24 + 16 + 64 + 8 + 16 + 16)
        #expect(abs(Double(usedGrowth - rssGrowth)) <= 0.1 * Double(rssGrowth), "used_memory grew \(usedGrowth), RSS \(rssGrowth)")
        let loaded = try Self.info(client, "memory", "used_memory")
        #expect(try client.call("FLUSHALL") == .simpleString("OK"))
        // The peak remembers the load (to within the shards' reporting steps) until RESETSTAT.
        #expect(try Self.info(client, "memory", "used_memory_peak") >= loaded - 64 * 4096)
        #expect(try client.call("CONFIG", "RESETSTAT") == .simpleString("OK"))
        #expect(try Self.info(client, "memory", "used_memory_peak") == used0)
        usleep(300_000)
        let after = server.residentBytes()
        #expect(Double(after) <= 1.2 * Double(rss0), "RSS after FLUSHALL \(after), empty \(rss0)")
        #expect(try Self.info(client, "memory", "used_memory") == used0)
    }
}
