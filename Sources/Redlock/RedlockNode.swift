import NIOCore
import RESP
import StrongboxClient
import Synchronization

/// One independent lock node: any Redis-protocol server, reached through a `StrongboxClient`.
///
/// On first use the node is probed once for the native compare-and-delete (`DELIFEQ`) and
/// compare-and-extend (`PEXPIRE … IFEQ`) commands; where they are missing the standard Lua scripts
/// do the same job (Redis 7, for example, gets `EVALSHA`).
public final class RedlockNode: Sendable {
    public let client: StrongboxClient
    public var endpoint: Endpoint { client.endpoint }

    struct Capabilities: Sendable {
        var nativeRelease: Bool
        var nativeExtend: Bool
    }

    private let capabilities = Mutex<Capabilities?>(nil)

    public init(client: StrongboxClient) {
        self.client = client
    }

    public convenience init(endpoint: Endpoint) {
        self.init(client: StrongboxClient(endpoint: endpoint))
    }

    static let releaseScript = Script("""
        if redis.call("get",KEYS[1]) == ARGV[1] then
            return redis.call("del",KEYS[1])
        else
            return 0
        end
        """)

    static let extendScript = Script("""
        if redis.call("get",KEYS[1]) == ARGV[1] then
            return redis.call("pexpire",KEYS[1],ARGV[2])
        else
            return 0
        end
        """)

    /// Which native commands this node has (probed once, with a key nobody uses).
    func detectCapabilities(timeout: Duration) async throws(StrongboxError) -> Capabilities {
        if let known = capabilities.withLock({ $0 }) { return known }
        let probeKey = "__redlock_probe__:\(UInt64.random(in: 0...UInt64.max))"
        let replies = try await client.pipeline([
            .raw(["DELIFEQ", probeKey, "x"]),
            .raw(["PEXPIRE", probeKey, "1000", "IFEQ", "x"]),
        ], timeout: timeout)
        func native(_ r: Result<RESPValue, StrongboxError>) throws(StrongboxError) -> Bool {
            switch r {
            case .success(.integer): return true
            case .success(let v): throw StrongboxError(code: .unexpectedReply, message: "probe answered \(v)", node: endpoint.description)
            case .failure(let e) where e.isServerError: return false
            case .failure(let e): throw e
            }
        }
        let found = Capabilities(nativeRelease: try native(replies[0]), nativeExtend: try native(replies[1]))
        capabilities.withLock { $0 = found }
        return found
    }

    /// Whether the node was found to have the native commands (nil before the first probe).
    public var usesNativeCommands: (release: Bool, extend: Bool)? {
        capabilities.withLock { $0.map { ($0.nativeRelease, $0.nativeExtend) } }
    }

    /// `SET name token NX PX ttl` for every name, in one pipeline.
    func tryLock(_ names: [String], token: [UInt8], ttlMilliseconds: Int, timeout: Duration) async -> NodeOutcome.Result {
        let commands: [Command<RESPValue>] = names.map { .raw(["SET", $0, token, "NX", "PX", ttlMilliseconds]) }
        let replies: [Result<RESPValue, StrongboxError>]
        do {
            replies = try await client.pipeline(commands, timeout: timeout)
        } catch {
            return Self.outcome(error)
        }
        var held = false
        for reply in replies {
            switch reply {
            case .success(.simpleString): continue
            case .success(.null), .success(.nullArray): held = true
            case .success(let v):
                return .failed(StrongboxError(code: .unexpectedReply, message: "SET NX answered \(v)", node: endpoint.description))
            case .failure(let e): return Self.outcome(e)
            }
        }
        return held ? .heldByAnother : .granted
    }

    /// A client-side timeout is the node not answering in time; anything else is its error.
    static func outcome(_ error: StrongboxError) -> NodeOutcome.Result {
        error.code == .timeout ? .timedOut : .failed(error)
    }

    /// Deletes every name that still holds `token`. True when all of them did.
    func release(_ names: [String], token: [UInt8], timeout: Duration) async -> NodeOutcome.Result {
        let deadline = ContinuousClock.now + timeout
        do {
            let native = try await detectCapabilities(timeout: timeout).nativeRelease
            let commands: [Command<RESPValue>] = names.map { name in
                native ? .raw(["DELIFEQ", name, token]) : .evalSHA(Self.releaseScript, keys: [name], arguments: [token])
            }
            return try await runAll(commands, scripts: native ? [] : [Self.releaseScript], deadline: deadline)
        } catch {
            return Self.outcome(error)
        }
    }

    /// Sets the TTL of every name that still holds `token`. Granted when all of them did.
    func extend(_ names: [String], token: [UInt8], ttlMilliseconds: Int, timeout: Duration) async -> NodeOutcome.Result {
        let deadline = ContinuousClock.now + timeout
        do {
            let native = try await detectCapabilities(timeout: timeout).nativeExtend
            let commands: [Command<RESPValue>] = names.map { name in
                native ? .raw(["PEXPIRE", name, ttlMilliseconds, "IFEQ", token])
                    : .evalSHA(Self.extendScript, keys: [name], arguments: [token, ttlMilliseconds])
            }
            return try await runAll(commands, scripts: native ? [] : [Self.extendScript], deadline: deadline)
        } catch {
            return Self.outcome(error)
        }
    }

    /// Pipelines commands answering 1 (done) or 0 (not ours); loads scripts once on NOSCRIPT.
    private func runAll(_ commands: [Command<RESPValue>], scripts: [Script],
                        deadline: ContinuousClock.Instant) async throws(StrongboxError) -> NodeOutcome.Result {
        var replies = try await client.pipeline(commands, timeout: deadline - .now)
        if replies.contains(where: { if case .failure(let e) = $0 { return e.code == .noScript } else { return false } }) {
            _ = try await client.pipeline(scripts.map { .raw(["SCRIPT", "LOAD", $0.source]) }, timeout: deadline - .now)
            replies = try await client.pipeline(commands, timeout: deadline - .now)
        }
        var all = true
        for reply in replies {
            switch reply {
            case .success(.integer(let n)): if n == 0 { all = false }
            case .success(let v):
                return .failed(StrongboxError(code: .unexpectedReply, message: "expected 0 or 1, got \(v)", node: endpoint.description))
            case .failure(let e): return Self.outcome(e)
            }
        }
        return all ? .granted : .heldByAnother
    }
}
