import Engine
import Keyspace
import NIOCore
import RESP

/// libFuzzer target: well-formed commands with hostile arguments driven straight into `Engine`:
/// every command of the table, with numbers at their edges (INT64 bounds and beyond, NaN, inf,
/// huge counts), empty strings, option words, raw bytes, and Lua scripts returning odd values.
/// A trap anywhere (overflow, bad index, Int(Double)) is a crash the fuzzer reports.
enum CommandsTarget {
    static let engine = Engine()
    static let names: [String] = engine.table.specs.map(\.name).filter {
        // A server-wide stop is not an input bug; DEBUG-like waits would only slow the search.
        !["shutdown", "monitor", "subscribe", "psubscribe", "ssubscribe", "sync", "psync"].contains($0.lowercased())
    }
    // 536870912 is one past the largest string.rep / SETRANGE result (the refusal path); one
    // under it builds 512 MiB, seconds per input under ASan for nothing new.
    static let numbers = ["0", "1", "-1", "2", "10", "100", "9223372036854775807", "-9223372036854775808",
                          "9223372036854775808", "-9223372036854775809", "18446744073709551615", "4294967295",
                          "4294967296", "2147483647", "2147483648", "-2147483649", "nan", "-nan", "inf", "-inf",
                          "+inf", "1e308", "-1e308", "1e-320", "0.5", "-0", "3.14", "", " ", "0x10", "1e3", "536870912",
                          "9223372036854775", "9223372036854776", "-9223372036854776"]
    static let words = ["NX", "XX", "GT", "LT", "EX", "PX", "EXAT", "PXAT", "KEEPTTL", "PERSIST", "GET", "IFEQ", "IFNE",
                        "IFDEQ", "IFDNE", "COUNT", "MATCH", "TYPE", "ID", "ADDR", "LADDR", "SKIPME", "USER", "MAXAGE",
                        "yes", "no", "SYNC", "ASYNC", "SAMPLES", "*", "?", "[", "\\", "string", "LOAD", "EXISTS",
                        "FLUSH", "KILL", "HELP", "ENCODING", "FREQ", "IDLETIME", "USAGE", "maxmemory", "hz",
                        "proto-max-bulk-len", "maxmemory-policy", "allkeys-lfu", "busy-reply-threshold", "GETKEYS",
                        "INFO", "DOCS", "LIST", "SETNAME", "AUTH", "default", "3", "2", "REPLACE", "APPEND",
                        "WITHCODE", "LIBRARYNAME", "k", "DELETE", "STATS", "DUMP", "RESTORE"]
    static let keys = ["k", "k2", "{t}a", "{t}b", "lk", ""]
    static let scripts = [
        "return {1, 2, {3, 'x'}, false, true}",
        "return setmetatable({}, {__index = function() error('x') end})",
        "return redis.call(ARGV[1] or 'ping', KEYS[1] or 'k')",
        "return redis.pcall(ARGV[1] or 'ping', KEYS[1] or 'k', ARGV[2] or '1')",
        "return 0/0", "return 1/0", "return -1/0", "return 1e300", "return -1e300", "return 2^63", "return -2^63",
        "return {err = 1}", "return {ok = {}}", "return {err = 'ERR x'}", "return tonumber(ARGV[1])",
        "redis.log(tonumber(ARGV[1]) or 0/0, 'x')", "return redis.sha1hex(ARGV[1])",
        "redis.setresp(3) return redis.call('hello', '3')", "redis.setresp(3) return {map = {a = {double = 0/0}}}",
        "return cjson.decode(ARGV[1] or '[]')", "return cjson.encode({ARGV[1], tonumber(ARGV[2])})",
        "return bit.tohex(tonumber(ARGV[1]) or 0, tonumber(ARGV[2]) or 8)",
        "return string.rep(ARGV[1] or 'x', tonumber(ARGV[2]) or 1)", "return {string.find(ARGV[1] or '', ARGV[2] or '')}",
        "return redis.call('pexpire', KEYS[1] or 'k', (tonumber(ARGV[1]) or 0) + redis.call('pttl', KEYS[1] or 'k'))",
        "error({})", "error(nil)", "rawset(_G, 'x', 1)", "return loadstring(ARGV[1] or '')",
        "return cmsgpack.unpack(ARGV[1] or '')", "return cmsgpack.pack(tonumber(ARGV[1]), ARGV[2])",
        "return {struct.unpack(ARGV[1] or 'i', ARGV[2] or '')}", "return struct.pack(ARGV[1] or 'i', tonumber(ARGV[2]) or 0)",
        // Function libraries (FUNCTION LOAD) and what FCALL then runs. (A library that loops
        // would cost the 500 ms load limit per input; FunctionTests covers it.)
        "#!lua name=k\nredis.register_function('k', function(k, a) return redis.call(a[1] or 'ping', k[1] or 'k') end)",
        "#!lua name=k2\nredis.register_function{function_name='k', callback=function() return {1, {2}} end, flags={'no-writes'}}",
        "#!lua name=k4\nredis.register_function('x', 1)",
    ]

