import Engine
import Logging
import NIOCore
import RESP
import StrongboxClient

/// One client connection: decodes requests from the bytes it reads, runs each against the engine,
/// appends each reply to one outbound buffer and writes and flushes that buffer once per read batch.
///
/// Replies leave in request order because every command of a batch runs in order on this
/// connection's event loop. Reading pauses while the socket cannot take more output, so a client
/// that does not read its replies cannot make the server buffer without bound.
final class ConnectionHandler: ChannelDuplexHandler, ReplySink {
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
    /// Since when the unsent output has been over `client-output-buffer-limit`'s soft limit.
    private var overSoftLimitSince: NIODeadline?
    private var readPending = false
    /// Command processing waits for the socket to drain (a client not reading big replies).
    private var processingPaused = false
    private var record: ClientRegistry.Record?
    /// Set once the handler is removed (a script job finishing later must not park state here).
    private var removed = false
    /// A Lua script of this connection runs on the script queue; its later requests wait.
    private var awaitingScript = false
    /// The current command waits for another client's script (`Invocation.waitingOnScript`):
    /// it stays in `args` and runs again on wake-up, before anything else is decoded.
    private var parkedOnScript = false
    private var rerunParked = false
    /// Cluster peers to forward to (proxy mode), or nil.
    private let peers: PeerLinks?
    /// This loop's links to them (looked up on the first forward).
    private var links: LoopLinks?
    /// Where relayed replies come back (self, on this loop) and the context they are written to.
    private var sinkRef: NIOLoopBound<any ReplySink>?
    private var contextRef: ChannelHandlerContext?
    /// Replies in request order while some are still coming from peers: a slot per command
    /// after the first forwarded one. Empty in the common case, when replies go straight to `out`.
    private var replyQueue = CircularBuffer<ByteBuffer?>()
    /// The sequence number of `replyQueue.first` (each queued reply has one; a slot is nil until filled).
    private var queueHead = 0
    /// Processing waits while this many replies are outstanding (bounds what one client can queue).
    private static let maxOutstanding = 1024
    private var waitingForPeers = false
    private var closeWhenDrained = false
    /// Replies from peers arrive in bursts (one read completes many): write them out once per burst.
    private var drainFlushScheduled = false

    init(engine: Engine, registry: ClientRegistry, session: Session, allocator: ByteBufferAllocator, logger: Logger,
         peers: PeerLinks? = nil) {
        self.peers = peers
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
        invocation.mayForward = peers != nil
        invocationState.initialize(to: invocation)
    }

    deinit {
        decoderState.deinitialize(count: 1)
        decoderState.deallocate()
        invocationState.deinitialize(count: 1)
        invocationState.deallocate()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if peers != nil {
            contextRef = context
            sinkRef = NIOLoopBound(self, eventLoop: context.eventLoop)
        }
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
        removed = true
        contextRef = nil
        sinkRef = nil
        // WATCH registrations live in the keyspace: a client that vanishes leaves none behind.
        // While a script holds every shard, they go when it ends (this loop must not wait).
        invocationState.pointee.transaction = nil
        if let watching = invocationState.pointee.watching {
            invocationState.pointee.watching = nil
            let engine = self.engine
            if engine.scripts.busySince != 0 {
                engine.scripts.whenIdle { engine.unregister(watching) }
            } else {
                engine.unregister(watching)
            }
        }
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
        if !processingPaused && !awaitingScript && !waitingForPeers && !parkedOnScript { process(context: context) }
    }

