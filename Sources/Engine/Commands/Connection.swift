import Keyspace
import NIOCore
import RESP

/// Connection commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET and CLIENT.
enum ConnectionCommands {
    /// PING [message]
    static func ping(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        if inv.argc > 2 { throw .arity("ping") }
        if inv.argc == 2 { inv.out.writeRESPBulk(inv.args[1]) } else { inv.out.writeRESPSimpleString("PONG" as StaticString) }
    }

    /// ECHO message
    static func echo(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        inv.out.writeRESPBulk(inv.args[1])
    }

    /// Checks a password for `user` against `requirepass` (the only user is `default`).
    static func authenticate(_ engine: Engine, user: ByteBuffer, password: ByteBuffer, session: inout Session) -> Bool {
        if user.readableBytesView.elementsEqual(Session.peerName.utf8) {
            // A cluster member's handshake: its secret, never the client name alone.
            let secret = engine.config.peerSecret
            guard !secret.isEmpty, constantTimeEquals(password, secret) else { return false }
            session.isPeer = true
            return true
        }
        guard user.readableBytesView.elementsEqual("default".utf8) else { return false }
        let required = engine.config.requirePass
        if required.isEmpty { return true }
        return constantTimeEquals(password, required)
    }

    /// Compares a password without an early exit, so the time taken does not tell how much matched.
    static func constantTimeEquals(_ given: ByteBuffer, _ expected: String) -> Bool {
        var difference = UInt8(truncatingIfNeeded: given.readableBytes ^ expected.utf8.count)
        if given.readableBytes != expected.utf8.count { difference |= 1 }
        let view = given.readableBytesView
        var i = view.startIndex
        for e in expected.utf8 {
            let g = i < view.endIndex ? view[i] : ~e
            difference |= g ^ e
            if i < view.endIndex { i = view.index(after: i) }
        }
        return difference == 0
    }

    /// Names a connection; without a cluster secret the peer name marks a cluster member's link.
    static func setName(_ engine: Engine, _ session: inout Session, _ name: String) {
        // Without a secret the name is what marks a peer link: renaming drops it.
        if engine.config.peerSecret.isEmpty { session.isPeer = name == Session.peerName }
        session.name = name
    }

