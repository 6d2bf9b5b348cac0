import Logging
import NIOCore
import NIOPosix
import RESP

/// Where a server listens.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String = "127.0.0.1", port: Int = 6379) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port`.
    public init?(_ address: String) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        var host = address[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard !host.isEmpty else { return nil }
        self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Receives relayed replies (see `StrongboxConnection.submitRaw(_:sink:tag:flush:)`).
public protocol ReplySink: AnyObject {
    func replyArrived(tag: Int, _ result: Result<ByteBuffer, StrongboxError>)
}

/// How one connection is set up.
public struct ConnectionConfiguration: Sendable {
    public var endpoint: Endpoint
    /// RESP2 (the default) or RESP3 (negotiated with `HELLO 3`).
    public var protocolVersion: RESPVersion = .v2
    /// For `AUTH`; `username` nil means the `default` user.
    public var username: String?
    public var password: String?
    /// Sent as `CLIENT SETNAME` (or in `HELLO`), shown by `CLIENT LIST`.
    public var clientName: String?
    public var connectTimeout: Duration = .seconds(5)
    /// How long a request may wait for its reply; nil waits for ever.
    public var commandTimeout: Duration? = .seconds(5)
    /// Check request deadlines with one timer per connection (every 50 ms) instead of a timer per
    /// request: cheaper for a connection carrying many requests (a server forwarding to a peer),
    /// at the price of up to 50 ms lateness.
    public var coarseTimeouts = false

    public init(endpoint: Endpoint) { self.endpoint = endpoint }
}

/// One TCP connection to a server that pipelines: requests may be sent from many tasks at once, and
/// replies are matched to them in FIFO order.
///
/// A request that times out fails with `StrongboxError.Code.timeout`; its late reply is dropped
/// when it arrives, so the requests behind it still get their own replies. When the connection
/// drops, every pending request fails with `.connectionClosed`.
public final class StrongboxConnection: Sendable {
    public let endpoint: Endpoint
    public let protocolVersion: RESPVersion
    let channel: any Channel
    private let commandTimeout: TimeAmount?
    /// `endpoint.description`, made once (errors name the node).
    private let node: String

    private init(channel: any Channel, endpoint: Endpoint, protocolVersion: RESPVersion, commandTimeout: TimeAmount?) {
        self.channel = channel
        self.endpoint = endpoint
        self.node = endpoint.description
        self.protocolVersion = protocolVersion
        self.commandTimeout = commandTimeout
    }

    /// Connects, then negotiates the protocol, authenticates and names the connection as configured.
    public static func connect(
        _ configuration: ConnectionConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        pushHandler: (@Sendable (RESPValue) -> Void)? = nil
    ) async throws(StrongboxError) -> StrongboxConnection {
        let node = configuration.endpoint.description
        let bootstrap = ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(.nanoseconds(Int64(configuration.connectTimeout.nanoseconds)))
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ClientHandler(node: node, protocolVersion: configuration.protocolVersion, pushHandler: pushHandler,
                                      coarseTimeouts: configuration.coarseTimeouts))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: configuration.endpoint.host, port: configuration.endpoint.port).get()
        } catch let error as ChannelError {
            if case .connectTimeout = error {
                throw StrongboxError(code: .timeout, message: "connect timed out after \(configuration.connectTimeout)", node: node)
            }
            throw StrongboxError(code: .connectFailed, message: "\(error)", node: node)
        } catch {
            throw StrongboxError(code: .connectFailed, message: "\(error)", node: node)
        }
        let connection = StrongboxConnection(
            channel: channel, endpoint: configuration.endpoint, protocolVersion: configuration.protocolVersion,
            commandTimeout: configuration.commandTimeout.map { .nanoseconds(Int64($0.nanoseconds)) })
        do {
            try await connection.handshake(configuration)
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    private func handshake(_ c: ConnectionConfiguration) async throws(StrongboxError) {
        if c.protocolVersion == .v3 {
            var args: [any RESPArgument] = ["HELLO", "3"]
            if let password = c.password { args += ["AUTH", c.username ?? "default", password] }
            if let name = c.clientName { args += ["SETNAME", name] }
            _ = try await send(.raw(args))
        } else {
            if let password = c.password {
                _ = try await send(.raw(c.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]))
            }
            if let name = c.clientName { _ = try await send(.raw(["CLIENT", "SETNAME", name])) }
        }
    }

    /// True until the connection closes.
    public var isConnected: Bool { channel.isActive }

    /// Sends one command and decodes its reply. An error reply is thrown; `EVALSHA` of a `Script`
    /// that the server does not know is loaded and retried once.
    @discardableResult
    public func send<Reply>(_ command: Command<Reply>) async throws(StrongboxError) -> Reply {
        let value = try await roundTrip(command.arguments)
        if case .error(let message) = value {
            let error = StrongboxError(serverMessage: message, node: node)
            if error.code == .noScript, let script = command.script {
                _ = try await send(.scriptLoad(script.source))
                return try await send(Command(buffers: command.arguments, keyIndices: command.keyIndices, split: command.split,
                                              script: nil, decode: command.decode))
            }
            throw error
        }
        do {
            return try command.decode(value)
        } catch {
            throw error.on(node)
        }
    }

    /// Sends any command given as its words; the reply as a RESP value (error replies are thrown).
    @discardableResult
    public func send(_ arguments: any RESPArgument...) async throws(StrongboxError) -> RESPValue {
        try await send(.raw(arguments))
    }

    /// Sends several commands in one write and returns each reply (or error reply) in order.
    /// Error replies are `.failure` values here, not thrown, so one failing command does not hide the others.
    /// - Parameter timeout: how long to wait for the replies (the configured command timeout when nil).
    public func pipeline(_ commands: [Command<RESPValue>], timeout: Duration? = nil) async -> [Result<RESPValue, StrongboxError>] {
        let promises = commands.map { _ in channel.eventLoop.makePromise(of: RESPValue.self) }
        let limit = limit(timeout)
        let batch = zip(commands, promises).map { ClientHandler.Request(arguments: $0.arguments, promise: $1, timeout: limit) }
        write(batch)
        var results: [Result<RESPValue, StrongboxError>] = []
        results.reserveCapacity(commands.count)
        for (command, promise) in zip(commands, promises) {
            do {
                let value = try await promise.futureResult.get()
                if case .error(let message) = value {
                    results.append(.failure(StrongboxError(serverMessage: message, node: node)))
                } else {
                    results.append(Result { () throws(StrongboxError) in try command.decode(value) })
                }
            } catch {
                results.append(.failure(Self.mapped(error, node: node)))
            }
        }
        return results
    }

    /// The event loop the connection runs on.
    public var eventLoop: any EventLoop { channel.eventLoop }

    /// Sends one request without waiting: the future completes (on `eventLoop`) with the reply as
    /// it came, error replies included. For callers living on event loops (a server forwarding to
    /// its peers); `timeout` nil uses the configured command timeout.
    /// With `flush: false` the request waits in the channel until `flush()`, so a caller that
    /// submits many (a whole pipeline) pays for one write.
    public func submit(_ arguments: [ByteBuffer], timeout: Duration? = nil, flush: Bool = true) -> EventLoopFuture<RESPValue> {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        write([.init(arguments: arguments, promise: promise, timeout: limit(timeout))], flush: flush)
        return promise.futureResult
    }

    /// Sends one request without waiting; the reply, as the exact bytes the server sent (or the
    /// failure), is handed to `sink` on this connection's loop with `tag`, exactly once — for
    /// servers relaying many replies without a future each.
    public func submitRaw(_ arguments: [ByteBuffer], sink: NIOLoopBound<any ReplySink>, tag: Int, flush: Bool = true) {
        write([.init(arguments: arguments, sink: sink, tag: tag, timeout: commandTimeout)], flush: flush)
    }

    /// Sends a batch of relayed requests, already encoded, in one write (see `RelayBatch`).
    public func submit(_ batch: RelayBatch, flush: Bool = true) {
        guard !batch.isEmpty, let bytes = batch.bytes else { return }
        write(.encoded(bytes, replies: batch.replies, timeout: commandTimeout), flush: flush)
    }

    /// Writes out requests submitted with `flush: false`.
    public func flush() { channel.flush() }

    /// A per-call timeout, or the configured one.
    private func limit(_ timeout: Duration?) -> TimeAmount? {
        timeout.map { TimeAmount.nanoseconds(max(1, $0.nanoseconds)) } ?? commandTimeout
    }

    /// One request, its reply as it came (error replies included).
    func roundTrip(_ arguments: [ByteBuffer]) async throws(StrongboxError) -> RESPValue {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        write([.init(arguments: arguments, promise: promise, timeout: commandTimeout)])
        do {
            return try await promise.futureResult.get()
        } catch {
            throw Self.mapped(error, node: node)
        }
    }

    /// Writes requests; if the write cannot happen (the channel is closed), their replies fail.
    private func write(_ requests: [ClientHandler.Request], flush: Bool = true) {
        write(.requests(requests), flush: flush)
    }

    private func write(_ outbound: ClientHandler.Outbound, flush: Bool) {
        let node = self.node
        let written = flush ? channel.writeAndFlush(outbound) : channel.write(outbound)
        written.whenFailure { error in outbound.fail(Self.mapped(error, node: node)) }
    }

    static func mapped(_ error: any Error, node: String) -> StrongboxError {
        if let e = error as? StrongboxError { return e.on(node) }
        if let e = error as? ChannelError, case .ioOnClosedChannel = e {
            return StrongboxError(code: .connectionClosed, message: "the connection is closed", node: node)
        }
        return StrongboxError(code: .connectionClosed, message: "\(error)", node: node)
    }

    /// Closes the connection; pending requests fail with `.connectionClosed`.
    public func close() async {
        try? await channel.close()
    }

    /// A future that completes when the connection has closed.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }
}

