import NIOCore
import RESP

/// What the server knows of one client connection that commands can read and change.
public struct Session: Sendable {
    public var id: UInt64
    public var protocolVersion: RESPVersion = .v2
    public var authenticated: Bool
    public var name: String = ""
    /// A connection from another cluster member forwarding a command: it runs here, not routed
    /// again (its keys must still be this node's). Set only by the peer handshake: `AUTH
    /// strongbox-peer <cluster secret>`, or — when no secret is configured (`cluster-auth`,
    /// else `requirepass`) — the client name `strongbox-peer`.
    public var isPeer = false
    public static let peerName = "strongbox-peer"
    public var libraryName: String = ""
    public var libraryVersion: String = ""
    public var noEvict = false
    /// Set by `QUIT` (and `CLIENT KILL` of oneself): close once the replies so far are written.
    public var closeAfterReply = false
    /// Commands queued by an open `MULTI`, or -1 outside one (`CLIENT LIST`'s `multi=`).
    public var queuedCommands = -1
    /// The name of the last command run (for `CLIENT LIST`'s `cmd=`).
    public var lastCommand: String = "NULL"
    /// When the client last sent a request, on the keyspace clock (for `CLIENT LIST`'s `idle=`).
    public var lastInteraction: Int64 = 0
    /// Commands run since the server last collected the count (for `total_commands_processed`).
    public var commandsSinceFlush: Int = 0
    public let address: String
    public let localAddress: String
    public let createdAt: Int64

    public init(id: UInt64, authenticated: Bool, address: String = "", localAddress: String = "", createdAt: Int64 = 0) {
        self.id = id
        self.authenticated = authenticated
        self.address = address
        self.localAddress = localAddress
        self.createdAt = createdAt
    }
}

/// How a command in proxy mode reaches the members that own its keys.
public enum Forward: Sendable {
    /// Run it whole on member `owner`, relay the reply.
    case whole(owner: Int)
    /// Split by owner: each part lists the argument positions of its keys (with their values for
    /// MSET); the parts' replies are merged as one node would answer.
    case split(parts: [(owner: Int, positions: [Int])], merge: Merge)
    /// Run it on every member (this one included) and merge the replies.
    case everywhere(Merge)
    /// `SCAN` over the whole cluster: the member whose keys the cursor is in, and its own cursor.
    /// The cluster cursor is `local × members + member`.
    case scan(member: Int, localCursor: UInt64)

    public enum Merge: Sendable {
        /// Integers added up (DEL, EXISTS, UNLINK, TOUCH, DBSIZE).
        case sum
        /// Values put back in key order (MGET).
        case values
        /// `OK` when every part said OK (MSET, FLUSHALL).
        case ok
        /// Arrays concatenated (KEYS).
        case concat
        /// Every member ran the same change (FUNCTION LOAD): the first error, else the first reply.
        case same
    }
}

/// One command being run: its arguments, the connection's session and the reply buffer.
///
/// The connection keeps one `Invocation` for its whole life and reuses it for every command,
/// so running a command allocates nothing here.
public struct Invocation: Sendable {
    /// `args[0]` is the command name as the client spelled it.
    public var args: [ByteBuffer]
    public var session: Session
    /// Replies are appended here; the connection writes and flushes it once per read batch.
    public var out: ByteBuffer
    /// The one frozen "now" of the command, on the keyspace clock.
    public var now: Int64 = 0
    /// Set by a connection that can run Lua off its event loop: `EVAL` and friends then do not
    /// run the Lua here but set `deferredScript`, and the connection runs the command again on
    /// the engine's script queue (`ScriptEngine.queue`), so no event loop ever blocks on a script.
    public var mayDeferScripts = false
    public var deferredScript = false
    /// Set (for a connection that may defer scripts) when the command must wait for another
    /// client's script: no reply was written; the connection runs the same command again when the
    /// script ends (`ScriptEngine.whenIdle`) or once `busy-reply-threshold` has passed (then `-BUSY`).
    public var waitingOnScript = false
    /// Set by a connection that can forward to cluster peers; in proxy mode the engine then sets
    /// `forward` for a command owned elsewhere (and writes no reply) instead of answering `-MOVED`.
    public var mayForward = false
    public var forward: Forward?

    /// `MULTI`: the transaction being queued, or nil (see `TransactionCommands`).
    public var transaction: Transaction? {
        didSet { session.queuedCommands = transaction?.commands.count ?? -1 }
    }
    /// `WATCH`: the keys watched, or nil.
    public var watching: Watching?
    /// Set while `EXEC` runs the queued commands.
    public var runningTransaction = false

    /// Reply bytes already complete, in order, that come before `out`: a reply too large for one
    /// buffer (a ByteBuffer's indexes are 32-bit) is cut into chunks. Empty in the common case.
    public var spilled: [ByteBuffer] = []
    /// Set by a caller that takes `spilled` (a connection writing its replies in order).
    public var maySpill = false
    /// Set when a reply outgrew what this caller can hold: the partial reply is dropped and the
    /// command answers an error instead.
    public var replyTooLarge = false
    /// Chunk size for `spilled`.
    public static let spillChunkBytes = 64 << 20
    /// The most a reply may take in one buffer when it cannot spill (well below 4 GiB).
    public static let maxReplyBytes = 3 << 30

    /// `client-output-buffer-limit`'s hard limit for this client (0: none). A reply that would
    /// take the client's unsent output past it is dropped and `outputLimitExceeded` set: the
    /// connection then closes the client, as Redis does.
    public private(set) var outputLimit = 0
    public var outputLimitExceeded = false
    /// Where `checkReplySize` leaves its fast path.
    private var replyCheckBytes = Self.spillChunkBytes

    /// What `client-output-buffer-limit` does not count: Redis's per-client 16 KiB reply buffer.
    public static let uncountedOutputBytes = 16 * 1024

    public mutating func setOutputLimit(_ bytes: Int) {
        outputLimit = max(0, bytes)
        replyCheckBytes = outputLimit > 0 ? min(outputLimit + Self.uncountedOutputBytes, Self.spillChunkBytes) : Self.spillChunkBytes
    }

    /// Called by commands that can build large replies (MGET, scripts) after each element:
    /// moves a full chunk to `spilled`, or stops a reply that would outgrow the buffer.
    @inline(__always)
    public mutating func checkReplySize() throws(CommandError) {
        if out.writerIndex < replyCheckBytes { return }
        try spill()
    }

    @inline(never)
    mutating func spill() throws(CommandError) {
        if outputLimit > 0 {
            let total = spilled.reduce(out.readableBytes) { $0 + $1.readableBytes } - Self.uncountedOutputBytes
            if total > outputLimit {
                outputLimitExceeded = true
                replyTooLarge = true
                throw CommandError("ERR reply exceeds client-output-buffer-limit")
            }
            if out.writerIndex < Self.spillChunkBytes { return }
        }
        if maySpill {
            spilled.append(out)
            out = ByteBuffer()
            out.reserveCapacity(64 * 1024)
        } else if out.writerIndex > Self.maxReplyBytes {
            replyTooLarge = true
            throw CommandError("ERR reply is too large (more than \(Self.maxReplyBytes >> 20) MiB)")
        }
    }

    public init(session: Session, out: ByteBuffer) {
        self.args = []
        self.session = session
        self.out = out
    }

    @inline(__always)
    public var version: RESPVersion { session.protocolVersion }

    @inline(__always)
    public var argc: Int { args.count }
}
