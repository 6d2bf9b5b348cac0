import Foundation
import Synchronization

/// The servers a run talks to: either processes this tool started (and may fault), or external
/// ones (load only, never touched).
public final class Fleet: Sendable {
    public struct Member: Sendable {
        public let host: String
        public let port: Int
        public var address: String { "\(host):\(port)" }
    }

    public let members: [Member]
    public let spawned: Bool
    private let binary: String?
    private let extraArguments: [String]
    private let processes: Mutex<[Process?]>
    private let paused: Mutex<Set<Int>>

    /// Servers already running at `addresses` (`host:port`).
    public init(external addresses: [String]) throws {
        members = try addresses.map { a in
            guard let colon = a.lastIndex(of: ":"), let port = Int(a[a.index(after: colon)...]) else {
                throw StressError("bad node address '\(a)' (want host:port)")
            }
            return Member(host: String(a[..<colon]), port: port)
        }
        spawned = false
        binary = nil
        extraArguments = []
        processes = Mutex(Array(repeating: nil, count: members.count))
        paused = Mutex([])
    }

    /// Starts `count` servers from `binary` on free loopback ports and waits until each answers.
    public init(spawn count: Int, binary: String, arguments: [String] = []) throws {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw StressError("server binary '\(binary)' not found or not executable (build it with `swift build`, or pass --server-binary)")
        }
        let ports = try (0..<count).map { _ in try freeLoopbackPort() }
        members = ports.map { Member(host: "127.0.0.1", port: $0) }
        spawned = true
        self.binary = binary
        extraArguments = arguments
        processes = Mutex(Array(repeating: nil, count: count))
        paused = Mutex([])
        for i in 0..<count { try start(i) }
    }

    private func start(_ index: Int) throws {
        guard let binary else { return }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["--port", "\(members[index].port)", "--bind", "127.0.0.1", "--loglevel", "warning"] + extraArguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        processes.withLock { $0[index] = p }
        try waitUntilListening(port: members[index].port, timeout: 15)
    }

    public func pid(_ index: Int) -> Int32? { processes.withLock { $0[index]?.processIdentifier } }

    /// SIGSTOP: the node keeps its sockets and its data but answers nothing.
    public func pause(_ index: Int) {
        guard let pid = pid(index) else { return }
        kill(pid, SIGSTOP)
        paused.withLock { _ = $0.insert(index) }
    }

    public func resume(_ index: Int) {
        guard let pid = pid(index) else { return }
        kill(pid, SIGCONT)
        paused.withLock { _ = $0.remove(index) }
    }

    /// SIGKILL (or SIGTERM when `graceful`), waiting for the process to go.
    public func stop(_ index: Int, graceful: Bool = false) {
        let p = processes.withLock { procs -> Process? in
            let p = procs[index]
            procs[index] = nil
            return p
        }
        guard let p, p.isRunning else { return }
        if graceful {
            kill(p.processIdentifier, SIGCONT)
            kill(p.processIdentifier, SIGTERM)
        } else {
            kill(p.processIdentifier, SIGKILL)
        }
        p.waitUntilExit()
        paused.withLock { _ = $0.remove(index) }
    }

    /// Starts a stopped node again on its port (empty: there is no persistence).
    public func restart(_ index: Int) throws {
        stop(index)
        try start(index)
    }

    public func isRunning(_ index: Int) -> Bool {
        processes.withLock { $0[index]?.isRunning ?? false } && !paused.withLock { $0.contains(index) }
    }

    /// Stops everything this fleet started.
    public func shutdown() {
        guard spawned else { return }
        for i in members.indices { stop(i) }
    }

    deinit { shutdown() }
}

public struct StressError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else { throw StressError("no free port") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

func waitUntilListening(port: Int, timeout: TimeInterval) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        close(fd)
        if ok { return }
        usleep(20_000)
    }
    throw StressError("nothing listening on port \(port) after \(timeout) s")
}

