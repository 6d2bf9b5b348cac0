import Foundation

/// Everything a run found; written as JSON with `--json`, drawn with `--html`, summarised on stdout.
public struct RunReport: Codable, Sendable {
    public struct LockFindings: Codable, Sendable {
        public var acquisitions: Int
        /// Acquire attempts refused because another worker held the lock.
        public var contention: Int
        public var check: CheckResult

        public init(acquisitions: Int, contention: Int, check: CheckResult) {
            self.acquisitions = acquisitions
            self.contention = contention
            self.check = check
        }
    }

    public struct CacheFindings: Codable, Sendable {
        public var reads: Int
        public var writes: Int
        public var hits: Int
        public var misses: Int
        public var hitRatio: Double
    }

    public var mode: String
    public var settings: [String: String]
    public var nodes: [String]
    public var spawned: Bool
    public var durationSeconds: Double
    public var ops: Int
    public var opsPerSecond: Double
    public var latency: LatencySummary
    public var errors: [String: Int]
    public var errorRate: Double
    public var maxErrorRate: Double
    public var lock: LockFindings?
    public var cache: CacheFindings?
    public var timeline: [TimelinePoint]
    public var faults: [FaultEvent]
    /// Why the run failed (empty when it passed).
    public var failures: [String]
    public var passed: Bool { failures.isEmpty }

    public init(mode: String, settings: [String: String], nodes: [String], spawned: Bool, durationSeconds: Double, ops: Int,
                opsPerSecond: Double, latency: LatencySummary, errors: [String: Int], errorRate: Double, maxErrorRate: Double,
                lock: LockFindings?, cache: CacheFindings?, timeline: [TimelinePoint], faults: [FaultEvent], failures: [String]) {
        self.mode = mode
        self.settings = settings
        self.nodes = nodes
        self.spawned = spawned
        self.durationSeconds = durationSeconds
        self.ops = ops
        self.opsPerSecond = opsPerSecond
        self.latency = latency
        self.errors = errors
        self.errorRate = errorRate
        self.maxErrorRate = maxErrorRate
        self.lock = lock
        self.cache = cache
        self.timeline = timeline
        self.faults = faults
        self.failures = failures
    }

    /// The end-of-run table.
    public func summaryText() -> String {
        var lines: [String] = []
        func row(_ k: String, _ v: String) { lines.append(k.padding(toLength: 26, withPad: " ", startingAt: 0) + v) }
        lines.append("strongbox-stress \(mode): \(passed ? "PASSED" : "FAILED")")
        row("nodes", "\(nodes.count) (\(spawned ? "spawned" : "external")): \(nodes.joined(separator: ", "))")
        row("duration", String(format: "%.1f s", durationSeconds))
        row("operations", "\(ops) (\(String(format: "%.0f", opsPerSecond)) ops/s)")
        row("latency ms", String(format: "p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f", latency.p50Milliseconds,
                                 latency.p90Milliseconds, latency.p99Milliseconds, latency.p999Milliseconds, latency.maxMilliseconds))
        row("errors", errors.isEmpty ? "0" : errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            + String(format: " (rate %.4f, max %.4f)", errorRate, maxErrorRate))
        row("faults", faults.isEmpty ? "none" : "\(faults.filter { $0.phase == "start" }.count): "
            + faults.filter { $0.phase == "start" }.map { String(format: "%.1fs %@ %@", Double($0.atMicroseconds) / 1e6, $0.kind, $0.nodes.joined(separator: "+")) }
                .joined(separator: ", "))
        if let lock {
            row("lock acquisitions", "\(lock.acquisitions)")
            row("contention", "\(lock.contention) refused while held")
            row("violations", "\(lock.check.violations.count) overlapping critical sections (\(lock.check.validityViolations) with overlapping validity)")
            row("outlived validity", "\(lock.check.outlivedValidity)")
            row("releases found gone", "\(lock.check.releasesFoundGone)")
        }
        if let cache {
            row("reads / writes", "\(cache.reads) / \(cache.writes)")
            row("hit ratio", String(format: "%.4f (%d hits, %d misses)", cache.hitRatio, cache.hits, cache.misses))
        }
        for f in failures { lines.append("FAIL: \(f)") }
        return lines.joined(separator: "\n")
    }

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// A self-contained page: the summary, then throughput and p99 per second as inline SVG with
    /// the faults drawn as vertical markers.
    public func html() -> String {
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        let opsChart = chart(title: "throughput (ops/s)", values: timeline.map { Double($0.ops) }, unit: "ops/s")
        let p99Chart = chart(title: "p99 latency (ms)", values: timeline.map(\.p99Milliseconds), unit: "ms")
        let errChart = chart(title: "errors per second", values: timeline.map { Double($0.errors) }, unit: "errors")
        let faultRows = faults.map {
            "<tr><td>\(String(format: "%.2f", Double($0.atMicroseconds) / 1e6)) s</td><td>\(esc($0.kind))</td><td>\(esc($0.phase))</td><td>\(esc($0.nodes.joined(separator: ", ")))</td></tr>"
        }.joined(separator: "\n")
        return """
        <!doctype html>
        <html><head><meta charset="utf-8"><title>strongbox-stress \(esc(mode))</title>
        <style>
        body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
        pre { background: #f6f6f6; padding: 1em; }
        .pass { color: #1a7f37; } .fail { color: #c62828; }
        table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left; }
        .legend span { margin-right: 1.5em; }
        </style></head><body>
        <h1>strongbox-stress \(esc(mode)): <span class="\(passed ? "pass" : "fail")">\(passed ? "PASSED" : "FAILED")</span></h1>
        <pre>\(esc(summaryText()))</pre>
        <p class="legend"><span style="color:#c62828">| kill</span><span style="color:#ef6c00">| pause</span><span style="color:#6a1b9a">| restart</span><span style="color:#2e7d32">┊ recovered</span></p>
        \(opsChart)
        \(p99Chart)
        \(errChart)
        <h2>Faults</h2>
        <table><tr><th>at</th><th>fault</th><th>phase</th><th>nodes</th></tr>
        \(faultRows)
        </table>
        </body></html>
        """
    }

