import ArgumentParser
import Foundation
import StressKit

@main
struct StrongboxStress: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strongbox-stress",
        abstract: "Load, lock-safety checking and fault injection against Strongbox or any Redis-protocol server.",
        discussion: """
            Every run is bounded (--duration and/or --ops), stops what it spawned, and exits 0 only when \
            the checker found no violation and errors stayed under --max-error-rate.
            """,
        subcommands: [Lock.self, Cache.self])
}

/// Options every workload shares: where the servers are, bounds, faults, reports.
struct CommonOptions: ParsableArguments {
    @Option(help: "Comma-separated host:port of running servers (load only: they are never faulted).")
    var nodes: String?

    @Option(help: "Start this many local strongbox nodes on free loopback ports (and stop them at the end).")
    var spawn: Int?

    @Option(help: "The server to spawn (default: the strongbox built beside this tool).")
    var serverBinary: String?

    @Option(help: "Stop after this long (e.g. 30s, 500ms, 2m).", transform: parseDurationOption)
    var duration: Duration?

    @Option(help: "Stop after this many operations.")
    var ops: Int?

    @Option(help: "Inject a fault this often (spawned nodes only), e.g. 3s.", transform: parseDurationOption)
    var faultEvery: Duration?

    @Option(help: "Faults to inject in turn: kill:N (SIGKILL, restarted later), pause:N (SIGSTOP, SIGCONT later), restart:N (SIGTERM, restarted later).")
    var fault: String = "kill:1"

    @Option(help: "How long a fault lasts before the node is resumed or restarted (default: half of --fault-every; killed nodes stay down at least the lock TTL).", transform: parseDurationOption)
    var faultDuration: Duration?

    @Option(help: "Concurrent worker tasks.")
    var workers: Int = 16

    @Option(help: "Connections per node (the pool size each node's client uses).")
    var connections: Int = 8

    @Option(help: "Fail the run when errors exceed this fraction of operations.")
    var maxErrorRate: Double = 0.05

    @Option(help: "Write the whole report as JSON to this file.")
    var json: String?

    @Option(help: "Write a self-contained HTML report (throughput and p99 over time, faults marked) to this file.")
    var html: String?

    @Flag(help: "No live progress line.")
    var quiet = false

    func validate() throws {
        if nodes == nil && spawn == nil { throw ValidationError("give --nodes host:port,… or --spawn N") }
        if nodes != nil && spawn != nil { throw ValidationError("--nodes and --spawn exclude each other") }
        if duration == nil && ops == nil { throw ValidationError("bound the run with --duration and/or --ops") }
        if let spawn, spawn < 1 { throw ValidationError("--spawn needs at least 1") }
        if faultEvery != nil && spawn == nil { throw ValidationError("faults need nodes this tool started (--spawn); external --nodes only get load") }
        if FaultPlan(fault) == nil { throw ValidationError("--fault: want kind:count[,kind:count…] with kind kill, pause or restart") }
        if workers < 1 || connections < 1 { throw ValidationError("--workers and --connections need at least 1") }
    }

    func makeFleet() throws -> Fleet {
        if let nodes { return try Fleet(external: nodes.split(separator: ",").map(String.init)) }
        let binary = serverBinary ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("strongbox").path
        return try Fleet(spawn: spawn!, binary: binary)
    }

    var settings: [String: String] {
        var s: [String: String] = ["workers": "\(workers)", "connections": "\(connections)", "max-error-rate": "\(maxErrorRate)"]
        if let duration { s["duration"] = "\(duration)" }
        if let ops { s["ops"] = "\(ops)" }
        if let faultEvery { s["fault-every"] = "\(faultEvery)"; s["fault"] = fault }
        return s
    }
}

func parseDurationOption(_ text: String) throws -> Duration {
    guard let d = parseDuration(text) else { throw ValidationError("'\(text)' is not a duration (e.g. 500ms, 5s, 2m)") }
    return d
}