    private func process(context: ChannelHandlerContext) {
        // A parked command runs again even when nothing more has been read.
        guard var buffer = cumulation ?? (rerunParked ? ByteBuffer() : nil) else { return }
        cumulation = nil
        let decoder = decoderState, inv = invocationState
        inv.pointee.session.lastInteraction = engine.keyspace.clock.now()
        // Limits changed by CONFIG SET apply to connections already open, from their next batch.
        decoder.pointee.limits.maxBulkLength = engine.config.maxBulkLength.load(ordering: .relaxed)
        decoder.pointee.limits.queryBufferLimit = engine.config.queryBufferLimit.load(ordering: .relaxed)
        inv.pointee.setOutputLimit(engine.config.normalOutputHard.load(ordering: .relaxed))
        var overLimit = false
        var rerun = rerunParked
        rerunParked = false
        do {
            while true {
                if !rerun { guard try decoder.pointee.next(from: &buffer, into: &inv.pointee.args) else { break } }
                rerun = false
                let replyStart = inv.pointee.out.writerIndex
                // A reply may come in chunks only when nothing waits in the reply queue before it.
                inv.pointee.maySpill = replyQueue.isEmpty
                engine.execute(&inv.pointee)
                if inv.pointee.outputLimitExceeded {
                    overLimit = true
                    break
                }
                if !inv.pointee.spilled.isEmpty { writeSpilled(&inv.pointee.spilled, context: context) }
                if inv.pointee.waitingOnScript {
                    inv.pointee.waitingOnScript = false
                    park(context: context)
                    break
                }
                if let plan = inv.pointee.forward {
                    inv.pointee.forward = nil
                    forward(plan, context: context)
                } else if inv.pointee.deferredScript {
                    inv.pointee.deferredScript = false
                    let slot: Int? = replyQueue.isEmpty ? nil : enqueue(nil)
                    runScript(context: context, slot: slot)
                    break
                } else if !replyQueue.isEmpty {
                    // Behind a reply still coming from a peer: keep this one in order.
                    let length = inv.pointee.out.writerIndex - replyStart
                    let bytes = inv.pointee.out.getSlice(at: replyStart, length: length)!
                    inv.pointee.out.moveWriterIndex(to: replyStart)
                    _ = enqueue(bytes)
                }
                if replyQueue.count >= Self.maxOutstanding {
                    waitingForPeers = true
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
                    if overOutputLimit(context: context) {
                        overLimit = true
                        break
                    }
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
        if overLimit || overOutputLimit(context: context) {
            closeForOutputLimit(context: context)
            return
        }
        // Forwarded requests of this batch go out in one write per peer.
        if !replyQueue.isEmpty { links?.scheduleFlush() }
        // Drop the argument views (they pin the read buffer) unless a request is half-read or parked.
        if decoder.pointee.isBetweenRequests && !parkedOnScript { inv.pointee.args.removeAll(keepingCapacity: true) }
        if buffer.readableBytes > 0 {
            // Keep the unparsed tail; reclaim consumed space so a long-lived connection does not grow.
            if buffer.readerIndex > 16 * 1024 { buffer.discardReadBytes() }
            cumulation = buffer
        }
        if closing {
            if replyQueue.isEmpty { flushAndClose(context: context) } else { closeWhenDrained = true }
        }
    }

    /// `client-output-buffer-limit normal`: whether this client's unsent replies are past the hard
    /// limit, or have stayed past the soft limit for its seconds. Free when no limit is set.
    private func overOutputLimit(context: ChannelHandlerContext) -> Bool {
        let config = engine.config
        let hard = config.normalOutputHard.load(ordering: .relaxed)
        let soft = config.normalOutputSoft.load(ordering: .relaxed)
        guard hard > 0 || soft > 0 else { return false }
        let buffered = (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        // As Redis, the first 16 KiB (its per-client reply buffer) do not count.
        let pending = buffered + invocationState.pointee.out.readableBytes - Invocation.uncountedOutputBytes
        if hard > 0 && pending > hard { return true }
        guard soft > 0 && pending > soft else {
            overSoftLimitSince = nil
            return false
        }
        let now = NIODeadline.now()
        let seconds = Int64(min(config.normalOutputSoftSeconds.load(ordering: .relaxed), 86_400))
        guard let since = overSoftLimitSince else {
            overSoftLimitSince = now
            // Looked at again when the time is up, even if the client (not reading, so this
            // connection waits for it) sends nothing more.
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .seconds(seconds) + .milliseconds(10)) {
                let (handler, context) = bound.value
                guard context.channel.isActive, !handler.closing, handler.overSoftLimitSince == now else { return }
                if handler.overOutputLimit(context: context) { handler.closeForOutputLimit(context: context) }
            }
            return false
        }
        return now - since >= .seconds(seconds)
    }

    /// Closes a client past its output limit at once, its unsent replies dropped (as Redis does).
    private func closeForOutputLimit(context: ChannelHandlerContext) {
        logger.notice("client closed for overcoming of output buffer limits", metadata: [
            "sb.connection.id": "\(invocationState.pointee.session.id)",
            "sb.client.addr": "\(invocationState.pointee.session.address)",
        ])
        closing = true
        invocationState.pointee.out.clear()
        invocationState.pointee.spilled.removeAll()
        context.close(promise: nil)
    }

    /// Writes the complete chunks of a reply too large for one buffer (they come before `out`).
    private func writeSpilled(_ chunks: inout [ByteBuffer], context: ChannelHandlerContext) {
        for chunk in chunks { context.write(wrapOutboundOut(chunk), promise: nil) }
        chunks.removeAll()
        context.flush()
    }

    // MARK: Waiting for another client's script

    /// Parks the current command until the running script ends or passes `busy-reply-threshold`
    /// (a promise-like wake-up and a scheduled task; the event loop never waits).
    private func park(context: ChannelHandlerContext) {
        parkedOnScript = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let wake: @Sendable () -> Void = {
            loop.execute {
                let (handler, context) = bound.value
                handler.unpark(context: context)
            }
        }
        // Clamped: busy-reply-threshold may be up to Int64.max ms, more than a TimeAmount holds.
        let delay = min(max(1, engine.millisecondsUntilBusy()), 86_400_000)
        context.eventLoop.scheduleTask(in: .milliseconds(delay), wake)
        engine.scripts.whenIdle(wake)
    }

    private func unpark(context: ChannelHandlerContext) {
        guard parkedOnScript, context.channel.isActive, !closing else { return }
        parkedOnScript = false
        rerunParked = true
        resumeReading(context: context)
        if !processingPaused && !awaitingScript && !waitingForPeers { process(context: context) }
        flushReplies(context: context)
        if let record { publish(to: record) }
    }

    // MARK: Proxy mode: commands owned by other members

    private func forward(_ plan: Forward, context: ChannelHandlerContext) {
        guard let peers else { return }
        if links == nil { links = peers.links(for: context.eventLoop) }
        let links = self.links!
        let slot = enqueue(nil)
        let version = invocationState.pointee.session.protocolVersion
        if case .whole(let owner) = plan, version == .v2, let sink = sinkRef {
            // A RESP2 client gets the peer's reply byte for byte, handed straight back here. The
            // arguments are encoded in place (not copied: a copy would make the next request's
            // decode copy the argument array).
            links.relay(invocationState.pointee.args, to: owner, sink: sink, tag: slot)
            return
        }
        let args = invocationState.pointee.args
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context, slot), eventLoop: loop)
        let reply: EventLoopFuture<RESPValue>
        switch plan {
        case .whole(let owner):
            reply = links.send(args, to: owner)
        case .split(let parts, let merge):
            let name = args[0]
            let mset = merge == .ok
            var futures: [EventLoopFuture<RESPValue>] = []
            for part in parts {
                var partArgs = [name]
                for p in part.positions {
                    partArgs.append(args[p])
                    if mset { partArgs.append(args[p + 1]) }
                }
                futures.append(part.owner == peers.cluster.myIndex
                    ? loop.makeSucceededFuture(runHere(partArgs, context: context))
                    : links.send(partArgs, to: part.owner))
            }
            let positions = parts.map(\.positions)
            let keyCount = positions.reduce(0) { $0 + $1.count }
            reply = EventLoopFuture.whenAllSucceed(futures, on: loop).map { Self.merge($0, merge, positions: positions, keyCount: keyCount) }
        case .everywhere(let merge):
            var futures: [EventLoopFuture<RESPValue>] = []
            for index in peers.cluster.ring.members.indices {
                futures.append(index == peers.cluster.myIndex
                    ? loop.makeSucceededFuture(runHere(args, context: context))
                    : links.send(args, to: index))
            }
            reply = EventLoopFuture.whenAllSucceed(futures, on: loop).map { Self.merge($0, merge, positions: [], keyCount: 0) }
        case .scan(let member, let localCursor):
            var scanArgs = args
            scanArgs[1] = ByteBuffer(string: String(localCursor))
            let members = UInt64(peers.cluster.ring.members.count)
            let part = member == peers.cluster.myIndex
                ? loop.makeSucceededFuture(runHere(scanArgs, context: context))
                : links.send(scanArgs, to: member)
            reply = part.map { value in
                // Fold the member back into the cursor; a finished member hands on to the next one.
                guard case .array(let parts) = value, parts.count == 2, case .bulkString(let c) = parts[0],
                      let next = UInt64(String(buffer: c)) else { return value }
                let global: UInt64
                if next != 0 {
                    global = next * members + UInt64(member)
                } else {
                    global = UInt64(member) + 1 < members ? UInt64(member) + 1 : 0
                }
                return .array([.bulk(String(global)), parts[1]])
            }
        }
        reply.whenComplete { result in
            let (handler, context, slot) = bound.value
            handler.completeForward(slot, result, version: version, context: context)
        }
    }

    private func enqueue(_ bytes: ByteBuffer?) -> Int {
        replyQueue.append(bytes)
        return queueHead + replyQueue.count - 1
    }

    /// A relayed reply (or why there is none) for queue slot `tag`.
    func replyArrived(tag: Int, _ result: Result<ByteBuffer, StrongboxError>) {
        guard let context = contextRef, tag >= queueHead, tag - queueHead < replyQueue.count,
              replyQueue[replyQueue.index(replyQueue.startIndex, offsetBy: tag - queueHead)] == nil else { return }
        switch result {
        case .success(let bytes): fill(tag, bytes, context: context)
        case .failure(let error): completeForward(tag, .failure(error), version: .v2, context: context)
        }
    }

    /// A forwarded command's reply as a value (decoded, merged, or why the peer gave none),
    /// encoded in the client's protocol.
    private func completeForward(_ slot: Int, _ result: Result<RESPValue, any Error>, version: RESPVersion, context: ChannelHandlerContext) {
        let value: RESPValue
        switch result {
        case .success(let v): value = v
        case .failure(let error): value = peers?.errorReply(error) ?? .error("TRYAGAIN \(error)")
        }
        var bytes = context.channel.allocator.buffer(capacity: 64)
        bytes.writeRESP(value, version: version)
        fill(slot, bytes, context: context)
    }

    /// Puts reply `bytes` in queue slot `slot` — straight into the output when it is the head —
    /// and sends on whatever is ready behind it.
    private func fill(_ slot: Int, _ bytes: ByteBuffer, context: ChannelHandlerContext) {
        let atHead = slot == queueHead
        if atHead {
            var bytes = bytes
            invocationState.pointee.out.writeBuffer(&bytes)
            replyQueue.removeFirst()
            queueHead += 1
        } else {
            replyQueue[replyQueue.index(replyQueue.startIndex, offsetBy: slot - queueHead)] = bytes
        }
        drainReplies(context: context, moved: atHead)
    }

    /// Runs a command (or this node's part of one) here, bypassing cluster routing; its reply as a value.
    private func runHere(_ args: [ByteBuffer], context: ChannelHandlerContext) -> RESPValue {
        var session = invocationState.pointee.session
        session.isPeer = true
        var sub = Invocation(session: session, out: context.channel.allocator.buffer(capacity: 256))
        sub.args = args
        engine.execute(&sub)
        var out = sub.out
        return (try? RESPValueDecoder().next(from: &out)) ?? .error("ERR internal error running the local part")
    }

    /// Merges the replies of a split or cluster-wide command as one node would answer.
    static func merge(_ replies: [RESPValue], _ merge: Forward.Merge, positions: [[Int]], keyCount: Int) -> RESPValue {
        if let error = replies.first(where: { if case .error = $0 { return true } else { return false } }) { return error }
        switch merge {
        case .sum:
            return .integer(replies.reduce(0) { total, r in if case .integer(let n) = r { return total + n } else { return total } })
        case .ok:
            return .simpleString("OK")
        case .same:
            return replies.first ?? .null
        case .concat:
            var all: [RESPValue] = []
            for r in replies { if case .array(let items) = r { all += items } }
            return .array(all)
        case .values:
            var values = [RESPValue](repeating: .null, count: keyCount)
            for (part, r) in zip(positions, replies) {
                guard case .array(let items) = r else { continue }
                for (p, v) in zip(part, items) where p - 1 < keyCount { values[p - 1] = v }
            }
            return .array(values)
        }
    }

    /// Moves every reply that is ready at the head of the queue to the output, in order.
    private func drainReplies(context: ChannelHandlerContext, moved alreadyMoved: Bool = false) {
        var moved = alreadyMoved
        while let first = replyQueue.first, var bytes = first {
            invocationState.pointee.out.writeBuffer(&bytes)
            replyQueue.removeFirst()
            queueHead += 1
            moved = true
        }
        guard moved, context.channel.isActive else { return }
        if replyQueue.isEmpty && closeWhenDrained {
            flushAndClose(context: context)
            return
        }
        if waitingForPeers && replyQueue.count < Self.maxOutstanding / 2 {
            waitingForPeers = false
            resumeReading(context: context)
            if !processingPaused && !awaitingScript && !parkedOnScript { process(context: context) }
        }
        guard !drainFlushScheduled else { return }
        drainFlushScheduled = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = bound.value
            handler.drainFlushScheduled = false
            guard context.channel.isActive else { return }
            handler.flushReplies(context: context)
            if let record = handler.record { handler.publish(to: record) }
        }
    }

