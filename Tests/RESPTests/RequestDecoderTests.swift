import NIOCore
import NIOEmbedded
import NIOTestUtils
import RESP
import Testing

@Suite("Request decoder")
struct RequestDecoderTests {
    static func command(_ args: String...) -> RESPCommand { RESPCommand(arguments: args.map { ByteBuffer(string: $0) }) }

    /// Decodes everything in `input` at once. - Returns: the commands, and the error if one ended it.
    static func decodeAll(_ input: String, limits: RESPLimits = RESPLimits()) -> ([RESPCommand], RESPParsingError?) {
        var decoder = RESPRequestDecoder(limits: limits)
        var buffer = ByteBuffer(string: input)
        var out: [RESPCommand] = []
        do {
            while let c = try decoder.next(from: &buffer) { out.append(c) }
        } catch {
            return (out, error)
        }
        return (out, nil)
    }

    @Test("NIO decoder verifier: multibulk and inline, byte at a time and batched")
    func verifier() throws {
        let cases: [(String, [RESPCommand])] = [
            ("*1\r\n$4\r\nPING\r\n", [Self.command("PING")]),
            ("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n", [Self.command("SET", "k", "")]),
            ("PING\r\n", [Self.command("PING")]),
            ("SET k \"a b\"\n", [Self.command("SET", "k", "a b")]),
            ("*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n", [Self.command("GET", "a"), Self.command("GET", "b")]),
            ("*0\r\n*-1\r\n\r\n   \r\nPING\r\n", [Self.command("PING")]),
        ]
        for (input, expected) in cases {
            let pairs = [(ByteBuffer(string: input), expected)]
            try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { RESPCommandDecoder() }
        }
    }

    @Test("a binary bulk keeps every byte, including CR, LF and NUL")
    func binaryBulk() throws {
        var buffer = ByteBuffer(bytes: Array("*2\r\n$4\r\nECHO\r\n$5\r\n".utf8) + [0, 13, 10, 255, 36] + [13, 10])
        var decoder = RESPRequestDecoder()
        let c = try #require(try decoder.next(from: &buffer))
        #expect(Array(c.arguments[1].readableBytesView) == [0, 13, 10, 255, 36])
        #expect(buffer.readableBytes == 0)
    }

    @Test("resumes under every split point of a pipeline")
    func everySplit() throws {
        let input = Array("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\nGET key\r\n*1\r\n$4\r\nPING\r\n".utf8)
        for split in 0...input.count {
            var decoder = RESPRequestDecoder()
            var buffer = ByteBuffer(bytes: input[0..<split])
            var out: [RESPCommand] = []
            while let c = try decoder.next(from: &buffer) { out.append(c) }
            buffer.writeBytes(input[split...])
            while let c = try decoder.next(from: &buffer) { out.append(c) }
            #expect(out == [Self.command("SET", "key", "value"), Self.command("GET", "key"), Self.command("PING")], "split at \(split)")
        }
    }

    @Test("inline quoting follows redis-cli's rules", arguments: [
        ("SET k \"a\\nb\"\r\n", ["SET", "k", "a\nb"]),
        ("SET k \"\\x41\\x42\"\r\n", ["SET", "k", "AB"]),
        ("SET k 'it\\'s'\r\n", ["SET", "k", "it's"]),
        ("SET k 'a\\nb'\r\n", ["SET", "k", "a\\nb"]),
        ("  GET   k  \r\n", ["GET", "k"]),
        ("GET \"\"\r\n", ["GET", ""]),
        ("SET k\tv\r\n", ["SET", "k", "v"]),
        ("SET ab\"cd\"\r\n", ["SET", "abcd"]),
    ])
    func inlineQuoting(input: String, expected: [String]) {
        let (commands, error) = Self.decodeAll(input)
        #expect(error == nil)
        #expect(commands == [RESPCommand(arguments: expected.map { ByteBuffer(string: $0) })])
    }

    @Test("malformed input gets Redis's exact error text", arguments: [
        ("*abc\r\n", "ERR Protocol error: invalid multibulk length"),
        ("*-\r\n", "ERR Protocol error: invalid multibulk length"),
        ("*01\r\n", "ERR Protocol error: invalid multibulk length"),
        ("*2147483648\r\n", "ERR Protocol error: invalid multibulk length"),
        ("*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length"),
        ("*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"),
        ("*1\r\n$536870913\r\n", "ERR Protocol error: invalid bulk length"),
        ("*1\r\nx3\r\n", "ERR Protocol error: expected '$', got 'x'"),
        ("*1\r\n:3\r\n", "ERR Protocol error: expected '$', got ':'"),
        ("SET k \"abc\r\n", "ERR Protocol error: unbalanced quotes in request"),
        ("SET k 'abc\r\n", "ERR Protocol error: unbalanced quotes in request"),
        ("SET k \"a\"b\r\n", "ERR Protocol error: unbalanced quotes in request"),
    ])
    func malformed(input: String, message: String) {
        let (commands, error) = Self.decodeAll(input)
        #expect(commands.isEmpty)
        #expect(error?.message == message)
    }