/// Runs a workload with the fleet, faults, progress line and reports around it; exits 1 on failure.
func execute(_ common: CommonOptions, mode: String, settings extra: [String: String], faultDowntime: Duration,
             workload: @escaping @Sendable (Fleet, Recorder) async -> (RunReport.LockFindings?, RunReport.CacheFindings?)) async throws {
    let fleet = try common.makeFleet()
    defer { fleet.shutdown() }
    // Ctrl-C or SIGTERM: stop the servers this run started before going.
    var signalSources: [any DispatchSourceSignal] = []
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler {
            fleet.shutdown()
            exit(130)
        }
        source.resume()
        signalSources.append(source)
    }
    defer { signalSources.forEach { $0.cancel() } }
    let recorder = Recorder()
    let injector = common.faultEvery.map {
        FaultInjector(fleet: fleet, plan: FaultPlan(common.fault)!, every: $0, duration: common.faultDuration,
                      minimumDowntime: faultDowntime, clockStart: recorder.start)
    }
    let faultTask = injector.map { i in Task { await i.run() } }
    let interactive = isatty(STDOUT_FILENO) != 0 && !common.quiet
    let progress = Task {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            guard interactive, !Task.isCancelled else { continue }
            let s = recorder.lastSecond()
            let line = String(format: "\r[%4.0fs] %7d ops/s  p99 %8.3f ms  errors %d  faults %d   ",
                              (ContinuousClock.now - recorder.start).seconds, s.ops, s.p99, recorder.errorCount, injector?.faultCount ?? 0)
            FileHandle.standardOutput.write(line.data(using: .utf8)!)
        }
    }
    let (lock, cache) = await workload(fleet, recorder)
    let elapsed = ContinuousClock.now - recorder.start
    progress.cancel()
    faultTask?.cancel()
    await faultTask?.value
    if interactive { print("") }

    let errors = recorder.errorsByKind()
    let errorTotal = errors.values.reduce(0, +)
    let ops = recorder.ops
    let errorRate = ops + errorTotal > 0 ? Double(errorTotal) / Double(ops + errorTotal) : 0
    var failures: [String] = []
    if let lock, !lock.check.violations.isEmpty {
        failures.append("\(lock.check.violations.count) mutual-exclusion violations")
    }
    if errorRate > common.maxErrorRate {
        failures.append(String(format: "error rate %.4f above --max-error-rate %.4f", errorRate, common.maxErrorRate))
    }
    if ops == 0 { failures.append("no operation completed") }
    let report = RunReport(
        mode: mode, settings: common.settings.merging(extra) { a, _ in a }, nodes: fleet.members.map(\.address),
        spawned: fleet.spawned, durationSeconds: elapsed.seconds, ops: ops, opsPerSecond: Double(ops) / max(elapsed.seconds, 1e-9),
        latency: recorder.summary(), errors: errors, errorRate: errorRate, maxErrorRate: common.maxErrorRate,
        lock: lock, cache: cache, timeline: recorder.timeline(), faults: injector?.recorded ?? [], failures: failures)
    print(report.summaryText())
    if let path = common.json { try report.json().write(to: URL(fileURLWithPath: path)) }
    if let path = common.html { try Data(report.html().utf8).write(to: URL(fileURLWithPath: path)) }
    fleet.shutdown()
    if !report.passed { throw ExitCode(1) }
}

struct Lock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Workers contend for lock names (Redlock over N > 1 nodes); the checker proves mutual exclusion from the history.",
        discussion: """
            Every grant and release is recorded with client-side monotonic times; the run fails when two holders \
            of one lock were inside their critical sections at once. --unsafe plain-del releases with DEL (no \
            token check) and a --hold longer than --ttl outlives the lease: both must show violations.
            """)

    @OptionGroup var common: CommonOptions

    @Option(help: "Distinct lock names.")
    var locks: Int = 8

    @Option(help: "Lock TTL.", transform: parseDurationOption)
    var ttl: Duration = .milliseconds(500)

    @Option(help: "How long a holder stays in its critical section.", transform: parseDurationOption)
    var hold: Duration = .milliseconds(5)

    @Option(help: "Release unsafely, to show the checker catches it: plain-del (DEL without a token check).")
    var unsafe: String?

    func validate() throws {
        if let unsafe, unsafe != "plain-del" { throw ValidationError("--unsafe knows plain-del only") }
        if locks < 1 { throw ValidationError("--locks needs at least 1") }
    }

    func run() async throws {
        let settings = LockSettings(locks: locks, workers: common.workers, connections: common.connections, ttl: ttl, hold: hold,
                                    unsafePlainDel: unsafe == "plain-del")
        let bounds = Bounds(duration: common.duration, ops: common.ops)
        let extra = ["locks": "\(locks)", "ttl": "\(ttl)", "hold": "\(hold)", "unsafe": unsafe ?? "no"]
        try await execute(common, mode: "lock", settings: extra, faultDowntime: ttl + .milliseconds(100)) { fleet, recorder in
            let result = await runLockWorkload(fleet: fleet, settings: settings, bounds: bounds, recorder: recorder)
            let check = checkMutualExclusion(result.records)
            return (RunReport.LockFindings(acquisitions: result.acquisitions, contention: result.contention, check: check), nil)
        }
    }
}

struct Cache: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A mixed GET/SET workload over a key distribution; reports hit ratio, throughput and latency.")

    @OptionGroup var common: CommonOptions

    @Option(help: "Distinct keys.")
    var keys: Int = 100_000

    @Option(help: "Key distribution: uniform or zipf:S (e.g. zipf:0.99).")
    var dist: String = "uniform"

    @Option(help: "Fraction of operations that are reads.")
    var readRatio: Double = 0.9

    @Option(help: "Bytes per value written.")
    var valueSize: Int = 64

    @Option(help: "TTL of written keys (none by default).", transform: parseDurationOption)
    var ttl: Duration?

    @Option(help: "Commands per pipelined batch.")
    var pipeline: Int = 1

    func validate() throws {
        if KeyDistribution(dist) == nil { throw ValidationError("--dist: uniform or zipf:S") }
        if !(0...1).contains(readRatio) { throw ValidationError("--read-ratio is a fraction between 0 and 1") }
        if keys < 1 || pipeline < 1 || valueSize < 0 { throw ValidationError("--keys and --pipeline need at least 1") }
    }

    func run() async throws {
        let settings = CacheSettings(keys: keys, distribution: KeyDistribution(dist)!, readRatio: readRatio, valueSize: valueSize,
                                     ttl: ttl, pipeline: pipeline, workers: common.workers, connections: common.connections)
        let bounds = Bounds(duration: common.duration, ops: common.ops)
        let extra = ["keys": "\(keys)", "dist": dist, "read-ratio": "\(readRatio)", "value-size": "\(valueSize)",
                     "pipeline": "\(pipeline)", "ttl": ttl.map { "\($0)" } ?? "none"]
        try await execute(common, mode: "cache", settings: extra, faultDowntime: .zero) { fleet, recorder in
            (nil, await runCacheWorkload(fleet: fleet, settings: settings, bounds: bounds, recorder: recorder))
        }
    }
}