    struct Reader {
        let data: UnsafeRawBufferPointer
        var i = 0
        mutating func byte() -> Int? {
            guard i < data.count else { return nil }
            defer { i += 1 }
            return Int(data[i])
        }
        mutating func bytes(_ n: Int) -> [UInt8] {
            let end = min(data.count, i + n)
            defer { i = end }
            return Array(data[i..<end])
        }
    }

    nonisolated(unsafe) static var inputs = 0

    static func run(_ data: UnsafeRawBufferPointer) {
        var session = Session(id: 1, authenticated: true)
        var reader = Reader(data: data)
        var inv = Invocation(session: session, out: ByteBuffer())
        inv.args = [ByteBuffer(string: "FLUSHALL")]
        engine.execute(&inv)
        // Random bytes as EVAL bodies fill the script cache (unbounded, as Redis's): start over
        // now and then, or the search slows down and its memory grows for nothing.
        inputs += 1
        if inputs % 4096 == 0 {
            for command in [["SCRIPT", "FLUSH"], ["FUNCTION", "FLUSH"]] {
                inv = Invocation(session: session, out: ByteBuffer())
                inv.args = command.map { ByteBuffer(string: $0) }
                engine.execute(&inv)
            }
        }
        var commands = 0
        while let pick = reader.byte(), let count = reader.byte(), commands < 16 {
            commands += 1
            if pick == 255 { session.protocolVersion = session.protocolVersion == .v2 ? .v3 : .v2 }
            var args = [ByteBuffer(string: names[(pick * 256 + count) % names.count])]
            for _ in 0..<(count % 9) {
                guard let kind = reader.byte(), let which = reader.byte() else { break }
                switch kind % 6 {
                case 0: args.append(ByteBuffer(string: numbers[which % numbers.count]))
                case 1: args.append(ByteBuffer(string: words[which % words.count]))
                case 2: args.append(ByteBuffer(string: keys[which % keys.count]))
                case 3: args.append(ByteBuffer(bytes: reader.bytes(which % 32)))
                case 4: args.append(ByteBuffer(string: scripts[which % scripts.count]))
                default: args.append(ByteBuffer(string: String(which % 4)))
                }
            }
            // COMMAND and COMMAND DOCS/INFO without names list the whole table: the same big reply
            // every time, a quarter of the fuzzer's time for nothing new.
            if args[0].readableBytesView.elementsEqual("command".utf8), args.count < 3 { continue }
            inv = Invocation(session: session, out: ByteBuffer())
            inv.args = args
            engine.execute(&inv)
            // Whatever was answered must be well-formed RESP, exactly one reply.
            var out = inv.out
            if out.readableBytes > 0 {
                guard let frame = try? RESPFrameScanner.frameLength(out), frame == out.readableBytes else {
                    fatalError("malformed reply to \(args.map { String(buffer: $0) })")
                }
                _ = try? RESPValueDecoder().next(from: &out)
            }
            session = inv.session
        }
    }
}
