import Keyspace
import RESP
import Synchronization

/// The server's configuration parameters under redis.conf's names: one place that parses and
/// validates a value, shared by the command line, the config file and `CONFIG GET|SET`.
public final class ConfigStore: Sendable {
    /// How a parameter's value is parsed.
    public enum Kind: Sendable {
        case integer(min: Int64, max: Int64)
        /// A byte size with redis's units (`1k` = 1000, `1kb` = 1024, `mb`, `gb`).
        case memory
        /// A byte size no smaller than `min` (Redis's range for the request limits).
        case memoryAtLeast(Int64)
        case yesNo
        case oneOf([String])
        case string
        /// Space-separated addresses (`bind`).
        case list
        /// `client-output-buffer-limit`: `<class> <hard> <soft> <soft seconds>` for any of the
        /// classes, merged into the current value.
        case outputBufferLimits
    }

    public struct Parameter: Sendable {
        public let name: String
        public let kind: Kind
        /// May `CONFIG SET` change it while running?
        public let mutable: Bool
        public let defaultValue: String
    }

    public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
        public let parameter: String
        public let reason: String
        public var description: String { "'\(parameter)': \(reason)" }
    }

    public static let parameters: [Parameter] = [
        Parameter(name: "bind", kind: .list, mutable: false, defaultValue: "127.0.0.1 -::1"),
        Parameter(name: "port", kind: .integer(min: 0, max: 65535), mutable: false, defaultValue: "6379"),
        Parameter(name: "protected-mode", kind: .yesNo, mutable: true, defaultValue: "yes"),
        Parameter(name: "requirepass", kind: .string, mutable: true, defaultValue: ""),
        Parameter(name: "maxclients", kind: .integer(min: 1, max: Int64(UInt32.max)), mutable: true, defaultValue: "10000"),
        Parameter(name: "timeout", kind: .integer(min: 0, max: Int64(Int32.max)), mutable: true, defaultValue: "0"),
        // Redis's minimum (1mb): a smaller limit would refuse the requests clients open with.
        Parameter(name: "proto-max-bulk-len", kind: .memoryAtLeast(1024 * 1024), mutable: true, defaultValue: "536870912"),
        Parameter(name: "client-query-buffer-limit", kind: .memoryAtLeast(1024 * 1024), mutable: true, defaultValue: "1073741824"),
        Parameter(name: "loglevel", kind: .oneOf(["debug", "verbose", "notice", "warning", "nothing"]), mutable: true, defaultValue: "notice"),
        Parameter(name: "logfile", kind: .string, mutable: false, defaultValue: ""),
        Parameter(name: "threads", kind: .integer(min: 1, max: 256), mutable: false, defaultValue: "0"),
        Parameter(name: "tcp-backlog", kind: .integer(min: 0, max: Int64(Int32.max)), mutable: false, defaultValue: "511"),
        Parameter(name: "tcp-keepalive", kind: .integer(min: 0, max: Int64(Int32.max)), mutable: true, defaultValue: "300"),
        // Redis takes any hz and clamps it to 1…500.
        Parameter(name: "hz", kind: .integer(min: 0, max: Int64(Int32.max)), mutable: true, defaultValue: "10"),
        Parameter(name: "busy-reply-threshold", kind: .integer(min: 0, max: Int64.max), mutable: true, defaultValue: "5000"),
        Parameter(name: "client-output-buffer-limit", kind: .outputBufferLimits, mutable: true,
                  defaultValue: "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"),
        // Accepted so tools that ask for them (redis-benchmark asks for save and appendonly) get answers.
        Parameter(name: "databases", kind: .integer(min: 1, max: 1), mutable: false, defaultValue: "1"),
        Parameter(name: "save", kind: .string, mutable: true, defaultValue: ""),
        Parameter(name: "appendonly", kind: .yesNo, mutable: false, defaultValue: "no"),
        Parameter(name: "maxmemory", kind: .memory, mutable: true, defaultValue: "0"),
        Parameter(name: "maxmemory-policy", kind: .oneOf(["volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl",
                                                                  "allkeys-lru", "allkeys-lfu", "allkeys-random", "noeviction"]), mutable: true, defaultValue: "noeviction"),
        Parameter(name: "maxmemory-samples", kind: .integer(min: 1, max: Int64(Int32.max)), mutable: true, defaultValue: "5"),
        // Strongbox's own: keys written by SET NX with a TTL (locks) are never evicted.
        Parameter(name: "maxmemory-protect-locks", kind: .yesNo, mutable: true, defaultValue: "yes"),
        Parameter(name: "daemonize", kind: .yesNo, mutable: false, defaultValue: "no"),
        // Static cluster membership: the same list on every node (host:port[@node-id], comma-separated).
        Parameter(name: "cluster-peers", kind: .string, mutable: false, defaultValue: ""),
        Parameter(name: "cluster-auth", kind: .string, mutable: false, defaultValue: ""),
        Parameter(name: "cluster-mode", kind: .oneOf(["proxy", "redirect"]), mutable: false, defaultValue: "proxy"),
        Parameter(name: "cluster-announce-ip", kind: .string, mutable: false, defaultValue: ""),
        Parameter(name: "cluster-virtual-nodes", kind: .integer(min: 1, max: 4096), mutable: false, defaultValue: "256"),
    ]

    private let values: Mutex<[String: String]>
    // The few values read on hot paths, mirrored lock-free.
    public let maxBulkLength = Atomic<Int>(536_870_912)
    public let queryBufferLimit = Atomic<Int>(1_073_741_824)
    public let maxClients = Atomic<Int>(10000)
    public let timeoutSeconds = Atomic<Int>(0)
    public let protectedMode = Atomic<Bool>(true)
    public let passwordRequired = Atomic<Bool>(false)
    public let busyReplyThreshold = Atomic<Int64>(5000)
    public let maxMemory = Atomic<Int>(0)
    /// `EvictionPolicy.rawValue`.
    public let maxMemoryPolicy = Atomic<Int>(EvictionPolicy.noeviction.rawValue)
    public let maxMemorySamples = Atomic<Int>(5)
    public let protectLocks = Atomic<Bool>(true)
    /// `client-output-buffer-limit normal <hard> <soft> <seconds>` (0: no limit).
    public let normalOutputHard = Atomic<Int>(0)
    public let normalOutputSoft = Atomic<Int>(0)
    public let normalOutputSoftSeconds = Atomic<Int>(0)
    private let observers = Mutex<[@Sendable (String, String) -> Void]>([])

    public var evictionPolicy: EvictionPolicy {
        EvictionPolicy(rawValue: maxMemoryPolicy.load(ordering: .relaxed)) ?? .noeviction
    }

    /// Calls `handler` with (name, canonical value) after every change of a parameter.
    public func observe(_ handler: @escaping @Sendable (String, String) -> Void) {
        observers.withLock { $0.append(handler) }
    }

    /// Old names that mean the same parameter.
    static let aliases = ["lua-time-limit": "busy-reply-threshold"]

    public init() {
        var defaults: [String: String] = [:]
        for p in Self.parameters { defaults[p.name] = p.defaultValue }
        values = Mutex(defaults)
    }

    public static func parameter(named name: String) -> Parameter? {
        let lower = name.lowercased()
        let canonical = aliases[lower] ?? lower
        return parameters.first { $0.name == canonical }
    }

    /// Parses `value` for `name` and returns the canonical form stored and reported by `CONFIG GET`.
    public static func normalize(_ name: String, _ value: String) throws(ConfigError) -> String {
        guard let p = parameter(named: name) else { throw ConfigError(parameter: name, reason: "unknown option") }
        switch p.kind {
        case .integer(let min, let max):
            guard let n = Int64(value) else { throw ConfigError(parameter: p.name, reason: "argument couldn't be parsed into an integer") }
            guard n >= min && n <= max else {
                throw ConfigError(parameter: p.name, reason: "argument must be between \(min) and \(max) inclusive")
            }
            if p.name == "hz" { return String(Swift.min(500, Swift.max(1, n))) }
            return String(n)
        case .memoryAtLeast(let least):
            guard let n = parseMemory(value) else { throw ConfigError(parameter: p.name, reason: "argument must be a memory value") }
            guard n >= least else {
                throw ConfigError(parameter: p.name, reason: "argument must be between \(least) and \(Int64.max) inclusive")
            }
            return String(n)
        case .memory:
            guard let n = parseMemory(value) else { throw ConfigError(parameter: p.name, reason: "argument must be a memory value") }
            return String(n)
        case .yesNo:
            switch value.lowercased() {
            case "yes": return "yes"
            case "no": return "no"
            default: throw ConfigError(parameter: p.name, reason: "argument must be 'yes' or 'no'")
            }
        case .oneOf(let options):
            guard options.contains(value.lowercased()) else {
                throw ConfigError(parameter: p.name, reason: "argument(s) must be one of the following: \(options.joined(separator: ", "))")
            }
            return value.lowercased()
        case .string, .list:
            return value
        case .outputBufferLimits:
            return try mergeOutputBufferLimits(p.defaultValue, value)
        }
    }

    /// Applies `client-output-buffer-limit` settings (`normal 1mb 256kb 10 pubsub …`) to `current`,
    /// all or none, with Redis's errors. - Returns: the value as `CONFIG GET` reports it.
    static func mergeOutputBufferLimits(_ current: String, _ value: String) throws(ConfigError) -> String {
        let name = "client-output-buffer-limit"
        var limits: [String: [Int64]] = [:]
        let old = current.split(separator: " ").map(String.init)
        for i in stride(from: 0, to: old.count - 3, by: 4) {
            limits[old[i]] = [Int64(old[i + 1]) ?? 0, Int64(old[i + 2]) ?? 0, Int64(old[i + 3]) ?? 0]
        }
        // Split on single spaces, as Redis does (so a doubled space is a wrong count there too).
        let parts = value.isEmpty ? [] : value.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard parts.count % 4 == 0 else {
            throw ConfigError(parameter: name, reason: "Wrong number of arguments in buffer limit configuration.")
        }
        for i in stride(from: 0, to: parts.count, by: 4) {
            let kind: String
            switch parts[i].lowercased() {
            case "normal": kind = "normal"
            case "replica", "slave": kind = "slave"
            case "pubsub": kind = "pubsub"
            default: throw ConfigError(parameter: name, reason: "Invalid client class specified in buffer limit configuration.")
            }
            let startsWithDigit: (String) -> Bool = { $0.first.map { $0 >= "0" && $0 <= "9" } ?? false }
            guard startsWithDigit(parts[i + 1]), startsWithDigit(parts[i + 2]), startsWithDigit(parts[i + 3]),
                  let hard = parseMemory(parts[i + 1]), let soft = parseMemory(parts[i + 2]),
                  let seconds = Int64(parts[i + 3]), seconds <= Int64(Int32.max) else {
                throw ConfigError(parameter: name, reason: "Error in hard, soft or soft_seconds setting in buffer limit configuration.")
            }
            limits[kind] = [hard, soft, seconds]
        }
        return ["normal", "slave", "pubsub"].map { kind in
            let l = limits[kind] ?? [0, 0, 0]
            return "\(kind) \(l[0]) \(l[1]) \(l[2])"
        }.joined(separator: " ")
    }

    /// A size with redis's units: `100`, `1k` (1000), `1kb` (1024), `5m`, `5mb`, `1g`, `1gb`.
    public static func parseMemory(_ text: String) -> Int64? {
        let lower = text.lowercased()
        let units: [(String, Int64)] = [
            ("kb", 1024), ("mb", 1024 * 1024), ("gb", 1024 * 1024 * 1024),
            ("k", 1000), ("m", 1_000_000), ("g", 1_000_000_000), ("b", 1),
        ]
        for (suffix, multiplier) in units where lower.hasSuffix(suffix) {
            guard let n = Int64(lower.dropLast(suffix.count)), n >= 0 else { return nil }
            let (product, overflow) = n.multipliedReportingOverflow(by: multiplier)
            return overflow ? nil : product
        }
        guard let n = Int64(lower), n >= 0 else { return nil }
        return n
    }

    /// Sets a parameter (at start-up any parameter; at run time only mutable ones).
    public func set(_ name: String, _ value: String, startup: Bool = false) throws(ConfigError) {
        guard let p = Self.parameter(named: name) else { throw ConfigError(parameter: name, reason: "unknown option") }
        if !startup && !p.mutable { throw ConfigError(parameter: p.name, reason: "can't set immutable config") }
        let canonical: String
        if case .outputBufferLimits = p.kind {
            // Merged into the current value (a setting may name only some classes).
            canonical = try Self.mergeOutputBufferLimits(self.get(p.name) ?? p.defaultValue, value)
        } else {
            canonical = try Self.normalize(p.name, value)
        }
        values.withLock { $0[p.name] = canonical }
        mirror(p.name, canonical)
        for handler in observers.withLock({ $0 }) { handler(p.name, canonical) }
    }

    private func mirror(_ name: String, _ value: String) {
        switch name {
        // A stored string is at most 4 GiB − 1 (its length is a 32-bit field of its record).
        case "proto-max-bulk-len": maxBulkLength.store(min(Int(value) ?? 0, Int(UInt32.max)), ordering: .relaxed)
        case "client-query-buffer-limit": queryBufferLimit.store(Int(value) ?? 0, ordering: .relaxed)
        case "maxclients": maxClients.store(Int(value) ?? 0, ordering: .relaxed)
        case "timeout": timeoutSeconds.store(Int(value) ?? 0, ordering: .relaxed)
        case "protected-mode": protectedMode.store(value == "yes", ordering: .relaxed)
        case "requirepass": passwordRequired.store(!value.isEmpty, ordering: .relaxed)
        case "busy-reply-threshold": busyReplyThreshold.store(Int64(value) ?? 5000, ordering: .relaxed)
        case "maxmemory": maxMemory.store(Int(value) ?? 0, ordering: .relaxed)
        case "maxmemory-policy": maxMemoryPolicy.store((EvictionPolicy(name: value) ?? .noeviction).rawValue, ordering: .relaxed)
        case "maxmemory-samples": maxMemorySamples.store(Int(value) ?? 5, ordering: .relaxed)
        case "maxmemory-protect-locks": protectLocks.store(value == "yes", ordering: .relaxed)
        case "client-output-buffer-limit":
            let parts = value.split(separator: " ")
            if parts.count >= 4, parts[0] == "normal" {
                normalOutputHard.store(Int(parts[1]) ?? 0, ordering: .relaxed)
                normalOutputSoft.store(Int(parts[2]) ?? 0, ordering: .relaxed)
                normalOutputSoftSeconds.store(Int(parts[3]) ?? 0, ordering: .relaxed)
            }
        default: break
        }
    }

    public func get(_ name: String) -> String? {
        let lower = name.lowercased()
        return values.withLock { $0[Self.aliases[lower] ?? lower] }
    }

    /// All parameters (and their aliases), in table order, with their current values.
    public func all() -> [(String, String)] {
        values.withLock { v in
            Self.parameters.map { ($0.name, v[$0.name] ?? "") } + Self.aliases.map { ($0.key, v[$0.value] ?? "") }
        }
    }

    public var requirePass: String { self.get("requirepass") ?? "" }
    /// What a cluster member proves itself with (`AUTH strongbox-peer <secret>`): `cluster-auth`,
    /// else `requirepass`; empty when neither is set.
    public var peerSecret: String {
        let own = self.get("cluster-auth") ?? ""
        return own.isEmpty ? requirePass : own
    }
    public func integer(_ name: String) -> Int { Int(self.get(name) ?? "") ?? 0 }

    /// A config file's line that could not be split (unbalanced quotes).
    public struct ConfigSyntaxError: Error, Sendable {
        public let line: Int
    }

    /// redis.conf syntax: one directive a line, `#` comments, arguments split with redis's
    /// quoting rules. - Returns: (line number, name, arguments) for each directive.
    public static func parseConfigText(_ text: [UInt8]) throws(ConfigSyntaxError) -> [(Int, String, [String])] {
        var result: [(Int, String, [String])] = []
        for (index, raw) in text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            let trimmed = raw.drop { $0 == 32 || $0 == 9 || $0 == 13 }
            if trimmed.isEmpty || trimmed.first == UInt8(ascii: "#") { continue }
            var line = Array(trimmed)
            while let last = line.last, last == 13 || last == 32 || last == 9 { line.removeLast() }
            guard let split = try? InlineSplitter.split(line) else { throw ConfigSyntaxError(line: index + 1) }
            let args = split.map { String(decoding: $0.readableBytesView, as: UTF8.self) }
            guard let name = args.first else { continue }
            result.append((index + 1, name, Array(args.dropFirst())))
        }
        return result
    }
}
