/// A command error: the reply is `-<message>` and the connection goes on.
///
/// `message` is Redis's text word for word, starting with the error code (`ERR`, `WRONGPASS`, …):
/// clients match on it.
public struct CommandError: Error, Sendable, Equatable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public static let syntax = CommandError("ERR syntax error")
    public static let notInteger = CommandError("ERR value is not an integer or out of range")
    public static let notFloat = CommandError("ERR value is not a valid float")
    public static let overflow = CommandError("ERR increment or decrement would overflow")
    public static let noSuchKey = CommandError("ERR no such key")
    public static let noAuth = CommandError("NOAUTH Authentication required.")
    public static let wrongPass = CommandError("WRONGPASS invalid username-password pair or user is disabled.")
    public static let outOfMemory = CommandError("OOM command not allowed when used memory > 'maxmemory'.")
    public static let stringTooLong = CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")

    public static func arity(_ name: String) -> CommandError {
        CommandError("ERR wrong number of arguments for '\(name)' command")
    }

    public static func invalidExpireTime(_ name: String) -> CommandError {
        CommandError("ERR invalid expire time in '\(name)' command")
    }
}
