import Engine
import Logging
import NIOCore
import RESP

/// One client connection: decodes requests from the bytes it reads, runs each against the engine,
/// appends each reply to one outbound buffer and writes and flushes that buffer once per read batch.
///
/// Replies leave in request order because every command of a batch runs in order on this
/// connection's event loop. Reading pauses while the socket cannot take more output, so a client
/// that does not read its replies cannot make the server buffer without bound.
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Replies larger than this are not kept for reuse: the next batch starts with a fresh buffer.
    private static let retainedOutputCapacity = 64 * 1024
    /// Pending reply bytes at which a batch is written out early, and paused if the socket is full.
    private static let outputFlushThreshold = 256 * 1024

    private let engine: Engine
    private let registry: ClientRegistry
    private let logger: Logger
    // The per-command state lives behind pointers: reaching it through class stored properties
    // would cost a dynamic exclusivity check on every command.
    private let decoderState: UnsafeMutablePointer<RESPRequestDecoder>
    private let invocationState: UnsafeMutablePointer<Invocation>
    private var cumulation: ByteBuffer?
    private var closing = false
    private var readPending = false
    /// Command processing waits for the socket to drain (a client not reading big replies).
    private var processingPaused = false
    private var record: ClientRegistry.Record?
    /// A Lua script of this connection runs on the script queue; its later requests wait.
    private var awaitingScript = false

    init(engine: Engine, registry: ClientRegistry, session: Session, allocator: ByteBufferAllocator, logger: Logger) {
        self.engine = engine
        self.registry = registry
        self.logger = logger
        var limits = RESPLimits()
        limits.maxBulkLength = engine.config.maxBulkLength.load(ordering: .relaxed)
        limits.queryBufferLimit = engine.config.queryBufferLimit.load(ordering: .relaxed)
        var decoder = RESPRequestDecoder(limits: limits)
        decoder.unauthenticated = !session.authenticated
        decoderState = .allocate(capacity: 1)
        decoderState.initialize(to: decoder)
        invocationState = .allocate(capacity: 1)
        var invocation = Invocation(session: session, out: allocator.buffer(capacity: 1024))
        invocation.mayDeferScripts = true
        invocationState.initialize(to: invocation)
    }

    deinit {
        decoderState.deinitialize(count: 1)
        decoderState.deallocate()
        invocationState.deinitialize(count: 1)
        invocationState.deallocate()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        switch registry.admit(invocationState.pointee.session, channel: context.channel) {
        case .success(let record):
            self.record = record
        case .failure(let refusal):
            invocationState.pointee.out.writeRESPError(refusal.message)
            closing = true
            context.writeAndFlush(wrapOutboundOut(invocationState.pointee.out)).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if let record {
            publish(to: record)
            registry.remove(id: invocationState.pointee.session.id)
        }
    }

    /// Hands the registry this batch's command count and a fresh copy of the session.
    private func publish(to record: ClientRegistry.Record) {
        let processed = invocationState.pointee.session.commandsSinceFlush
        guard processed > 0 else { return }
        invocationState.pointee.session.commandsSinceFlush = 0
        record.commands.add(processed, ordering: .relaxed)
        let session = invocationState.pointee.session
        record.snapshot.withLock { $0 = session }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        var incoming = unwrapInboundIn(data)
        if cumulation == nil || cumulation!.readableBytes == 0 {
            cumulation = incoming
        } else {
            cumulation!.writeBuffer(&incoming)
        }
        if !processingPaused && !awaitingScript { process(context: context) }
    }

    private func process(context: ChannelHandlerContext) {
        guard var buffer = cumulation else { return }
        cumulation = nil
        let decoder = decoderState, inv = invocationState
        inv.pointee.session.lastInteraction = engine.keyspace.clock.now()
        do {
            while try decoder.pointee.next(from: &buffer, into: &inv.pointee.args) {
                engine.execute(&inv.pointee)
                if inv.pointee.deferredScript {
                    inv.pointee.deferredScript = false
                    runScript(context: context)
                    break
                }
                // AUTH (or RESET) changes which request limits apply to the very next request.
                decoder.pointee.unauthenticated = !inv.pointee.session.authenticated
                if inv.pointee.session.closeAfterReply {
                    closing = true
                    break
                }
                // Bound what one batch can buffer: a small pipeline of large GETs must not
                // build gigabytes of replies. Write early, and wait while the socket is full.
                if inv.pointee.out.readableBytes >= Self.outputFlushThreshold {
                    flushReplies(context: context)
                    if !context.channel.isWritable {
                        processingPaused = true
                        break
                    }
                }
            }
        } catch {
            engine.stats.protocolErrors.add(1, ordering: .relaxed)
            if let message = error.message { invocationState.pointee.out.writeRESPError(message) }
            logger.debug("protocol error", metadata: ["sb.connection.id": "\(invocationState.pointee.session.id)", "sb.error": "\(error)"])
            closing = true
        }
        // Drop the argument views (they pin the read buffer) unless a request is half-read.
        if decoder.pointee.isBetweenRequests { inv.pointee.args.removeAll(keepingCapacity: true) }
        if buffer.readableBytes > 0 {
            // Keep the unparsed tail; reclaim consumed space so a long-lived connection does not grow.
            if buffer.readerIndex > 16 * 1024 { buffer.discardReadBytes() }
            cumulation = buffer
        }
        if closing { flushAndClose(context: context) }
    }

    /// Runs the current `EVAL`-family command on the script queue, keeping this event loop free
    /// (its other clients can still get `-BUSY` and send `SCRIPT KILL`). This connection's later
    /// requests wait in the read buffer, so replies stay in order.
    private func runScript(context: ChannelHandlerContext) {
        awaitingScript = true
        var prepared = Invocation(session: invocationState.pointee.session, out: context.channel.allocator.buffer(capacity: 256))
        prepared.args = invocationState.pointee.args
        let engine = self.engine
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        engine.scripts.queue.async { [prepared] in
            var job = prepared
            engine.execute(&job)
            let reply = job.out
            loop.execute {
                let (handler, context) = bound.value
                handler.scriptFinished(reply, context: context)
            }
        }
    }

    private func scriptFinished(_ reply: ByteBuffer, context: ChannelHandlerContext) {
        awaitingScript = false
        guard context.channel.isActive, !closing else { return }
        var reply = reply
        invocationState.pointee.out.writeBuffer(&reply)
        if decoderState.pointee.isBetweenRequests { invocationState.pointee.args.removeAll(keepingCapacity: true) }
        if !processingPaused { process(context: context) }
        flushReplies(context: context)
        if let record { publish(to: record) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushReplies(context: context)
        if let record { publish(to: record) }
        context.fireChannelReadComplete()
    }

    private func flushReplies(context: ChannelHandlerContext) {
        guard invocationState.pointee.out.readableBytes > 0 else { return }
        context.writeAndFlush(wrapOutboundOut(invocationState.pointee.out), promise: nil)
        if invocationState.pointee.out.capacity > Self.retainedOutputCapacity {
            invocationState.pointee.out = context.channel.allocator.buffer(capacity: 1024)
        } else {
            invocationState.pointee.out.clear()
        }
    }

    private func flushAndClose(context: ChannelHandlerContext) {
        let out = invocationState.pointee.out
        invocationState.pointee.out.clear()
        cumulation = nil
        if out.readableBytes > 0 {
            context.writeAndFlush(wrapOutboundOut(out)).whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
    }

    // MARK: Back-pressure: stop reading while the socket cannot take our replies.

    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            readPending = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && processingPaused {
            processingPaused = false
            if !awaitingScript { process(context: context) }
            flushReplies(context: context)
        }
        if context.channel.isWritable && readPending && !processingPaused {
            readPending = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            // `timeout`: an idle client is closed without a reply, as Redis does.
            context.close(promise: nil)
            return
        }
        if event is ClientRegistry.KillEvent {
            flushReplies(context: context)
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.trace("connection error", metadata: ["sb.connection.id": "\(invocationState.pointee.session.id)", "sb.error": "\(error)"])
        context.close(promise: nil)
    }
}
