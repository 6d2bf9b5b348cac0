import Engine
import Foundation
import Keyspace
import NIOCore
import RESP
import StrongboxServer

/// A Strongbox server running in this process on an ephemeral loopback port.
public final class InProcessServer: Sendable {
    public let server: StrongboxServer
    public let engine: Engine
    private let task: Task<Void, any Error>
    public var port: Int { server.port }

    /// - Parameter settings: config parameters to set before start (redis.conf names).
    public init(_ settings: [String: String] = [:], threads: Int = 1, clock: any KeyspaceClock = SystemClock()) async throws {
        let config = ConfigStore()
        try config.set("port", "0", startup: true)
        try config.set("bind", "127.0.0.1", startup: true)
        for (k, v) in settings { try config.set(k, v, startup: true) }
        engine = Engine(keyspace: Keyspace(clock: clock), config: config)
        server = StrongboxServer(engine: engine, threads: threads)
        try await server.start()
        task = Task { [server] in try await server.run() }
    }

    public func stop() async {
        server.requestShutdown()
        _ = try? await task.value
    }
}

/// A real `redis-server` (the Debian package) started on a free loopback port and stopped by PID.
public final class RedisServerProcess: @unchecked Sendable {
    public let port: Int
    private let process: Process

    public static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/redis-server") }

    public init(extraArguments: [String] = [], port: Int? = nil) throws {
        self.port = try port ?? freePort()
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", "\(self.port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning"] + extraArguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try waitForPort(self.port)
    }

    public var pid: Int32 { process.processIdentifier }

    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)  // kills a stopped process too
            process.waitUntilExit()
        }
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    public func pause() { kill(pid, SIGSTOP) }
    /// SIGCONT.
    public func resume() { kill(pid, SIGCONT) }

    deinit { stop() }
}

/// Whether `port` can be bound on loopback right now (nobody listens on it or holds it as a local port).
public func canBind(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// A port nobody listens on right now (bind to port 0, read it, close).
public func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp -> Bool in
            bind(fd, sp, len) == 0 && getsockname(fd, sp, &len) == 0
        }
    }
    guard ok else { throw TestError("could not find a free port") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Waits up to 10 s for something to accept on 127.0.0.1:`port`.
public func waitForPort(_ port: Int) throws {
    for _ in 0..<200 {
        if let c = try? RawClient(port: port) {
            c.close()
            return
        }
        usleep(50_000)
    }
    throw TestError("nothing listening on port \(port)")
}

public struct TestError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs a program to completion, with standard input, output and error in temporary files
/// (no pipes, so a chatty program can never block on a full one).
/// - Returns: exit status, standard output and standard error.
@discardableResult
public func runProgram(_ path: String, _ arguments: [String], input: Data? = nil, timeout: TimeInterval = 120) throws -> (status: Int32, stdout: String, stderr: String) {
    let dir = FileManager.default.temporaryDirectory
    let id = UUID().uuidString
    let inURL = dir.appendingPathComponent("sb-in-\(id)")
    let outURL = dir.appendingPathComponent("sb-out-\(id)")
    let errURL = dir.appendingPathComponent("sb-err-\(id)")
    try (input ?? Data()).write(to: inURL)
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer { for u in [inURL, outURL, errURL] { try? FileManager.default.removeItem(at: u) } }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let inHandle = try FileHandle(forReadingFrom: inURL)
    let outHandle = try FileHandle(forWritingTo: outURL)
    let errHandle = try FileHandle(forWritingTo: errURL)
    defer { try? inHandle.close(); try? outHandle.close(); try? errHandle.close() }
    process.standardInput = inHandle
    process.standardOutput = outHandle
    process.standardError = errHandle
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning {
        process.terminate()
        throw TestError("\(path) timed out")
    }
    process.waitUntilExit()
    let out = (try? Data(contentsOf: outURL)) ?? Data()
    let err = (try? Data(contentsOf: errURL)) ?? Data()
    return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}

/// The built `strongbox` executable beside the test bundle.
public func strongboxExecutable() throws -> String {
    var candidates: [URL] = []
    if let bundle = Bundle.allBundles.first(where: { $0.bundlePath.hasSuffix(".xctest") }) {
        candidates.append(URL(fileURLWithPath: bundle.bundlePath).deletingLastPathComponent().appendingPathComponent("strongbox"))
    }
    let arg0 = URL(fileURLWithPath: CommandLine.arguments[0])
    candidates.append(arg0.deletingLastPathComponent().appendingPathComponent("strongbox"))
    var dir = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { dir.deleteLastPathComponent() }
    candidates.append(dir.appendingPathComponent(".build/debug/strongbox"))
    for c in candidates where FileManager.default.isExecutableFile(atPath: c.path) { return c.path }
    throw TestError("strongbox executable not found (build it with `swift build`)")
}

/// The real `strongbox` executable started on a free loopback port, stopped by PID.
public final class StrongboxProcess: @unchecked Sendable {
    public let port: Int
    private let process: Process

    /// - Parameter port: the port to listen on (a free one when nil), e.g. to restart a node where it was.
    public init(_ arguments: [String] = [], port: Int? = nil) throws {
        self.port = try port ?? freePort()
        process = Process()
        process.executableURL = URL(fileURLWithPath: try strongboxExecutable())
        // Callers that pass their own --bind get it instead of the loopback default.
        let bind = arguments.contains("--bind") ? [] : ["--bind", "127.0.0.1"]
        process.arguments = ["--port", "\(self.port)", "--loglevel", "warning"] + bind + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try waitForPort(self.port)
    }

    public var pid: Int32 { process.processIdentifier }

    /// The process's resident set size in bytes, from /proc.
    public func residentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kb = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            return kb * 1024
        }
        return 0
    }

    public func stop() {
        if process.isRunning {
            kill(pid, SIGKILL)  // kills a stopped process too, without letting it run first
            process.waitUntilExit()
        }
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    public func pause() { kill(pid, SIGSTOP) }
    /// SIGCONT.
    public func resume() { kill(pid, SIGCONT) }

    /// Sends SIGTERM and waits up to `seconds` for the process to exit.
    /// - Returns: whether it exited in time.
    public func terminate(within seconds: Double) -> Bool {
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return !process.isRunning
    }

    deinit { stop() }
}