/// What to do to nodes at each fault tick, in turn: `kill:1,pause:2,restart:1`.
public struct FaultPlan: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable, CaseIterable { case kill, pause, restart }
    public struct Step: Sendable, Equatable {
        public var kind: Kind
        public var count: Int
        public init(kind: Kind, count: Int) {
            self.kind = kind
            self.count = count
        }
    }
    public var steps: [Step]

    public init?(_ text: String) {
        var steps: [Step] = []
        for part in text.split(separator: ",") {
            let pieces = part.split(separator: ":")
            guard let kind = Kind(rawValue: String(pieces[0])) else { return nil }
            let count = pieces.count > 1 ? Int(pieces[1]) : 1
            guard let count, count > 0, pieces.count <= 2 else { return nil }
            steps.append(Step(kind: kind, count: count))
        }
        guard !steps.isEmpty else { return nil }
        self.steps = steps
    }

    public var description: String { steps.map { "\($0.kind.rawValue):\($0.count)" }.joined(separator: ",") }
}

/// One fault, as the report shows it.
public struct FaultEvent: Codable, Sendable {
    public var atMicroseconds: Int64
    public var kind: String
    public var nodes: [String]
    /// `start` or `end` (resumed / restarted).
    public var phase: String
}

/// Applies a fault plan to a spawned fleet on a schedule. A paused node is resumed, and a killed or
/// restarted node is started again, after `duration` — for killed nodes never sooner than the lock
/// TTL, so a node that comes back empty cannot grant a lock a previous holder still relies on
/// (Redlock's delayed restart).
public final class FaultInjector: Sendable {
    let fleet: Fleet
    let plan: FaultPlan
    let every: Duration
    let duration: Duration
    let minimumDowntime: Duration
    let clockStart: ContinuousClock.Instant
    private let events = Mutex<[FaultEvent]>([])

    public init(fleet: Fleet, plan: FaultPlan, every: Duration, duration: Duration?, minimumDowntime: Duration,
                clockStart: ContinuousClock.Instant) {
        self.fleet = fleet
        self.plan = plan
        self.every = every
        self.duration = duration ?? every / 2
        self.minimumDowntime = minimumDowntime
        self.clockStart = clockStart
    }

    public var recorded: [FaultEvent] { events.withLock { $0 } }
    public var faultCount: Int { events.withLock { $0.filter { $0.phase == "start" }.count } }

    private func record(_ kind: FaultPlan.Kind, _ nodes: [Int], _ phase: String) {
        let at = (ContinuousClock.now - clockStart).microseconds
        let names = nodes.map { fleet.members[$0].address }
        events.withLock { $0.append(FaultEvent(atMicroseconds: at, kind: kind.rawValue, nodes: names, phase: phase)) }
    }

    /// Runs until cancelled; on the way out every node is running again.
    public func run() async {
        var step = 0
        var recoveries: [Task<Void, Never>] = []
        while !Task.isCancelled {
            do { try await Task.sleep(for: every) } catch { break }
            let s = plan.steps[step % plan.steps.count]
            step += 1
            let candidates = fleet.members.indices.filter { fleet.isRunning($0) }.shuffled()
            let victims = Array(candidates.prefix(s.count))
            guard !victims.isEmpty else { continue }
            switch s.kind {
            case .pause: victims.forEach { fleet.pause($0) }
            case .kill: victims.forEach { fleet.stop($0) }
            case .restart: victims.forEach { fleet.stop($0, graceful: true) }
            }
            record(s.kind, victims, "start")
            let downtime = s.kind == .pause ? duration : max(duration, minimumDowntime)
            recoveries.append(Task {
                try? await Task.sleep(for: downtime)
                self.recover(s.kind, victims)
            })
        }
        for r in recoveries { r.cancel() }
        for r in recoveries { await r.value }
    }

    private func recover(_ kind: FaultPlan.Kind, _ victims: [Int]) {
        switch kind {
        case .pause: victims.forEach { fleet.resume($0) }
        case .kill, .restart: victims.forEach { try? fleet.restart($0) }
        }
        record(kind, victims, "end")
    }
}
