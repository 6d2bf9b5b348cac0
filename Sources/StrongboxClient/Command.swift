import NIOCore
import RESP

/// One command: its arguments, which of them are keys, and how its reply becomes a Swift value.
///
/// The typed constructors (`.get("k")`, `.set("k", "v", condition: .ifNotExists, expiration: .milliseconds(30_000))`,
/// `.delIfEqual("lock", token)`…) carry their reply type, so `try await client.send(.incr("n"))` is an `Int`.
/// Anything else goes through `Command.raw([...])`, whose reply is the `RESPValue` itself.
/// Error replies never reach `decode`: they are thrown as `StrongboxError`.
public struct Command<Reply: Sendable>: Sendable {
    /// The command name and its arguments, as sent.
    public let arguments: [ByteBuffer]
    /// Positions in `arguments` that are keys (what routing hashes).
    public let keyIndices: [Int]
    let decode: @Sendable (RESPValue) throws(StrongboxError) -> Reply
    let split: SplitKind
    /// Set for `EVALSHA` of a known script: the client loads it and retries on `NOSCRIPT`.
    let script: Script?

    public init(
        _ arguments: [any RESPArgument], keyIndices: [Int] = [],
        decode: @escaping @Sendable (RESPValue) throws(StrongboxError) -> Reply
    ) {
        self.init(buffers: encodeArguments(arguments), keyIndices: keyIndices, split: .none, decode: decode)
    }

    init(buffers: [ByteBuffer], keyIndices: [Int], split: SplitKind, script: Script? = nil,
         decode: @escaping @Sendable (RESPValue) throws(StrongboxError) -> Reply) {
        self.arguments = buffers
        self.keyIndices = keyIndices
        self.split = split
        self.script = script
        self.decode = decode
    }

    /// The keys this command touches.
    public var keys: [ByteBuffer] { keyIndices.map { arguments[$0] } }

    /// The command name, upper-cased.
    public var name: String { arguments.first.map { $0.text.uppercased() } ?? "" }

    /// Decodes a (non-error) reply into this command's reply type.
    public func decodeReply(_ value: RESPValue) throws(StrongboxError) -> Reply { try decode(value) }

    /// The same request with a reply decoded differently.
    func mapped<Other: Sendable>(_ decode: @escaping @Sendable (RESPValue) throws(StrongboxError) -> Other) -> Command<Other> {
        Command<Other>(buffers: arguments, keyIndices: keyIndices, split: split, script: script, decode: decode)
    }
}

/// How a multi-key command can be split across nodes by the cluster client.
enum SplitKind: Sendable {
    /// One node must run it whole.
    case none
    /// Every argument after the name is a key; the reply is the sum of the parts (DEL, UNLINK, EXISTS, TOUCH).
    case sumOfKeys
    /// Every argument after the name is a key; the reply is the values in argument order (MGET).
    case valuesOfKeys
    /// Key/value pairs after the name; the reply is OK (MSET).
    case pairs
}

// MARK: - Reply decoders

public enum ReplyDecoders {
    @Sendable public static func ok(_ v: RESPValue) throws(StrongboxError) {
        guard case .simpleString = v else { throw .unexpected(v, "OK") }
    }

    @Sendable public static func int(_ v: RESPValue) throws(StrongboxError) -> Int {
        guard case .integer(let n) = v else { throw .unexpected(v, "an integer") }
        return Int(n)
    }

    /// An integer 1/0 (or a RESP3 boolean) as a Bool.
    @Sendable public static func bool(_ v: RESPValue) throws(StrongboxError) -> Bool {
        switch v {
        case .integer(let n): return n != 0
        case .boolean(let b): return b
        default: throw .unexpected(v, "an integer 0 or 1")
        }
    }

    /// `OK` as true, a null as false (SET with NX/XX/IFEQ).
    @Sendable public static func okOrNull(_ v: RESPValue) throws(StrongboxError) -> Bool {
        switch v {
        case .simpleString: return true
        case .null, .nullArray: return false
        default: throw .unexpected(v, "OK or null")
        }
    }