    /// Runs the current `EVAL`-family command on the script queue, keeping this event loop free
    /// (its other clients can still get `-BUSY` and send `SCRIPT KILL`). This connection's later
    /// requests wait in the read buffer, so replies stay in order.
    private func runScript(context: ChannelHandlerContext, slot: Int? = nil) {
        awaitingScript = true
        var prepared = Invocation(session: invocationState.pointee.session, out: context.channel.allocator.buffer(capacity: 256))
        prepared.args = invocationState.pointee.args
        // The job takes the transaction and watches along (an EXEC of scripts uses and ends
        // them) and hands back what is left (after a plain EVAL, the WATCH still holds).
        prepared.transaction = invocationState.pointee.transaction
        prepared.watching = invocationState.pointee.watching
        invocationState.pointee.transaction = nil
        invocationState.pointee.watching = nil
        invocationState.pointee.session.commandsSinceFlush = 0
        prepared.session.commandsSinceFlush = 0
        // The script's reply may come in chunks only when it goes straight to the output.
        prepared.maySpill = slot == nil
        prepared.setOutputLimit(engine.config.normalOutputHard.load(ordering: .relaxed))
        let engine = self.engine
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context, slot), eventLoop: loop)
        engine.scripts.queue.async { [prepared] in
            var job = prepared
            engine.execute(&job)
            let reply = job.out
            let chunks = job.spilled
            let overLimit = job.outputLimitExceeded
            let session = job.session
            let transaction = job.transaction, watching = job.watching
            loop.execute {
                let (handler, context, slot) = bound.value
                // What the commands changed (SELECT, CLIENT SETNAME inside a transaction; the
                // command count) carries over to the connection.
                let counted = handler.invocationState.pointee.session.commandsSinceFlush
                handler.invocationState.pointee.session = session
                handler.invocationState.pointee.session.commandsSinceFlush += counted
                handler.invocationState.pointee.transaction = transaction
                if let watching {
                    // A connection gone meanwhile cleaned up without these: drop them here.
                    if handler.removed { engine.unregister(watching) } else { handler.invocationState.pointee.watching = watching }
                }
                if overLimit {
                    handler.awaitingScript = false
                    handler.closeForOutputLimit(context: context)
                    return
                }
                if !chunks.isEmpty, context.channel.isActive {
                    // Whatever this connection had ready goes first, then the script's chunks.
                    handler.flushReplies(context: context)
                    var chunks = chunks
                    handler.writeSpilled(&chunks, context: context)
                }
                handler.scriptFinished(reply, context: context, slot: slot)
            }
        }
    }

    private func scriptFinished(_ reply: ByteBuffer, context: ChannelHandlerContext, slot: Int?) {
        awaitingScript = false
        resumeReading(context: context)
        guard context.channel.isActive, !closing else { return }
        var reply = reply
        if let slot {
            fill(slot, reply, context: context)
        } else {
            invocationState.pointee.out.writeBuffer(&reply)
        }
        if decoderState.pointee.isBetweenRequests { invocationState.pointee.args.removeAll(keepingCapacity: true) }
        if !processingPaused && !parkedOnScript { process(context: context) }
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
        // While this client's script runs (or its forwards are outstanding), what it sends next
        // stays in the socket: reading it would grow memory without bound (Redis stops too).
        if context.channel.isWritable && !awaitingScript && !waitingForPeers && !parkedOnScript {
            context.read()
        } else {
            readPending = true
        }
    }

    private func resumeReading(context: ChannelHandlerContext) {
        if readPending && context.channel.isWritable && !awaitingScript && !waitingForPeers && !parkedOnScript {
            readPending = false
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && processingPaused {
            processingPaused = false
            if !awaitingScript && !waitingForPeers && !parkedOnScript { process(context: context) }
            flushReplies(context: context)
        }
        if !processingPaused { resumeReading(context: context) }
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
