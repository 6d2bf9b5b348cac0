import Foundation
import RESP
import Testing
import TestSupport

/// The real `strongbox` process: options, config file, exit codes, signals.
@Suite("strongbox executable", .serialized)
struct ExecutableTests {
    /// Starts `strongbox` with `arguments` and waits until it accepts on `port`.
    static func start(_ arguments: [String], port: Int) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try strongboxExecutable())
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        try waitForPort(port)
        return p
    }

    static func waitExit(_ p: Process, seconds: Double = 10) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            return nil
        }
        return p.terminationStatus
    }

    @Test("bad options and values exit 1 with a clear message", arguments: [
        (["--port", "abc"], "port"),
        (["--port", "70000"], "port"),
        (["--maxclients", "0"], "maxclients"),
        (["--protected-mode", "maybe"], "yes"),
        (["--proto-max-bulk-len", "12xb"], "memory"),
        (["--loglevel", "chatty"], "loglevel"),
        (["--no-such-option", "1"], "no-such-option"),
        (["/nonexistent/strongbox.conf"], "can't open config file"),
    ])
    func badOptions(arguments: [String], mention: String) throws {
        let result = try runProgram(try strongboxExecutable(), arguments, timeout: 20)
        #expect(result.status == 1)
        #expect(result.stderr.contains(mention), "stderr: \(result.stderr)")
    }

    @Test("--help lists redis-server's option names and exits 0")
    func help() throws {
        let result = try runProgram(try strongboxExecutable(), ["--help"], timeout: 20)
        #expect(result.status == 0)
        for option in ["--port", "--bind", "--protected-mode", "--requirepass", "--maxclients", "--timeout",
                       "--proto-max-bulk-len", "--client-query-buffer-limit", "--loglevel", "--logfile", "--threads"] {
            #expect(result.stdout.contains(option), "help lacks \(option)")
        }
    }

    @Test("config file in redis.conf syntax, with command-line options winning; SIGTERM exits 0")
    func configFileAndSigterm() throws {
        let port = try freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("strongbox-test-\(getpid())-\(port)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let conf = dir.appendingPathComponent("strongbox.conf")
        let log = dir.appendingPathComponent("strongbox.log")
        try """
            # a comment
            port 1
            bind 127.0.0.1
            requirepass "pass word"
            maxclients 50
            proto-max-bulk-len 1mb
            logfile \(log.path)
            """.write(to: conf, atomically: true, encoding: .utf8)
        let p = try Self.start([conf.path, "--port", "\(port)", "--threads", "2"], port: port)
        let c = try RawClient(port: port)
        #expect(try c.callRaw("PING") == "-NOAUTH Authentication required.\r\n")
        #expect(try c.callRaw("AUTH", "pass word") == "+OK\r\n")
        guard case .array(let pair) = try c.call("CONFIG", "GET", "proto-max-bulk-len") else { Issue.record("no config"); return }
        #expect(pair.last == .bulk("1048576"))
        guard case .array(let mc) = try c.call("CONFIG", "GET", "maxclients") else { Issue.record("no config"); return }
        #expect(mc.last == .bulk("50"))
        kill(p.processIdentifier, SIGTERM)
        #expect(Self.waitExit(p) == 0)
        let logText = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        #expect(logText.contains("ready to accept connections"))
    }

    @Test("defaults: loopback only, a SET/GET round trip, SHUTDOWN exits 0")
    func defaultsAndShutdown() throws {
        let port = try freePort()
        let p = try Self.start(["--port", "\(port)"], port: port)
        let c = try RawClient(port: port)
        #expect(try c.call("SET", "x", "1") == .simpleString("OK"))
        #expect(try c.call("GET", "x") == .bulk("1"))
        guard case .array(let bind) = try c.call("CONFIG", "GET", "bind") else { Issue.record("no bind"); return }
        #expect(bind.last == .bulk("127.0.0.1 -::1"))
        try c.send("SHUTDOWN\r\n")
        _ = try? c.readUntilClosed()
        #expect(Self.waitExit(p) == 0)
    }

    @Test("SIGTERM or SIGINT the moment the port accepts still shuts down gracefully (exit 0)", arguments: [SIGTERM, SIGINT])
    func signalRightAfterListening(signal: Int32) throws {
        for _ in 0..<5 {
            let port = try freePort()
            let p = try Self.start(["--port", "\(port)"], port: port)
            kill(p.processIdentifier, signal)
            #expect(Self.waitExit(p) == 0)
        }
    }

    @Test("--bind takes several addresses as redis-server does, '-' marking optional ones")
    func bindList() throws {
        let port = try freePort()
        let p = try Self.start(["--port", "\(port)", "--bind", "127.0.0.1", "-::1", "--protected-mode", "no"], port: port)
        let c = try RawClient(port: port)
        guard case .array(let pair) = try c.call("CONFIG", "GET", "bind") else { Issue.record("no bind"); return }
        #expect(pair.last == .bulk("127.0.0.1 -::1"))
        kill(p.processIdentifier, SIGINT)
        #expect(Self.waitExit(p) == 0)
    }
}

