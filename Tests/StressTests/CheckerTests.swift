import Foundation
import StressKit
import Testing
import TestSupport

@Suite struct CheckerTests {
    func holding(_ worker: Int, _ lock: String = "a", granted: Int64, released: Int64, validUntil: Int64? = nil, gone: Bool = false) -> LockRecord {
        LockRecord(worker: worker, lock: lock, token: "t\(worker)-\(granted)", requested: granted - 1, granted: granted, released: released,
                   validUntil: validUntil ?? released + 1000, releaseFoundGone: gone)
    }

    @Test func disjointHoldingsPass() {
        let r = checkMutualExclusion([holding(1, granted: 0, released: 10), holding(2, granted: 20, released: 30), holding(3, granted: 40, released: 50)])
        #expect(r.violations.isEmpty)
        #expect(r.holdings == 3)
        #expect(r.outlivedValidity == 0)
    }

    @Test func touchingHoldingsDoNotOverlap() {
        let r = checkMutualExclusion([holding(2, granted: 10, released: 20), holding(1, granted: 0, released: 10)])
        #expect(r.violations.isEmpty)
    }

    @Test func overlapIsCaughtWithBothHolders() {
        let a = holding(1, granted: 0, released: 100, validUntil: 50)
        let b = holding(2, granted: 60, released: 80)
        let r = checkMutualExclusion([b, a])
        #expect(r.violations.count == 1)
        #expect(r.violations[0].first == a)
        #expect(r.violations[0].second == b)
        #expect(r.violations[0].overlapMicroseconds == 20)
        // `a` outlived its validity (50) before `b` was granted (60): the lock service did its job.
        #expect(r.validityViolations == 0)
        #expect(r.outlivedValidity == 1)
    }

    @Test func overlappingValidityIsADoubleGrant() {
        let r = checkMutualExclusion([holding(1, granted: 0, released: 100, validUntil: 500), holding(2, granted: 50, released: 60)])
        #expect(r.violations.count == 1)
        #expect(r.validityViolations == 1)
    }

    @Test func aLongHoldingOverlapsEveryoneInside() {
        let r = checkMutualExclusion([holding(1, granted: 0, released: 100), holding(2, granted: 10, released: 20),
                                      holding(3, granted: 30, released: 40), holding(4, granted: 100, released: 110)])
        #expect(r.violations.count == 2)
    }

    @Test func locksAreCheckedSeparately() {
        let r = checkMutualExclusion([holding(1, "a", granted: 0, released: 100), holding(2, "b", granted: 10, released: 20),
                                      holding(3, "a", granted: 5, released: 6, gone: true)])
        #expect(r.violations.count == 1)
        #expect(r.violations[0].lock == "a")
        #expect(r.releasesFoundGone == 1)
    }
}

@Suite struct ParsingTests {
    @Test func durations() {
        #expect(parseDuration("500ms") == .milliseconds(500))
        #expect(parseDuration("3s") == .seconds(3))
        #expect(parseDuration("2m") == .seconds(120))
        #expect(parseDuration("250") == .milliseconds(250))
        #expect(parseDuration("1.5s") == .milliseconds(1500))
        #expect(parseDuration("soon") == nil)
        #expect(parseDuration("-1s") == nil)
    }

    @Test func faultPlans() {
        #expect(FaultPlan("kill:1,pause:2")?.steps == [.init(kind: .kill, count: 1), .init(kind: .pause, count: 2)])
        #expect(FaultPlan("restart")?.steps == [.init(kind: .restart, count: 1)])
        #expect(FaultPlan("explode:1") == nil)
        #expect(FaultPlan("kill:0") == nil)
        #expect(FaultPlan("") == nil)
    }

    @Test func zipfIsSkewedAndUniformIsNot() {
        #expect(KeyDistribution("zipf:0.99") == .zipf(0.99))
        #expect(KeyDistribution("uniform") == .uniform)
        #expect(KeyDistribution("zipf:") == nil)
        var g = SystemRandomNumberGenerator()
        let zipf = KeySampler(.zipf(0.99), keys: 1000)
        let uniform = KeySampler(.uniform, keys: 1000)
        var zipfHot = 0, uniformHot = 0
        for _ in 0..<20_000 {
            let z = zipf.next(using: &g), u = uniform.next(using: &g)
            #expect((0..<1000).contains(z) && (0..<1000).contains(u))
            if z < 10 { zipfHot += 1 }
            if u < 10 { uniformHot += 1 }
        }
        // The 10 hottest of 1000 keys draw about 39 % under zipf:0.99, 1 % under uniform.
        #expect(zipfHot > 20_000 * 30 / 100)
        #expect(uniformHot < 20_000 * 3 / 100)
    }
}