    @Test("a bulk of exactly proto-max-bulk-len is accepted; one byte more is not")
    func bulkLimitBoundary() throws {
        let limits = RESPLimits(maxBulkLength: 16)
        let ok = Self.decodeAll("*1\r\n$16\r\n" + String(repeating: "a", count: 16) + "\r\n", limits: limits)
        #expect(ok.1 == nil)
        #expect(ok.0.first?.arguments.first?.readableBytes == 16)
        let bad = Self.decodeAll("*1\r\n$17\r\n", limits: limits)
        #expect(bad.1?.message == "ERR Protocol error: invalid bulk length")
    }

    @Test("the multibulk count limit is enforced at its boundary")
    func multibulkLimitBoundary() {
        let limits = RESPLimits(maxMultibulkCount: 3)
        #expect(Self.decodeAll("*3\r\n", limits: limits).1 == nil)
        #expect(Self.decodeAll("*4\r\n", limits: limits).1?.message == "ERR Protocol error: invalid multibulk length")
    }

    @Test("inline requests up to 64 KB are fine; longer ones without a newline are refused")
    func inlineLimitBoundary() {
        let exact = String(repeating: "a", count: 64 * 1024)
        // No newline yet, exactly at the limit: wait for more.
        #expect(Self.decodeAll(exact) == ([], nil))
        #expect(Self.decodeAll(exact + "a").1?.message == "ERR Protocol error: too big inline request")
        let (commands, error) = Self.decodeAll(exact + "\r\n")
        #expect(error == nil)
        #expect(commands.count == 1)
    }

    @Test("count lines longer than 64 KB are refused")
    func countLineLimit() {
        #expect(Self.decodeAll("*" + String(repeating: "1", count: 64 * 1024 + 1)).1?.message == "ERR Protocol error: too big mbulk count string")
        #expect(Self.decodeAll("*1\r\n$" + String(repeating: "1", count: 64 * 1024 + 1)).1?.message == "ERR Protocol error: too big bulk count string")
    }

    @Test("the query buffer limit counts bytes held for a request still arriving")
    func queryBufferLimit() {
        let limits = RESPLimits(queryBufferLimit: 100)
        let within = Self.decodeAll("*2\r\n$3\r\nSET\r\n$200\r\n" + String(repeating: "x", count: 90), limits: limits)
        #expect(within.1 == nil)
        let over = Self.decodeAll("*2\r\n$3\r\nSET\r\n$200\r\n" + String(repeating: "x", count: 101), limits: limits)
        #expect(over.1?.code == .queryBufferLimit)
        #expect(over.1?.message == nil)
    }

    @Test("an announced 512 MB bulk allocates nothing until its bytes arrive")
    func announcedBulkIsNotAllocated() throws {
        var decoder = RESPRequestDecoder()
        var buffer = ByteBuffer(string: "*2\r\n$3\r\nSET\r\n$536870912\r\nabc")
        let capacityBefore = buffer.capacity
        #expect(try decoder.next(from: &buffer) == nil)
        #expect(buffer.capacity == capacityBefore)
        #expect(buffer.readableBytes == 3)
    }

    @Test("unauthenticated clients get Redis's tighter limits")
    func unauthenticatedLimits() {
        var decoder = RESPRequestDecoder()
        decoder.unauthenticated = true
        var a = ByteBuffer(string: "*11\r\n")
        #expect(throws: RESPParsingError(.unauthenticatedMultibulkLength)) { try decoder.next(from: &a) }
        var decoder2 = RESPRequestDecoder()
        decoder2.unauthenticated = true
        var b = ByteBuffer(string: "*1\r\n$16385\r\n")
        #expect(throws: RESPParsingError(.unauthenticatedBulkLength)) { try decoder2.next(from: &b) }
    }

    @Test("Redis integer syntax", arguments: [
        ("0", Int64?.some(0)), ("-1", -1), ("9223372036854775807", Int64.max), ("-9223372036854775808", Int64.min),
        ("9223372036854775808", nil), ("-0", nil), ("01", nil), ("+1", nil), (" 1", nil), ("1 ", nil), ("", nil), ("-", nil), ("1.0", nil),
    ])
    func integers(text: String, value: Int64?) {
        #expect(RedisInteger.parse(Array(text.utf8)) == value)
    }
}
