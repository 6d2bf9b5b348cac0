import Foundation
import NIOCore
import RESP
import Testing
import TestSupport

/// Replays the corpus against a real redis-server and against Strongbox and compares reply bytes.
@Suite("Differential against redis-server", .serialized)
struct DifferentialTests {
    enum Mode { case exact, typeOnly, sorted }
    enum Step {
        /// `connection` 1 is the main client; a line starting `@2 ` runs on a second one (WATCH, pub/sub).
        case command([[UInt8]], Mode, line: Int, text: String, connection: Int = 1)
        case sleep(Int)
    }

    static func loadCorpus(_ name: String = "differential") throws -> [Step] {
        let url = try #require(Bundle.module.url(forResource: "Corpus/\(name)", withExtension: "txt"))
        let text = try String(contentsOf: url, encoding: .utf8)
        var steps: [Step] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(raw)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("!sleep ") {
                steps.append(.sleep(Int(line.dropFirst(7)) ?? 0))
                continue
            }
            var mode = Mode.exact
            var connection = 1
            if line.hasPrefix("@2 ") {
                connection = 2
                line = line.dropFirst(3)
            }
            if line.hasPrefix("~") {
                mode = .typeOnly
                line = line.dropFirst()
            } else if line.hasPrefix("@sort ") {
                mode = .sorted
                line = line.dropFirst(6)
            }
            let args = try InlineSplitter.split(Array(line.utf8)).map { Array($0.readableBytesView) }
            steps.append(.command(args, mode, line: index + 1, text: String(line), connection: connection))
        }
        return steps
    }

    /// Runs the steps on one server. - Returns: the reply bytes of each command step.
    static func replay(_ steps: [Step], port: Int, resp3: Bool) throws -> [(RESPValue, [UInt8])] {
        func connect() throws -> RawClient {
            let client = try RawClient(port: port)
            if resp3 {
                try client.send(command: ["HELLO", "3"])
                _ = try client.readReply()
            }
            return client
        }
        let client = try connect()
        var second: RawClient?
        var replies: [(RESPValue, [UInt8])] = []
        for step in steps {
            switch step {
            case .sleep(let ms): usleep(UInt32(ms) * 1000)
            case .command(let args, _, _, _, let connection):
                if connection == 2 && second == nil { second = try connect() }
                let c = connection == 2 ? second! : client
                try c.send(RawClient.encode(args))
                replies.append(try c.readReplyBytes())
            }
        }
        return replies
    }

    static func normalized(_ value: RESPValue, _ bytes: [UInt8], _ mode: Mode, resp3: Bool) -> [UInt8] {
        switch mode {
        case .exact: return bytes
        case .typeOnly: return Array(bytes.prefix(1))
        case .sorted:
            var out = ByteBuffer()
            func sortedItems(_ items: [RESPValue]) -> [RESPValue] {
                items.sorted { a, b in
                    var x = ByteBuffer(), y = ByteBuffer()
                    x.writeRESP(a, version: .v2)
                    y.writeRESP(b, version: .v2)
                    return x.readableBytesView.lexicographicallyPrecedes(y.readableBytesView)
                }
            }
            switch value {
            case .array(let items) where items.count == 2 && { if case .array = items[1] { return true } else { return false } }():
                // A SCAN reply: the cursor, then the keys.
                if case .array(let keys) = items[1] {
                    out.writeRESP(.array([items[0], .array(sortedItems(keys))]), version: resp3 ? .v3 : .v2)
                }
            case .array(let items):
                out.writeRESP(.array(sortedItems(items)), version: resp3 ? .v3 : .v2)
            default:
                return bytes
            }
            return Array(out.readableBytesView)
        }
    }

    static func show(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.prefix(300), as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\\r\\n")
    }

    @Test("corpus has at least 300 command lines")
    func corpusSize() throws {
        let commands = try Self.loadCorpus().filter { if case .command = $0 { return true } else { return false } }
        #expect(commands.count >= 300)
    }

    @Test("replies match redis-server byte for byte", arguments: ["differential", "scripting", "hardening", "lua_libs", "functions", "transactions"], [false, true])
    func matchesRedis(corpus: String, resp3: Bool) async throws {
        try #require(RedisServerProcess.isAvailable, "redis-server is not installed")
        let steps = try Self.loadCorpus(corpus)
        let redis = try RedisServerProcess()
        defer { redis.stop() }
        let strongbox = try await InProcessServer()
        let expected = try Self.replay(steps, port: redis.port, resp3: resp3)
        let actual = try Self.replay(steps, port: strongbox.port, resp3: resp3)
        await strongbox.stop()
        let commands: [(Mode, Int, String)] = steps.compactMap {
            if case let .command(_, mode, line, text, _) = $0 { return (mode, line, text) } else { return nil }
        }
        var differences: [String] = []
        for (i, (mode, line, text)) in commands.enumerated() {
            let want = Self.normalized(expected[i].0, expected[i].1, mode, resp3: resp3)
            let got = Self.normalized(actual[i].0, actual[i].1, mode, resp3: resp3)
            if want != got {
                differences.append("line \(line) `\(text)`\n    redis:     \(Self.show(want))\n    strongbox: \(Self.show(got))")
            }
        }
        #expect(differences.isEmpty, "\(differences.count) differences in \(corpus) (RESP\(resp3 ? 3 : 2)):\n\(differences.joined(separator: "\n"))")
    }
}
