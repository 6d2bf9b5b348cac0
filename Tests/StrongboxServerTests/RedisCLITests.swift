import Foundation
import RESP
import Testing
import TestSupport

/// The real `redis-cli` (Debian's redis-tools) against Strongbox.
@Suite("redis-cli", .serialized)
struct RedisCLITests {
    static let cli = "/usr/bin/redis-cli"

    @Test("one-shot commands")
    func oneShot() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.cli), "redis-cli is not installed")
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let p = ["-p", "\(server.port)"]
        #expect(try runProgram(Self.cli, p + ["PING"]).stdout == "PONG\n")
        #expect(try runProgram(Self.cli, p + ["SET", "cli:k", "hello world"]).stdout == "OK\n")
        #expect(try runProgram(Self.cli, p + ["GET", "cli:k"]).stdout == "hello world\n")
        #expect(try runProgram(Self.cli, p + ["INCR", "cli:n"]).stdout == "1\n")
        #expect(try runProgram(Self.cli, p + ["MGET", "cli:k", "cli:none"]).stdout == "hello world\n\n")
        #expect(try runProgram(Self.cli, p + ["--no-raw", "MGET", "cli:k", "cli:none"]).stdout == "1) \"hello world\"\n2) (nil)\n")
        #expect(try runProgram(Self.cli, p + ["NOSUCH"]).stdout.hasPrefix("ERR unknown command 'NOSUCH'"))
        #expect(try runProgram(Self.cli, p + ["DBSIZE"]).stdout == "2\n")
    }

    @Test("interactive-style piped input, which asks COMMAND DOCS first")
    func piped() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.cli), "redis-cli is not installed")
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let input = "SET a 1\nINCRBY a 41\nGET a\n".data(using: .utf8)!
        let r = try runProgram(Self.cli, ["-p", "\(server.port)"], input: input)
        #expect(r.stdout == "OK\n42\n42\n")
    }

    @Test("redis-cli --memkeys and --bigkeys scan the keyspace with MEMORY USAGE and STRLEN")
    func memkeysAndBigkeys() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.cli), "redis-cli is not installed")
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let p = ["-p", "\(server.port)"]
        var input = ""
        for i in 1...40 { input += "SET size:\(i) \(String(repeating: "x", count: i * 10))\n" }
        _ = try runProgram(Self.cli, p, input: Data(input.utf8))
        let mem = try runProgram(Self.cli, p + ["--memkeys"]).stdout
        #expect(mem.contains("Biggest string found '\"size:40\"' has"), "\(mem)")
        #expect(mem.contains("40 strings with"))
        let big = try runProgram(Self.cli, p + ["--bigkeys"]).stdout
        #expect(big.contains("Biggest string found '\"size:40\"' has 400 bytes"), "\(big)")
        #expect(big.contains("40 strings with 8200 bytes"))
    }

    @Test("RESP3 with redis-cli -3")
    func resp3() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.cli), "redis-cli is not installed")
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let p = ["-3", "-p", "\(server.port)", "--no-raw"]
        #expect(try runProgram(Self.cli, p + ["HELLO", "3"]).stdout.contains("\"proto\" => (integer) 3"))
        #expect(try runProgram(Self.cli, p + ["GET", "nokey"]).stdout == "(nil)\n")
        #expect(try runProgram(Self.cli, p + ["CONFIG", "GET", "maxclients"]).stdout == "1# \"maxclients\" => \"10000\"\n")
        #expect(try runProgram(Self.cli, p + ["SET", "k", "v"]).stdout == "OK\n")
    }

    @Test("interactive redis-cli shows argument hints built from COMMAND DOCS")
    func hints() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.cli), "redis-cli is not installed")
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux"), "tmux is not installed")
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let session = "sb-hints-\(server.port)"
        let screenFile = FileManager.default.temporaryDirectory.appendingPathComponent("\(session).txt").path
        // tmux's server outlives the command that starts it, which Foundation's Process waits
        // on: drive tmux through the shell instead.
        func tmux(_ arguments: String) -> Int32 { system("/usr/bin/tmux \(arguments) </dev/null >/dev/null 2>&1") }
        // A real terminal: redis-cli only shows hints when it talks to a tty.
        try #require(tmux("new-session -d -s \(session) -x 200 -y 10 '\(Self.cli) -p \(server.port)'") == 0)
        defer { _ = tmux("kill-session -t \(session)") }
        func screen(after typing: String?, contains text: String) throws -> Bool {
            if let typing { _ = tmux("send-keys -t \(session) C-u '\(typing)'") }
            for _ in 0..<50 {
                _ = system("/usr/bin/tmux capture-pane -t \(session) -p > \(screenFile) 2>/dev/null")
                if let shown = try? String(contentsOfFile: screenFile, encoding: .utf8), shown.contains(text) { return true }
                usleep(100_000)
            }
            return false
        }
        // Wait for the prompt: redis-cli reads COMMAND DOCS before it shows one.
        try #require(try screen(after: nil, contains: "127.0.0.1:\(server.port)>"))
        #expect(try screen(after: "SET k v ", contains: "SET k v [NX|XX|IFEQ ifeq-value|IFNE ifne-value"))
        #expect(try screen(after: "EXPIRE k 10 ", contains: "EXPIRE k 10 [NX|XX|GT|LT]"))
        #expect(try screen(after: "CLIENT SETNAME ", contains: "CLIENT SETNAME connection-name"))
    }

    @Test("--pipe mass insertion of 100,000 keys")
    func massInsertion() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.cli), "redis-cli is not installed")
        let server = try await InProcessServer(threads: 2)
        defer { Task { await server.stop() } }
        var data = Data()
        for i in 0..<100_000 {
            let key = "mass:\(i)", value = "value-\(i)"
            data.append("*3\r\n$3\r\nSET\r\n$\(key.utf8.count)\r\n\(key)\r\n$\(value.utf8.count)\r\n\(value)\r\n".data(using: .utf8)!)
        }
        let r = try runProgram(Self.cli, ["-p", "\(server.port)", "--pipe"], input: data, timeout: 300)
        #expect(r.status == 0)
        #expect(r.stdout.contains("errors: 0, replies: 100000"), "redis-cli said: \(r.stdout)")
        let c = try RawClient(port: server.port)
        #expect(try c.call("DBSIZE") == .integer(100_000))
        #expect(try c.call("GET", "mass:99999") == .bulk("value-99999"))
    }
}

