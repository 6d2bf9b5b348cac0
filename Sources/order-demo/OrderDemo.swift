import ArgumentParser
import Foundation
import StressKit

@main
struct OrderDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "order-demo",
        abstract: "A flash-sale shop on Strongbox: no oversold stock, no duplicate orders, no stale prices — under concurrency and faults.",
        subcommands: [Run.self, Seed.self, Recover.self, Check.self])
}

struct DatabaseOption: ParsableArguments {
    @Option(help: "SQLite database file (the system of record).")
    var db: String?

    func path(defaultFresh: Bool) throws -> String {
        if let db { return db }
        guard defaultFresh else { throw ValidationError("--db PATH is required") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("order-demo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent("shop.sqlite").path
    }
}

struct Seed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create the database and fill it with products and stock.")
    @OptionGroup var database: DatabaseOption
    @Option(help: "Products to create.") var products = 100
    @Option(help: "Units of stock per product.") var stock = 50

    func run() async throws {
        let path = try database.path(defaultFresh: false)
        try Store(path: path).seed(products: products, stock: stock)
        print("seeded \(path): \(products) products, \(stock) units each")
    }
}

struct Recover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Complete (payment captured) or cancel (no payment) every pending order, from the order log.")
    @OptionGroup var database: DatabaseOption

    func run() async throws {
        let r = try Store(path: try database.path(defaultFresh: false)).recover()
        print("recovered: \(r.completed) completed, \(r.cancelled) cancelled")
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check the invariants against the database; exit 1 when one fails.")
    @OptionGroup var database: DatabaseOption

    func run() async throws {
        let invariants = try Store(path: try database.path(defaultFresh: false)).invariants()
        for i in invariants { print("[\(i.holds ? "ok" : "FAIL")] \(i.name): \(i.detail)") }
        if !invariants.allSatisfy(\.holds) { throw ExitCode(1) }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Buyers hammer a few hot products; then recovery, the report and the invariants (exit 1 if one fails).",
        discussion: """
            With no node options it starts 3 lock nodes and 3 cache nodes from the built strongbox and stops them \
            at the end. --chaos kills a lock node and pauses a cache node during the run.
            """)

    @OptionGroup var database: DatabaseOption
    @Option(help: "Concurrent buyers.") var buyers = 200
    @Option(help: "How long the sale runs (e.g. 30s).", transform: parseDurationOption) var duration: Duration = .seconds(30)
    @Option(help: "Products seeded into a new database.") var products = 100
    @Option(help: "Units per product seeded into a new database.") var stock = 50
    @Option(help: "How many hot products the buyers go for.") var hot = 3
    @Option(help: "Units the merchant restocks a hot product with, each --restock-every (0: no deliveries).") var restockUnits = 5
    @Option(help: "How often a delivery arrives.", transform: parseDurationOption) var restockEvery: Duration = .milliseconds(100)
    @Option(help: "Comma-separated host:port of running lock nodes (independent; Redlock over them).") var lockNodes: String?
    @Option(help: "Comma-separated host:port of running cache nodes (sharded by the client's hash ring).") var cacheNodes: String?
    @Option(help: "The strongbox binary to start nodes from (default: beside this tool).") var serverBinary: String?
    @Flag(help: "Kill a lock node and pause a cache node during the run (nodes this demo started).") var chaos = false
    @Flag(help: "Run without Strongbox's locks and idempotency keys, to see what they prevent.") var noLocks = false
    @Option(help: "Fraction of payments that fail (the order is cancelled).") var paymentFailureRate = 0.05
    @Option(help: "Simulated payment latency.", transform: parseDurationOption) var paymentLatency: Duration = .milliseconds(2)
    @Option(help: "Fraction of requests the client retries (sends twice) as if it had timed out.") var retryRate = 0.1
    @Option(help: "Fraction of orders whose process 'crashes' between phases, left for recovery.") var crashRate = 0.01
    @Flag(help: "Do not run recovery at the end (pending orders stay; see `order-demo recover`).") var noRecover = false
    @Option(help: "Write the report as JSON to this file.") var json: String?
    @Flag(help: "No live progress line.") var quiet = false

    func validate() throws {
        if chaos && (lockNodes != nil || cacheNodes != nil) {
            throw ValidationError("--chaos needs nodes this demo starts itself (leave out --lock-nodes/--cache-nodes)")
        }
        if buyers < 1 || hot < 1 { throw ValidationError("--buyers and --hot need at least 1") }
    }

    func run() async throws {
        let path = try database.path(defaultFresh: true)
        let store = try Store(path: path)
        if store.productCount == 0 { try store.seed(products: products, stock: stock) }
        let binary = serverBinary ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("strongbox").path
        let lockFleet = try lockNodes.map { try Fleet(external: $0.split(separator: ",").map(String.init)) } ?? Fleet(spawn: 3, binary: binary)
        let cacheFleet = try cacheNodes.map { try Fleet(external: $0.split(separator: ",").map(String.init)) } ?? Fleet(spawn: 3, binary: binary)
        defer { lockFleet.shutdown(); cacheFleet.shutdown() }
        var shop = ShopSettings()
        shop.useLocks = !noLocks
        shop.paymentFailureRate = paymentFailureRate
        shop.paymentLatency = paymentLatency
        shop.crashRate = crashRate
        let report = try await runSale(store: store, lockFleet: lockFleet, cacheFleet: cacheFleet, shopSettings: shop,
                                       run: RunSettings(buyers: buyers, duration: duration, hot: hot, retryRate: retryRate,
                                                        priceChangeEvery: .milliseconds(200), chaos: chaos, quiet: quiet,
                                                        recover: !noRecover, restockUnits: restockUnits,
                                                        restockEvery: restockEvery))
        lockFleet.shutdown()
        cacheFleet.shutdown()
        print(report.text())
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        }
        if !report.passed || report.staleReads > 0 { throw ExitCode(1) }
    }
}

func parseDurationOption(_ text: String) throws -> Duration {
    guard let d = parseDuration(text) else { throw ValidationError("'\(text)' is not a duration (e.g. 500ms, 5s, 2m)") }
    return d
}