    private func chart(title: String, values: [Double], unit: String) -> String {
        let width = 900.0, height = 220.0, left = 60.0, bottom = 30.0, top = 20.0
        let plotW = width - left - 10, plotH = height - top - bottom
        let seconds = max(1.0, Double(values.count))
        let peak = max(values.max() ?? 0, 1e-9)
        func x(_ s: Double) -> Double { left + plotW * s / seconds }
        func y(_ v: Double) -> Double { top + plotH * (1 - v / peak) }
        let points = values.enumerated().map { String(format: "%.1f,%.1f", x(Double($0.offset) + 0.5), y($0.element)) }.joined(separator: " ")
        var markers = ""
        for f in faults {
            let fx = x(Double(f.atMicroseconds) / 1e6)
            let color = f.phase == "end" ? "#2e7d32" : (f.kind == "kill" ? "#c62828" : f.kind == "pause" ? "#ef6c00" : "#6a1b9a")
            let dash = f.phase == "end" ? " stroke-dasharray=\"4 3\"" : ""
            markers += "<line x1=\"\(fx)\" y1=\"\(top)\" x2=\"\(fx)\" y2=\"\(top + plotH)\" stroke=\"\(color)\" stroke-width=\"1.5\"\(dash)><title>\(f.kind) \(f.phase) \(f.nodes.joined(separator: ", "))</title></line>\n"
        }
        var ticks = ""
        let step = max(1, Int(seconds / 10))
        for s in stride(from: 0, through: Int(seconds), by: step) {
            ticks += "<text x=\"\(x(Double(s)))\" y=\"\(height - 10)\" font-size=\"11\" text-anchor=\"middle\">\(s)s</text>\n"
        }
        return """
        <h2>\(title)</h2>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))">
        <rect x="\(left)" y="\(top)" width="\(plotW)" height="\(plotH)" fill="#fafafa" stroke="#ccc"/>
        <text x="\(left - 6)" y="\(top + 10)" font-size="11" text-anchor="end">\(String(format: "%.3g", peak))</text>
        <text x="\(left - 6)" y="\(top + plotH)" font-size="11" text-anchor="end">0</text>
        <text x="12" y="\(top + plotH / 2)" font-size="11" transform="rotate(-90 12 \(top + plotH / 2))" text-anchor="middle">\(unit)</text>
        \(ticks)<polyline fill="none" stroke="#1565c0" stroke-width="2" points="\(points)"/>
        \(markers)</svg>
        """
    }
}
