import NIOCore
import RESP
import Testing

@Suite("Encoder")
struct EncoderTests {
    static func encode(_ value: RESPValue, _ version: RESPVersion) -> String {
        var b = ByteBuffer()
        b.writeRESP(value, version: version)
        return String(decoding: b.readableBytesView, as: UTF8.self)
    }

    @Test("every type in RESP2 and RESP3", arguments: [
        (RESPValue.simpleString("OK"), "+OK\r\n", "+OK\r\n"),
        (.error("ERR bad"), "-ERR bad\r\n", "-ERR bad\r\n"),
        (.error("ERR two\r\nlines"), "-ERR two  lines\r\n", "-ERR two  lines\r\n"),
        (.integer(-42), ":-42\r\n", ":-42\r\n"),
        (.integer(Int64.min), ":-9223372036854775808\r\n", ":-9223372036854775808\r\n"),
        (.bulk("hi"), "$2\r\nhi\r\n", "$2\r\nhi\r\n"),
        (.bulk(""), "$0\r\n\r\n", "$0\r\n\r\n"),
        (.null, "$-1\r\n", "_\r\n"),
        (.nullArray, "*-1\r\n", "_\r\n"),
        (.array([.integer(1), .bulk("a")]), "*2\r\n:1\r\n$1\r\na\r\n", "*2\r\n:1\r\n$1\r\na\r\n"),
        (.map([(.bulk("k"), .integer(1))]), "*2\r\n$1\r\nk\r\n:1\r\n", "%1\r\n$1\r\nk\r\n:1\r\n"),
        (.set([.bulk("a")]), "*1\r\n$1\r\na\r\n", "~1\r\n$1\r\na\r\n"),
        (.double(1.5), "$3\r\n1.5\r\n", ",1.5\r\n"),
        (.double(.infinity), "$3\r\ninf\r\n", ",inf\r\n"),
        (.double(-.infinity), "$4\r\n-inf\r\n", ",-inf\r\n"),
        (.double(0.1), "$19\r\n0.10000000000000001\r\n", ",0.10000000000000001\r\n"),
        (.boolean(true), ":1\r\n", "#t\r\n"),
        (.boolean(false), ":0\r\n", "#f\r\n"),
        (.bigNumber("12345678901234567890"), "$20\r\n12345678901234567890\r\n", "(12345678901234567890\r\n"),
        (.verbatim(format: "txt", text: "hello"), "$5\r\nhello\r\n", "=9\r\ntxt:hello\r\n"),
        (.push([.bulk("message")]), "*1\r\n$7\r\nmessage\r\n", ">1\r\n$7\r\nmessage\r\n"),
    ])
    func types(value: RESPValue, resp2: String, resp3: String) {
        #expect(Self.encode(value, .v2) == resp2)
        #expect(Self.encode(value, .v3) == resp3)
    }

    @Test("decimal writer agrees with String for edge values", arguments: [Int64.min, -1, 0, 9, 10, 99, 100, Int64.max])
    func decimals(value: Int64) {
        var b = ByteBuffer()
        b.writeDecimal(value)
        #expect(String(decoding: b.readableBytesView, as: UTF8.self) == String(value))
    }

    @Test("reply decoder reads back what the encoder writes, in both versions")
    func roundTrip() throws {
        let values: [RESPValue] = [
            .simpleString("PONG"), .error("ERR x"), .integer(7), .bulk("v"), .array([.bulk("a"), .integer(2)]),
            .map([(.bulk("a"), .integer(1))]), .set([.bulk("x")]), .boolean(true), .double(2.5),
            .bigNumber("1"), .verbatim(format: "txt", text: "t"), .push([.bulk("p")]), .null,
        ]
        for v in values {
            var b = ByteBuffer()
            b.writeRESP(v, version: .v3)
            let decoded = try RESPValueDecoder().next(from: &b)
            #expect(decoded == v)
            #expect(b.readableBytes == 0)
        }
        var partial = ByteBuffer(string: "*2\r\n$1\r\na\r\n")
        #expect(try RESPValueDecoder().next(from: &partial) == nil)
        #expect(partial.readableBytes == 11)
    }
}