/// Requests to relay over one connection, encoded into one buffer as they are added, each with
/// where its reply goes (a `ReplySink` and a tag): a server forwarding many clients' commands
/// to a peer fills one per loop turn and hands it over in a single write, with no argument
/// array kept and no future, promise or buffer per request.
public struct RelayBatch: Sendable {
    private let allocator: ByteBufferAllocator
    private let capacity: Int
    /// Made on the first append (an empty batch costs no buffer).
    private(set) var bytes: ByteBuffer?
    var replies: [ClientHandler.ReplyPromise] = []

    public init(allocator: ByteBufferAllocator = ByteBufferAllocator(), capacity: Int = 4096) {
        self.allocator = allocator
        self.capacity = capacity
    }

    public var isEmpty: Bool { replies.isEmpty }

    /// Tells every reply's sink that `error` happened instead (the batch was never written).
    public func fail(_ error: StrongboxError) {
        for r in replies { r.fail(error) }
    }

    /// Encodes `arguments` as a request; its reply (the exact bytes) will go to `sink` with `tag`.
    public mutating func append(_ arguments: [ByteBuffer], sink: NIOLoopBound<any ReplySink>, tag: Int) {
        if bytes == nil { bytes = allocator.buffer(capacity: capacity) }
        bytes!.writeRequest(arguments)
        replies.append(.sink(sink, tag))
    }
}