/// The built tool, beside the strongbox executable.
func stressExecutable() throws -> String {
    URL(fileURLWithPath: try strongboxExecutable()).deletingLastPathComponent().appendingPathComponent("strongbox-stress").path
}

func report(_ path: String) throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
}

@Suite("strongbox-stress runs", .serialized)
struct StressRunTests {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("stress-\(UUID().uuidString)").path

    init() throws { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }

    @Test("lock over 3 spawned nodes with a node killed every second: zero violations, exit 0")
    func safeLockRunWithKills() throws {
        let json = dir + "/lock.json", html = dir + "/lock.html"
        let run = try runProgram(try stressExecutable(), ["lock", "--spawn", "3", "--locks", "4", "--workers", "16", "--ttl", "500ms",
                                                          "--hold", "5ms", "--duration", "5s", "--fault-every", "1s", "--fault", "kill:1",
                                                          "--json", json, "--html", html], timeout: 120)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        #expect(run.stdout.contains("PASSED"))
        let r = try report(json)
        let lock = r["lock"] as! [String: Any]
        let check = lock["check"] as! [String: Any]
        #expect((check["violations"] as! [Any]).isEmpty)
        #expect((lock["acquisitions"] as! Int) > 100)
        let faults = (r["faults"] as! [[String: Any]]).filter { $0["phase"] as? String == "start" }
        #expect(faults.count >= 3)
        #expect(faults.allSatisfy { $0["kind"] as? String == "kill" })
        let page = try String(contentsOfFile: html, encoding: .utf8)
        #expect(page.contains("<svg") && page.contains("PASSED") && page.contains("stroke=\"#c62828\""))
    }

    @Test("unsafe plain-del release and holds longer than the TTL are caught: violations > 0, exit 1")
    func unsafeRunsFail() throws {
        for extra in [["--unsafe", "plain-del", "--hold", "400ms"], ["--hold", "400ms"]] {
            let json = dir + "/unsafe.json"
            let run = try runProgram(try stressExecutable(), ["lock", "--spawn", "3", "--locks", "2", "--workers", "8", "--ttl", "250ms",
                                                              "--duration", "3s", "--quiet", "--json", json] + extra, timeout: 120)
            #expect(run.status == 1, "\(extra): \(run.stdout)")
            #expect(run.stdout.contains("FAIL:") && run.stdout.contains("mutual-exclusion violations"))
            let check = (try report(json)["lock"] as! [String: Any])["check"] as! [String: Any]
            #expect((check["violations"] as! [Any]).count > 0, "\(extra)")
            #expect((check["outlivedValidity"] as! Int) > 0)
        }
    }

    @Test("cache against a running Strongbox and a running redis-server")
    func cacheAgainstBothServers() throws {
        let strongbox = try StrongboxProcess()
        let redis = try RedisServerProcess()
        for port in [strongbox.port, redis.port] {
            let json = dir + "/cache-\(port).json"
            let run = try runProgram(try stressExecutable(), ["cache", "--nodes", "127.0.0.1:\(port)", "--duration", "2s", "--dist", "zipf:0.99",
                                                              "--read-ratio", "0.9", "--keys", "5000", "--pipeline", "4", "--json", json], timeout: 60)
            #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
            let r = try report(json)
            #expect((r["ops"] as! Int) > 1000)
            let cache = r["cache"] as! [String: Any]
            let ratio = cache["hitRatio"] as! Double
            #expect(ratio > 0.1 && ratio < 1)
            #expect((cache["reads"] as! Int) > 5 * (cache["writes"] as! Int))
        }
        strongbox.stop()
        redis.stop()
    }

    @Test("bad options are refused with a clear message")
    func validation() throws {
        let tool = try stressExecutable()
        let both = try runProgram(tool, ["lock", "--spawn", "1", "--nodes", "127.0.0.1:1", "--duration", "1s"])
        #expect(both.status == 64)
        #expect(both.stderr.contains("--nodes and --spawn exclude each other"))
        let external = try runProgram(tool, ["cache", "--nodes", "127.0.0.1:1", "--duration", "1s", "--fault-every", "1s"])
        #expect(external.status == 64)
        #expect(external.stderr.contains("faults need nodes this tool started"))
        let unbounded = try runProgram(tool, ["lock", "--spawn", "1"])
        #expect(unbounded.stderr.contains("bound the run"))
        let help = try runProgram(tool, ["lock", "--help"])
        #expect(help.stdout.contains("--unsafe") && help.stdout.contains("--fault-every"))
    }
}