/// Protected mode needs a client that is not on loopback: one in a network namespace of the
/// test's own, on a veth pair with private test addresses (no traffic leaves this machine).
@Suite("Protected mode", .serialized)
struct ProtectedModeTests {
    /// A namespace holding one end of a veth pair: the host side is 10.231.N.1, the inside 10.231.N.2.
    final class TestNetwork {
        let name: String
        let hostAddress: String
        let inside: String

        init() throws {
            let n = Int(getpid()) % 200 + 20
            name = "sbpm\(n)"
            hostAddress = "10.231.\(n).1"
            inside = "10.231.\(n).2"
            _ = try? runProgram("/usr/sbin/ip", ["netns", "del", name])
            let steps: [[String]] = [
                ["netns", "add", name],
                ["link", "add", "\(name)h", "type", "veth", "peer", "name", "\(name)i"],
                ["link", "set", "\(name)i", "netns", name],
                ["addr", "add", "\(hostAddress)/30", "dev", "\(name)h"],
                ["link", "set", "\(name)h", "up"],
                ["netns", "exec", name, "ip", "addr", "add", "\(inside)/30", "dev", "\(name)i"],
                ["netns", "exec", name, "ip", "link", "set", "\(name)i", "up"],
                ["netns", "exec", name, "ip", "link", "set", "lo", "up"],
            ]
            for step in steps {
                let r = try runProgram("/usr/sbin/ip", step)
                guard r.status == 0 else { throw TestError("ip \(step.joined(separator: " ")): \(r.stderr)") }
            }
        }

        /// Runs redis-cli inside the namespace against the host side.
        func cli(port: Int, _ args: [String]) throws -> String {
            try runProgram("/usr/sbin/ip", ["netns", "exec", name, "/usr/bin/redis-cli", "-h", hostAddress, "-p", "\(port)"] + args).stdout
        }

        deinit { _ = try? runProgram("/usr/sbin/ip", ["netns", "del", name]) }
    }

    @Test("a client from another host gets Redis's DENIED text without a password; with one, or protected-mode no, it is served")
    func protectedMode() throws {
        try #require(getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip"), "needs root and iproute2 for a test network")
        let net = try TestNetwork()
        let denied = try StrongboxProcess(["--bind", net.hostAddress, "127.0.0.1"])
        defer { denied.stop() }
        let reply = try net.cli(port: denied.port, ["PING"])
        #expect(reply.hasPrefix("DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user."), "got: \(reply)")
        // Loopback clients of the same server are served.
        let local = try RawClient(port: denied.port)
        #expect(try local.call("PING") == .simpleString("PONG"))

        let withPassword = try StrongboxProcess(["--bind", net.hostAddress, "127.0.0.1", "--requirepass", "pw"])
        defer { withPassword.stop() }
        #expect(try net.cli(port: withPassword.port, ["PING"]).hasPrefix("NOAUTH Authentication required."))
        #expect(try net.cli(port: withPassword.port, ["-a", "pw", "--no-auth-warning", "PING"]) == "PONG\n")

        let open = try StrongboxProcess(["--bind", net.hostAddress, "127.0.0.1", "--protected-mode", "no"])
        defer { open.stop() }
        #expect(try net.cli(port: open.port, ["PING"]) == "PONG\n")
    }
}