    @Sendable public static func optionalBulk(_ v: RESPValue) throws(StrongboxError) -> ByteBuffer? {
        switch v {
        case .bulkString(let b): return b
        case .null, .nullArray: return nil
        case .simpleString(let s): return ByteBuffer(string: s)
        case .verbatim(_, let text): return ByteBuffer(string: text)
        default: throw .unexpected(v, "a bulk string or null")
        }
    }

    @Sendable public static func bulk(_ v: RESPValue) throws(StrongboxError) -> ByteBuffer {
        guard let b = try optionalBulk(v) else { throw .unexpected(v, "a bulk string") }
        return b
    }

    @Sendable public static func string(_ v: RESPValue) throws(StrongboxError) -> String {
        try bulk(v).text
    }

    @Sendable public static func optionalString(_ v: RESPValue) throws(StrongboxError) -> String? {
        try optionalBulk(v)?.text
    }

    @Sendable public static func double(_ v: RESPValue) throws(StrongboxError) -> Double {
        if case .double(let d) = v { return d }
        let text = try string(v)
        guard let d = Double(text) else { throw .unexpected(v, "a number") }
        return d
    }

    @Sendable public static func optionalBulks(_ v: RESPValue) throws(StrongboxError) -> [ByteBuffer?] {
        switch v {
        case .array(let items), .set(let items):
            var out: [ByteBuffer?] = []
            out.reserveCapacity(items.count)
            for item in items { out.append(try optionalBulk(item)) }
            return out
        default: throw .unexpected(v, "an array")
        }
    }

    @Sendable public static func bulks(_ v: RESPValue) throws(StrongboxError) -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        for item in try optionalBulks(v) {
            guard let item else { throw .unexpected(v, "an array of bulk strings") }
            out.append(item)
        }
        return out
    }

    @Sendable public static func raw(_ v: RESPValue) throws(StrongboxError) -> RESPValue { v }
}

// MARK: - Options

/// When a `SET` writes.
public enum SetCondition: Sendable, Hashable {
    case always
    /// `NX`: only when the key does not exist (how a lock is taken).
    case ifNotExists
    /// `XX`: only when the key exists.
    case ifExists
    /// `IFEQ value` (Redis 8.4, Strongbox): only when the current value equals `value`.
    case ifEqual(String)
    /// `IFNE value`: only when the key is missing or its value differs.
    case ifNotEqual(String)
}

/// The expiry a write sets.
public enum Expiration: Sendable, Hashable {
    case seconds(Int)
    case milliseconds(Int)
    case unixSeconds(Int)
    case unixMilliseconds(Int)
    /// `KEEPTTL`: keep the key's current TTL.
    case keepTTL

    var arguments: [any RESPArgument] {
        switch self {
        case .seconds(let n): return ["EX", n]
        case .milliseconds(let n): return ["PX", n]
        case .unixSeconds(let n): return ["EXAT", n]
        case .unixMilliseconds(let n): return ["PXAT", n]
        case .keepTTL: return ["KEEPTTL"]
        }
    }
}

/// The `NX|XX|GT|LT` options of `EXPIRE` and its siblings.
public enum ExpireCondition: String, Sendable {
    case ifNoTTL = "NX", ifHasTTL = "XX", ifGreater = "GT", ifLess = "LT"
}

extension SetCondition {
    var arguments: [any RESPArgument] {
        switch self {
        case .always: return []
        case .ifNotExists: return ["NX"]
        case .ifExists: return ["XX"]
        case .ifEqual(let v): return ["IFEQ", v]
        case .ifNotEqual(let v): return ["IFNE", v]
        }
    }
}

// MARK: - Raw

extension Command where Reply == RESPValue {
    /// Any command; the reply is the decoded RESP value (error replies are still thrown).
    /// - Parameter keyIndices: positions of keys in `arguments`, for routing in a cluster.
    public static func raw(_ arguments: [any RESPArgument], keyIndices: [Int] = []) -> Command {
        Command(arguments, keyIndices: keyIndices, decode: ReplyDecoders.raw)
    }
}
