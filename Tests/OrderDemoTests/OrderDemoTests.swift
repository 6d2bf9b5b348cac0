import Foundation
import Testing
import TestSupport

/// The built demo, beside the strongbox executable.
func demoExecutable() throws -> String {
    URL(fileURLWithPath: try strongboxExecutable()).deletingLastPathComponent().appendingPathComponent("order-demo").path
}

func demoReport(_ path: String) throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
}

func invariants(_ report: [String: Any]) -> [String: Bool] {
    var out: [String: Bool] = [:]
    for i in report["invariants"] as! [[String: Any]] { out[i["name"] as! String] = i["holds"] as? Bool }
    return out
}

@Suite("order-demo", .serialized)
struct OrderDemoTests {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("order-demo-tests-\(UUID().uuidString)").path
    init() throws { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }

    func run(_ arguments: [String], timeout: TimeInterval = 180) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProgram(try demoExecutable(), arguments, timeout: timeout)
    }

    @Test("a short sale on its own 3 lock nodes and 3 cache nodes: every invariant holds")
    func invariantsHold() throws {
        let json = dir + "/plain.json"
        let r = try run(["run", "--buyers", "60", "--duration", "4s", "--quiet", "--db", dir + "/plain.sqlite", "--json", json])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("every invariant holds"))
        let report = try demoReport(json)
        #expect(invariants(report).values.allSatisfy { $0 })
        #expect(invariants(report).count == 5)
        #expect((report["paid"] as! Int) > 100)
        #expect((report["rejectedNoStock"] as! Int) > 0)  // a flash sale: 3 hot products × 50 units sell out
        #expect((report["staleReads"] as! Int) == 0)
        #expect((report["cacheHitRatio"] as! Double) > 0.3)
        let check = try run(["check", "--db", dir + "/plain.sqlite"])
        #expect(check.status == 0, "\(check.stdout)")
    }

    @Test("with chaos (a lock node killed, a cache node paused) the invariants still hold and the report says what happened")
    func invariantsHoldUnderChaos() throws {
        let json = dir + "/chaos.json"
        let r = try run(["run", "--buyers", "60", "--duration", "6s", "--chaos", "--quiet", "--db", dir + "/chaos.sqlite", "--json", json])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        let report = try demoReport(json)
        #expect(invariants(report).values.allSatisfy { $0 })
        let chaos = report["chaos"] as! [String]
        #expect(chaos.contains { $0.contains("killed lock node") })
        #expect(chaos.contains { $0.contains("paused cache node") })
        #expect(chaos.contains { $0.contains("restarted lock node") })
        #expect((report["paid"] as! Int) > 50)
    }

    @Test("without Strongbox's locks the same sale oversells")
    func noLocksOversells() throws {
        let json = dir + "/nolocks.json"
        let r = try run(["run", "--buyers", "60", "--duration", "4s", "--no-locks", "--quiet", "--db", dir + "/nolocks.sqlite", "--json", json])
        #expect(r.status == 1)
        #expect(r.stdout.contains("INVARIANT VIOLATED"))
        let report = try demoReport(json)
        #expect(invariants(report)["units sold = initial − remaining"] == false)
        #expect(r.stdout.contains("oversold"))
    }

    @Test("every request sent twice: each purchase is created once")
    func doubleSubmitCreatesOneOrder() throws {
        let json = dir + "/double.json"
        let r = try run(["run", "--buyers", "30", "--duration", "3s", "--retry-rate", "1", "--crash-rate", "0", "--quiet",
                         "--db", dir + "/double.sqlite", "--json", json])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        let report = try demoReport(json)
        let retries = report["retries"] as! Int, prevented = report["duplicatesPrevented"] as! Int
        #expect(retries > 100)
        #expect(prevented == retries)
        #expect(invariants(report)["one order per idempotency key"] == true)
        #expect((report["attempted"] as! Int) == retries)
    }

    @Test("a crash between try and confirm leaves pending orders that `recover` completes or cancels")
    func crashRecovery() throws {
        let db = dir + "/crash.sqlite", json = dir + "/crash.json"
        let r = try run(["run", "--buyers", "40", "--duration", "3s", "--crash-rate", "0.4", "--no-recover", "--quiet",
                         "--db", db, "--json", json])
        #expect(r.status == 1)  // pending orders left: that invariant fails until recovery
        let report = try demoReport(json)
        let counters = report["counters"] as! [String: Int]
        #expect((report["crashed"] as! Int) > 0)
        #expect((counters["crashed_after_try"] ?? 0) > 0)
        #expect((counters["crashed_after_payment"] ?? 0) > 0)
        #expect(invariants(report)["no pending orders left after recover"] == false)

        let recovered = try run(["recover", "--db", db])
        #expect(recovered.status == 0)
        // "recovered: N completed, M cancelled": captured payments complete, the rest are cancelled.
        let words = recovered.stdout.split(separator: " ")
        let completed = Int(words[1]) ?? -1, cancelled = Int(words[3]) ?? -1
        #expect(completed == counters["crashed_after_payment"])
        // Recovery also cancels payment failures whose cancel could not get the product lock in time.
        #expect(completed + cancelled == (report["crashed"] as! Int) + (counters["cancel_deferred_to_recovery"] ?? 0))
        let check = try run(["check", "--db", db])
        #expect(check.status == 0, "\(check.stdout)")
        #expect(!check.stdout.contains("FAIL"))
    }

    @Test("seed creates the catalog; bad options are refused")
    func seedAndValidation() throws {
        let db = dir + "/seeded.sqlite"
        let seed = try run(["seed", "--products", "10", "--stock", "5", "--db", db])
        #expect(seed.status == 0)
        #expect(seed.stdout.contains("10 products, 5 units each"))
        let check = try run(["check", "--db", db])
        #expect(check.status == 0)
        let bad = try run(["run", "--chaos", "--lock-nodes", "127.0.0.1:1"])
        #expect(bad.status == 64)
        #expect(bad.stderr.contains("--chaos needs nodes this demo starts itself"))
    }
}