    /// AUTH [username] password
    static func auth(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        if inv.argc > 3 { throw .syntax }
        let user: ByteBuffer
        if inv.argc == 2 {
            if engine.config.requirePass.isEmpty {
                throw CommandError("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
            }
            user = ByteBuffer(string: "default")
        } else {
            user = inv.args[1]
        }
        guard authenticate(engine, user: user, password: inv.args[inv.argc - 1], session: &inv.session) else { throw .wrongPass }
        inv.session.authenticated = true
        inv.out.writeRESPOK()
    }

    /// Client names: printable ASCII without spaces (`!`…`~`).
    static func validateName(_ name: ByteBuffer) throws(CommandError) {
        if name.readableBytesView.contains(where: { $0 < 33 || $0 > 126 }) {
            throw CommandError("ERR Client names cannot contain spaces, newlines or special characters.")
        }
    }

    /// HELLO [protover [AUTH username password] [SETNAME clientname]]
    static func hello(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var version: Int64 = 0
        var next = 1
        if inv.argc >= 2 {
            version = try Arg.integer(inv.args[1], error: CommandError("ERR Protocol version is not an integer or out of range"))
            next = 2
            if version < 2 || version > 3 { throw CommandError("NOPROTO unsupported protocol version") }
        }
        var credentials: (ByteBuffer, ByteBuffer)? = nil
        var name: ByteBuffer? = nil
        var j = next
        while j < inv.argc {
            let more = inv.argc - 1 - j
            let opt = inv.args[j]
            if opt.isToken("auth") && more >= 2 {
                credentials = (inv.args[j + 1], inv.args[j + 2])
                j += 2
            } else if opt.isToken("setname") && more >= 1 {
                try validateName(inv.args[j + 1])
                name = inv.args[j + 1]
                j += 1
            } else {
                throw CommandError("ERR Syntax error in HELLO option '\(opt.text)'")
            }
            j += 1
        }
        if let (user, password) = credentials {
            guard authenticate(engine, user: user, password: password, session: &inv.session) else { throw .wrongPass }
            inv.session.authenticated = true
        }
        guard inv.session.authenticated else {
            throw CommandError("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
        }
        if let name { setName(engine, &inv.session, name.text) }
        if version != 0 { inv.session.protocolVersion = version == 3 ? .v3 : .v2 }
        let reply: RESPValue = .map([
            (.bulk("server"), .bulk("redis")),
            (.bulk("version"), .bulk(Engine.redisVersion)),
            (.bulk("proto"), .integer(Int64(inv.session.protocolVersion.rawValue))),
            (.bulk("id"), .integer(Int64(inv.session.id))),
            (.bulk("mode"), .bulk("standalone")),
            (.bulk("role"), .bulk("master")),
            (.bulk("modules"), .array([])),
        ])
        inv.out.writeRESP(reply, version: inv.version)
    }

    /// SELECT index: only database 0 exists.
    static func select(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let index = try Arg.integer(inv.args[1])
        guard index >= Int64(Int32.min) && index <= Int64(Int32.max) else { throw .notInteger }
        guard index == 0 else { throw CommandError("ERR DB index is out of range") }
        inv.out.writeRESPOK()
    }

    /// QUIT: `+OK`, then the connection closes.
    static func quit(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        inv.out.writeRESPOK()
        inv.session.closeAfterReply = true
    }

    /// RESET: back to a fresh connection's state (RESP2, no name, authenticated only without a password).
    static func reset(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        inv.session.protocolVersion = .v2
        inv.session.name = ""
        inv.session.noEvict = false
        inv.session.authenticated = engine.config.requirePass.isEmpty
        inv.session.isPeer = false
        engine.endTransaction(&inv)
        inv.out.writeRESPSimpleString("RESET" as StaticString)
    }

    // MARK: CLIENT

    static func clientID(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        inv.out.writeRESPInteger(Int64(inv.session.id))
    }

    static func clientSetName(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        try validateName(inv.args[2])
        setName(engine, &inv.session, inv.args[2].text)
        inv.out.writeRESPOK()
    }

    static func clientGetName(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        if inv.session.name.isEmpty { inv.out.writeRESPNull(version: inv.version) } else { inv.out.writeRESPBulk(string: inv.session.name) }
    }

    /// CLIENT SETINFO LIB-NAME name | LIB-VER version
    static func clientSetInfo(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let attribute = inv.args[2], value = inv.args[3]
        if value.readableBytesView.contains(where: { $0 < 33 || $0 > 126 }) {
            throw CommandError("ERR \(attribute.text) cannot contain spaces, newlines or special characters.")
        }
        if attribute.isToken("lib-name") {
            inv.session.libraryName = value.text
        } else if attribute.isToken("lib-ver") {
            inv.session.libraryVersion = value.text
        } else {
            throw CommandError("ERR Unrecognized option '\(attribute.text)'")
        }
        inv.out.writeRESPOK()
    }

    static func clientNoEvict(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        if inv.args[2].isToken("on") { inv.session.noEvict = true }
        else if inv.args[2].isToken("off") { inv.session.noEvict = false }
        else { throw .syntax }
        inv.out.writeRESPOK()
    }

    /// The `CLIENT LIST` line of this connection, from its live session.
    static func infoLine(_ engine: Engine, _ session: Session, now: Int64) -> String {
        let age = (now - session.createdAt) / 1000
        let idle = max(0, now - session.lastInteraction) / 1000
        let flags = (session.queuedCommands >= 0 ? "x" : "") + (session.noEvict ? "e" : "")
        return "id=\(session.id) addr=\(session.address) laddr=\(session.localAddress) fd=-1 name=\(session.name) age=\(age) idle=\(idle) flags=\(flags.isEmpty ? "N" : flags) db=0 sub=0 psub=0 ssub=0 multi=\(session.queuedCommands) qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=\(session.lastCommand) user=default redir=-1 resp=\(session.protocolVersion.rawValue) lib-name=\(session.libraryName) lib-ver=\(session.libraryVersion)"
    }

    static func clientInfo(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        let line = infoLine(engine, inv.session, now: inv.now) + "\n"
        inv.out.writeRESPVerbatim(format: "txt", text: line, version: inv.version)
    }

    /// CLIENT LIST [TYPE NORMAL] [ID id [id ...]]
    static func clientList(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var ids: Set<UInt64>? = nil
        var j = 2
        while j < inv.argc {
            if inv.args[j].isToken("type") && j + 1 < inv.argc {
                j += 2
            } else if inv.args[j].isToken("id") && j + 1 < inv.argc {
                var set = Set<UInt64>()
                j += 1
                while j < inv.argc {
                    guard let id = RedisInteger.parse(inv.args[j]), id > 0 else { throw CommandError("ERR Invalid client ID") }
                    set.insert(UInt64(id))
                    j += 1
                }
                ids = set
            } else {
                throw .syntax
            }
        }
        // The registry's copy of this connection may lag behind its live session: use the live one.
        var sessions = (engine.host?.clientSessions() ?? []).filter { $0.id != inv.session.id }
        sessions.append(inv.session)
        sessions.sort { $0.id < $1.id }
        let now = inv.now
        let text = sessions.filter { ids?.contains($0.id) ?? true }
            .map { infoLine(engine, $0, now: now) + "\n" }.joined()
        inv.out.writeRESPVerbatim(format: "txt", text: text, version: inv.version)
    }

    /// CLIENT KILL ip:port | CLIENT KILL [ID id] [ADDR ip:port] [LADDR ip:port] [SKIPME yes|no]
    static func clientKill(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        var filter = ClientKillFilter()
        let oldForm = inv.argc == 3
        if oldForm {
            filter.address = inv.args[2].text
            filter.skipMe = false
        } else {
            var j = 2
            while j < inv.argc {
                guard j + 1 < inv.argc else { throw .syntax }
                let opt = inv.args[j], value = inv.args[j + 1]
                if opt.isToken("id") {
                    guard let id = RedisInteger.parse(value), id > 0 else { throw CommandError("ERR client-id should be greater than 0") }
                    filter.id = UInt64(id)
                } else if opt.isToken("addr") {
                    filter.address = value.text
                } else if opt.isToken("laddr") {
                    filter.localAddress = value.text
                } else if opt.isToken("skipme") {
                    if value.isToken("yes") { filter.skipMe = true } else if value.isToken("no") { filter.skipMe = false } else { throw .syntax }
                } else if opt.isToken("type") {
                    if value.isToken("normal") {
                        // Every client here is a normal one.
                    } else if value.isToken("master") || value.isToken("replica") || value.isToken("slave") || value.isToken("pubsub") {
                        filter.matchesNoClient = true
                    } else {
                        throw CommandError("ERR Unknown client type '\(value.text)'")
                    }
                } else if opt.isToken("user") {
                    // Only the default user exists.
                    guard value.readableBytesView.elementsEqual("default".utf8) else { throw CommandError("ERR No such user '\(value.text)'") }
                } else if opt.isToken("maxage") {
                    guard let age = RedisInteger.parse(value), age >= 0 else { throw .syntax }
                    filter.maxAgeSeconds = age
                } else {
                    throw .syntax
                }
                j += 2
            }
        }
        filter.now = inv.now
        let killed = engine.host?.killClients(filter, requester: inv.session.id) ?? 0
        // Killing oneself: the reply goes out, then the connection closes.
        if !filter.skipMe && filter.matches(inv.session, requester: 0) { inv.session.closeAfterReply = true }
        if oldForm {
            if killed == 0 && !inv.session.closeAfterReply { throw CommandError("ERR No such client") }
            inv.out.writeRESPOK()
        } else {
            inv.out.writeRESPInteger(Int64(killed))
        }
    }

    static func clientHelp(_ engine: Engine, _ inv: inout Invocation) throws(CommandError) {
        Help.write(&inv, "CLIENT", [
            "GETNAME", "    Return the name of the current connection.",
            "ID", "    Return the ID of the current connection.",
            "INFO", "    Return information about the current client connection.",
            "KILL <ip:port>", "    Kill connection made from <ip:port>.",
            "KILL <option> <value> [<option> <value> [...]]", "    Kill connections. Options are: ID, ADDR, LADDR, SKIPME.",
            "LIST [TYPE NORMAL] [ID <id> [<id> ...]]", "    Return information about client connections.",
            "NO-EVICT (ON|OFF)", "    Protect current client connection from eviction.",
            "SETINFO <LIB-NAME|LIB-VER> <value>", "    Set client meta attributes.",
            "SETNAME <name>", "    Assign the name <name> to the current connection.",
        ])
    }
}

enum Help {
    /// The `HELP` reply of a container command, laid out as Redis lays it out.
    static func write(_ inv: inout Invocation, _ container: String, _ lines: [String]) {
        let all = ["\(container) <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"] + lines + ["HELP", "    Prints this help."]
        inv.out.writeRESPArrayHeader(all.count)
        for line in all { inv.out.writeRESPSimpleString(line) }
    }
}
