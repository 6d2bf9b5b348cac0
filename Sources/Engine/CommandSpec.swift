import NIOCore
import RESP

/// How a command is run: handlers validate first and write their reply only once nothing can fail.
public typealias CommandHandler = @Sendable (Engine, inout Invocation) throws(CommandError) -> Void

/// The facts of one command, as Redis's command table keeps them: the same source answers
/// `COMMAND INFO`, the arity check, the auth check and, later, routing by key.
public final class CommandSpec: Sendable {
    /// Lowercase name; for a subcommand the full `container|sub` form.
    public let name: String
    /// Positive: exactly that many arguments (with the name); negative: at least `-arity`.
    public let arity: Int
    public let flags: [String]
    public let firstKey: Int
    public let lastKey: Int
    public let keyStep: Int
    public let categories: [String]
    public let group: String
    public let since: String
    public let summary: String
    public let complexity: String
    /// redis-cli's argument hint, e.g. `key value [NX|XX] [GET]`.
    public let hint: String
    public let handler: CommandHandler?
    public let subcommands: [CommandSpec]
    /// How a cluster in proxy mode treats the command (worked out once, from the name and flags).
    public let clusterRole: ClusterRole
    /// Refused with `-OOM` when the memory limit cannot be met (Redis's `denyoom` flag).
    public let denyOOM: Bool
    /// May add data (writes and scripts): under a memory limit, eviction runs first.
    public let makesRoomFirst: Bool
    /// Locks shards for `WATCH` registrations (WATCH, UNWATCH, DISCARD, RESET): though
    /// `allow_busy`, it waits while a script holds the keyspace.
    public let touchesWatches: Bool
    /// Runs at once inside `MULTI` instead of being queued (EXEC, DISCARD, MULTI, WATCH, QUIT, RESET).
    public let runsInsideMulti: Bool

    public enum ClusterRole: Sendable {
        /// Keys at `firstKey…lastKey` (or none): runs where they live.
        case keyed
        /// `EVAL`-style: `numkeys` then the keys.
        case scriptKeys
        /// Runs on every member, replies merged (`DBSIZE`, `KEYS`, `FLUSHALL`).
        case everywhere(Forward.Merge)
        /// Multi-key, split by owner when the keys live apart (`MGET`, `MSET`, `DEL`…).
        case splittable(Forward.Merge)
        /// `SCAN`: one member at a time, the member folded into the cursor.
        case scan
        /// `WATCH`: registers on the node it runs on, so in proxy mode its keys must be this node's
        /// (a forwarded WATCH would land on a peer link that other clients share).
        case local
    }

    public init(
        _ name: String, arity: Int, flags: [String], keys: (Int, Int, Int) = (0, 0, 0),
        categories: [String], group: String, since: String, summary: String,
        complexity: String = "O(1)", hint: String = "",
        subcommands: [CommandSpec] = [],
        handler: CommandHandler?
    ) {
        self.name = name
        self.arity = arity
        self.flags = flags
        self.firstKey = keys.0
        self.lastKey = keys.1
        self.keyStep = keys.2
        self.categories = categories
        self.group = group
        self.since = since
        self.summary = summary
        self.complexity = complexity
        self.hint = hint
        self.subcommands = subcommands
        self.handler = handler
        if flags.contains("movablekeys"), name.hasPrefix("eval") || name.hasPrefix("fcall") {
            clusterRole = .scriptKeys
        } else if name == "scan" {
            clusterRole = .scan
        } else if name == "watch" {
            clusterRole = .local
        } else if let merge = ["dbsize": Forward.Merge.sum, "keys": .concat, "flushall": .ok, "flushdb": .ok,
                               "function|load": .same, "function|delete": .ok, "function|flush": .ok,
                               "function|restore": .ok][name] {
            clusterRole = .everywhere(merge)
        } else if let merge = ["mget": Forward.Merge.values, "mset": .ok, "del": .sum, "unlink": .sum, "exists": .sum, "touch": .sum][name] {
            clusterRole = .splittable(merge)
        } else {
            clusterRole = .keyed
        }
        denyOOM = flags.contains("denyoom")
        touchesWatches = ["watch", "unwatch", "discard", "reset"].contains(name)
        runsInsideMulti = ["exec", "discard", "multi", "watch", "quit", "reset"].contains(name)
        if case .scriptKeys = clusterRole {
            makesRoomFirst = true
        } else {
            makesRoomFirst = flags.contains("write")
        }
    }

    /// True for commands a client may run before authenticating.
    public var allowedWithoutAuth: Bool { flags.contains("no_auth") }

    /// Whether `argc` arguments (with the name) satisfy the arity.
    @inline(__always)
    public func acceptsArgumentCount(_ argc: Int) -> Bool {
        arity > 0 ? argc == arity : argc >= -arity
    }

    /// The subcommand of this container named by `name` (any case), or nil.
    public func subcommand(named name: ByteBuffer) -> CommandSpec? {
        subcommands.first { $0.shortName.utf8.elementsEqual(name.readableBytesView.lazy.map(Engine.lower)) }
    }

    /// The short name of a subcommand (`setname` of `client|setname`).
    public var shortName: String {
        if let bar = name.firstIndex(of: "|") { return String(name[name.index(after: bar)...]) }
        return name
    }
}

/// Case-insensitive lookup of command names straight from request bytes, without building a String.
public struct CommandTable: Sendable {
    public let specs: [CommandSpec]
    private let names: [[UInt8]]
    private var buckets: [[Int]]

    public init(_ specs: [CommandSpec]) {
        self.specs = specs
        self.names = specs.map { Array($0.shortName.utf8) }
        self.buckets = Array(repeating: [], count: 256)
        for (i, name) in names.enumerated() {
            buckets[Self.bucket(name)].append(i)
        }
    }

    @inline(__always)
    private static func lower(_ c: UInt8) -> UInt8 { (c >= 65 && c <= 90) ? c | 0x20 : c }

    @inline(__always)
    private static func bucket<C: Collection>(_ bytes: C) -> Int where C.Element == UInt8 {
        guard let first = bytes.first else { return 0 }
        var last = first
        for b in bytes { last = b }
        return (bytes.count &* 7 &+ Int(lower(first)) &* 3 &+ Int(lower(last))) & 255
    }

    /// The spec named by `name` (any case), or nil.
    @inline(__always)
    public func lookup(_ name: ByteBuffer) -> CommandSpec? {
        name.withUnsafeReadableBytes { bytes -> CommandSpec? in
            for i in buckets[Self.bucket(bytes)] {
                let candidate = names[i]
                guard candidate.count == bytes.count else { continue }
                var equal = true
                for j in 0..<bytes.count where Self.lower(bytes[j]) != candidate[j] {
                    equal = false
                    break
                }
                if equal { return specs[i] }
            }
            return nil
        }
    }
}