/// redis-py, the most used Python client, which speaks RESP3 by default and sends
/// `CLIENT SETINFO` on every connection.
@Suite("redis-py")
struct RedisPyTests {
    @Test("redis-py in RESP3 and RESP2: commands, errors, pipelines, SCAN, INFO")
    func redisPy() async throws {
        let check = try #require(Bundle.module.url(forResource: "Corpus/redis_py_check", withExtension: "py"))
        let probe = try runProgram("/usr/bin/env", ["python3", "-c", "import redis"])
        try #require(probe.status == 0, "python3 module redis is not installed (Tools/deps installs it)")
        let server = try await InProcessServer()
        defer { Task { await server.stop() } }
        let r = try runProgram("/usr/bin/env", ["python3", check.path, "\(server.port)"], timeout: 120)
        #expect(r.status == 0, "redis-py: \(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("all checks passed"))
    }
}

/// Real lock libraries from PyPI (redis-py's Lock, pottery's Redlock) and the classic shop
/// pattern, against Strongbox, with the commands and scripts they really send.
@Suite("Lock libraries", .serialized)
struct LockLibraryTests {
    static func script() throws -> String {
        try #require(Bundle.module.url(forResource: "Corpus/lock_libraries_check", withExtension: "py")).path
    }

    static func requireModules(_ modules: String) throws {
        let probe = try runProgram("/usr/bin/env", ["python3", "-c", "import \(modules)"])
        try #require(probe.status == 0, "python3 modules \(modules) are not installed (Tools/deps installs them)")
    }

    @Test("redis-py Lock: acquire, blocking timeout, extend, reacquire, release, LockNotOwnedError",
          arguments: [(2, "python"), (3, "python"), (2, "hiredis"), (3, "hiredis")])
    func redisPyLock(resp: Int, parser: String) async throws {
        try Self.requireModules("redis, hiredis")
        let server = try await InProcessServer(threads: 2)
        defer { Task { await server.stop() } }
        let r = try runProgram("/usr/bin/env", ["python3", try Self.script(), "redis-py", "\(server.port)", "\(resp)", parser], timeout: 120)
        #expect(r.status == 0 && r.stdout.contains("all checks passed"), "\(r.stdout)\(r.stderr)")
    }

    @Test("pottery Redlock over three Strongbox servers")
    func potteryRedlock() async throws {
        try Self.requireModules("pottery")
        let servers = [try await InProcessServer(), try await InProcessServer(), try await InProcessServer()]
        defer { for s in servers { Task { await s.stop() } } }
        let r = try runProgram("/usr/bin/env", ["python3", try Self.script(), "pottery"] + servers.map { "\($0.port)" }, timeout: 120)
        #expect(r.status == 0 && r.stdout.contains("all checks passed"), "\(r.stdout)\(r.stderr)")
    }

    @Test("the classic shop: a redis-py Lock guards stock, StrictRedis caches prices")
    func shop() async throws {
        try Self.requireModules("redis")
        let server = try await InProcessServer(threads: 2)
        defer { Task { await server.stop() } }
        let r = try runProgram("/usr/bin/env", ["python3", try Self.script(), "shop", "\(server.port)"], timeout: 120)
        #expect(r.status == 0 && r.stdout.contains("all checks passed"), "\(r.stdout)\(r.stderr)")
    }
}
