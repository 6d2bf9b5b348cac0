import Testing
import Foundation
import NIOCore
import StrongboxClient
import TestSupport

/// Every client, cluster-client and Redlock suite, one after another: they start real processes and
/// some measure timeouts, so they should not compete with each other for two cores.
@Suite(.serialized) struct ClientIntegration {}

/// Which real server a test runs against.
enum ServerKind: String, CaseIterable, CustomStringConvertible, Sendable {
    case strongbox, redis
    var description: String { rawValue }

    /// Whether this server has Strongbox's lock commands (DELIFEQ, CAD, CAS, PEXPIRE IFEQ, DIGEST…).
    var hasLockCommands: Bool { self == .strongbox }
}

/// A real server process of either kind, stopped by PID.
final class Node: @unchecked Sendable {
    let kind: ServerKind
    private(set) var port: Int
    private var strongbox: StrongboxProcess?
    private var redis: RedisServerProcess?
    let arguments: [String]

    init(_ kind: ServerKind, arguments: [String] = [], port: Int? = nil) throws {
        self.kind = kind
        self.arguments = arguments
        switch kind {
        case .strongbox: strongbox = try StrongboxProcess(arguments, port: port)
        case .redis: redis = try RedisServerProcess(extraArguments: arguments, port: port)
        }
        self.port = strongbox?.port ?? redis!.port
    }

    var endpoint: Endpoint { Endpoint(host: "127.0.0.1", port: port) }
    var pid: Int32 { strongbox?.pid ?? redis!.pid }

    /// SIGSTOP, returning once the process is really stopped (signal delivery is asynchronous).
    func pause() {
        kill(pid, SIGSTOP)
        let deadline = Date().addingTimeInterval(2)
        while Date() < deadline {
            if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
               let close = stat.lastIndex(of: ")"),
               stat[stat.index(close, offsetBy: 2)] == "T" { return }
            usleep(1000)
        }
    }
    func resume() { kill(pid, SIGCONT) }
    func stop() {
        strongbox?.stop()
        redis?.stop()
    }

    /// Stops the process and starts a new one on the same port.
    func restart() throws {
        stop()
        switch kind {
        case .strongbox: strongbox = try StrongboxProcess(arguments, port: port)
        case .redis: redis = try RedisServerProcess(extraArguments: arguments, port: port)
        }
    }

    deinit { stop() }
}

/// Starts `count` nodes of `kind`.
func startNodes(_ count: Int, _ kind: ServerKind = .strongbox, arguments: [String] = []) throws -> [Node] {
    try (0..<count).map { _ in try Node(kind, arguments: arguments) }
}

extension Duration {
    var milliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}

/// Raw one-off command against a node, for checks that must not go through the code under test.
func rawCall(_ port: Int, _ args: String...) throws -> RESPValueText {
    let client = try RawClient(port: port)
    defer { client.close() }
    try client.send(command: args)
    return RESPValueText(try client.readReply())
}

import RESP

/// A reply reduced to text for simple assertions: bulk/simple strings as text, integers as digits, null as nil.
struct RESPValueText: Equatable, CustomStringConvertible {
    let value: RESPValue
    init(_ value: RESPValue) { self.value = value }
    var text: String? {
        switch value {
        case .bulkString(let b): return String(buffer: b)
        case .simpleString(let s), .error(let s): return s
        case .integer(let n): return String(n)
        default: return nil
        }
    }
    var description: String { "\(value)" }
}