/// Encodes requests, keeps their promises in send order and completes them as replies arrive.
final class ClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Outbound
    typealias OutboundOut = ByteBuffer

    struct Request: Sendable {
        let arguments: [ByteBuffer]
        let reply: ReplyPromise
        let timeout: TimeAmount?

        init(arguments: [ByteBuffer], promise: EventLoopPromise<RESPValue>, timeout: TimeAmount?) {
            self.arguments = arguments
            self.reply = .value(promise)
            self.timeout = timeout
        }

        init(arguments: [ByteBuffer], sink: NIOLoopBound<any ReplySink>, tag: Int, timeout: TimeAmount?) {
            self.arguments = arguments
            self.reply = .sink(sink, tag)
            self.timeout = timeout
        }
    }

    /// A request wants its reply decoded, or as the exact bytes the server sent.
    enum ReplyPromise: Sendable {
        case value(EventLoopPromise<RESPValue>)
        /// The reply's bytes go straight to an object on the connection's loop (no promise, no closure).
        case sink(NIOLoopBound<any ReplySink>, Int)

        func fail(_ error: any Error) {
            switch self {
            case .value(let p): p.fail(error)
            case .sink(let s, let tag):
                let e = error as? StrongboxError ?? StrongboxError(code: .connectionClosed, message: "\(error)")
                s.value.replyArrived(tag: tag, .failure(e))
            }
        }

    }

    /// One write's worth of requests: to encode, or already encoded with where their replies go.
    enum Outbound: Sendable {
        case requests([Request])
        case encoded(ByteBuffer, replies: [ReplyPromise], timeout: TimeAmount?)

        func fail(_ error: any Error) {
            switch self {
            case .requests(let requests): for r in requests { r.reply.fail(error) }
            case .encoded(_, let replies, _): for r in replies { r.fail(error) }
            }
        }
    }

    private struct Pending {
        let promise: ReplyPromise
        let timer: Scheduled<Void>?
        /// With coarse timeouts: when the request gives up.
        let deadline: NIODeadline?
    }

    private let node: String
    private let protocolVersion: RESPVersion
    private let pushHandler: (@Sendable (RESPValue) -> Void)?
    private var pending = CircularBuffer<Pending>()
    private var inbound: ByteBuffer?
    private let decoder = RESPValueDecoder()
    private var closed = false

    private let coarseTimeouts: Bool
    private var sweeper: RepeatedTask?
    /// With coarse timeouts: requests before this index have been failed already.
    private var expiredPrefix = 0

    init(node: String, protocolVersion: RESPVersion, pushHandler: (@Sendable (RESPValue) -> Void)?, coarseTimeouts: Bool = false) {
        self.node = node
        self.protocolVersion = protocolVersion
        self.pushHandler = pushHandler
        self.coarseTimeouts = coarseTimeouts
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard coarseTimeouts else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        sweeper = context.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(50), delay: .milliseconds(50)) { _ in
            bound.value.failExpired()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        sweeper?.cancel()
        sweeper = nil
    }

    /// Fails the requests whose deadline has passed (they stay queued: their late replies are dropped).
    private func failExpired() {
        let now = NIODeadline.now()
        while expiredPrefix < pending.count {
            let p = pending[pending.index(pending.startIndex, offsetBy: expiredPrefix)]
            guard let deadline = p.deadline, deadline <= now else { break }
            p.promise.fail(StrongboxError(code: .timeout, message: "no reply in time", node: node))
            expiredPrefix += 1
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let outbound = unwrapOutboundIn(data)
        if closed {
            let error = StrongboxError(code: .connectionClosed, message: "the connection is closed", node: node)
            outbound.fail(error)
            promise?.fail(error)
            return
        }
        switch outbound {
        case .encoded(let bytes, let replies, let timeout):
            // A relay batch, its bytes as they are.
            let now = NIODeadline.now()
            for r in replies { track(r, timeout: timeout, now: now, context: context) }
            context.write(wrapOutboundOut(bytes), promise: promise)
        case .requests(let requests):
            var size = 0
            for r in requests { size += 16 + r.arguments.reduce(0) { $0 + $1.readableBytes + 16 } }
            var buffer = context.channel.allocator.buffer(capacity: size)
            let now = NIODeadline.now()
            for r in requests {
                buffer.writeRequest(r.arguments)
                track(r.reply, timeout: r.timeout, now: now, context: context)
            }
            context.write(wrapOutboundOut(buffer), promise: promise)
        }
    }

    /// Queues a written request's reply, with its timeout: a deadline the sweeper checks (coarse
    /// timeouts) or a timer of its own.
    private func track(_ reply: ReplyPromise, timeout: TimeAmount?, now: NIODeadline, context: ChannelHandlerContext) {
        var timer: Scheduled<Void>?
        var deadline: NIODeadline?
        if let timeout, coarseTimeouts {
            deadline = now + timeout
        } else if let timeout {
            let node = self.node
            timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
                // The reply may still come; it is dropped then (a completed promise ignores it).
                reply.fail(StrongboxError(code: .timeout, message: "no reply within \(timeout)", node: node))
            }
        }
        pending.append(Pending(promise: reply, timer: timer, deadline: deadline))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if inbound == nil || inbound!.readableBytes == 0 {
            inbound = bytes
        } else {
            var b = bytes
            inbound!.writeBuffer(&b)
        }
        while true {
            if case .sink(let sink, let tag)? = pending.first?.promise,
               !(protocolVersion == .v3 && inbound!.readableBytesView.first == UInt8(ascii: ">")) {
                // Relayed byte for byte: find where the reply ends, hand over that slice.
                let length: Int?
                do {
                    length = try RESPFrameScanner.frameLength(inbound!)
                } catch {
                    fail(context: context, StrongboxError(code: .protocolError, message: "\(error)", node: node))
                    return
                }
                guard let length else { break }
                let bytes = inbound!.readSlice(length: length)!
                pending.removeFirst().timer?.cancel()
                if expiredPrefix > 0 {
                    // Already failed by its timeout: the late reply is dropped.
                    expiredPrefix -= 1
                } else {
                    sink.value.replyArrived(tag: tag, .success(bytes))
                }
                continue
            }
            let value: RESPValue?
            do {
                value = try decoder.next(from: &inbound!)
            } catch {
                fail(context: context, StrongboxError(code: .protocolError, message: "\(error)", node: node))
                return
            }
            guard let value else { break }
            if case .push = value, protocolVersion == .v3 {
                pushHandler?(value)
                continue
            }
            // (A relayed request at the head took the branch above: here the head wants a value.)
            guard let first = pending.popFirst(), case .value(let promise) = first.promise else {
                fail(context: context, StrongboxError(code: .protocolError, message: "a reply nobody asked for: \(value)", node: node))
                return
            }
            first.timer?.cancel()
            if expiredPrefix > 0 { expiredPrefix -= 1 }
            promise.succeed(value)
        }
        if inbound!.readableBytes == 0 { inbound!.clear() } else { inbound!.discardReadBytes() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failPending(StrongboxError(code: .connectionClosed, message: "the connection closed", node: node))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context: context, StrongboxError(code: .connectionClosed, message: "\(error)", node: node))
    }

    private func fail(context: ChannelHandlerContext, _ error: StrongboxError) {
        failPending(error)
        context.close(promise: nil)
    }

    private func failPending(_ error: StrongboxError) {
        closed = true
        expiredPrefix = 0
        while let p = pending.popFirst() {
            p.timer?.cancel()
            p.promise.fail(error)
        }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
