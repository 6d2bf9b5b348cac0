import Crypto
import NIOCore
import RESP

/// A Lua script with its SHA1, so it can be run by `EVALSHA` and loaded on demand.
public struct Script: Sendable, Hashable {
    public let source: String
    /// The lowercase hex SHA1 of `source`, as `SCRIPT LOAD` returns it.
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        self.sha1 = Insecure.SHA1.hash(data: Array(source.utf8)).map { byte in
            let s = String(byte, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined()
    }
}

extension Command {
    /// `EVALSHA sha numkeys keys… args…` of `script`, decoded by `decode`. Sent through a client or
    /// connection, a `NOSCRIPT` reply makes it `SCRIPT LOAD` the source and retry once.
    public static func evalSHA(
        _ script: Script, keys: [any RESPArgument] = [], arguments: [any RESPArgument] = [],
        decode: @escaping @Sendable (RESPValue) throws(StrongboxError) -> Reply
    ) -> Command {
        let args: [any RESPArgument] = ["EVALSHA", script.sha1, keys.count] + keys + arguments
        return Command(buffers: encodeArguments(args), keyIndices: keys.indices.map { $0 + 3 }, split: .none,
                       script: script, decode: decode)
    }

    /// `EVAL source numkeys keys… args…`.
    public static func eval(
        _ source: String, keys: [any RESPArgument] = [], arguments: [any RESPArgument] = [],
        decode: @escaping @Sendable (RESPValue) throws(StrongboxError) -> Reply
    ) -> Command {
        let args: [any RESPArgument] = ["EVAL", source, keys.count] + keys + arguments
        return Command(buffers: encodeArguments(args), keyIndices: keys.indices.map { $0 + 3 }, split: .none, decode: decode)
    }
}

extension Command where Reply == RESPValue {
    /// `EVALSHA` with the raw reply.
    public static func evalSHA(_ script: Script, keys: [any RESPArgument] = [], arguments: [any RESPArgument] = []) -> Command {
        evalSHA(script, keys: keys, arguments: arguments, decode: ReplyDecoders.raw)
    }
}
